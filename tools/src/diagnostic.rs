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
            message: match error.kind() {
                std::io::ErrorKind::InvalidData => "cannot read: not UTF-8 text, as a TOML file must be".to_string(),
                _ => format!("cannot read: {error}"),
            },
        })?;
        Ok(Self { path: path.to_path_buf(), text })
    }

    /// The text before byte `offset` (moved back to a character boundary).
    fn before(&self, offset: usize) -> &str {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        &self.text[..offset]
    }

    /// The 1-based line and column of byte `offset`; the column counts characters, as editors
    /// do.
    pub fn line_column(&self, offset: usize) -> (usize, usize) {
        let line = self.before(offset).matches('\n').count() + 1;
        (line, self.line_text(offset).chars().count() + 1)
    }

    /// The 1-based line of the start of `span`.
    pub fn line(&self, span: &Range<usize>) -> usize {
        self.line_column(span.start).0
    }

    /// A diagnostic at `span`.
    pub fn error(&self, span: &Range<usize>, message: impl Into<String>) -> Diagnostic {
        Diagnostic { path: self.path.clone(), line: Some(self.line(span)), message: message.into() }
    }

    /// A TOML syntax or schema error, with line and column. The toml crate's messages do not
    /// always say which key they are about: a duplicate key gets its name and the line of its
    /// first use, a value of the wrong type or range the key it is the value of, and a problem
    /// with a whole table its header.
    pub fn toml_error(&self, error: &toml::de::Error) -> Diagnostic {
        let mut message = error.message().trim_end().to_string();
        let Some(span) = error.span() else {
            return Diagnostic { path: self.path.clone(), line: None, message };
        };
        let (line, column) = self.line_column(span.start);
        if message == "duplicate key" {
            let key = self.text.get(span.clone()).unwrap_or_default().trim();
            message = match self.first_use(key, line) {
                Some(first) => format!("duplicate key `{key}` (first at line {first})"),
                None => format!("duplicate key `{key}`"),
            };
        } else if let Some(key) = key_of_value(self.line_text(span.start)) {
            if !message.contains(&format!("`{key}`")) {
                message = format!("key `{key}`: {message}");
            }
        } else if let Some(header) = self.header_at(span.start) {
            // A table as a whole: a key it lacks, or a table where an array of tables belongs.
            message = format!("{header}: {message}");
            if !header.starts_with("[[") && message.ends_with("expected a sequence") {
                message.push_str(&format!(" (each entry of an array of tables is headed [{header}])"));
            }
        }
        Diagnostic { path: self.path.clone(), line: Some(line), message: format!("column {column}: {message}") }
    }

    /// The part of the line of byte `offset` that comes before it.
    fn line_text(&self, offset: usize) -> &str {
        let before = self.before(offset);
        &before[before.rfind('\n').map_or(0, |newline| newline + 1)..]
    }

    /// The table header (`[name]` or `[[name]]`, without a comment) that starts its line at byte
    /// `offset`, if one does.
    fn header_at(&self, offset: usize) -> Option<&str> {
        if !self.line_text(offset).trim().is_empty() {
            return None;
        }
        let line = self.text.get(offset..)?.lines().next()?;
        line.starts_with('[').then(|| line.split('#').next().unwrap_or_default().trim_end())
    }

    /// The line, before line `line`, where `key` was first given: in the same table for a
    /// `key = value`, anywhere before for a `[key]` or `[[key]]` header.
    fn first_use(&self, key: &str, line: usize) -> Option<usize> {
        let lines: Vec<&str> = self.text.lines().collect();
        let duplicate = lines.get(line - 1)?.trim_start();
        let assigns = |text: &str| {
            text.strip_prefix(key).is_some_and(|rest| rest.trim_start().starts_with('=')) && !key.is_empty()
        };
        if duplicate.starts_with('[') {
            let header = |text: &str| {
                let text = text.split('#').next().unwrap_or_default();
                text.trim_matches(|c: char| c == '[' || c == ']' || c.is_whitespace()) == key
            };
            let mut in_root = true;
            for (index, text) in lines[..line - 1].iter().map(|text| text.trim()).enumerate() {
                in_root &= !text.starts_with('[');
                if (text.starts_with('[') && header(text)) || (in_root && assigns(text)) {
                    return Some(index + 1);
                }
            }
            return None;
        }
        for index in (0..line - 1).rev() {
            let text = lines[index].trim_start();
            if assigns(text) {
                return Some(index + 1);
            }
            if text.starts_with('[') {
                return None;
            }
        }
        None
    }
}

