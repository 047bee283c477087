//! Diagnostics: every problem found in a configuration file, as `file:line:col: reason`.

use std::fmt;
use std::ops::Range;

/// One problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Diagnostic {
    /// The file as it was named to the loader (path or peer-supplied name).
    pub file: String,
    /// 1-based line; `None` for problems with the whole file (cannot read it, ...).
    pub line: Option<usize>,
    /// 1-based column in characters.
    pub col: Option<usize>,
    pub message: String,
}

impl Diagnostic {
    /// A problem with the whole file rather than a place in it.
    pub fn whole_file(file: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            line: None,
            col: None,
            message: message.into(),
        }
    }

    /// `line:col` (or empty for whole-file problems), handy in tests.
    pub fn position(&self) -> String {
        match (self.line, self.col) {
            (Some(line), Some(col)) => format!("{line}:{col}"),
            _ => String::new(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.col) {
            (Some(line), Some(col)) => write!(f, "{}:{line}:{col}: {}", self.file, self.message),
            _ => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// Everything wrong with a configuration: all errors found in one pass, plus warnings and alarms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics {
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<Diagnostic>,
    /// Errors the caller asked to be let through and served anyway (a certificate out of its validity dates
    /// under [`crate::tls::ExpiredCertificates::Serve`]): worse than warnings, logged at error level.
    pub alarms: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// The errors, in file, line, column order (warnings are in `warnings`).
    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.errors.iter()
    }

    pub(crate) fn extend(&mut self, other: Diagnostics) {
        self.errors.extend(other.errors);
        self.warnings.extend(other.warnings);
        self.alarms.extend(other.alarms);
    }

    /// Errors of each file in file order, then by line and column.
    pub(crate) fn sort(&mut self) {
        self.errors.sort();
        self.errors.dedup();
        self.warnings.sort();
        self.warnings.dedup();
        self.alarms.sort();
        self.alarms.dedup();
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

impl<'a> IntoIterator for &'a Diagnostics {
    type Item = &'a Diagnostic;
    type IntoIter = std::slice::Iter<'a, Diagnostic>;

    fn into_iter(self) -> Self::IntoIter {
        self.errors.iter()
    }
}

/// Collects diagnostics for one source text, turning byte spans into line and column.
pub(crate) struct Ctx<'s> {
    file: String,
    src: &'s str,
    pub(crate) diags: Diagnostics,
}

impl<'s> Ctx<'s> {
    pub(crate) fn new(file: impl Into<String>, src: &'s str) -> Self {
        Self {
            file: file.into(),
            src,
            diags: Diagnostics::default(),
        }
    }

    pub(crate) fn file(&self) -> &str {
        &self.file
    }

    pub(crate) fn at(&self, span: &Range<usize>, message: impl Into<String>) -> Diagnostic {
        let (line, col) = line_col(self.src, span.start);
        Diagnostic {
            file: self.file.clone(),
            line: Some(line),
            col: Some(col),
            message: message.into(),
        }
    }

    pub(crate) fn error(&mut self, span: &Range<usize>, message: impl Into<String>) {
        let d = self.at(span, message);
        self.diags.errors.push(d);
    }

    pub(crate) fn warn(&mut self, span: &Range<usize>, message: impl Into<String>) {
        let d = self.at(span, message);
        self.diags.warnings.push(d);
    }

    /// An error the caller chose to serve through (see [`Diagnostics::alarms`]).
    pub(crate) fn alarm(&mut self, span: &Range<usize>, message: impl Into<String>) {
        let d = self.at(span, message);
        self.diags.alarms.push(d);
    }

    /// 1-based line of a byte offset (for "first defined at line N" hints).
    pub(crate) fn line_of(&self, span: &Range<usize>) -> usize {
        line_col(self.src, span.start).0
    }

    pub(crate) fn has_errors(&self) -> bool {
        !self.diags.errors.is_empty()
    }
}

/// 1-based line and column (in characters) of byte `offset` in `src`.
pub(crate) fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(src.len());
    while !src.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &src[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one_in_characters() {
        let src = "a = 1\nbé = 2\n";
        assert_eq!(line_col(src, 0), (1, 1));
        assert_eq!(line_col(src, 6), (2, 1));
        // 'é' is two bytes but one column.
        assert_eq!(line_col(src, 10), (2, 4));
        assert_eq!(line_col(src, 1000), (3, 1));
    }
}
