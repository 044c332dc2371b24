//! How errors reach the user: one clear sentence, then a hint, on stderr.

use color_eyre::eyre::Report;
use std::error::Error as StdError;
use std::fmt;

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// An error that carries what the user should do next. It displays as the error it wraps.
pub(crate) struct Hinted {
    hint: String,
    inner: BoxError,
}

impl fmt::Debug for Hinted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} (hint: {})", self.inner, self.hint)
    }
}

impl fmt::Display for Hinted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

impl StdError for Hinted {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.inner.source()
    }
}

/// Attaches a hint to an error.
pub(crate) trait WithHint<T> {
    fn hint(self, hint: impl Into<String>) -> color_eyre::eyre::Result<T>;
}

impl<T, E> WithHint<T> for Result<T, E>
where
    E: Into<Report>,
{
    fn hint(self, hint: impl Into<String>) -> color_eyre::eyre::Result<T> {
        self.map_err(|e| with_hint(e.into(), hint))
    }
}

/// Wraps a report so that [`print_error`] shows `hint`.
pub(crate) fn with_hint(err: Report, hint: impl Into<String>) -> Report {
    Report::new(Hinted {
        hint: hint.into(),
        inner: err.into(),
    })
}

/// The hints attached anywhere in an error's chain, outermost first.
pub(crate) fn hints(err: &Report) -> Vec<String> {
    err.chain()
        .filter_map(|cause| cause.downcast_ref::<Hinted>())
        .map(|h| h.hint.clone())
        .collect()
}

/// `error: <message: cause: cause>` then one `hint: …` line per hint.
pub(crate) fn render_error(err: &Report) -> String {
    let mut messages: Vec<String> = Vec::new();
    for cause in err.chain() {
        let message = cause.to_string();
        if messages.last() != Some(&message) {
            messages.push(message);
        }
    }
    let mut out = format!("error: {}", messages.join(": "));
    for hint in hints(err) {
        out.push_str("\nhint: ");
        out.push_str(&hint);
    }
    out
}

pub(crate) fn print_error(err: &Report) {
    eprintln!("{}", render_error(err));
}

#[cfg(test)]
mod tests {
    use super::*;
    use color_eyre::eyre::{WrapErr, eyre};

    #[test]
    fn renders_message_chain_and_hint() {
        let err: color_eyre::eyre::Result<()> = Err(eyre!("no such file"));
        let err = err
            .wrap_err("reading /tmp/x.json")
            .hint("run `cs-tui accounts import`")
            .unwrap_err();
        assert_eq!(
            render_error(&err),
            "error: reading /tmp/x.json: no such file\nhint: run `cs-tui accounts import`"
        );
    }
}
