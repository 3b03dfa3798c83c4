//! Config errors that point into the file: `gateway.yaml:14:5: streams[0].interval: ...`.

use std::fmt;
use std::sync::Arc;

/// Printed without `line:col` when `line` is 0: the key is in no line of the file, and a
/// wrong line would send the operator to the wrong place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{}{key}: {msg}", place(*.line, *.col))]
pub struct ConfigError {
    pub file: Arc<str>,
    pub line: usize,
    pub col: usize,
    /// The key path, like `streams[1].upstream`.
    pub key: String,
    pub msg: String,
}

fn place(line: usize, col: usize) -> String {
    match line {
        0 => " ".to_string(),
        _ => format!("{line}:{col}: "),
    }
}

/// Every error found in one config, so an operator fixes them in one pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}
