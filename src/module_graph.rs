//! Holds the crate's module dependencies to one direction (the `# Layout` of `lib.rs`): a
//! test reads `src/**/*.rs`, builds the graph of which module names which (`crate::x`,
//! `super::x` between the parts of a split module), and fails on a cycle, printing it. Test
//! code only; nothing here ships.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Modules whose submodules are nodes of their own: `radius`'s codec and dictionary are
/// depended on by the ingest queue, whose types the listener uses.
const SPLIT: &[&str] = &["radius"];

/// Which module names which: node → the nodes it refers to.
type Graph = BTreeMap<String, BTreeSet<String>>;

/// The node a source file belongs to, from its path under `src/` (`None`: not in the graph).
fn node_of(relative: &Path) -> Option<String> {
    let parts: Vec<&str> = relative.iter().filter_map(|p| p.to_str()).collect();
    let first = parts.first()?.trim_end_matches(".rs");
    // This file's tests spell made-up references.
    if matches!(first, "lib" | "main" | "bin" | "module_graph") {
        return None;
    }
    match parts.get(1) {
        Some(sub) if SPLIT.contains(&first) && *sub != "mod.rs" => {
            Some(format!("{first}::{}", sub.trim_end_matches(".rs")))
        }
        _ => Some(first.to_owned()),
    }
}

/// The node a path names: `["radius", "codec", …]` is `radius::codec`, `["store", …]` is
/// `store`.
fn target(segments: &[&str]) -> Option<String> {
    let first = *segments.first()?;
    match segments.get(1) {
        Some(sub)
            if SPLIT.contains(&first) && sub.chars().all(|c| c.is_lowercase() || c == '_') =>
        {
            Some(format!("{first}::{sub}"))
        }
        _ => Some(first.to_owned()),
    }
}

