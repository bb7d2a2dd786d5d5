//! Render a validated plan's graph as text, Graphviz `dot` or Mermaid.
//!
//! Pure string building; the caller decides where it goes.

use std::fmt::Write;

use super::Schedule;
use crate::plan::ValidPlan;

/// Output formats of `plandeck graph`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GraphFormat {
    Text,
    Dot,
    Mermaid,
}

/// Render the graph in `format`.
pub fn render(plan: &ValidPlan, schedule: &Schedule, format: GraphFormat) -> String {
    match format {
        GraphFormat::Text => text(plan, schedule),
        GraphFormat::Dot => dot(plan),
        GraphFormat::Mermaid => mermaid(plan),
    }
}

fn is_implicit(plan: &ValidPlan, step: usize, dep: usize) -> bool {
    plan.plan.steps[step].depends_on.is_none() && plan.is_implicit(step, dep)
}

/// Each step's fan-out group (an index into `plan.groups`), if it is an instance.
fn group_of(plan: &ValidPlan) -> Vec<Option<usize>> {
    let mut of = vec![None; plan.len()];
    for (g, group) in plan.groups.iter().enumerate() {
        for &i in &group.instances {
            of[i] = Some(g);
        }
    }
    of
}

/// Ids for a list of steps, the instances of one fan-out step drawn as one
/// entry: `install@{web1,web2}`; all of them with the group's own id.
fn compact(
    plan: &ValidPlan,
    of: &[Option<usize>],
    steps: &[usize],
    label: impl Fn(usize) -> String,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut k = 0;
    while k < steps.len() {
        let i = steps[k];
        let Some(g) = of[i] else {
            out.push(label(i));
            k += 1;
            continue;
        };
        let run = steps[k..].iter().take_while(|&&j| of[j] == Some(g)).count();
        let group = &plan.groups[g];
        if run == 1 {
            out.push(label(i));
        } else {
            let hosts: Vec<&str> = steps[k..k + run]
                .iter()
                .filter_map(|&j| plan.host(j))
                .collect();
            let all = run == group.instances.len();
            let what = if all {
                format!(" ({run} hosts)")
            } else {
                String::new()
            };
            out.push(format!(
                "{}@{{{}}}{what}{}",
                group.id,
                hosts.join(","),
                label(i).strip_prefix(plan.id(i)).unwrap_or("")
            ));
        }
        k += run;
    }
    out
}

fn text(plan: &ValidPlan, schedule: &Schedule) -> String {
    let of = group_of(plan);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: {} steps in {} waves",
        plan.plan.name,
        plan.len(),
        schedule.waves.len()
    );
    for (w, steps) in schedule.waves.iter().enumerate() {
        let _ = writeln!(out, "wave {}", w + 1);
        // One line per step; the instances of a fan-out step with the same
        // dependencies share one.
        let mut k = 0;
        while k < steps.len() {
            let i = steps[k];
            let same = steps[k..]
                .iter()
                .take_while(|&&j| of[i].is_some() && of[j] == of[i] && plan.deps[j] == plan.deps[i])
                .count()
                .max(1);
            let step = &plan.plan.steps[i];
            let mut line = format!(
                "  {}",
                compact(plan, &of, &steps[k..k + same], |j| plan.id(j).to_string()).join(", ")
            );
            k += same;
            let deps = compact(plan, &of, &plan.deps[i], |d| {
                let id = plan.id(d);
                if is_implicit(plan, i, d) {
                    format!("{id} (implicit)")
                } else {
                    id.to_string()
                }
            });
            if !deps.is_empty() {
                let _ = write!(line, "  <- {}", deps.join(", "));
            }
            if let Some(fb) = step.fallback() {
                let _ = write!(line, "  [fallback: {fb}]");
            }
            if plan.fallback_only[i] {
                line.push_str("  [runs only as a fallback]");
            }
            let _ = writeln!(out, "{line}");
        }
    }
    out
}

fn dot_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// How dot and mermaid draw a step: the instances of a fan-out step (which
/// share their dependencies) are one node, labelled with their hosts.
struct Nodes<'a> {
    plan: &'a ValidPlan,
    of: Vec<Option<usize>>,
}

impl<'a> Nodes<'a> {
    fn new(plan: &'a ValidPlan) -> Self {
        Nodes {
            plan,
            of: group_of(plan),
        }
    }
    /// The step that stands for step `i`'s node (a fan-out's first instance).
    fn rep(&self, i: usize) -> usize {
        match self.of[i] {
            Some(g) => self.plan.groups[g].instances[0],
            None => i,
        }
    }
    /// The node's id (the step's id; a fan-out step's own id).
    fn id(&self, i: usize) -> &'a str {
        match self.of[i] {
            Some(g) => &self.plan.groups[g].id,
            None => self.plan.id(i),
        }
    }
    fn label(&self, i: usize) -> String {
        let s = &self.plan.plan.steps[i];
        match self.of[i] {
            Some(g) => {
                let group = &self.plan.groups[g];
                let name = s.name.as_deref().unwrap_or(&group.id);
                format!("{name} @ {}", group.hosts.join(", "))
            }
            None => {
                let name = s.name.as_deref().unwrap_or(s.id()).to_string();
                match &s.host {
                    Some(h) => format!("{name} @ {h}"),
                    None => name,
                }
            }
        }
    }
    /// The nodes, in plan order.
    fn all(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.plan.len()).filter(|&i| self.rep(i) == i)
    }
    /// The edges between nodes (dependency, dependent, implicit), each once.
    fn edges(&self) -> Vec<(usize, usize, bool)> {
        let mut seen = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        for i in self.all() {
            for &d in &self.plan.deps[i] {
                let d = self.rep(d);
                if seen.insert((d, i)) {
                    out.push((d, i, is_implicit(self.plan, i, d)));
                }
            }
        }
        out
    }
}

