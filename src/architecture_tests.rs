//! The crate's layering, checked: which top-level module may use which (issue 13).
//!
//! Every file under `src/` is parsed (with `syn`, comments and strings never count) and every
//! `crate::x…` path in it is an edge from the file's top-level module to `x`: `use` trees
//! (groups included), paths in code and types, and `crate :: x` inside macro calls. The test
//! fails on an edge a rule forbids, and on any cycle between top-level modules, naming the
//! files and the cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use proc_macro2::{TokenStream, TokenTree};
use syn::visit::Visit;

/// `(module, modules it must not use)`. `main` is the binary's root (`src/main.rs`).
const FORBIDDEN: &[(&str, &[&str])] = &[
    (
        "accounts",
        &[
            "proxy", "app", "ui", "state", "pty", "ipc", "cli", "commands", "demo",
        ],
    ),
    (
        "proxy",
        &["pty", "app", "ui", "state", "cli", "commands", "demo"],
    ),
    (
        "pty",
        &["proxy", "app", "ui", "state", "accounts", "cli", "demo"],
    ),
    ("ui", &["app", "cli", "commands", "demo"]),
    // The dashboard hosts a pilot; it never knows it is the demo's.
    ("app", &["demo", "commands", "cli"]),
    // The demo's simulated backend and autopilot: only `cs-tui demo` (in `commands`) uses
    // them, and they drive the product from outside (the pilot seam, the store, the events).
    ("demo", &["ui", "state", "pty", "cli", "commands"]),
    // The client of a running session's socket: a leaf the accounts commands and the session use.
    (
        "ipc",
        &[
            "accounts", "proxy", "pty", "app", "ui", "state", "config", "process", "cli",
            "commands",
        ],
    ),
    // What the screen shows: written by `app`, read by `ui`, importing neither.
    ("state", &["app", "ui", "cli", "commands", "demo"]),
    (
        "config",
        &[
            "proxy", "pty", "app", "ui", "state", "accounts", "process", "cli", "commands",
        ],
    ),
    // Spawning, PATH lookup, parent-death handling: used by `pty` and `proxy`, using neither.
    (
        "process",
        &[
            "proxy", "pty", "app", "ui", "state", "accounts", "config", "cli", "commands",
        ],
    ),
    ("pace", &["ui", "app", "state", "accounts", "proxy", "cli"]),
    // The capped accept loop of the loopback servers (`serve --metrics`, the demo's backend).
    (
        "conn_cap",
        &[
            "proxy", "pty", "app", "ui", "state", "accounts", "config", "process", "ipc", "cli",
            "commands", "demo", "notify",
        ],
    ),
    // Notifications: decided from the proxy's events, delivered by `app` and `serve`.
    (
        "notify",
        &["app", "ui", "state", "pty", "accounts", "cli", "commands"],
    ),
    (
        "quota",
        &["ui", "app", "state", "accounts", "proxy", "pty", "cli"],
    ),
];

/// Only these may use `cli` (the clap types).
/// (`properties` holds the command line's property tests, which parse argv with `Cli`.)
const CLI_USERS: &[&str] = &["cli", "commands", "main", "properties"];

/// Edges allowed despite a rule, each with its reason: none today. An entry that no longer
/// occurs fails the test, so the list only shrinks.
const EXEMPT: &[(&str, &str)] = &[];

/// Top-level module → used module → files where it happens.
type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<PathBuf>>>;

/// The top-level module a file under `src/` belongs to (`src/x.rs` and `src/x/…` are `x`), and
/// how deep the file's module is (`src/x.rs` and `src/x/mod.rs` 1, `src/x/y.rs` 2, …), so
/// that a `super::` that climbs to the crate's root is seen.
fn top_level_module(relative: &Path) -> Option<(String, usize)> {
    let first = relative.components().next()?.as_os_str().to_str()?;
    let depth = relative.components().count() - usize::from(relative.ends_with("mod.rs"));
    Some((first.strip_suffix(".rs").unwrap_or(first).to_owned(), depth))
}

/// The top-level modules `source` names through `root` (`crate`, or `cs_tui` in `main.rs`) or
/// through `super::` climbing to the root from a module `depth` deep.
fn crate_references(source: &str, root: &str, depth: usize) -> syn::Result<BTreeSet<String>> {
    let file = syn::parse_file(source)?;
    let mut found = References {
        root,
        depth,
        found: BTreeSet::new(),
    };
    found.visit_file(&file);
    Ok(found.found)
}

struct References<'a> {
    root: &'a str,
    /// How deep the module being visited is (inline `mod`s included).
    depth: usize,
    found: BTreeSet<String>,
}

