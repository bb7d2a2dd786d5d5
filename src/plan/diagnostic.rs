//! Diagnostics: what is wrong with a plan, where (file:line:col, step id) and
//! how to fix it; plus the byte-offset → line:column map they are built with.
//!
//! Pure data and formatting; never prints by itself.

use std::fmt;

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

/// One finding about a plan file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: String,
    /// 1-based line and column (in characters); 0 when the file has no position.
    pub line: usize,
    pub col: usize,
    /// The step the finding is about, if any.
    pub step: Option<String>,
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        if self.line > 0 {
            write!(f, "{}:{}:{}: {sev}: ", self.file, self.line, self.col)?;
        } else {
            write!(f, "{}: {sev}: ", self.file)?;
        }
        if let Some(step) = &self.step {
            write!(f, "step '{step}': ")?;
        }
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// Maps byte offsets of a source text to 1-based line and character column.
pub struct SourceMap<'a> {
    text: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> SourceMap<'a> {
    pub fn new(text: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        SourceMap { text, line_starts }
    }

    /// Line and column (both 1-based, column in characters) of a byte offset.
    pub fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= offset) - 1;
        let start = self.line_starts[line];
        let col = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        (line + 1, col + 1)
    }

    /// Byte offset of a 1-based line and 1-based byte column (as serde_json reports them).
    pub fn offset_of(&self, line: usize, byte_col: usize) -> usize {
        let Some(&start) = self.line_starts.get(line.saturating_sub(1)) else {
            return self.text.len();
        };
        let mut off = (start + byte_col.saturating_sub(1)).min(self.text.len());
        while !self.text.is_char_boundary(off) {
            off -= 1;
        }
        off
    }
}

/// The closest candidate to `word`, if it is close enough to be a likely typo.
pub fn did_you_mean<'c>(
    word: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<&'c str> {
    let word_lower = word.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| {
            (
                strsim::damerau_levenshtein(&word_lower, &c.to_ascii_lowercase()),
                c,
            )
        })
        .filter(|(d, c)| {
            *d <= (c.chars().count().max(word.chars().count()) / 3).max(1)
                || c.contains(word) && word.len() > 2
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_characters() {
        let m = SourceMap::new("ab\n\u{e9}x\n");
        assert_eq!(m.position(0), (1, 1));
        assert_eq!(m.position(3), (2, 1));
        assert_eq!(m.position(5), (2, 2));
        assert_eq!(m.offset_of(2, 3), 5);
    }

    #[test]
    fn suggestions_are_close_matches_only() {
        let fields = ["depends_on", "description", "id"];
        assert_eq!(did_you_mean("depend_on", fields), Some("depends_on"));
        assert_eq!(did_you_mean("zzz", fields), None);
    }

    #[test]
    fn display_names_file_position_step_and_hint() {
        let d = Diagnostic {
            severity: Severity::Error,
            file: "p.json".into(),
            line: 3,
            col: 5,
            step: Some("build".into()),
            message: "unknown dependency 'fetc'".into(),
            hint: Some("did you mean 'fetch'?".into()),
        };
        assert_eq!(
            d.to_string(),
            "p.json:3:5: error: step 'build': unknown dependency 'fetc'\n  hint: did you mean 'fetch'?"
        );
    }
}
