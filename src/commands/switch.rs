//! `cs-tui switch NAME`: ask the running session to switch.

use std::process::ExitCode;

use color_eyre::eyre::{Result, bail, eyre};

use super::Env;
use crate::cli::SwitchArgs;
use crate::errors::with_hint;
use crate::proxy::events::ProxyCommand;

pub(super) fn run(env: &Env, args: SwitchArgs) -> Result<ExitCode> {
    let store_dir = env.store_dir()?;
    let command = if args.account == "best" {
        ProxyCommand::SwitchBest
    } else {
        let file = env.store()?.load()?;
        let account = file.resolve(&args.account)?;
        ProxyCommand::SwitchTo {
            account_id: account.id.clone(),
        }
    };
    let sockets = crate::ipc::session_sockets(store_dir);
    if sockets.is_empty() {
        return Err(with_hint(
            eyre!("no cs-tui session is running"),
            "start one with `cs-tui` or `cs-tui serve`; `cs-tui accounts use NAME` picks the account the next session starts on",
        ));
    }
    let mut ok = false;
    for socket in sockets {
        match env.runtime().block_on(crate::ipc::send(&socket, &command)) {
            Ok(answer) if answer.ok => {
                println!("{}", answer.message);
                ok = true;
            }
            Ok(answer) => eprintln!("error: {}", answer.message),
            Err(err) => tracing::debug!("stale session socket {}: {err:#}", socket.display()),
        }
    }
    if !ok {
        bail!("no running session accepted the switch");
    }
    Ok(ExitCode::SUCCESS)
}
