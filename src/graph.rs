//! Graph algorithms over a plan's dependency lists (`deps[i]`: the indices
//! step `i` depends on), shared by validation (`plan`) and planning (`dag`).
//!
//! Everything here is iterative and linear in steps plus edges (the
//! topological order adds a log factor for its file-order tie-break), so a
//! plan of any shape is handled on any stack: no recursion, ever. Pure
//! functions over indices; no I/O. Indices in `deps` must be below its length.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

const NONE: usize = usize::MAX;

/// The strongly connected components of the graph whose edges run from each
/// step to its dependencies (Tarjan's algorithm with an explicit stack).
#[derive(Debug, Clone)]
pub struct Components {
    /// The component of each step. Numbers follow the dependencies: when `i`
    /// depends on `d` in another component, `of[d] < of[i]`.
    pub of: Vec<usize>,
    /// How many components there are.
    pub count: usize,
}

impl Components {
    pub fn new(deps: &[Vec<usize>]) -> Components {
        let n = deps.len();
        let mut index = vec![NONE; n];
        let mut low = vec![0usize; n];
        let mut on_stack = vec![false; n];
        let mut of = vec![NONE; n];
        let mut stack: Vec<usize> = Vec::new();
        // The explicit call stack: a node and how many of its edges are done.
        let mut calls: Vec<(usize, usize)> = Vec::new();
        let (mut next, mut count) = (0usize, 0usize);
        for root in 0..n {
            if index[root] != NONE {
                continue;
            }
            index[root] = next;
            low[root] = next;
            next += 1;
            stack.push(root);
            on_stack[root] = true;
            calls.push((root, 0));
            while let Some(&(v, edge)) = calls.last() {
                if let Some(&w) = deps[v].get(edge) {
                    if let Some(top) = calls.last_mut() {
                        top.1 += 1;
                    }
                    if index[w] == NONE {
                        index[w] = next;
                        low[w] = next;
                        next += 1;
                        stack.push(w);
                        on_stack[w] = true;
                        calls.push((w, 0));
                    } else if on_stack[w] {
                        low[v] = low[v].min(index[w]);
                    }
                    continue;
                }
                calls.pop();
                if let Some(&(parent, _)) = calls.last() {
                    low[parent] = low[parent].min(low[v]);
                }
                if low[v] == index[v] {
                    while let Some(w) = stack.pop() {
                        on_stack[w] = false;
                        of[w] = count;
                        if w == v {
                            break;
                        }
                    }
                    count += 1;
                }
            }
        }
        Components { of, count }
    }
}

/// Every dependency cycle: one per strongly connected component that has
/// one, as a path in the direction work flows (a dependency before its
/// dependent) that starts and ends on the component's first step in file
/// order, with the number of steps caught in that component. Sorted by that
/// first step.
pub fn cycles(deps: &[Vec<usize>]) -> Vec<(Vec<usize>, usize)> {
    let comps = Components::new(deps);
    let mut size = vec![0usize; comps.count];
    let mut first = vec![NONE; comps.count];
    for (i, &c) in comps.of.iter().enumerate() {
        size[c] += 1;
        if first[c] == NONE {
            first[c] = i;
        }
    }
    let mut starts: Vec<usize> = (0..comps.count)
        .filter(|&c| size[c] > 1 || deps[first[c]].contains(&first[c]))
        .map(|c| first[c])
        .collect();
    starts.sort_unstable();
    // Each component is searched once, so one `prev` array serves them all.
    let mut prev = vec![NONE; deps.len()];
    let mut out = Vec::with_capacity(starts.len());
    for start in starts {
        let c = comps.of[start];
        let mut queue = std::collections::VecDeque::from([start]);
        let mut closing = NONE;
        'search: while let Some(at) = queue.pop_front() {
            for &d in &deps[at] {
                if d == start {
                    closing = at;
                    break 'search;
                }
                if comps.of[d] == c && prev[d] == NONE {
                    prev[d] = at;
                    queue.push_back(d);
                }
            }
        }
        // `closing` depends on `start`, `prev[closing]` on `closing`, and so
        // on back to `start`: that walk is the order work flows in.
        let mut path = vec![start];
        let mut cur = closing;
        while cur != start && cur != NONE {
            path.push(cur);
            cur = prev[cur];
        }
        path.push(start);
        out.push((path, size[c]));
    }
    out
}

/// The dependents of each step (the edges of `deps` reversed), in step order.
pub fn dependents(deps: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let mut out = vec![Vec::new(); deps.len()];
    for (i, ds) in deps.iter().enumerate() {
        for &d in ds {
            out[d].push(i);
        }
    }
    out
}

/// A topological order: dependencies first, file order among steps that are
/// ready together. Steps on a cycle (and everything after them) are left out.
pub fn topo_order(deps: &[Vec<usize>]) -> Vec<usize> {
    let n = deps.len();
    let mut indegree: Vec<usize> = deps.iter().map(Vec::len).collect();
    let dependents = dependents(deps);
    let mut ready: BinaryHeap<Reverse<usize>> =
        (0..n).filter(|&i| indegree[i] == 0).map(Reverse).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(Reverse(i)) = ready.pop() {
        order.push(i);
        for &j in &dependents[i] {
            indegree[j] -= 1;
            if indegree[j] == 0 {
                ready.push(Reverse(j));
            }
        }
    }
    order
}

