//! The one error a node file can produce, pointing at the offending value.
//!
//! The same form as the scenario loader's (podnet-sim's `scenario::error`): whatever went
//! wrong — YAML syntax, an unknown field, an address outside the subnet — the user gets
//! `FILE:LINE:COL: message`, which editors and terminals turn into a jump to the spot;
//! `FILE: message` only when no position applies (the file could not be read). The CLI
//! maps it to exit status 2 (invalid input).

use std::fmt;

use serde_saphyr::{Location, Spanned};

/// A 1-based line and column (columns count characters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub line: u64,
    pub column: u64,
}

impl Position {
    fn from_location(location: Location) -> Option<Position> {
        (location.line() > 0).then(|| Position {
            line: location.line(),
            column: location.column().max(1),
        })
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// An invalid or unreadable node file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeFileError {
    /// The file name as given to [`super::load`] or [`super::parse`].
    pub file: String,
    pub position: Option<Position>,
    /// What is wrong, without the file and position.
    pub message: String,
}

impl NodeFileError {
    pub(crate) fn new(file: &str, position: Option<Position>, message: impl Into<String>) -> Self {
        NodeFileError {
            file: file.to_string(),
            position,
            message: message.into(),
        }
    }

    /// A YAML parser error (syntax, unknown field, bad value) with the bare message: the
    /// position goes in front, not into a snippet.
    pub(crate) fn from_yaml(file: &str, error: &serde_saphyr::Error) -> Self {
        use serde_saphyr::{DefaultMessageFormatter, Error, MessageFormatter};
        let mut inner = error;
        while let Error::AliasError { error, .. } | Error::WithSnippet { error, .. } = inner {
            inner = error;
        }
        // The formatter's text may hold control characters taken from the input.
        let message: String = DefaultMessageFormatter
            .format_message(inner)
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let position = error.location().and_then(Position::from_location);
        NodeFileError::new(file, position, message)
    }
}

impl fmt::Display for NodeFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some(p) => write!(f, "{}:{}: {}", self.file, p, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for NodeFileError {}

/// A semantic error found while checking the parsed file, before the file name is attached.
#[derive(Debug)]
pub(crate) struct Invalid {
    position: Option<Position>,
    message: String,
}

impl Invalid {
    /// An error at the place `spanned` was written (for an alias: where it is used).
    pub(crate) fn at<T>(spanned: &Spanned<T>, message: impl Into<String>) -> Invalid {
        Invalid {
            position: Position::from_location(spanned.referenced),
            message: message.into(),
        }
    }

    /// The same place, another message.
    pub(crate) fn with_message(self, message: impl Into<String>) -> Invalid {
        Invalid {
            message: message.into(),
            ..self
        }
    }

    pub(crate) fn in_file(self, file: &str) -> NodeFileError {
        NodeFileError::new(file, self.position, self.message)
    }
}

/// A policy's own error (podnet-netpol), at its place in the node file.
impl From<podnet_netpol::Invalid> for Invalid {
    fn from(e: podnet_netpol::Invalid) -> Invalid {
        Invalid {
            position: e.location.and_then(Position::from_location),
            message: format!("policies: {}", e.message),
        }
    }
}
