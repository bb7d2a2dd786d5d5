//! Pure decisions of the failure policy: is a failure retryable, how long to
//! back off, and what a finished dependency means for its dependents.
//!
//! No clock, no randomness source of its own (the caller passes one), no I/O.

use std::time::Duration;

use crate::plan::{Backoff, RetryOn, Step};
use crate::remediation::ErrorClass;

/// Whether a failure of `class` (exit code `exit`, timed out or not) may be retried under `step.retry_on`.
pub fn retryable(step: &Step, class: ErrorClass, exit: Option<i32>, timed_out: bool) -> bool {
    match &step.retry_on {
        None => class != ErrorClass::InvalidInput,
        Some(list) => list.iter().any(|r| match r {
            RetryOn::Timeout => timed_out,
            RetryOn::Exit(code) => exit == Some(*code),
            RetryOn::Class(c) => *c == class,
        }),
    }
}

/// The wait before retry number `retry` (1 for the first retry): exponential,
/// capped, with full jitter (`unit` is a uniform random number in [0, 1)).
pub fn backoff_delay(backoff: &Backoff, retry: u32, unit: f64) -> Duration {
    let exp = backoff
        .multiplier
        .powi(retry.saturating_sub(1).min(64) as i32);
    let cap = (backoff.initial_sec * exp).min(backoff.max_sec).max(0.0);
    let secs = if backoff.jitter {
        cap * unit.clamp(0.0, 1.0)
    } else {
        cap
    };
    seconds(secs)
}

/// Seconds as a `Duration`, saturating: NaN and negatives are zero, anything
/// too large for a `Duration` is `Duration::MAX`. Never panics.
pub fn seconds(secs: f64) -> Duration {
    if secs.is_nan() || secs <= 0.0 {
        Duration::ZERO
    } else {
        Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(retry_on: Option<Vec<RetryOn>>) -> Step {
        Step {
            retry_on,
            ..Step::default()
        }
    }

    #[test]
    fn default_retries_everything_but_invalid_input() {
        let s = step(None);
        assert!(retryable(&s, ErrorClass::Network, Some(1), false));
        assert!(!retryable(&s, ErrorClass::InvalidInput, Some(2), false));
    }

    #[test]
    fn retry_on_lists_exact_causes() {
        let s = step(Some(vec![
            RetryOn::Timeout,
            RetryOn::Exit(75),
            RetryOn::Class(ErrorClass::Network),
        ]));
        assert!(retryable(&s, ErrorClass::Timeout, None, true));
        assert!(retryable(&s, ErrorClass::ExitCode, Some(75), false));
        assert!(retryable(&s, ErrorClass::Network, Some(6), false));
        assert!(!retryable(&s, ErrorClass::ExitCode, Some(1), false));
    }

    #[test]
    fn absurd_backoffs_saturate_instead_of_panicking() {
        for (initial_sec, max_sec, multiplier) in [
            (1e308, 1e308, 1e308),
            (f64::MAX, f64::INFINITY, 2.0),
            (1.0, f64::INFINITY, f64::INFINITY),
            (f64::NAN, f64::NAN, f64::NAN),
            (-5.0, -1.0, 0.5),
        ] {
            for jitter in [false, true] {
                let b = Backoff {
                    initial_sec,
                    max_sec,
                    multiplier,
                    jitter,
                };
                for n in [0, 1, 2, 64, u32::MAX] {
                    let d = backoff_delay(&b, n, 0.999);
                    assert!(d <= Duration::MAX);
                }
            }
        }
        let huge = Backoff {
            initial_sec: 1e308,
            max_sec: 1e308,
            multiplier: 2.0,
            jitter: false,
        };
        assert_eq!(backoff_delay(&huge, 1, 0.5), Duration::MAX);
        assert_eq!(seconds(f64::NAN), Duration::ZERO);
        assert_eq!(seconds(-1.0), Duration::ZERO);
        assert_eq!(seconds(1.5), Duration::from_millis(1500));
    }

    #[test]
    fn backoff_grows_caps_and_jitters_within_bounds() {
        let b = Backoff {
            initial_sec: 1.0,
            max_sec: 5.0,
            multiplier: 2.0,
            jitter: false,
        };
        let secs: Vec<f64> = (1..=5)
            .map(|n| backoff_delay(&b, n, 0.5).as_secs_f64())
            .collect();
        assert_eq!(secs, vec![1.0, 2.0, 4.0, 5.0, 5.0]);
        let j = Backoff { jitter: true, ..b };
        for n in 1..6 {
            for u in [0.0, 0.3, 0.999] {
                let d = backoff_delay(&j, n, u).as_secs_f64();
                assert!((0.0..=5.0).contains(&d));
            }
        }
        assert_eq!(backoff_delay(&j, 3, 0.5).as_secs_f64(), 2.0);
    }
}
