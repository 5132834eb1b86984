//! Where a problem in a stack file is and how it reads: the public error and
//! warning types, which print like a compiler's (`compose.yml:12:5: ...`),
//! and the internal located error that the readers pass up before the file
//! name is attached.

use std::collections::BTreeSet;
use std::fmt;

/// A place in the stack file; both numbers start at 1, the column counts
/// characters. 0:0 stands for the file as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl Position {
    pub fn new(line: usize, column: usize) -> Self {
        Position { line, column }
    }
}

/// Why a stack file cannot be deployed, and where: `line` and `column`
/// start at 1, and are both 0 for the file as a whole (its size, the stack name).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", location(.file_name, .line, .column))]
pub struct ComposeError {
    pub file_name: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Something in the stack file that berth reads differently from Docker, or
/// not at all; the stack still deploys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub file_name: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}warning: {}", location(&self.file_name, &self.line, &self.column), self.message)
    }
}

/// `file:line:column: `, or `file: ` for a problem with the file as a whole.
fn location(file_name: &str, line: &usize, column: &usize) -> String {
    if *line == 0 {
        format!("{file_name}: ")
    } else {
        format!("{file_name}:{line}:{column}: ")
    }
}

/// An error at a position, before it is given the file's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Located {
    pub pos: Position,
    pub message: String,
}

impl Located {
    pub fn new(pos: Position, message: impl Into<String>) -> Self {
        Located { pos, message: message.into() }
    }

    pub fn into_error(self, file_name: &str) -> ComposeError {
        ComposeError {
            file_name: file_name.to_string(),
            line: self.pos.line,
            column: self.pos.column,
            message: self.message,
        }
    }
}

pub(crate) type Result<T> = std::result::Result<T, Located>;

/// The warnings gathered while reading one file.
#[derive(Debug, Default)]
pub(crate) struct Diagnostics {
    warnings: Vec<(Position, String)>,
    /// Compose says once per variable that it is unset, however often it is used.
    unset_variables: BTreeSet<String>,
}

impl Diagnostics {
    pub fn warn(&mut self, pos: Position, message: impl Into<String>) {
        self.warnings.push((pos, message.into()));
    }

    /// The standard warning for a key berth does not read.
    pub fn unsupported(&mut self, pos: Position, path: &str) {
        self.warn(pos, format!("{path} is not supported by berth and is ignored"));
    }

    pub fn unset_variable(&mut self, pos: Position, path: &str, name: &str) {
        if self.unset_variables.insert(name.to_string()) {
            self.warn(pos, format!("{path}: the variable {name} is not set; using an empty string"));
        }
    }

    /// The warnings in file order, as a compiler lists them.
    pub fn into_warnings(mut self, file_name: &str) -> Vec<Warning> {
        self.warnings.sort_by_key(|(pos, _)| *pos);
        self.warnings
            .into_iter()
            .map(|(pos, message)| Warning {
                file_name: file_name.to_string(),
                line: pos.line,
                column: pos.column,
                message,
            })
            .collect()
    }
}
