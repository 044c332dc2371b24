//! `cs-tui demo`: the dashboard on the demo's sandbox ([`crate::demo`]), with the autopilot at
//! the keyboard; afterwards, what happened (the sandbox's history) and the sandbox removed.

use std::process::ExitCode;

use color_eyre::eyre::Result;

use super::Env;
use crate::app::backend::ProxySetup;
use crate::cli::DemoArgs;
use crate::demo::Sandbox;

/// Takes the whole [`Env`], as the dashboard does.
pub(super) fn run(env: Env, mut sandbox: Sandbox, args: &DemoArgs) -> Result<ExitCode> {
    let result = play(env, &mut sandbox, args);
    // Whatever happened, nothing of the demo stays behind (unless asked).
    let kept = sandbox.close(args.keep);
    let code = result?;
    if let Some(dir) = kept? {
        println!(
            "The demo's directory is kept: {} (its store is {}/store: `CS_TUI_HOME={0}/store cs-tui history`).",
            dir.display(),
            dir.display()
        );
    }
    Ok(code)
}

fn play(env: Env, sandbox: &mut Sandbox, args: &DemoArgs) -> Result<ExitCode> {
    let config = env.config()?.clone();
    let launch =
        crate::app::Launch::prepare(env.codex_bin(), Vec::new())?.in_dir(sandbox.work_dir());
    sandbox.seed(&env.store()?)?;
    let backend = {
        let _runtime = env.runtime().enter();
        sandbox.start_backend()?
    };
    let proxy = ProxySetup {
        options: crate::proxy::session::SessionOptions {
            cwd: sandbox.work_dir(),
            ..env.session_options()?
        },
        imported: None,
    };
    let (pilot, seat) = crate::app::pilot::pilot();
    if !args.no_autopilot {
        env.runtime().spawn(crate::demo::fly(seat));
    }
    let store_dir = sandbox.store_dir();
    let Env {
        runtime, _log: log, ..
    } = env;
    let code = crate::app::run(
        runtime,
        launch,
        config,
        Some(proxy),
        &store_dir,
        Some(pilot),
    );
    drop(backend);
    drop(log);
    let code = code?;
    let history = super::history::read(&store_dir, None, None)?;
    println!("What happened in the demo (as `cs-tui history` shows it):\n");
    super::output::emit(&super::history::render(&history))?;
    if !args.keep {
        println!(
            "\nThe demo's accounts, ledger and logs were in {}, removed now.",
            sandbox.root().display()
        );
    }
    println!(
        "Next: `cs-tui accounts import` (your Codex login), `cs-tui accounts add NAME` for \
         more, then `cs-tui`."
    );
    Ok(code)
}
