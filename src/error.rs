//! The one error type: every user error can point at file:line:col and show the offending line.

use std::fmt;
use std::sync::Arc;

/// A source file kept in memory so that any error can quote its lines.
#[derive(Debug)]
pub struct Source {
    /// The path as the user should see it.
    pub name: String,
    pub text: String,
}

impl Source {
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Arc<Source> {
        Arc::new(Source {
            name: name.into(),
            text: text.into(),
        })
    }

    fn line_text(&self, line: usize) -> Option<&str> {
        self.text.lines().nth(line.checked_sub(1)?)
    }
}

/// A place in a source file: 1-based line and column (in characters), and the width to underline.
#[derive(Clone, Debug)]
pub struct Loc {
    pub src: Arc<Source>,
    pub line: usize,
    pub col: usize,
    pub width: usize,
}

impl Loc {
    /// `file:line:col`, the form editors and terminals understand.
    pub fn short(&self) -> String {
        format!("{}:{}:{}", self.src.name, self.line, self.col)
    }

    /// `file:line`, for lists where the column adds nothing.
    pub fn file_line(&self) -> String {
        format!("{}:{}", self.src.name, self.line)
    }
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.short())
    }
}

/// An error as the user sees it: a message, where it happened, and what may help.
#[derive(Debug)]
pub struct Error {
    pub message: String,
    pub loc: Option<Loc>,
    pub notes: Vec<String>,
    pub help: Option<String>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(message: impl Into<String>) -> Error {
        Error {
            message: message.into(),
            loc: None,
            notes: Vec::new(),
            help: None,
        }
    }

    pub fn at(loc: &Loc, message: impl Into<String>) -> Error {
        Error {
            loc: Some(loc.clone()),
            ..Error::new(message)
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Error {
        self.help = Some(help.into());
        self
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Error {
        self.notes.push(note.into());
        self
    }

    /// An I/O failure on a named path, outside any playbook position.
    pub fn io(what: &str, path: &str, err: std::io::Error) -> Error {
        Error::new(format!("cannot {what} {path}: {err}"))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "error: {}", self.message)?;
        if let Some(loc) = &self.loc {
            let gutter = loc.line.to_string().len();
            writeln!(f, "{:gutter$}--> {}", "", loc.short())?;
            if let Some(text) = loc.src.line_text(loc.line) {
                let text = text.replace('\t', " ");
                writeln!(f, "{:gutter$} |", "")?;
                writeln!(f, "{} | {}", loc.line, text)?;
                let pad = loc.col.saturating_sub(1);
                let width = loc.width.max(1);
                writeln!(f, "{:gutter$} | {:pad$}{}", "", "", "^".repeat(width))?;
            }
        }
        for note in &self.notes {
            writeln!(f, "  = note: {note}")?;
        }
        if let Some(help) = &self.help {
            writeln!(f, "  = help: {help}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

/// The candidate closest to `word`, when it is close enough to be a likely typo.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_location_line_and_caret() {
        let src = Source::new("play.yml", "name: x\ntasks:\n  - nme: y\n");
        let loc = Loc {
            src,
            line: 3,
            col: 5,
            width: 3,
        };
        let e = Error::at(&loc, "unknown key `nme`").with_help("did you mean `name`?");
        assert_eq!(
            e.to_string(),
            "error: unknown key `nme`\n --> play.yml:3:5\n  |\n3 |   - nme: y\n  |     ^^^\n  = help: did you mean `name`?\n"
        );
    }

    #[test]
    fn suggests_only_close_words() {
        assert_eq!(suggest("regex", ["path", "regexp", "line"]), Some("regexp"));
        assert_eq!(suggest("zzzzzz", ["path", "regexp", "line"]), None);
    }
}
