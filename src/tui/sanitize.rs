//! Step output made inert before it is drawn: a step must never be able to
//! move the cursor, clear the screen, set the title, write the clipboard
//! (OSC 52) or otherwise talk to the terminal through its logs.
//!
//! `sanitize` drops every escape sequence (CSI, OSC, DCS, SOS, PM, APC and
//! two-character escapes, in their 7-bit and 8-bit forms), every C0 and C1
//! control character and the bidirectional overrides. SGR colours are
//! dropped too; `sanitize_keep_sgr` returns them beside the text, as
//! numbers, for the log pane to draw as styles. Tabs become spaces; a carriage return starts the line over
//! (as a progress bar means it). A sequence cut off at the end of the line
//! is dropped whole.

const ESC: char = '\x1b';
const BEL: char = '\x07';
/// String terminator (8-bit form).
const ST: char = '\u{9c}';

/// `line` with every escape sequence and control character removed.
pub fn sanitize(line: &str) -> String {
    sanitize_with(line, None)
}

/// Colours and attributes set by an SGR sequence (`ESC [ params m`) at a
/// character offset of the sanitised text.
pub type Sgr = Vec<(usize, Vec<u16>)>;

/// `line` sanitised as by `sanitize`, with the SGR sequences it held
/// returned beside the text (never in it): the caller may draw them as
/// styles. Nothing else survives.
pub fn sanitize_keep_sgr(line: &str) -> (String, Sgr) {
    let mut sgr = Vec::new();
    let text = sanitize_with(line, Some(&mut sgr));
    (text, sgr)
}

fn sanitize_with(line: &str, mut sgr: Option<&mut Sgr>) -> String {
    let mut out = String::with_capacity(line.len());
    let mut col = 0usize;
    let mut it = line.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            ESC => match it.next_if(|c| !c.is_control()) {
                Some('[') => {
                    let params = skip_csi(&mut it);
                    if let (Some(list), Some(p)) = (sgr.as_deref_mut(), params) {
                        list.push((col_chars(&out), p));
                    }
                }
                Some(']') => skip_string(&mut it, true),
                Some('P' | 'X' | '^' | '_') => skip_string(&mut it, false),
                Some(c) if ('\x20'..='\x2f').contains(&c) => {
                    // Intermediates, then one final byte (e.g. `ESC ( B`).
                    while it.next_if(|c| ('\x20'..='\x2f').contains(c)).is_some() {}
                    it.next();
                }
                // A two-character escape (`ESC 7`, `ESC c` ...), or a lone ESC.
                _ => {}
            },
            '\u{9b}' => {
                skip_csi(&mut it);
            }
            '\u{9d}' => skip_string(&mut it, true),
            '\u{90}' | '\u{98}' | '\u{9e}' | '\u{9f}' => skip_string(&mut it, false),
            '\t' => {
                let n = 8 - col % 8;
                out.extend(std::iter::repeat_n(' ', n));
                col += n;
            }
            '\r' => {
                if it.peek().is_some() {
                    out.clear();
                    col = 0;
                    if let Some(list) = sgr.as_deref_mut() {
                        list.clear();
                    }
                }
            }
            c if c.is_control() || is_bidi(c) => {}
            c => {
                out.push(c);
                col += 1;
            }
        }
    }
    out
}

/// Bidirectional embeddings, overrides and isolates: they reorder what follows.
fn is_bidi(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}')
}

fn col_chars(s: &str) -> usize {
    s.chars().count()
}

