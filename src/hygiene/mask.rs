//! Secret values masked out of text and byte streams: every occurrence of a
//! secret becomes `****`, whatever its length.
//!
//! `MaskStream` masks a stream that arrives in chunks: it holds back the
//! end of what it was given while that end could be the start of a secret,
//! so a secret split across reads, lines or any later cut (the 64 KiB line
//! limit, the stored head and tail) is still masked whole. What it holds is
//! shorter than the longest secret; `finish` releases it.
//!
//! Pure; never logs or stores what it is given, and never hands out a
//! secret (`Masker`'s `Debug` shows only how many it holds).

use std::borrow::Cow;
use std::sync::Arc;

/// What replaces a secret.
pub const MASK: &str = "****";

/// Secrets shorter than this also mask unrelated text: a run warns about them.
pub const SHORT_SECRET: usize = 4;

/// The secrets of a run.
#[derive(Clone)]
pub struct Masker {
    /// Longest first, so that at one position the longest secret wins.
    secrets: Vec<Vec<u8>>,
    longest: usize,
    /// Whether a byte starts some secret.
    first: [bool; 256],
}

impl Default for Masker {
    fn default() -> Masker {
        Masker::new([])
    }
}

impl std::fmt::Debug for Masker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Masker({} secrets)", self.secrets.len())
    }
}

impl Masker {
    /// Every non-empty value is masked, however short.
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Masker {
        let mut secrets: Vec<Vec<u8>> = secrets
            .into_iter()
            .filter(|s| !s.is_empty())
            .map(String::into_bytes)
            .collect();
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        let mut first = [false; 256];
        for s in &secrets {
            first[s[0] as usize] = true;
        }
        let longest = secrets.first().map_or(0, Vec::len);
        Masker {
            secrets,
            longest,
            first,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// The secrets it masks (for a supervisor that masks the same ones
    /// in another process: handed over in a private file, never in argv).
    pub fn secrets(&self) -> Vec<String> {
        self.secrets
            .iter()
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect()
    }

    /// `text` with every secret masked.
    pub fn mask<'a>(&self, text: &'a str) -> Cow<'a, str> {
        match self.mask_bytes(text.as_bytes()) {
            Cow::Borrowed(_) => Cow::Borrowed(text),
            Cow::Owned(b) => Cow::Owned(match String::from_utf8(b) {
                Ok(s) => s,
                Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
            }),
        }
    }

    pub fn mask_owned(&self, text: String) -> String {
        match self.mask(&text) {
            Cow::Borrowed(_) => text,
            Cow::Owned(s) => s,
        }
    }

    /// `bytes` with every secret masked.
    pub fn mask_bytes<'a>(&self, bytes: &'a [u8]) -> Cow<'a, [u8]> {
        if self.is_empty() || self.find(bytes).is_none() {
            return Cow::Borrowed(bytes);
        }
        let mut out = Vec::with_capacity(bytes.len());
        self.mask_into(bytes, &mut out, false);
        Cow::Owned(out)
    }

    /// A masker for one stream of chunks.
    pub fn stream(self: &Arc<Self>) -> MaskStream {
        MaskStream {
            masker: Arc::clone(self),
            held: Vec::new(),
        }
    }

    /// The earliest occurrence of a secret in `bytes` (the longest one there).
    fn find(&self, bytes: &[u8]) -> Option<(usize, usize)> {
        let mut best: Option<(usize, usize)> = None;
        for s in &self.secrets {
            let limit = best.map_or(bytes.len(), |(at, _)| (at + s.len()).min(bytes.len()));
            if let Some(at) = memchr::memmem::find(&bytes[..limit], s)
                && best.is_none_or(|(b, _)| at < b)
            {
                best = Some((at, s.len()));
            }
        }
        best
    }

    /// Where the longest end of `bytes` that could begin a secret starts
    /// (`bytes.len()` when none could).
    fn hold_from(&self, bytes: &[u8]) -> usize {
        let from = bytes.len().saturating_sub(self.longest.saturating_sub(1));
        (from..bytes.len())
            .find(|&p| {
                self.first[bytes[p] as usize] && {
                    let end = &bytes[p..];
                    self.secrets
                        .iter()
                        .any(|s| s.len() > end.len() && s.starts_with(end))
                }
            })
            .unwrap_or(bytes.len())
    }

    /// Mask `bytes` into `out`; with `hold`, return how many bytes at the
    /// end were held back (they could begin a secret).
    fn mask_into(&self, mut bytes: &[u8], out: &mut Vec<u8>, hold: bool) -> usize {
        loop {
            let held = if hold {
                self.hold_from(bytes)
            } else {
                bytes.len()
            };
            match self.find(bytes) {
                Some((at, len)) if at < held => {
                    out.extend_from_slice(&bytes[..at]);
                    out.extend_from_slice(MASK.as_bytes());
                    bytes = &bytes[at + len..];
                }
                _ => {
                    out.extend_from_slice(&bytes[..held]);
                    return bytes.len() - held;
                }
            }
        }
    }
}

