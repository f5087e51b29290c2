//! The task graph of one host: explicit and implicit edges, cycle errors, a deterministic order.
//!
//! Nodes are numbered tasks first (in playbook order), then handlers. Edges point from the task
//! that must run first. Among tasks that are ready together, the one written first runs first.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt::Write;

use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;

use crate::error::{Error, Result};
use crate::playbook::render::Rendered;
use crate::playbook::{Playbook, TaskDef};

/// Why one task runs before another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Why {
    After,
    Before,
    /// The first task creates the directory the second writes into.
    Parent(String),
    /// The first task installs the package whose configuration the second writes.
    Config(String),
    /// The first task installs the package that provides the service the second manages.
    Service(String),
    Notify,
}

impl Why {
    /// Why `a` runs before `b`, in words.
    fn explain(&self, a: &str, b: &str) -> String {
        match self {
            Why::After => format!("`{b}` has `after: {a}`"),
            Why::Before => format!("`{a}` has `before: {b}`"),
            Why::Parent(dir) => format!("`{b}` writes inside {dir}, which `{a}` creates"),
            Why::Config(pkg) => {
                format!("`{b}` writes configuration of {pkg}, which `{a}` installs")
            }
            Why::Service(pkg) => format!("`{b}` manages a service of {pkg}, which `{a}` installs"),
            Why::Notify => format!("`{a}` notifies `{b}`"),
        }
    }

    fn short(&self) -> String {
        match self {
            Why::After => "after".into(),
            Why::Before => "before".into(),
            Why::Parent(dir) => format!("inside {dir}"),
            Why::Config(pkg) => format!("config of {pkg}"),
            Why::Service(pkg) => format!("service of {pkg}"),
            Why::Notify => "notify".into(),
        }
    }
}

pub struct Graph {
    pub graph: DiGraph<usize, Why>,
    /// Node numbers in the order to run them.
    pub order: Vec<usize>,
}

impl Graph {
    /// Builds the graph for rendered tasks (`rendered` holds tasks, then handlers).
    pub fn build(pb: &Playbook, rendered: &[Rendered]) -> Result<Graph> {
        let n = pb.tasks.len();
        let mut g: DiGraph<usize, Why> = DiGraph::with_capacity(rendered.len(), rendered.len());
        for i in 0..rendered.len() {
            g.add_node(i);
        }
        let node = NodeIndex::new;
        for (i, t) in pb.tasks.iter().enumerate() {
            for &a in &t.after {
                g.update_edge(node(a), node(i), Why::After);
            }
            for &b in &t.before {
                g.update_edge(node(i), node(b), Why::Before);
            }
            for &h in &t.notify {
                g.update_edge(node(i), node(n + h), Why::Notify);
            }
        }
        // A path's parent directory first: map each created directory to its task.
        let dirs: HashMap<&str, usize> = rendered
            .iter()
            .enumerate()
            .filter_map(|(i, r)| Some((r.resource.as_ref()?.creates_dir()?, i)))
            .collect();
        for (i, r) in rendered.iter().enumerate() {
            let Some(res) = &r.resource else { continue };
            for path in res.paths() {
                let mut p = path;
                while let Some(slash) = p.rfind('/') {
                    p = if slash == 0 { "/" } else { &p[..slash] };
                    if let Some(&d) = dirs.get(p) {
                        if d != i {
                            g.update_edge(node(d), node(i), Why::Parent(p.to_string()));
                            break;
                        }
                    }
                    if p == "/" {
                        break;
                    }
                }
            }
        }
        // A package before the files in its configuration paths and before its services.
        for (i, r) in rendered.iter().enumerate() {
            let Some(res) = &r.resource else { continue };
            for inst in res.installs() {
                for (j, other) in rendered.iter().enumerate() {
                    let Some(o) = other.resource.as_ref().filter(|_| j != i) else {
                        continue;
                    };
                    let configures = o
                        .paths()
                        .iter()
                        .any(|p| inst.config_paths.iter().any(|c| within(p, c)));
                    if configures {
                        g.update_edge(node(i), node(j), Why::Config(inst.package.clone()));
                    } else if o
                        .service()
                        .is_some_and(|s| inst.services.iter().any(|x| x == s))
                    {
                        g.update_edge(node(i), node(j), Why::Service(inst.package.clone()));
                    }
                }
            }
        }
        let order = topo_order(&g).map_err(|cycle| cycle_error(pb, rendered, &g, &cycle))?;
        Ok(Graph { graph: g, order })
    }

