//! `cs-tui completions SHELL` and `cs-tui man [--dir DIR]`: what a package installs, generated
//! from the command line's own definition (so they cannot drift from it).

use std::path::Path;
use std::process::ExitCode;

use clap::CommandFactory as _;
use color_eyre::eyre::{Result, WrapErr};

use crate::cli::{Cli, CompletionsArgs, ManArgs};

/// The name the completions and pages are for: the installed binary's.
const BIN: &str = "cs-tui";

/// `cs-tui completions SHELL`: the completion script on stdout.
pub(super) fn completions(args: &CompletionsArgs) -> Result<ExitCode> {
    print(&completion_script(args.shell))
}

fn completion_script(shell: clap_complete::Shell) -> Vec<u8> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), BIN, &mut script);
    script
}

/// `cs-tui man`: cs-tui(1) on stdout; with `--dir`, one page per command written there.
pub(super) fn man(args: &ManArgs) -> Result<ExitCode> {
    let cmd = man_command();
    match &args.dir {
        None => print(&render(&cmd)?),
        Some(dir) => {
            std::fs::create_dir_all(dir).wrap_err_with(|| format!("creating {}", dir.display()))?;
            let mut written = Vec::new();
            write_pages(&cmd, dir, &mut written)?;
            for path in written {
                println!("{}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The command line as the pages describe it, built (subcommands know their full names).
fn man_command() -> clap::Command {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    // The page's NAME line is `cs-tui - ABOUT`: the about without its own `cs-tui: `.
    if let Some(about) = cmd.get_about().map(ToString::to_string)
        && let Some(rest) = about.strip_prefix(&format!("{BIN}: "))
    {
        cmd = cmd.about(rest.to_owned());
    }
    cmd.build();
    cmd
}

/// The page of `cmd` (a built command or subcommand), in roff.
fn render(cmd: &clap::Command) -> Result<Vec<u8>> {
    let version = env!("CARGO_PKG_VERSION");
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .source(format!("{BIN} {version}"))
        .manual("cs-tui manual")
        .render(&mut page)
        .wrap_err("rendering the manual page")?;
    Ok(page)
}

/// Writes the page of `cmd` and of each of its visible subcommands, depth first, into `dir`
/// (`cs-tui-accounts-import.1`), adding each path to `written`.
fn write_pages(
    cmd: &clap::Command,
    dir: &Path,
    written: &mut Vec<std::path::PathBuf>,
) -> Result<()> {
    let name = cmd.get_display_name().unwrap_or_else(|| cmd.get_name());
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, render(cmd)?).wrap_err_with(|| format!("writing {}", path.display()))?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        write_pages(sub, dir, written)?;
    }
    Ok(())
}

/// Writes `bytes` to stdout. A reader that stopped early (`| head`) is not an error.
fn print(bytes: &[u8]) -> Result<ExitCode> {
    super::output::emit_bytes(bytes)?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::process::Command;

    use clap::ValueEnum as _;
    use clap_complete::Shell;

    use super::*;

    /// The visible subcommands of `cmd`, by name.
    fn subcommands(cmd: &clap::Command) -> Vec<String> {
        cmd.get_subcommands()
            .filter(|sub| !sub.is_hide_set())
            .map(|sub| sub.get_name().to_owned())
            .collect()
    }

    /// Whether `program` can be run here.
    fn present(program: &str) -> bool {
        Command::new(program).arg("--version").output().is_ok()
    }

    #[test]
    fn every_shell_gets_a_script_naming_every_subcommand() {
        let cli = Cli::command();
        let top = subcommands(&cli);
        let accounts = cli.find_subcommand("accounts").unwrap();
        let nested = subcommands(accounts);
        assert!(top.contains(&"completions".to_owned()), "{top:?}");
        assert!(nested.contains(&"import".to_owned()), "{nested:?}");
        for shell in Shell::value_variants() {
            let script = String::from_utf8(completion_script(*shell)).unwrap();
            for name in top.iter().chain(&nested) {
                assert!(script.contains(name.as_str()), "{shell}: no {name}");
            }
            assert!(script.contains("codex-bin"), "{shell}");
        }
    }

    #[test]
    fn the_bash_script_parses() {
        if !present("bash") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cs-tui.bash");
        std::fs::write(&path, completion_script(Shell::Bash)).unwrap();
        let out = Command::new("bash").arg("-n").arg(&path).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        // Sourced, it registers the completion for cs-tui.
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!("source {} && complete -p cs-tui", path.display()))
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("cs-tui"),
            "{out:?}"
        );
    }

    #[test]
    fn the_page_names_every_subcommand() {
        let page = String::from_utf8(render(&man_command()).unwrap()).unwrap();
        assert!(page.starts_with(".ie"), "{page}");
        assert!(page.contains(".TH cs-tui 1"), "{page}");
        // NAME is `cs-tui - what it does`, not `cs-tui - cs-tui: …`.
        assert!(!page.contains(r"\- cs\-tui:"), "{page}");
        for name in subcommands(&Cli::command()) {
            // roff escapes each `-`: cs\-tui\-accounts(1).
            let reference = format!("cs-tui-{name}(1)").replace('-', r"\-");
            assert!(page.contains(&reference), "no {reference}: {page}");
        }
    }

    #[test]
    fn the_directory_holds_a_page_per_command_and_each_formats_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("man1");
        std::fs::create_dir(&out).unwrap();
        let mut written = Vec::new();
        write_pages(&man_command(), &out, &mut written).unwrap();

        let mut expected = BTreeSet::from(["cs-tui.1".to_owned()]);
        fn walk(cmd: &clap::Command, prefix: &str, into: &mut BTreeSet<String>) {
            for sub in cmd.get_subcommands().filter(|sub| !sub.is_hide_set()) {
                let name = format!("{prefix}-{}", sub.get_name());
                into.insert(format!("{name}.1"));
                walk(sub, &name, into);
            }
        }
        walk(&Cli::command(), "cs-tui", &mut expected);
        assert!(
            expected.contains("cs-tui-accounts-import.1"),
            "{expected:?}"
        );
        let found: BTreeSet<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(found, expected);
        assert_eq!(written.len(), expected.len());

        if !present("groff") {
            return;
        }
        for page in &written {
            // As man(1) runs it: preconv (-k), the man macros, every warning (-ww), no output.
            let run = Command::new("groff")
                .args(["-k", "-man", "-Tutf8", "-ww", "-z"])
                .arg(page)
                .output()
                .unwrap();
            assert!(run.status.success(), "{}: {run:?}", page.display());
            assert!(
                run.stderr.is_empty(),
                "{}: {}",
                page.display(),
                String::from_utf8_lossy(&run.stderr)
            );
        }
    }

    /// The published crate (Cargo.toml's `include`) holds every source file, the README,
    /// both licenses and the example config, and no tests, snapshots, scripts or node_modules.
    #[test]
    fn the_package_holds_what_a_build_needs_and_nothing_else() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .args([
                "package",
                "--list",
                "--allow-dirty",
                "--locked",
                "-p",
                "cs-tui",
            ])
            .current_dir(root)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let listed: BTreeSet<String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        for needed in [
            "Cargo.toml",
            "Cargo.lock",
            "README.md",
            "LICENSE-MIT",
            "LICENSE-APACHE",
            "assets/config.example.toml",
            "src/main.rs",
            "src/lib.rs",
        ] {
            assert!(listed.contains(needed), "no {needed}: {listed:?}");
        }
        fn sources(dir: &std::path::Path, root: &std::path::Path, into: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    sources(&path, root, into);
                } else if path.extension().is_some_and(|ext| ext == "rs") {
                    let relative = path.strip_prefix(root).unwrap();
                    into.push(relative.to_str().unwrap().to_owned());
                }
            }
        }
        let mut rust = Vec::new();
        sources(&root.join("src"), root, &mut rust);
        for file in rust {
            assert!(listed.contains(&file), "{file} is not packaged");
        }
        for file in &listed {
            let allowed = file.starts_with("src/") && file.ends_with(".rs")
                || [
                    "Cargo.toml",
                    "Cargo.toml.orig",
                    "Cargo.lock",
                    ".cargo_vcs_info.json",
                    "README.md",
                    "LICENSE-MIT",
                    "LICENSE-APACHE",
                    "assets/config.example.toml",
                ]
                .contains(&file.as_str());
            assert!(allowed, "{file} is packaged");
        }
    }
}