/// Masks one stream that arrives in chunks (see the module doc).
#[derive(Debug)]
pub struct MaskStream {
    masker: Arc<Masker>,
    held: Vec<u8>,
}

impl MaskStream {
    /// Mask what came, appending to `out` all that can no longer be part of
    /// a secret.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        if self.masker.is_empty() {
            out.extend_from_slice(bytes);
            return;
        }
        let mut buf = std::mem::take(&mut self.held);
        buf.extend_from_slice(bytes);
        let held = self.masker.mask_into(&buf, out, true);
        buf.drain(..buf.len() - held);
        self.held = buf;
    }

    /// The stream ended: release what was held back.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let held = std::mem::take(&mut self.held);
        self.masker.mask_into(&held, out, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masker(secrets: &[&str]) -> Arc<Masker> {
        Arc::new(Masker::new(secrets.iter().map(|s| s.to_string())))
    }

    /// `text` masked as a stream cut into pieces of `n` bytes.
    fn streamed(m: &Arc<Masker>, text: &str, n: usize) -> String {
        let mut s = m.stream();
        let mut out = Vec::new();
        for chunk in text.as_bytes().chunks(n) {
            s.push(chunk, &mut out);
        }
        s.finish(&mut out);
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn every_length_is_masked_longest_first() {
        let m = masker(&["hunter22", "ab", "x", "hunter"]);
        assert_eq!(m.mask("pw=hunter22 ab hunter y"), "pw=**** **** **** y");
        assert_eq!(m.mask("x"), "****");
        assert!(matches!(m.mask("nothing here"), Cow::Borrowed(_)));
        assert!(Masker::new([String::new()]).is_empty());
    }

    #[test]
    fn a_secret_split_anywhere_is_masked_whole() {
        let m = masker(&["S3cr3tValue9"]);
        let text = "before S3cr3tValue9 middle S3cr3tValue9S3cr3tValue9 after S3cr3t";
        let want = "before **** middle ******** after S3cr3t";
        for n in 1..=text.len() {
            assert_eq!(streamed(&m, text, n), want, "chunks of {n}");
        }
    }

    #[test]
    fn a_held_prefix_that_turns_out_no_secret_comes_out_unchanged() {
        let m = masker(&["abcdef", "cd"]);
        for n in 1..=8 {
            assert_eq!(streamed(&m, "xxabcdef", n), "xx****", "chunks of {n}");
            assert_eq!(streamed(&m, "xxabcdxx", n), "xxab****xx", "chunks of {n}");
            assert_eq!(streamed(&m, "xxabc", n), "xxabc", "chunks of {n}");
        }
    }

    #[test]
    fn streams_without_secrets_pass_through() {
        let m = Arc::new(Masker::default());
        assert_eq!(streamed(&m, "anything at all", 3), "anything at all");
        assert_eq!(format!("{:?}", masker(&["pw"])), "Masker(1 secrets)");
    }
}
