//! Wording help for error messages: shortening user text quoted in a message, and the closest
//! "did you mean" candidate for a misspelled word.
//!
//! It only builds text: it never decides whether something is an error, and never quotes more
//! than a short prefix of what was written.

/// Shortens user text quoted in a message.
pub(super) fn clip(s: &str) -> String {
    match s.char_indices().nth(32) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_string(),
    }
}

/// The closest candidate within a small edit distance, ignoring ASCII case.
pub(super) fn did_you_mean(word: &str, candidates: &[&'static str]) -> Option<&'static str> {
    let word = word.to_ascii_lowercase();
    let (distance, best) = candidates
        .iter()
        .map(|c| (levenshtein(&word, c), *c))
        .min()?;
    let longest = word.chars().count().max(best.len());
    (distance <= 2 && 2 * distance <= longest).then_some(best)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}