/// Skip a control sequence's parameters, intermediates and final byte;
/// an SGR sequence (digits and `;` only, final `m`) returns its numbers.
fn skip_csi(it: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<Vec<u16>> {
    let mut params = String::new();
    for c in it.by_ref() {
        if ('\x40'..='\x7e').contains(&c) {
            if c == 'm' && params.chars().all(|p| p.is_ascii_digit() || p == ';') {
                return Some(
                    params
                        .split(';')
                        .map(|n| n.parse::<u16>().unwrap_or(0))
                        .collect(),
                );
            }
            return None;
        }
        if !('\x20'..='\x3f').contains(&c) {
            // Not a well-formed sequence: stop here, dropping what was read.
            return None;
        }
        if params.len() < 64 {
            params.push(c);
        }
    }
    None
}

/// Skip a string sequence up to ST (`ESC \` or 0x9c), or BEL when `bel` ends it.
fn skip_string(it: &mut std::iter::Peekable<std::str::Chars<'_>>, bel: bool) {
    while let Some(c) = it.next() {
        match c {
            ST => return,
            BEL if bel => return,
            ESC => {
                it.next_if_eq(&'\\');
                return;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{sanitize, sanitize_keep_sgr};

    #[test]
    fn plain_text_is_kept() {
        assert_eq!(sanitize("hello, wörld ✓"), "hello, wörld ✓");
        assert_eq!(sanitize(""), "");
    }

    #[test]
    fn clear_screen_and_cursor_moves_are_dropped() {
        assert_eq!(sanitize("a\x1b[2Jb\x1b[Hc"), "abc");
        assert_eq!(sanitize("\x1b[10;20Hx\x1b[3A\x1b[2K\x1b[?1049h"), "x");
        assert_eq!(sanitize("\x1b[?25l\x1b[1;31mred\x1b[0m"), "red");
    }

    #[test]
    fn osc_52_clipboard_and_titles_are_dropped() {
        assert_eq!(sanitize("x\x1b]52;c;aGk=\x07y"), "xy");
        assert_eq!(sanitize("\x1b]0;owned title\x1b\\after"), "after");
        assert_eq!(sanitize("\x1b]2;title\u{9c}z"), "z");
        assert_eq!(sanitize("\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\"), "link");
    }

    #[test]
    fn dcs_and_other_strings_are_dropped() {
        assert_eq!(sanitize("a\x1bP1$r0m\x1b\\b"), "ab");
        assert_eq!(
            sanitize("a\x1b_apc\x1b\\b\x1b^pm\x1b\\c\x1bXsos\x1b\\d"),
            "abcd"
        );
    }

    #[test]
    fn lone_and_two_character_escapes_are_dropped() {
        assert_eq!(sanitize("a\x1b"), "a");
        assert_eq!(sanitize("a\x1b7b\x1b8c\x1bcd"), "abcd");
        assert_eq!(sanitize("a\x1b(Bb"), "ab");
        assert_eq!(sanitize("a\x1b\x1b[2Jb"), "ab");
    }

    #[test]
    fn c0_and_c1_controls_are_dropped() {
        assert_eq!(sanitize("a\x07b\x08c\x00d\x7fe\x0ef"), "abcdef");
        assert_eq!(sanitize("a\u{9b}2Jb"), "ab");
        assert_eq!(sanitize("a\u{9d}0;t\u{9c}b"), "ab");
        assert_eq!(sanitize("a\u{90}q\u{9c}b\u{85}c\u{8d}d"), "abcd");
    }

    #[test]
    fn partial_sequences_at_the_end_are_dropped() {
        assert_eq!(sanitize("ok\x1b["), "ok");
        assert_eq!(sanitize("ok\x1b[12;3"), "ok");
        assert_eq!(sanitize("ok\x1b]52;c;aGk="), "ok");
        assert_eq!(sanitize("ok\x1bP1$r"), "ok");
        assert_eq!(sanitize("ok\u{9b}1"), "ok");
    }

    #[test]
    fn tabs_carriage_returns_and_bidi_overrides() {
        assert_eq!(sanitize("a\tb"), "a       b");
        assert_eq!(sanitize("10%\r50%\r100%"), "100%");
        assert_eq!(sanitize("done\r"), "done");
        assert_eq!(sanitize("a\u{202e}cba\u{2066}"), "acba");
    }

    #[test]
    fn sgr_is_kept_beside_the_text_and_nothing_else() {
        let (text, sgr) = sanitize_keep_sgr("a\x1b[1;31mred\x1b[0m \x1b[2Jb\x1b]52;c;x\x07");
        assert_eq!(text, "ared b");
        assert_eq!(sgr, vec![(1, vec![1, 31]), (4, vec![0])]);
        let (text, sgr) = sanitize_keep_sgr("\x1b[32m10%\r\x1b[33m100%");
        assert_eq!((text.as_str(), sgr), ("100%", vec![(0, vec![33])]));
        assert_eq!(sanitize_keep_sgr("\x1b[m").1, vec![(0, vec![0])]);
    }

    #[test]
    fn nothing_escapes_whatever_the_input() {
        let nasty = "\x1b[2J\x1b[H\x1b]52;c;aGk=\x07\x1bP+q\x1b\\\u{9b}31m\x1b]0;t\x07";
        let out = sanitize(&nasty.repeat(50));
        assert!(out.chars().all(|c| !c.is_control()), "{out:?}");
    }
}