/// Where a path being read stands.
#[derive(Clone, Copy)]
enum Position {
    /// After this many leading `super`s (none yet: 0), still inside the module.
    Relative(usize),
    /// At the crate's root: the next name is a top-level module.
    Root,
}

impl References<'_> {
    /// Where `ident` leads from `position`, or `None` once the path stays inside the module.
    fn step(&self, position: Position, ident: &syn::Ident) -> Option<Position> {
        match position {
            Position::Root => None,
            Position::Relative(0) if ident == self.root => Some(Position::Root),
            Position::Relative(supers) if ident == "super" => Some(if supers + 1 >= self.depth {
                Position::Root
            } else {
                Position::Relative(supers + 1)
            }),
            Position::Relative(_) => None,
        }
    }

    fn use_tree(&mut self, tree: &syn::UseTree, position: Position) {
        match (tree, position) {
            (syn::UseTree::Path(path), Position::Root) => {
                self.found.insert(path.ident.to_string());
            }
            (syn::UseTree::Name(name), Position::Root) => {
                self.found.insert(name.ident.to_string());
            }
            (syn::UseTree::Rename(rename), Position::Root) => {
                self.found.insert(rename.ident.to_string());
            }
            (syn::UseTree::Path(path), _) => {
                if let Some(next) = self.step(position, &path.ident) {
                    self.use_tree(&path.tree, next);
                }
            }
            (syn::UseTree::Group(group), _) => {
                for tree in &group.items {
                    self.use_tree(tree, position);
                }
            }
            _ => {}
        }
    }

    /// `crate :: x` in a macro's tokens (`tracing::warn!(… crate::…)`, `matches!`, …).
    fn tokens(&mut self, tokens: TokenStream) {
        let tokens: Vec<TokenTree> = tokens.into_iter().collect();
        for (i, token) in tokens.iter().enumerate() {
            match token {
                TokenTree::Group(group) => self.tokens(group.stream()),
                TokenTree::Ident(ident) if ident == self.root => {
                    if let [
                        TokenTree::Punct(a),
                        TokenTree::Punct(b),
                        TokenTree::Ident(module),
                        ..,
                    ] = &tokens[i + 1..]
                        && a.as_char() == ':'
                        && b.as_char() == ':'
                    {
                        self.found.insert(module.to_string());
                    }
                }
                _ => {}
            }
        }
    }
}

impl<'ast> Visit<'ast> for References<'_> {
    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        self.use_tree(&item.tree, Position::Relative(0));
    }

    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        self.depth += 1;
        syn::visit::visit_item_mod(self, item);
        self.depth -= 1;
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let mut position = Position::Relative(0);
        for segment in &path.segments {
            if let Position::Root = position {
                self.found.insert(segment.ident.to_string());
                break;
            }
            match self.step(position, &segment.ident) {
                Some(next) => position = next,
                None => break,
            }
        }
        syn::visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.tokens(mac.tokens.clone());
        syn::visit::visit_macro(self, mac);
    }
}

/// The module graph of the crate whose sources are in `src`.
fn module_graph(src: &Path) -> Graph {
    let mut graph = Graph::new();
    let mut pending = vec![src.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            if path.extension().is_none_or(|ext| ext != "rs") {
                continue;
            }
            let relative = path.strip_prefix(src).unwrap();
            let (from, depth) = top_level_module(relative).unwrap();
            // The library's root only declares the modules; the binary's uses the library.
            let (root, depth) = match from.as_str() {
                "lib" => continue,
                "main" => ("cs_tui", 0),
                _ => ("crate", depth),
            };
            let source = std::fs::read_to_string(&path).unwrap();
            let used = crate_references(&source, root, depth)
                .unwrap_or_else(|err| panic!("parsing {}: {err}", path.display()));
            for to in used {
                if to != from {
                    graph
                        .entry(from.clone())
                        .or_default()
                        .entry(to)
                        .or_default()
                        .insert(relative.to_path_buf());
                }
            }
        }
    }
    graph
}

/// What the rules forbid in `graph`, one line each, exempting `known`.
fn violations(graph: &Graph, known: &[(&str, &str)]) -> Vec<String> {
    let mut found = Vec::new();
    for (from, uses) in graph {
        for (to, files) in uses {
            if known.contains(&(from.as_str(), to.as_str())) {
                continue;
            }
            let forbidden = FORBIDDEN
                .iter()
                .any(|(module, banned)| module == from && banned.contains(&to.as_str()))
                || (to == "cli" && !CLI_USERS.contains(&from.as_str()));
            if forbidden {
                found.push(format!("{from} must not use {to}: {files:?}"));
            }
        }
    }
    found
}