/// The source without its comments (doc links are not dependencies).
fn strip_comments(source: &str) -> String {
    source
        .lines()
        .map(|l| l.find("//").map_or(l, |i| &l[..i]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The paths a source names after `prefix` (`crate::` or `super::`), `use` groups
/// (`crate::{a::B, c}`) included, as their segments.
fn paths_after(source: &str, prefix: &str) -> Vec<Vec<String>> {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut out = Vec::new();
    let mut rest = source;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().next_back();
        rest = &rest[i + prefix.len()..];
        if before.is_some_and(|c| ident(c) || c == ':') && !rest.is_empty() {
            // `$crate::` is ours too; `foo::crate::` is not a thing, `xsuper::` is not ours.
            if !(prefix == "crate::" && before == Some('$')) {
                continue;
            }
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let end = group
                .char_indices()
                .find(|&(_, c)| {
                    depth += match c {
                        '{' => 1,
                        '}' => -1,
                        _ => 0,
                    };
                    depth == 0
                })
                .map_or(group.len(), |(i, _)| i);
            let mut depth = 0;
            let mut item = String::new();
            for c in group[..end].chars().chain(std::iter::once(',')) {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.push(segments(item.trim()));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
        } else {
            out.push(segments(rest));
        }
    }
    out.retain(|p| !p.is_empty() && p[0] != "self");
    out
}

/// The leading `a::b::c` of `text`, as segments.
fn segments(text: &str) -> Vec<String> {
    let path: String = text
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
        .collect();
    path.split("::")
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The edges one file adds: from its node to every other node it names.
fn edges_of(node: &str, source: &str) -> BTreeSet<String> {
    let source = strip_comments(source);
    let mut targets = BTreeSet::new();
    for path in paths_after(&source, "crate::") {
        let segs: Vec<&str> = path.iter().map(String::as_str).collect();
        targets.extend(target(&segs));
    }
    // `super::x` inside a split module names its sibling `x`.
    if let Some((parent, _)) = node.split_once("::") {
        for path in paths_after(&source, "super::") {
            if let Some(first) = path.first() {
                targets.extend(target(&[parent, first]));
            }
        }
    }
    targets.remove(node);
    // A split module's `mod.rs` only declares its parts; the parts name each other directly.
    targets.retain(|t| !SPLIT.contains(&t.as_str()));
    targets
}

/// The graph of every `.rs` file under `src`.
fn crate_graph(src: &Path) -> std::io::Result<Graph> {
    let mut graph = Graph::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let Some(node) = path.strip_prefix(src).ok().and_then(node_of) else {
                continue;
            };
            let edges = edges_of(&node, &std::fs::read_to_string(&path)?);
            graph.entry(node).or_default().extend(edges);
        }
    }
    // Names at the crate root that are not modules (`crate::outln!`) are no nodes.
    let nodes: BTreeSet<String> = graph.keys().cloned().collect();
    for targets in graph.values_mut() {
        targets.retain(|t| nodes.contains(t));
    }
    Ok(graph)
}

/// A cycle of `graph` as the path that closes it (`[a, b, a]`), if there is one.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &str,
        graph: &Graph,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let start = path.iter().position(|n| n == node).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(node.to_owned());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(node.to_owned(), Mark::Open);
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, marks, path) {
                return Some(cycle);
            }
        }
        path.pop();
        marks.insert(node.to_owned(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut marks, &mut Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &str)]) -> Graph {
        let mut g = Graph::new();
        for (from, to) in edges {
            g.entry((*from).to_owned())
                .or_default()
                .insert((*to).to_owned());
            g.entry((*to).to_owned()).or_default();
        }
        g
    }

    #[test]
    fn crate_modules_depend_one_way() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let graph = crate_graph(&src).expect("reading src/");
        assert!(graph["app"].contains("radius::listener"));
        assert!(graph["queue"].contains("radius::accounting"));
        if let Some(cycle) = find_cycle(&graph) {
            panic!(
                "module dependency cycle: {} (the allowed direction is in lib.rs's `# Layout`)",
                cycle.join(" -> ")
            );
        }
    }

    #[test]
    fn a_cycle_is_found_and_named() {
        let acyclic = graph(&[("app", "api"), ("api", "store"), ("app", "store")]);
        assert_eq!(find_cycle(&acyclic), None);
        let cyclic = graph(&[
            ("app", "metrics"),
            ("metrics", "jobs"),
            ("jobs", "store"),
            ("jobs", "metrics"),
        ]);
        assert_eq!(
            find_cycle(&cyclic).expect("a cycle"),
            ["metrics", "jobs", "metrics"]
        );
        let self_loop = graph(&[("a", "a")]);
        assert_eq!(find_cycle(&self_loop).expect("a cycle"), ["a", "a"]);
    }

    #[test]
    fn references_are_read_from_uses_paths_and_groups_not_comments() {
        let source = "//! See [`crate::app`].\n\
            use crate::{clock::now_secs, queue::{Item, IngestSender}};\n\
            use crate::radius::codec::Packet; // crate::store\n\
            fn f() { crate::metrics::Stats::default(); super::reply::Reply; }\n\
            macro_rules! m { () => { $crate::cli::print_line } }\n";
        let edges = edges_of("radius::listener", source);
        let expected = [
            "cli",
            "clock",
            "metrics",
            "queue",
            "radius::codec",
            "radius::reply",
        ];
        assert_eq!(edges, expected.iter().map(|s| s.to_string()).collect());
        // `super::` within an ordinary module stays inside it.
        assert_eq!(
            edges_of("api", "use super::auth::Caller;\nuse crate::store::Store;"),
            BTreeSet::from(["store".to_owned()])
        );
    }

    #[test]
    fn files_map_to_their_module() {
        let node = |p: &str| node_of(Path::new(p));
        assert_eq!(node("app.rs").as_deref(), Some("app"));
        assert_eq!(node("app/stages.rs").as_deref(), Some("app"));
        assert_eq!(node("radius/mod.rs").as_deref(), Some("radius"));
        assert_eq!(node("radius/codec.rs").as_deref(), Some("radius::codec"));
        assert_eq!(
            node("disconnect/mikrotik/wire.rs").as_deref(),
            Some("disconnect")
        );
        assert_eq!(node("lib.rs"), None);
        assert_eq!(node("module_graph.rs"), None);
        assert_eq!(node("bin/radacctd-bench.rs"), None);
    }
}
