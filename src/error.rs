//! The library's error type.
//!
//! Every error the library returns names the file it concerns (when there is
//! one) and says in one line what is wrong with it, so that the command line
//! can print `error: <file>: <problem>` and exit with code 2 (usage or input
//! error). Only the binary uses `anyhow`.

use std::path::{Path, PathBuf};

/// What went wrong, coarsely: lets callers (and the CLI's exit codes) tell
/// bad input from bad usage from an internal failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A file could not be read or written (missing, permissions, full disk).
    Io,
    /// Audio that cannot be decoded or is unusable (corrupt, unsupported, NaN).
    Audio,
    /// A template dictionary that is damaged or incompatible.
    Templates,
    /// A note list (MIDI, CSV, MAPS txt, JSON) that cannot be parsed.
    Notes,
    /// Arguments or options that do not make sense together.
    InvalidInput,
    /// A broken invariant inside the library: a bug.
    Internal,
}

/// An error with the file it concerns and a one-line description.
#[derive(Debug, thiserror::Error)]
#[error("{}", self.render())]
pub struct Error {
    kind: ErrorKind,
    path: Option<PathBuf>,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of `kind` with a one-line `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error { kind, path: None, message: one_line(message.into()), source: None }
    }

    /// Shorthand for [`ErrorKind::InvalidInput`].
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }

    /// Shorthand for [`ErrorKind::Internal`].
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// An I/O error on `path`, with the OS's description.
    pub fn io(path: &Path, err: std::io::Error) -> Self {
        let message = match err.kind() {
            std::io::ErrorKind::NotFound => "no such file or directory".to_string(),
            std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
            _ => err.to_string(),
        };
        Error { kind: ErrorKind::Io, path: Some(path.to_path_buf()), message, source: Some(Box::new(err)) }
    }

    /// Replaces the message, keeping kind, path and source.
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = one_line(message.into());
        self
    }

    /// Attach the file this error concerns (kept if one is already set).
    pub fn with_path(mut self, path: &Path) -> Self {
        if self.path.is_none() {
            self.path = Some(path.to_path_buf());
        }
        self
    }

    /// Which kind of error this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The file this error concerns, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The description, without the file name.
    pub fn message(&self) -> &str {
        &self.message
    }

    fn render(&self) -> String {
        match &self.path {
            Some(p) => format!("{}: {}", p.display(), self.message),
            None => self.message.clone(),
        }
    }
}

/// Error messages are printed on one line: fold any newline a dependency put in.
fn one_line(s: String) -> String {
    if s.contains('\n') {
        s.split_whitespace().collect::<Vec<_>>().join(" ")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_names_the_file_on_one_line() {
        let e = Error::new(ErrorKind::Audio, "truncated\nstream").with_path(Path::new("a.wav"));
        assert_eq!(e.to_string(), "a.wav: truncated stream");
        assert_eq!(e.kind(), ErrorKind::Audio);
    }
}