    /// Graphviz text of the graph.
    pub fn dot(&self, pb: &Playbook, rendered: &[Rendered]) -> String {
        let mut out = String::from(
            "digraph slice {\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];\n",
        );
        for &i in &self.order {
            let (def, handler) = def(pb, i);
            let label = format!("{}\\n{}", label(def, &rendered[i]), def.name).replace('"', "\\\"");
            let style = if handler { ", style=dashed" } else { "" };
            let _ = writeln!(out, "  t{i} [label=\"{label}\"{style}];");
        }
        for e in self.graph.edge_references() {
            let _ = writeln!(
                out,
                "  t{} -> t{} [label=\"{}\"];",
                e.source().index(),
                e.target().index(),
                e.weight().short().replace('"', "\\\"")
            );
        }
        out.push_str("}\n");
        out
    }

    /// The direct predecessors of a node, for `slice plan`.
    pub fn needs(&self, i: usize) -> Vec<usize> {
        let mut v: Vec<usize> = self
            .graph
            .neighbors_directed(NodeIndex::new(i), petgraph::Direction::Incoming)
            .map(NodeIndex::index)
            .collect();
        v.sort_unstable();
        v
    }
}

/// Whether `path` is `dir` or inside it.
fn within(path: &str, dir: &str) -> bool {
    path == dir
        || dir == "/"
        || path
            .strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// A task's definition by node number, and whether it is a handler.
pub fn def(pb: &Playbook, i: usize) -> (&TaskDef, bool) {
    match pb.tasks.get(i) {
        Some(t) => (t, false),
        None => (&pb.handlers[i - pb.tasks.len()], true),
    }
}

/// `kind[target]`, or `kind[task name]` when the task was skipped before it had a target.
pub fn label(def: &TaskDef, r: &Rendered) -> String {
    match &r.resource {
        Some(res) => format!("{}[{}]", def.kind.name, res.target()),
        None => format!("{}[{}]", def.kind.name, def.name),
    }
}

/// Kahn's algorithm, taking the lowest-numbered ready node first. On a cycle, returns its nodes.
fn topo_order(g: &DiGraph<usize, Why>) -> std::result::Result<Vec<usize>, Vec<usize>> {
    let mut indegree: Vec<usize> = g
        .node_indices()
        .map(|n| {
            g.neighbors_directed(n, petgraph::Direction::Incoming)
                .count()
        })
        .collect();
    let mut ready: BinaryHeap<Reverse<usize>> = indegree
        .iter()
        .enumerate()
        .filter(|(_, d)| **d == 0)
        .map(|(i, _)| Reverse(i))
        .collect();
    let mut order = Vec::with_capacity(indegree.len());
    while let Some(Reverse(i)) = ready.pop() {
        order.push(i);
        for next in g.neighbors_directed(NodeIndex::new(i), petgraph::Direction::Outgoing) {
            let d = &mut indegree[next.index()];
            *d -= 1;
            if *d == 0 {
                ready.push(Reverse(next.index()));
            }
        }
    }
    if order.len() == indegree.len() {
        return Ok(order);
    }
    // Some strongly connected component with more than one node (or a self loop) is the cycle.
    let scc = petgraph::algo::tarjan_scc(g)
        .into_iter()
        .filter(|c| c.len() > 1 || g.contains_edge(c[0], c[0]))
        .min_by_key(|c| c.iter().map(|n| n.index()).min())
        .unwrap_or_default();
    Err(cycle_path(
        g,
        &scc.iter().map(|n| n.index()).collect::<Vec<_>>(),
    ))
}

/// The shortest cycle through the component's lowest node, found breadth-first.
fn cycle_path(g: &DiGraph<usize, Why>, scc: &[usize]) -> Vec<usize> {
    let Some(&start) = scc.iter().min() else {
        return Vec::new();
    };
    let mut parent: HashMap<usize, usize> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(cur) = queue.pop_front() {
        let mut next: Vec<usize> = g
            .neighbors_directed(NodeIndex::new(cur), petgraph::Direction::Outgoing)
            .map(NodeIndex::index)
            .filter(|n| scc.contains(n))
            .collect();
        next.sort_unstable();
        for n in next {
            if n == start {
                let mut path = vec![cur];
                while let Some(&p) = parent.get(path.last().unwrap_or(&start)) {
                    path.push(p);
                }
                path.reverse();
                return path;
            }
            if n != start && !parent.contains_key(&n) {
                parent.insert(n, cur);
                queue.push_back(n);
            }
        }
    }
    vec![start]
}

fn cycle_error(
    pb: &Playbook,
    rendered: &[Rendered],
    g: &DiGraph<usize, Why>,
    cycle: &[usize],
) -> Error {
    let first = def(pb, cycle[0]).0;
    let mut e = Error::at(
        &first.loc,
        match cycle.len() {
            1 => format!("task `{}` must run after itself", first.name),
            n => format!("these {n} tasks depend on each other in a cycle"),
        },
    );
    for (k, &i) in cycle.iter().enumerate() {
        let next = cycle[(k + 1) % cycle.len()];
        let (a, _) = def(pb, i);
        let (b, _) = def(pb, next);
        let why = g
            .find_edge(NodeIndex::new(i), NodeIndex::new(next))
            .map(|e| g[e].explain(&a.name, &b.name))
            .unwrap_or_default();
        e = e.with_note(format!(
            "{} ({}) runs before {} ({}): {why}",
            label(a, &rendered[i]),
            a.loc.file_line(),
            label(b, &rendered[next]),
            b.loc.file_line()
        ));
    }
    e.with_help("remove one of these orderings")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(n: usize, edges: &[(usize, usize)]) -> DiGraph<usize, Why> {
        let mut g = DiGraph::new();
        for i in 0..n {
            g.add_node(i);
        }
        for &(a, b) in edges {
            g.add_edge(NodeIndex::new(a), NodeIndex::new(b), Why::After);
        }
        g
    }

    #[test]
    fn ready_tasks_run_in_written_order() {
        // 3 must wait for 0; 1 and 2 have no constraints and keep their places.
        let g = graph(4, &[(3, 0)]);
        assert_eq!(topo_order(&g).unwrap(), vec![1, 2, 3, 0]);
        let g = graph(5, &[(4, 1), (0, 4)]);
        assert_eq!(topo_order(&g).unwrap(), vec![0, 2, 3, 4, 1]);
    }

    #[test]
    fn a_cycle_is_returned_in_order_without_bystanders() {
        // 0 → 1 → 2 → 0, with 3 hanging off the cycle and 4 independent.
        let g = graph(5, &[(0, 1), (1, 2), (2, 0), (2, 3)]);
        assert_eq!(topo_order(&g).unwrap_err(), vec![0, 1, 2]);
        let g = graph(2, &[(1, 1)]);
        assert_eq!(topo_order(&g).unwrap_err(), vec![1]);
    }

    #[test]
    fn the_cycle_path_follows_edges_inside_the_component() {
        // Component {1, 2, 3} with a chord: 1 → 3 → 2 → 1 and 1 → 2.
        let g = graph(4, &[(1, 2), (1, 3), (3, 2), (2, 1)]);
        let cycle = topo_order(&g).unwrap_err();
        assert_eq!(cycle[0], 1);
        for (k, &a) in cycle.iter().enumerate() {
            let b = cycle[(k + 1) % cycle.len()];
            assert!(
                g.contains_edge(NodeIndex::new(a), NodeIndex::new(b)),
                "{cycle:?}"
            );
        }
    }
}
