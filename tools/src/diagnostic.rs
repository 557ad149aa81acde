//! Problems found in a TOML file, each with its file and line.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A TOML file's text, kept to turn byte offsets into line numbers.
#[derive(Clone, Debug)]
pub struct Source {
    pub path: PathBuf,
    pub text: String,
}

impl Source {
    /// Reads `path`.
    pub fn read(path: &Path) -> Result<Self, Diagnostic> {
        let text = std::fs::read_to_string(path).map_err(|error| Diagnostic {
            path: path.to_path_buf(),
            line: None,
            message: format!("cannot read: {error}"),
        })?;
        Ok(Self { path: path.to_path_buf(), text })
    }

    /// The 1-based line and column of byte `offset`.
    pub fn line_column(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |newline| newline + 1) + 1;
        (line, column)
    }

    /// The 1-based line of the start of `span`.
    pub fn line(&self, span: &Range<usize>) -> usize {
        self.line_column(span.start).0
    }

    /// A diagnostic at `span`.
    pub fn error(&self, span: &Range<usize>, message: impl Into<String>) -> Diagnostic {
        Diagnostic { path: self.path.clone(), line: Some(self.line(span)), message: message.into() }
    }

    /// A TOML syntax or schema error, with line and column.
    pub fn toml_error(&self, error: &toml::de::Error) -> Diagnostic {
        let message = error.message().trim_end().to_string();
        match error.span() {
            Some(span) => {
                let (line, column) = self.line_column(span.start);
                Diagnostic { path: self.path.clone(), line: Some(line), message: format!("column {column}: {message}") }
            }
            None => Diagnostic { path: self.path.clone(), line: None, message },
        }
    }
}

/// One problem: `path:line: message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.path.display(), self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

/// Every problem found, to report at once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for diagnostic in &self.0 {
            writeln!(f, "error: {diagnostic}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

impl From<Diagnostic> for Diagnostics {
    fn from(diagnostic: Diagnostic) -> Self {
        Self(vec![diagnostic])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_lines_and_columns() {
        let source = Source { path: "x.toml".into(), text: "a = 1\nbb = 2\n".into() };
        assert_eq!(source.line_column(0), (1, 1));
        assert_eq!(source.line_column(6), (2, 1));
        assert_eq!(source.line_column(9), (2, 4));
        assert_eq!(source.error(&(7..8), "bad").to_string(), "x.toml:2: bad");
    }
}
