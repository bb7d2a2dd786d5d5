//! Text made inert before it reaches a terminal: a step (or a plan's name,
//! ids and fields) must never be able to move the cursor, clear the screen,
//! set the title, write the clipboard (OSC 52) or otherwise talk to the
//! terminal through plandeck.
//!
//! Two renderings, each with or without SGR colour sequences kept:
//!
//! - `sanitize` (for a screen the TUI draws, one line at a time) drops every
//!   escape sequence (CSI, OSC, DCS, SOS, PM, APC and two-character escapes,
//!   in their 7-bit and 8-bit forms), every C0 and C1 control character and
//!   the bidirectional overrides. Tabs become spaces; a carriage return
//!   starts the line over (as a progress bar means it). A sequence cut off
//!   at the end of the line is dropped whole.
//! - `inert` (for what the command line prints, many lines at once) keeps
//!   newlines and tabs and shows every other control character as its
//!   visible picture (`ESC ] 0 ; t BEL` becomes `␛]0;t␇`), so a person sees
//!   that something was there and nothing reaches the terminal as a command.
//!
//! With `keep_sgr`, well-formed SGR sequences (`ESC [` digits, `;`, `:`, `m`)
//! pass unchanged: colour and nothing else. `sanitize_keep_sgr` instead
//! returns the SGR sequences beside the sanitised text, as numbers at
//! character offsets, for a pane that draws them as styles (the text itself
//! holds no escape). This module never writes anything anywhere.

const ESC: char = '\x1b';
const BEL: char = '\x07';
/// String terminator (8-bit form).
const ST: char = '\u{9c}';

/// How text is rendered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Keep SGR colour sequences.
    pub keep_sgr: bool,
    /// Show control characters as visible pictures instead of dropping them
    /// (newlines and tabs are kept).
    pub visible: bool,
}

/// `line` with every escape sequence and control character removed.
pub fn sanitize(line: &str) -> String {
    clean(line, Options::default())
}

/// Colours and attributes set by an SGR sequence (`ESC [ params m`) at a
/// character offset of the sanitised text.
pub type Sgr = Vec<(usize, Vec<u16>)>;

/// `line` sanitised as by `sanitize`, with the SGR sequences it held
/// returned beside the text (never in it): the caller may draw them as
/// styles. Nothing else survives.
pub fn sanitize_keep_sgr(line: &str) -> (String, Sgr) {
    let mut sgr = Vec::new();
    let text = strip(line, false, Some(&mut sgr));
    (text, sgr)
}

/// `line` with every escape sequence but SGR colour, and every control
/// character, removed (a log pane that shows a step's colours).
pub fn sanitize_sgr(line: &str) -> String {
    clean(
        line,
        Options {
            keep_sgr: true,
            visible: false,
        },
    )
}

/// `text` with every control character but newline and tab shown as a
/// visible picture: nothing in it acts on a terminal.
pub fn inert(text: &str) -> String {
    clean(
        text,
        Options {
            keep_sgr: false,
            visible: true,
        },
    )
}

/// As `inert`, keeping SGR colour sequences.
pub fn inert_sgr(text: &str) -> String {
    clean(
        text,
        Options {
            keep_sgr: true,
            visible: true,
        },
    )
}

/// Whether `text` would come out of `clean` unchanged in visible mode
/// without SGR (no control character, no bidirectional override): the
/// common case, checked without allocating.
pub fn is_inert(text: &str) -> bool {
    // Bytes that cannot start a control or bidi character: the common case.
    let plain =
        |b: &u8| (*b >= 0x20 && !matches!(b, 0x7f | 0xc2 | 0xe2)) || matches!(b, b'\n' | b'\t');
    text.as_bytes().iter().all(plain)
        || !text
            .chars()
            .any(|c| (c.is_control() && c != '\n' && c != '\t') || is_bidi(c))
}