fn dot(plan: &ValidPlan) -> String {
    let nodes = Nodes::new(plan);
    let mut out = String::new();
    let _ = writeln!(out, "digraph {} {{", dot_quote(&plan.plan.name));
    let _ = writeln!(out, "  rankdir=LR;\n  node [shape=box, style=rounded];");
    let mut lanes: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
    for i in nodes.all() {
        if let Some(lane) = &plan.plan.steps[i].lane {
            lanes.entry(lane).or_default().push(i);
        }
    }
    for (n, (lane, members)) in lanes.iter().enumerate() {
        let _ = writeln!(
            out,
            "  subgraph cluster_{n} {{\n    label={};",
            dot_quote(lane)
        );
        for &i in members {
            let _ = writeln!(out, "    {};", dot_quote(nodes.id(i)));
        }
        out.push_str("  }\n");
    }
    for i in nodes.all() {
        let style = if plan.fallback_only[i] {
            ", style=\"rounded,dashed\""
        } else if nodes.of[i].is_some() {
            ", peripheries=2"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  {} [label={}{style}];",
            dot_quote(nodes.id(i)),
            dot_quote(&nodes.label(i))
        );
    }
    for (d, i, implicit) in nodes.edges() {
        let attrs = if implicit { " [style=dotted]" } else { "" };
        let _ = writeln!(
            out,
            "  {} -> {}{attrs};",
            dot_quote(nodes.id(d)),
            dot_quote(nodes.id(i))
        );
    }
    for i in nodes.all() {
        if let Some(fb) = plan.plan.steps[i].fallback() {
            let _ = writeln!(
                out,
                "  {} -> {} [style=dashed, label=\"on failure\"];",
                dot_quote(nodes.id(i)),
                dot_quote(fb)
            );
        }
    }
    out.push_str("}\n");
    out
}

fn mermaid(plan: &ValidPlan) -> String {
    let nodes = Nodes::new(plan);
    let node = |i: usize| format!("s{i}");
    let label = |s: &str| s.replace('"', "#quot;");
    let mut out = String::from("flowchart LR\n");
    for i in nodes.all() {
        let text = label(&nodes.label(i));
        if plan.fallback_only[i] {
            let _ = writeln!(out, "  {}([\"{text}\"])", node(i));
        } else if nodes.of[i].is_some() {
            let _ = writeln!(out, "  {}[[\"{text}\"]]", node(i));
        } else {
            let _ = writeln!(out, "  {}[\"{text}\"]", node(i));
        }
    }
    for (d, i, implicit) in nodes.edges() {
        let arrow = if implicit { "-.->" } else { "-->" };
        let _ = writeln!(out, "  {} {arrow} {}", node(d), node(i));
    }
    for i in nodes.all() {
        if let Some(f) = plan.fallback_of(i) {
            let _ = writeln!(out, "  {} -. on failure .-> {}", node(i), node(f));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_draws_a_fan_out_as_one_entry() {
        let plan = crate::plan::from_text(
            "p.json",
            r#"{"name":"fleet","steps":[
                {"id":"prep","run":"true"},
                {"id":"install","hosts":["web1","web2"],"run":"true"},
                {"id":"report","run":"true"}]}"#,
        )
        .expect("valid");
        let schedule = Schedule::build(&plan, &[]);
        let text = render(&plan, &schedule, GraphFormat::Text);
        assert_eq!(
            text,
            "fleet: 4 steps in 3 waves\nwave 1\n  prep\nwave 2\n  install@{web1,web2} (2 hosts)  <- prep (implicit)\nwave 3\n  report  <- install@{web1,web2} (2 hosts) (implicit)\n"
        );
        let dot = render(&plan, &schedule, GraphFormat::Dot);
        assert!(
            dot.contains("\"install\" [label=\"install @ web1, web2\", peripheries=2];"),
            "{dot}"
        );
        assert!(
            dot.contains("\"prep\" -> \"install\" [style=dotted];"),
            "{dot}"
        );
        assert!(
            dot.contains("\"install\" -> \"report\" [style=dotted];"),
            "{dot}"
        );
        assert_eq!(dot.matches(" -> ").count(), 2, "{dot}");
        let mermaid = render(&plan, &schedule, GraphFormat::Mermaid);
        assert!(
            mermaid.contains("s1[[\"install @ web1, web2\"]]"),
            "{mermaid}"
        );
        assert_eq!(mermaid.matches("-.->").count(), 2, "{mermaid}");
    }
}
