//! File locks held by running steps: two steps whose `files` overlap (the
//! same path, or one inside the other) never run at once.
//!
//! Pure bookkeeping over normalised paths; O(path depth) per check.

use std::collections::HashMap;

/// Paths held by running steps, and every proper ancestor of them.
#[derive(Debug, Default)]
pub struct FileLocks {
    held: HashMap<String, usize>,
    inside: HashMap<String, usize>,
}

fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/')
        .map(move |(i, _)| if i == 0 { "/" } else { &path[..i] })
}

impl FileLocks {
    /// Whether any of `paths` overlaps a held path.
    pub fn conflicts(&self, paths: &[String]) -> bool {
        paths.iter().any(|p| {
            self.held.contains_key(p)
                || self.inside.contains_key(p)
                || p == "."
                || self.held.contains_key(".")
                || ancestors(p).any(|a| self.held.contains_key(a))
        })
    }

    pub fn acquire(&mut self, paths: &[String]) {
        for p in paths {
            *self.held.entry(p.clone()).or_default() += 1;
            for a in ancestors(p) {
                *self.inside.entry(a.to_string()).or_default() += 1;
            }
        }
    }

    pub fn release(&mut self, paths: &[String]) {
        fn dec(map: &mut HashMap<String, usize>, key: &str) {
            if let Some(n) = map.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    map.remove(key);
                }
            }
        }
        for p in paths {
            dec(&mut self.held, p);
            for a in ancestors(p) {
                dec(&mut self.inside, a);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn overlapping_paths_conflict_both_ways() {
        let mut l = FileLocks::default();
        l.acquire(&v(&["src/a"]));
        assert!(l.conflicts(&v(&["src/a"])));
        assert!(l.conflicts(&v(&["src"])));
        assert!(l.conflicts(&v(&["src/a/b"])));
        assert!(!l.conflicts(&v(&["src/ab"])));
        assert!(!l.conflicts(&v(&["docs"])));
        l.release(&v(&["src/a"]));
        assert!(l.is_empty());
        assert!(!l.conflicts(&v(&["src"])));
    }

    #[test]
    fn absolute_paths_nest_under_root() {
        let mut l = FileLocks::default();
        l.acquire(&v(&["/etc/apt/sources.list"]));
        assert!(l.conflicts(&v(&["/etc"])));
        assert!(l.conflicts(&v(&["/"])));
    }
}
