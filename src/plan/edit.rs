//! An edited plan against the one a run is driving: may the edit apply to
//! that run in place (fix-then-retry), and which step definitions changed,
//! as a line diff a person approves before the run takes the new version.
//!
//! An edit applies in place only when the run's shape stays: the same
//! steps in the same order, the same dependencies, fallbacks, pools, files,
//! outputs, gates, inputs and secrets. Commands, arguments, environment,
//! timeouts, retries, conditions and labels may change: steps that already
//! succeeded keep their results, the rest run from the new definitions.
//!
//! Pure: no files, no store, no processes. It never decides to apply an
//! edit; it only says whether one could be, and what it changes.

use super::ValidPlan;

/// One part of the plan whose definition changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The step id, or `globals` / `remediation` for plan-wide parts.
    pub part: String,
    /// The diff of its JSON definition: lines starting `- `, `+ ` or `  `.
    pub lines: Vec<String>,
}

/// Lines of a definition compared at most (longer ones are shown whole as
/// removed and added).
const MAX_DIFF_LINES: usize = 400;

/// What changed from `old` to `new`, when `new` can replace `old` in a
/// running or reopened run; otherwise why it cannot, in words.
pub fn compare(old: &ValidPlan, new: &ValidPlan) -> Result<Vec<Change>, String> {
    let old_ids: Vec<&str> = (0..old.len()).map(|i| old.id(i)).collect();
    let new_ids: Vec<&str> = (0..new.len()).map(|i| new.id(i)).collect();
    if old_ids != new_ids {
        let added: Vec<&str> = new_ids
            .iter()
            .filter(|id| !old_ids.contains(id))
            .copied()
            .collect();
        let removed: Vec<&str> = old_ids
            .iter()
            .filter(|id| !new_ids.contains(id))
            .copied()
            .collect();
        let what = match (added.is_empty(), removed.is_empty()) {
            (false, false) => format!(
                "adds {} and removes {}",
                added.join(", "),
                removed.join(", ")
            ),
            (false, true) => format!("adds {}", added.join(", ")),
            (true, false) => format!("removes {}", removed.join(", ")),
            (true, true) => "reorders the steps".to_string(),
        };
        return Err(format!("the edit {what}"));
    }
    for (i, id) in old_ids.iter().enumerate() {
        let (a, b) = (&old.plan.steps[i], &new.plan.steps[i]);
        let mut deps_a = old.deps[i].clone();
        let mut deps_b = new.deps[i].clone();
        deps_a.sort_unstable();
        deps_b.sort_unstable();
        let differs = [
            ("dependencies", deps_a != deps_b),
            (
                "fallback",
                a.fallback() != b.fallback() || old.fallback_only[i] != new.fallback_only[i],
            ),
            ("resources", a.resources != b.resources),
            ("files", a.files != b.files),
            ("outputs", a.outputs != b.outputs),
            ("approval", a.approval != b.approval),
            ("restart_required", a.restart_required != b.restart_required),
        ];
        if let Some((what, _)) = differs.iter().find(|(_, d)| *d) {
            return Err(format!("the edit changes the {what} of step {id}"));
        }
    }
    if old.plan.resources != new.plan.resources {
        return Err("the edit changes the plan's resource pools".into());
    }
    if old.plan.inputs != new.plan.inputs {
        return Err("the edit changes the plan's inputs".into());
    }
    if old.plan.globals.secret_env != new.plan.globals.secret_env {
        return Err("the edit changes globals.secret_env".into());
    }
    let mut changes = Vec::new();
    if old.plan.globals != new.plan.globals {
        changes.push(Change {
            part: "globals".into(),
            lines: diff(&pretty(&old.plan.globals), &pretty(&new.plan.globals)),
        });
    }
    for (id, (a, b)) in old_ids
        .iter()
        .zip(old.plan.steps.iter().zip(&new.plan.steps))
    {
        if a != b {
            changes.push(Change {
                part: id.to_string(),
                lines: diff(&pretty(a), &pretty(b)),
            });
        }
    }
    if old.plan.remediation != new.plan.remediation {
        changes.push(Change {
            part: "remediation".into(),
            lines: diff(
                &pretty(&old.plan.remediation),
                &pretty(&new.plan.remediation),
            ),
        });
    }
    Ok(changes)
}

/// Pretty JSON of a definition (empty when it cannot be written).
fn pretty<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// A line diff of `a` and `b` (longest common subsequence): unchanged lines
/// start with two spaces, removed ones with `- `, added ones with `+ `.
pub fn diff(a: &str, b: &str) -> Vec<String> {
    let a: Vec<&str> = a.lines().collect();
    let b: Vec<&str> = b.lines().collect();
    if a.len() > MAX_DIFF_LINES || b.len() > MAX_DIFF_LINES {
        return a
            .iter()
            .map(|l| format!("- {l}"))
            .chain(b.iter().map(|l| format!("+ {l}")))
            .collect();
    }
    // lcs[i][j]: length of the longest common subsequence of a[i..] and b[j..].
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push(format!("  {}", a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push(format!("- {}", a[i]));
            i += 1;
        } else {
            out.push(format!("+ {}", b[j]));
            j += 1;
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn plan(steps: &str) -> ValidPlan {
        crate::plan::from_text("p.json", &format!(r#"{{"name":"p","steps":[{steps}]}}"#)).unwrap()
    }

    #[test]
    fn a_changed_command_is_a_change_with_its_diff() {
        let old = plan(r#"{"id":"a","run":"exit 3"},{"id":"b","run":"true"}"#);
        let new = plan(r#"{"id":"a","run":"echo fixed"},{"id":"b","run":"true"}"#);
        let changes = compare(&old, &new).unwrap();
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].part, "a");
        assert!(
            changes[0]
                .lines
                .contains(&r#"-   "run": "exit 3""#.to_string())
        );
        assert!(
            changes[0]
                .lines
                .contains(&r#"+   "run": "echo fixed""#.to_string())
        );
        assert!(changes[0].lines.contains(&r#"    "id": "a","#.to_string()));
        assert!(compare(&old, &old).unwrap().is_empty());
    }

    #[test]
    fn a_changed_shape_is_refused_with_what_changed() {
        let old = plan(r#"{"id":"a","run":"true"},{"id":"b","run":"true"}"#);
        let added =
            plan(r#"{"id":"a","run":"true"},{"id":"b","run":"true"},{"id":"c","run":"true"}"#);
        assert_eq!(compare(&old, &added).unwrap_err(), "the edit adds c");
        let reordered = plan(r#"{"id":"b","run":"true"},{"id":"a","run":"true"}"#);
        assert!(compare(&old, &reordered).unwrap_err().contains("reorders"));
        let deps = plan(r#"{"id":"a","run":"true"},{"id":"b","run":"true","depends_on":[]}"#);
        assert_eq!(
            compare(&old, &deps).unwrap_err(),
            "the edit changes the dependencies of step b"
        );
    }

    #[test]
    fn diff_marks_removed_and_added_lines() {
        assert_eq!(diff("x\ny\nz", "x\nY\nz"), vec!["  x", "- y", "+ Y", "  z"]);
        assert_eq!(diff("", "a"), vec!["+ a"]);
        assert_eq!(diff("a", ""), vec!["- a"]);
    }
}