/// JSON text with every control character and bidirectional override that
/// serde_json leaves raw (DEL, C1, U+202E ...) written as a `\\uXXXX` escape:
/// the same JSON value, inert on a terminal.
pub fn json_safe(json: String) -> String {
    // What needs escaping starts with one of these bytes (DEL; C1 is
    // U+0080..U+009F, 0xC2 0x80..0x9F in UTF-8; the bidi marks 0xE2 ...):
    // most lines have none and are passed on after one fast scan.
    if memchr::memchr3(0x7f, 0xc2, 0xe2, json.as_bytes()).is_none()
        || !json
            .chars()
            .any(|c| c.is_control() && c != '\n' || is_bidi(c))
    {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if c.is_control() && c != '\n' || is_bidi(c) {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// `text` rendered as `opts` says.
pub fn clean(text: &str, opts: Options) -> String {
    if opts.visible {
        return visible(text, opts.keep_sgr);
    }
    strip(text, opts.keep_sgr, None)
}

/// The dropping rendering: SGR kept in the text (`keep_sgr`) or collected
/// beside it (`collect`), everything else removed.
fn strip(text: &str, keep_sgr: bool, mut collect: Option<&mut Sgr>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut col = 0usize;
    let mut it = text.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            ESC => {
                if keep_sgr && let Some(sgr) = sgr_at(&it) {
                    out.push(ESC);
                    for _ in 0..sgr {
                        if let Some(c) = it.next() {
                            out.push(c);
                        }
                    }
                    continue;
                }
                match it.next_if(|c| !c.is_control()) {
                    Some('[') => {
                        let params = skip_csi(&mut it);
                        if let (Some(list), Some(p)) = (collect.as_deref_mut(), params) {
                            list.push((out.chars().count(), p));
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
                }
            }
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
                    if let Some(list) = collect.as_deref_mut() {
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

/// The visible rendering: controls as pictures, newlines and tabs kept.
fn visible(text: &str, keep_sgr: bool) -> String {
    if !keep_sgr && is_inert(text) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut it = text.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '\n' | '\t' => out.push(c),
            // A line ending written as CR LF is a line ending.
            '\r' if it.peek() == Some(&'\n') => {}
            ESC if keep_sgr && sgr_at(&it).is_some() => {
                out.push(ESC);
                let n = sgr_at(&it).unwrap_or(0);
                for _ in 0..n {
                    if let Some(c) = it.next() {
                        out.push(c);
                    }
                }
            }
            '\x7f' => out.push('\u{2421}'),
            c if (c as u32) < 0x20 => {
                out.push(char::from_u32(0x2400 + c as u32).unwrap_or('\u{fffd}'));
            }
            c if c.is_control() || is_bidi(c) => {
                out.push_str(&format!("<U+{:04X}>", c as u32));
            }
            c => out.push(c),
        }
    }
    out
}

/// After an ESC: the length of a well-formed SGR sequence that follows
/// (`[`, parameters, `m`), if one does.
fn sgr_at(it: &std::iter::Peekable<std::str::Chars<'_>>) -> Option<usize> {
    let mut ahead = it.clone();
    if ahead.next() != Some('[') {
        return None;
    }
    let mut n = 1;
    for c in ahead {
        n += 1;
        match c {
            'm' => return Some(n),
            '0'..='9' | ';' | ':' if n < 64 => {}
            _ => return None,
        }
    }
    None
}

/// Bidirectional embeddings, overrides and isolates: they reorder what follows.
fn is_bidi(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}')
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

/// Skip a string sequence up to ST (`ESC \\` or 0x9c), or BEL when `bel` ends it.
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
    use super::*;

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

    #[test]
    fn sgr_is_kept_when_asked_and_nothing_else() {
        assert_eq!(
            sanitize_sgr("\x1b[1;31mred\x1b[0m\x1b[2J\x1b]0;t\x07"),
            "\x1b[1;31mred\x1b[0m"
        );
        assert_eq!(sanitize_sgr("a\x1b[38:5:2mb"), "a\x1b[38:5:2mb");
        // A private or cut-off sequence is no SGR.
        assert_eq!(sanitize_sgr("a\x1b[?25mb\x1b[12"), "ab");
    }

    #[test]
    fn inert_shows_controls_as_pictures() {
        assert_eq!(inert("plain\ttext\n"), "plain\ttext\n");
        assert_eq!(inert("\x1b]0;TITLE\x07"), "\u{241b}]0;TITLE\u{2407}");
        assert_eq!(inert("a\x1b[2Jb"), "a\u{241b}[2Jb");
        assert_eq!(inert("a\r\nb\rc"), "a\nb\u{240d}c");
        assert_eq!(inert("a\u{9b}2J\u{202e}"), "a<U+009B>2J<U+202E>");
        assert_eq!(inert("\x7f"), "\u{2421}");
        assert_eq!(
            inert_sgr("\x1b[32mok\x1b[0m\x1b[H"),
            "\x1b[32mok\x1b[0m\u{241b}[H"
        );
        assert!(is_inert("ok\n\t") && !is_inert("\x1b") && !is_inert("\u{202e}"));
    }

    #[test]
    fn json_is_escaped_not_changed() {
        let v = serde_json::json!({ "line": "\x1b]0;t\x07 \u{9b}2J \u{202e} \x7f" });
        let text = json_safe(serde_json::to_string(&v).expect("serialises"));
        assert!(
            text.chars().all(|c| !c.is_control() && !is_bidi(c)),
            "{text}"
        );
        let back: serde_json::Value = serde_json::from_str(&text).expect("parses");
        assert_eq!(back, v);
    }

    #[test]
    fn inert_output_holds_no_control_but_newline_and_tab() {
        let nasty = "\x1b[2J\x1b[H\x1b]52;c;aGk=\x07\x1bP+q\x1b\\\u{9b}31m\x1b]0;t\x07\r\n";
        for out in [inert(&nasty.repeat(20)), inert_sgr(&nasty.repeat(20))] {
            assert!(out.chars().all(|c| !c.is_control() || c == '\n'), "{out:?}");
        }
    }
}
