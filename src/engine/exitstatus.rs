//! How a step ended, told from what a shell or `waitpid` says of it: a raw
//! wait status, a shell's status (`128+N` for a death by signal N, which
//! an `exit 128+N` also gives), and the small perl parent that records a
//! step's raw wait status where a host has perl, so that the two are told
//! apart on hosts and clusters plandeck does not wait on itself.
//!
//! Pure data and text: must never run anything.

/// Where the host has perl, the step's parent (the leader of its group):
/// `perl -e RAW_STATUS FILE PROGRAM ARGS...` runs the step with INT and
/// QUIT at their defaults (a shell's background job starts with them
/// ignored), ignores the stop signals itself, writes the step's raw wait
/// status to FILE (temporary file and rename) and ends as a shell would
/// report the step (`128+N` for signal N).
pub const RAW_STATUS: &str = r#"my $f = shift; my $c = fork; exit 125 unless defined $c;
if ($c == 0) { $SIG{$_} = "DEFAULT" for qw(INT QUIT); exec { $ARGV[0] } @ARGV; print STDERR "$ARGV[0]: $!\n"; exit 127 }
$SIG{$_} = "IGNORE" for qw(TERM INT HUP QUIT);
waitpid($c, 0); my $r = $?;
if (open(my $o, ">", "$f.t")) { print $o "$r\n"; close($o); rename("$f.t", $f) }
exit(($r & 127) ? 128 + ($r & 127) : ($r >> 8));
"#;

/// Signals whose default action does not end a process (CHLD, CONT, STOP,
/// TSTP, TTIN, TTOU, URG, WINCH): `128+N` for them is an exit code.
const NOT_DEADLY: [i32; 8] = [17, 18, 19, 20, 21, 22, 23, 28];

/// A raw wait status as (exit code, signal); `None` for one that is
/// neither (a stop).
pub fn raw(raw: i32) -> Option<(Option<i32>, Option<i32>)> {
    match raw & 0x7f {
        0 => Some((Some((raw >> 8) & 0xff), None)),
        0x7f => None,
        n => Some((None, Some(n))),
    }
}

/// Whether a shell's status `code` may be a death by a signal (`128+N`)
/// as well as an exit with that number.
pub fn ambiguous(code: i32) -> bool {
    matches!(code - 128, n @ 1..=64 if !NOT_DEADLY.contains(&n))
}

/// A shell's status as (exit code, signal) where nothing better is known:
/// an `ambiguous` one is taken for the signal (the shell's convention).
pub fn shell(code: i32) -> (Option<i32>, Option<i32>) {
    if ambiguous(code) {
        (None, Some(code - 128))
    } else {
        (Some(code), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_statuses_above_128_are_signals_that_can_end_a_process() {
        assert_eq!(shell(0), (Some(0), None));
        assert_eq!(shell(7), (Some(7), None));
        assert_eq!(shell(137), (None, Some(9)));
        assert_eq!(shell(143), (None, Some(15)));
        // 128 + SIGTSTP: a stop, never a death.
        assert_eq!(shell(148), (Some(148), None));
        assert_eq!(shell(255), (Some(255), None));
        assert!(ambiguous(130) && !ambiguous(128) && !ambiguous(193));
    }

    #[test]
    fn raw_statuses() {
        assert_eq!(raw(0), Some((Some(0), None)));
        assert_eq!(raw(130 << 8), Some((Some(130), None)));
        assert_eq!(raw(2), Some((None, Some(2))));
        assert_eq!(raw(9 | 0x80), Some((None, Some(9))), "with a core dump");
        assert_eq!(raw(0x137f), None, "stopped");
    }
}