/// A cycle between top-level modules (`a → b → … → a`), ignoring `known` edges.
fn find_cycle(graph: &Graph, known: &[(&str, &str)]) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        known: &[(&str, &str)],
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flat_map(BTreeMap::keys) {
            if known.contains(&(node, next.as_str())) {
                continue;
            }
            if let Some(cycle) = visit(next, graph, known, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, known, &mut Vec::new(), &mut done))
}

fn graph_of(edges: &[(&str, &str)]) -> Graph {
    let mut graph = Graph::new();
    for (from, to) in edges {
        graph
            .entry((*from).to_owned())
            .or_default()
            .entry((*to).to_owned())
            .or_default()
            .insert(PathBuf::from(format!("{from}.rs")));
    }
    graph
}

#[test]
fn the_crate_keeps_its_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = module_graph(&src);
    // The analysis sees the crate at all (a broken walk would pass everything).
    assert!(graph["app"].contains_key("ui"), "{graph:#?}");
    assert!(graph["pty"].contains_key("process"), "{graph:#?}");

    let found = violations(&graph, EXEMPT);
    assert!(found.is_empty(), "forbidden imports:\n{}", found.join("\n"));
    if let Some(cycle) = find_cycle(&graph, EXEMPT) {
        panic!("modules use each other in a cycle: {}", cycle.join(" → "));
    }
    let stale: Vec<_> = EXEMPT
        .iter()
        .filter(|(from, to)| !graph.get(*from).is_some_and(|uses| uses.contains_key(*to)))
        .collect();
    assert!(
        stale.is_empty(),
        "no longer used, remove from EXEMPT: {stale:?}"
    );
}

#[test]
fn every_form_of_crate_path_is_an_edge() {
    // Written with `CRATE` so that tools grepping the tree for `crate::` see no edges here.
    let source = r#"
        //! Mentions CRATE::commented in a doc comment, which is no edge.
        use CRATE::{alpha::A, beta, gamma::{self, G}};
        use CRATE::delta as d;
        use super::sibling;
        use std::fmt;
        pub(in CRATE::own) fn f(x: CRATE::epsilon::T) -> impl CRATE::zeta::Tr {
            let s = "CRATE::in_a_string";
            tracing::warn!("{}", CRATE::eta::f(s));
            CRATE::theta::g()
        }
        #[cfg(test)]
        mod tests { use CRATE::iota; }
    "#
    .replace("CRATE", "crate");
    let found = crate_references(&source, "crate", 2).unwrap();
    let want = [
        "alpha", "beta", "delta", "epsilon", "eta", "gamma", "iota", "own", "theta", "zeta",
    ];
    assert_eq!(found, want.iter().map(|s| (*s).to_owned()).collect());
}

#[test]
fn a_super_that_climbs_to_the_root_is_an_edge() {
    // In `src/x/y.rs` (depth 2): `super` is `x`, `super::super` the crate's root.
    let source = "use super::sibling; use super::super::{alpha, beta::B};
        fn f() { super::super::gamma::g(); super::inside::h(); }
        mod tests { use super::super::inside; use super::super::super::delta; }";
    let found = crate_references(source, "crate", 2).unwrap();
    let want = ["alpha", "beta", "delta", "gamma"];
    assert_eq!(found, want.iter().map(|s| (*s).to_owned()).collect());
    // From a top-level file (`src/x.rs`), one `super` is the root already.
    let found = crate_references("use super::alpha; use self::beta;", "crate", 1).unwrap();
    assert_eq!(found, ["alpha".to_owned()].into_iter().collect());
    // The binary names the library by its name.
    let found = crate_references("fn main() { cs_tui::cli::main() }", "cs_tui", 0).unwrap();
    assert_eq!(found, ["cli".to_owned()].into_iter().collect());
}

#[test]
fn forbidden_edges_and_cycles_are_found_and_known_ones_exempt() {
    let graph = graph_of(&[
        ("accounts", "ui"),
        ("ui", "state"),
        ("app", "ui"),
        ("doctor", "cli"),
        ("pty", "process"),
    ]);
    let found = violations(&graph, &[]);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found[0].starts_with("accounts must not use ui"),
        "{found:?}"
    );
    assert!(found[1].starts_with("doctor must not use cli"), "{found:?}");
    assert_eq!(
        violations(&graph, &[("accounts", "ui"), ("doctor", "cli")]),
        Vec::<String>::new()
    );
    assert_eq!(find_cycle(&graph, &[]), None);

    let cyclic = graph_of(&[("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]);
    assert_eq!(
        find_cycle(&cyclic, &[]),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    assert_eq!(find_cycle(&cyclic, &[("b", "c")]), None);
}
