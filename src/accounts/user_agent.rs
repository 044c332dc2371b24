//! The `User-Agent` Codex's app-server sends the backend, kept in the store directory so that
//! cs-tui's own backend reads outside a session (`cs-tui status`, `accounts reset`) send what
//! a session's do: the backend sees Codex, not cs-tui (issue 11, item 5).

use std::path::{Path, PathBuf};

const FILE: &str = "codex-user-agent";

fn path(store_dir: &Path) -> PathBuf {
    store_dir.join(FILE)
}

/// The last `User-Agent` a session's app-server reported, if any (one printable line).
pub(crate) fn load(store_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path(store_dir)).ok()?;
    let line = text.lines().next()?.trim();
    let printable = !line.is_empty() && line.chars().all(|c| (' '..='~').contains(&c));
    printable.then(|| line.to_owned())
}

/// Remembers the app-server's `User-Agent`; a failure only costs the next command its name.
pub(crate) fn save(store_dir: &Path, user_agent: &str) {
    if load(store_dir).as_deref() == Some(user_agent) {
        return;
    }
    // A new private file of our own (never one someone prepared), then moved into place.
    let target = path(store_dir);
    let temp = target.with_extension(format!(
        "{}.{}.tmp",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    let written = crate::paths::create_private_file(&temp, format!("{user_agent}\n").as_bytes())
        .map_err(color_eyre::Report::from)
        .and_then(|_| std::fs::rename(&temp, &target).map_err(color_eyre::Report::from));
    if let Err(err) = written {
        let _ = std::fs::remove_file(&temp);
        tracing::warn!("remembering the app-server's User-Agent: {err:#}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_user_agent_is_read_back_and_junk_is_not() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()), None);
        let agent = "codex-tui/0.169.0 (Debian 12.0.0; x86_64) xterm (codex-tui; 0.169.0)";
        save(dir.path(), agent);
        assert_eq!(load(dir.path()).as_deref(), Some(agent));
        std::fs::write(path(dir.path()), "bad\u{7}agent\n").unwrap();
        assert_eq!(load(dir.path()), None);
    }
}
