//! The one error a scenario file can produce, pointing at the offending value.
//!
//! Whatever went wrong — YAML syntax, an unknown field, a bad unit, a name that does not
//! exist — the user gets `FILE:LINE:COL: message`, the form editors and terminals turn into
//! a jump to the spot. The CLI maps every `ScenarioError` to exit status 2 (invalid input).

use std::fmt;

use serde_saphyr::{Location, Spanned};

use crate::check::{Kind, Mistake};

/// A 1-based line and column in the scenario file (columns count characters, not bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// Line, counting from 1.
    pub line: u64,
    /// Column, counting from 1.
    pub column: u64,
}

impl Position {
    /// The position of a YAML location, or `None` when the parser did not know it.
    pub(crate) fn from_location(location: Location) -> Option<Position> {
        (location.line() > 0).then(|| Position {
            line: location.line(),
            column: location.column().max(1),
        })
    }

    /// Where a spanned value was written (for an alias: where the alias is used).
    pub(crate) fn of<T>(spanned: &Spanned<T>) -> Option<Position> {
        Position::from_location(spanned.referenced)
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// An invalid or unreadable scenario file.
///
/// `Display` gives `FILE:LINE:COL: message`; `FILE: message` when no position applies
/// (the file could not be read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScenarioError {
    /// The file name as given to [`crate::scenario::load`] or [`crate::scenario::parse`].
    pub file: String,
    /// Where in the file; `None` only for errors that concern the whole file.
    pub position: Option<Position>,
    /// What is wrong, without the file and position.
    pub message: String,
    /// Set when the file is well formed but its address plan does not hold: the kind of
    /// `podnet check` finding this is (`podnet check` reports it as one, `podnet sim`
    /// refuses the file with it).
    pub finding: Option<Mistake>,
}

impl ScenarioError {
    pub(crate) fn new(file: &str, position: Option<Position>, message: impl Into<String>) -> Self {
        ScenarioError {
            file: file.to_string(),
            position,
            message: message.into(),
            finding: None,
        }
    }
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some(position) => write!(f, "{}:{}: {}", self.file, position, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for ScenarioError {}

/// A semantic error found while resolving, before the file name is attached.
///
/// The resolver works on parsed values and knows positions but not the file name;
/// [`crate::scenario::parse`] turns this into a [`ScenarioError`].
#[derive(Debug)]
pub(crate) struct Invalid {
    pub(crate) position: Option<Position>,
    pub(crate) message: String,
    pub(crate) finding: Option<Mistake>,
}

impl Invalid {
    /// An error at the place `spanned` was written.
    pub(crate) fn at<T>(spanned: &Spanned<T>, message: impl Into<String>) -> Invalid {
        Invalid {
            position: Position::of(spanned),
            message: message.into(),
            finding: None,
        }
    }

    /// An error at a position already extracted (or unknown).
    pub(crate) fn at_position(position: Option<Position>, message: impl Into<String>) -> Invalid {
        Invalid {
            position,
            message: message.into(),
            finding: None,
        }
    }

    /// Marks this as an address-plan mistake, the plan check's finding `kind`.
    pub(crate) fn plan(mut self, kind: Kind) -> Invalid {
        self.finding = Some(Mistake {
            kind,
            nodes: Vec::new(),
        });
        self
    }

    /// Names the nodes an address-plan mistake concerns.
    pub(crate) fn on_nodes<S: AsRef<str>>(mut self, nodes: &[S]) -> Invalid {
        if let Some(mistake) = &mut self.finding {
            mistake.nodes = nodes.iter().map(|node| node.as_ref().to_string()).collect();
        }
        self
    }

    pub(crate) fn in_file(self, file: &str) -> ScenarioError {
        ScenarioError {
            finding: self.finding,
            ..ScenarioError::new(file, self.position, self.message)
        }
    }
}

/// Turns a YAML parser error (syntax, unknown field, bad value) into a [`ScenarioError`]
/// carrying only the bare message: the position goes in front, not into a snippet.
///
/// One syntax error gets a hint: `{name: web-{i}, count: 3}` is YAML's flow mapping, in
/// which `{` opens another mapping, so an unquoted `{i}` reads as a syntax error far from
/// anything the reader wrote wrong.
pub(crate) fn from_yaml(file: &str, text: &str, error: &serde_saphyr::Error) -> ScenarioError {
    use serde_saphyr::{DefaultMessageFormatter, Error, MessageFormatter};

    let mut inner = error;
    while let Error::AliasError { error, .. } | Error::WithSnippet { error, .. } = inner {
        inner = error;
    }
    let message = DefaultMessageFormatter.format_message(inner);
    // The formatter's text may hold control characters taken from the input.
    let message: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let position = error.location().and_then(Position::from_location);
    let message = match position {
        Some(at) if message.contains("flow mapping") && unquoted_index(text, at.line) => {
            format!(
                "{message}: inside {{...}} a name with {{i}} must be quoted, \
                 e.g. {{name: 'web-{{i}}', count: 3}}"
            )
        }
        _ => message,
    };
    ScenarioError::new(file, position, message)
}

/// Whether line `line` (1-based) holds `{i}` outside quotes.
fn unquoted_index(text: &str, line: u64) -> bool {
    let Some(line) = usize::try_from(line)
        .ok()
        .and_then(|n| text.lines().nth(n.saturating_sub(1)))
    else {
        return false;
    };
    let mut quote = None;
    for (at, c) in line.char_indices() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '{') if line[at..].starts_with("{i}") => return true,
            _ => {}
        }
    }
    false
}