/// Kahn layers: wave k holds the steps whose longest dependency chain has k
/// links. Steps on a cycle are put in wave 0.
pub fn waves(deps: &[Vec<usize>]) -> Vec<usize> {
    let mut wave = vec![0usize; deps.len()];
    for i in topo_order(deps) {
        wave[i] = deps[i].iter().map(|&d| wave[d] + 1).max().unwrap_or(0);
    }
    wave
}

/// Answers "does step `i` depend, directly or not, on step `t`?" without
/// building every step's ancestor set. A search walks up from `i` and never
/// enters a component numbered below `t`'s (nothing there can reach `t`), so
/// it stays inside the stretch of the graph between the two steps.
pub struct Upstream<'a> {
    deps: &'a [Vec<usize>],
    comps: Components,
    /// The search that last saw each step.
    seen: Vec<u32>,
    search: u32,
    stack: Vec<usize>,
}

impl<'a> Upstream<'a> {
    pub fn new(deps: &'a [Vec<usize>]) -> Upstream<'a> {
        Upstream {
            deps,
            comps: Components::new(deps),
            seen: vec![0; deps.len()],
            search: 0,
            stack: Vec::new(),
        }
    }

    /// Whether `t` is upstream of `i` (a dependency, or one of theirs).
    pub fn is_upstream(&mut self, i: usize, t: usize) -> bool {
        let floor = self.comps.of[t];
        if self.comps.of[i] < floor {
            return false;
        }
        self.search = self.search.wrapping_add(1);
        if self.search == 0 {
            self.seen.fill(0);
            self.search = 1;
        }
        self.stack.clear();
        self.stack.push(i);
        while let Some(u) = self.stack.pop() {
            for &d in &self.deps[u] {
                if d == t {
                    return true;
                }
                if self.seen[d] != self.search && self.comps.of[d] >= floor {
                    self.seen[d] = self.search;
                    self.stack.push(d);
                }
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cycle_reads_in_work_order() {
        // 0 fetch <- 2 verify, 1 build <- 0, 2 verify <- 1
        let deps = vec![vec![2], vec![0], vec![1], vec![]];
        assert_eq!(cycles(&deps), vec![(vec![0, 1, 2, 0], 3)]);
        assert!(cycles(&[vec![], vec![0]]).is_empty());
    }

    #[test]
    fn every_cycle_is_found_once_with_its_component() {
        // {0,1} a cycle; 2 a self-loop; {3,4,5} one component holding two cycles.
        let deps = vec![
            vec![1],
            vec![0],
            vec![2],
            vec![5],
            vec![3],
            vec![4, 3],
            vec![0, 3],
        ];
        let found = cycles(&deps);
        assert_eq!(found.len(), 3, "{found:?}");
        assert_eq!(found[0], (vec![0, 1, 0], 2));
        assert_eq!(found[1], (vec![2, 2], 1));
        assert_eq!(found[2].1, 3);
        let path = &found[2].0;
        assert_eq!((path[0], path[path.len() - 1]), (3, 3));
        for w in path.windows(2) {
            assert!(
                deps[w[1]].contains(&w[0]),
                "{} does not depend on {}",
                w[1],
                w[0]
            );
        }
    }

    #[test]
    fn components_are_numbered_dependencies_first() {
        let deps = vec![vec![], vec![0], vec![1], vec![0, 2]];
        let c = Components::new(&deps);
        assert_eq!(c.count, 4);
        for (i, ds) in deps.iter().enumerate() {
            for &d in ds {
                assert!(c.of[d] < c.of[i]);
            }
        }
    }

    #[test]
    fn waves_are_kahn_layers() {
        let deps = vec![vec![], vec![0], vec![0], vec![1, 2], vec![]];
        assert_eq!(waves(&deps), vec![0, 1, 1, 2, 0]);
    }

    #[test]
    fn upstream_matches_a_plain_walk() {
        let deps = vec![vec![], vec![0], vec![0], vec![1], vec![3, 2], vec![]];
        let mut up = Upstream::new(&deps);
        for i in 0..deps.len() {
            let mut all = std::collections::HashSet::new();
            let mut stack = deps[i].clone();
            while let Some(d) = stack.pop() {
                if all.insert(d) {
                    stack.extend(&deps[d]);
                }
            }
            for t in 0..deps.len() {
                assert_eq!(
                    up.is_upstream(i, t),
                    all.contains(&t),
                    "{t} upstream of {i}"
                );
            }
        }
    }

    #[test]
    fn a_million_step_chain_needs_no_deep_stack() {
        let n = 1_000_000;
        let deps: Vec<Vec<usize>> = (0..n)
            .map(|i| if i == 0 { vec![] } else { vec![i - 1] })
            .collect();
        let handle = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                let mut closed = deps;
                closed[0].push(n - 1);
                let found = cycles(&closed);
                closed[0].clear();
                let mut up = Upstream::new(&closed);
                (found, up.is_upstream(n - 1, 0), waves(&closed)[n - 1])
            })
            .expect("thread starts");
        let (found, upstream, last_wave) = handle.join().expect("no stack overflow");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0.len(), n + 1);
        assert!(upstream);
        assert_eq!(last_wave, n - 1);
    }
}