/// The key whose value starts where `line` (the text of a line before some point) ends: the
/// key before a trailing `=`, or of the array the point is an element of. `None` if the line
/// does not end that way (the point is in a string, a comment, after a value, ...).
fn key_of_value(line: &str) -> Option<String> {
    // What came last: a key (or a value) word, `=`, an opening bracket, a `,` or a closing one.
    let mut last = ' ';
    let mut word: Option<String> = None;
    let mut pending: Option<String> = None;
    let mut open: Vec<(char, Option<String>)> = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {}
            '#' => return None,
            '=' => {
                pending = word.take();
                last = '=';
            }
            '[' | '{' => {
                open.push((c, pending.take()));
                last = '[';
            }
            ']' | '}' => {
                open.pop();
                last = ']';
            }
            ',' => {
                pending = None;
                last = ',';
            }
            '"' | '\'' => {
                let mut text = String::new();
                let mut closed = false;
                while let Some(next) = chars.next() {
                    if next == c {
                        closed = true;
                        break;
                    }
                    if next == '\\' && c == '"' {
                        chars.next();
                    }
                    text.push(next);
                }
                if !closed {
                    return None;
                }
                word = (last != '=').then_some(text);
                last = 'w';
            }
            _ => {
                let mut text = String::from(c);
                while let Some(&next) = chars.peek() {
                    if next.is_whitespace() || "=,[]{}#\"'".contains(next) {
                        break;
                    }
                    text.push(next);
                    chars.next();
                }
                word = (last != '=').then_some(text);
                last = 'w';
            }
        }
    }
    match last {
        '=' => pending,
        '[' | ',' => match open.last() {
            Some(('[', key)) => key.clone(),
            _ => None,
        },
        _ => None,
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
        // Columns count characters: `é` is two bytes.
        let source = Source { path: "x.toml".into(), text: "a = \"é\\q\"\n".into() };
        assert_eq!(source.line_column(8), (1, 8));
        // An offset inside a character counts from its start.
        assert_eq!(source.line_column(6), (1, 6));
    }

    #[test]
    fn the_key_of_a_value_is_found_on_its_line() {
        assert_eq!(key_of_value("cpus = ").as_deref(), Some("cpus"));
        assert_eq!(key_of_value("memory = { size = \"4MiB\", base = ").as_deref(), Some("base"));
        assert_eq!(key_of_value("cpus = [0, ").as_deref(), Some("cpus"));
        assert_eq!(key_of_value("interrupts = [{ spi = 2, trigger = ").as_deref(), Some("trigger"));
        assert_eq!(key_of_value("\"quoted key\" = ").as_deref(), Some("quoted key"));
        // Not at the start of a value: after one, in a string, in a comment, at a key.
        assert_eq!(key_of_value("memory = 4"), None);
        assert_eq!(key_of_value("bootargs = \"a = "), None);
        assert_eq!(key_of_value("# cpus = "), None);
        assert_eq!(key_of_value(""), None);
    }

    fn error_for(text: &str) -> String {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code, reason = "only its errors matter")]
        struct Table {
            name: String,
            cpus: Vec<i64>,
        }
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code, reason = "only its errors matter")]
        struct File {
            partition: Vec<Table>,
        }
        let source = Source { path: "x.toml".into(), text: text.into() };
        let error = toml::from_str::<File>(text).expect_err("the text is invalid");
        source.toml_error(&error).to_string()
    }

    #[test]
    fn toml_errors_name_the_key_and_the_table() {
        assert_eq!(
            error_for("[[partition]]\nname = \"a\"\ncpus = 0\n"),
            "x.toml:3: column 8: key `cpus`: invalid type: integer `0`, expected a sequence"
        );
        assert_eq!(error_for("[[partition]]\nname = \"a\"\n"), "x.toml:1: column 1: [[partition]]: missing field `cpus`");
        assert_eq!(
            error_for("[[partition]]\nname = \"a\"\nname = \"b\"\n"),
            "x.toml:3: column 1: duplicate key `name` (first at line 2)"
        );
        assert_eq!(
            error_for("[partition]\nname = \"a\"\ncpus = []\n"),
            "x.toml:1: column 1: [partition]: invalid type: map, expected a sequence (each entry of an array of tables is headed [[partition]])"
        );
    }
}
