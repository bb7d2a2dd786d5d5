//! Bounded capture of a stream: the first and last bytes of an attempt's
//! output (head + tail, with a truncation marker), and a line splitter for
//! live log lines. Memory stays bounded whatever a step prints.
//!
//! Pure byte handling; no I/O.

use std::borrow::Cow;
use std::collections::VecDeque;

/// Longest line delivered whole; longer lines are split.
pub const MAX_LINE: usize = 64 * 1024;

/// Keeps the head and the tail of a byte stream within `limit` bytes.
#[derive(Debug)]
pub struct HeadTail {
    head: Vec<u8>,
    tail: VecDeque<u8>,
    half: usize,
    total: u64,
}

impl HeadTail {
    pub fn new(limit: usize) -> HeadTail {
        let half = (limit / 2).max(1);
        HeadTail {
            head: Vec::new(),
            tail: VecDeque::new(),
            half,
            total: 0,
        }
    }

    pub fn push(&mut self, mut bytes: &[u8]) {
        self.total += bytes.len() as u64;
        if self.head.len() < self.half {
            let take = (self.half - self.head.len()).min(bytes.len());
            self.head.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
        }
        if bytes.len() >= self.half {
            self.tail.clear();
            self.tail.extend(&bytes[bytes.len() - self.half..]);
            return;
        }
        self.tail.extend(bytes);
        let excess = self.tail.len().saturating_sub(self.half);
        self.tail.drain(..excess);
    }

    /// Bytes seen in all.
    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn truncated(&self) -> bool {
        self.total > (self.head.len() + self.tail.len()) as u64
    }

    /// The kept text (lossy UTF-8), with a marker where bytes were dropped.
    pub fn text(&self) -> String {
        let mut out = String::from_utf8_lossy(&self.head).into_owned();
        if self.truncated() {
            let omitted = self.total - (self.head.len() + self.tail.len()) as u64;
            out.push_str(&format!("\n[… {omitted} bytes omitted …]\n"));
        }
        let (a, b) = self.tail.as_slices();
        let mut tail = Vec::with_capacity(a.len() + b.len());
        tail.extend_from_slice(a);
        tail.extend_from_slice(b);
        out.push_str(&String::from_utf8_lossy(&tail));
        out
    }
}

/// Splits a byte stream into lines (without the newline), keeping a partial
/// last line until more arrives or the stream ends.
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    /// Feed bytes; complete lines are passed to `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<String>) {
        let mut rest = bytes;
        while let Some(nl) = memchr::memchr(b'\n', rest) {
            let line = &rest[..nl];
            if self.partial.is_empty() {
                emit(line, out);
            } else {
                self.partial.extend_from_slice(line);
                let whole = std::mem::take(&mut self.partial);
                emit(&whole, out);
            }
            rest = &rest[nl + 1..];
        }
        self.partial.extend_from_slice(rest);
        while self.partial.len() >= MAX_LINE {
            let cut = utf8_cut(&self.partial, MAX_LINE);
            let head: Vec<u8> = self.partial.drain(..cut).collect();
            out.push(lossy(&head));
        }
    }

    /// The stream ended: flush the partial last line.
    pub fn finish(&mut self, out: &mut Vec<String>) {
        if !self.partial.is_empty() {
            let rest = std::mem::take(&mut self.partial);
            emit(&rest, out);
        }
    }
}

fn lossy(bytes: &[u8]) -> String {
    let b = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    match String::from_utf8_lossy(b) {
        Cow::Borrowed(s) => s.to_string(),
        Cow::Owned(s) => s,
    }
}

fn emit(line: &[u8], out: &mut Vec<String>) {
    let mut rest = line;
    while rest.len() > MAX_LINE {
        let cut = utf8_cut(rest, MAX_LINE);
        out.push(lossy(&rest[..cut]));
        rest = &rest[cut..];
    }
    out.push(lossy(rest));
}

/// A cut point at or below `max` that does not split a UTF-8 sequence (when the text is UTF-8).
fn utf8_cut(bytes: &[u8], max: usize) -> usize {
    let mut cut = max.min(bytes.len());
    let floor = cut.saturating_sub(3);
    while cut > floor && cut < bytes.len() && (bytes[cut] & 0b1100_0000) == 0b1000_0000 {
        cut -= 1;
    }
    if cut == floor && floor > 0 {
        max.min(bytes.len())
    } else {
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_tail_keeps_both_ends_with_marker() {
        let mut c = HeadTail::new(8);
        c.push(b"abcdefgh");
        c.push(b"ijklmnop");
        assert!(c.truncated());
        assert_eq!(c.text(), "abcd\n[… 8 bytes omitted …]\nmnop");
        let mut small = HeadTail::new(100);
        small.push(b"hello\n");
        assert_eq!(small.text(), "hello\n");
        assert!(!small.truncated());
    }

    #[test]
    fn head_tail_handles_huge_pushes() {
        let mut c = HeadTail::new(10);
        c.push(&[b'x'; 1000]);
        c.push(b"12345");
        assert_eq!(c.total(), 1005);
        assert!(
            c.text()
                .starts_with("xxxxx\n[… 995 bytes omitted …]\n12345")
        );
    }

    #[test]
    fn splitter_keeps_partial_lines_and_splits_long_ones() {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        s.push(b"one\ntw", &mut out);
        s.push(b"o\r\nthree", &mut out);
        assert_eq!(out, vec!["one", "two"]);
        s.finish(&mut out);
        assert_eq!(out, vec!["one", "two", "three"]);
        let mut long = Vec::new();
        s.push(&vec![b'a'; MAX_LINE * 2 + 5], &mut long);
        s.finish(&mut long);
        assert_eq!(
            long.iter().map(String::len).collect::<Vec<_>>(),
            vec![MAX_LINE, MAX_LINE, 5]
        );
    }

    #[test]
    fn invalid_utf8_is_shown_lossily() {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        s.push(b"a\xffb\n", &mut out);
        assert_eq!(out, vec!["a\u{fffd}b"]);
    }
}
