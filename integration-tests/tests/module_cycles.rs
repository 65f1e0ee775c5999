//! No import cycle between the modules of any crate of ours.
//!
//! For each crate root (every `lib.rs`, `main.rs` and `src/bin/*.rs`) this follows the
//! `mod` declarations, parses each module with `syn`, and collects every path it names that
//! starts with `crate::`, `self::`, `super::` or a child module's name (in `use` trees and in
//! code; paths inside macro invocations are not parsed). A reference from module `a::x::…`
//! to module `a::y::…` is an edge `a::x → a::y` between the two siblings under their common
//! parent; a module naming its own ancestor or descendant is not an edge (a parent owns its
//! children). A cycle is a strongly connected set of two or more siblings. Test modules count:
//! a `#[cfg(test)] mod tests` inside `a::x` that imports from `a::y` makes `a::x` depend on
//! `a::y` like any other code there.
//!
//! The test fails listing each cycle with one example reference (file and line) per edge.
//! On the tree of 2026-12-04 (1c346fd) it found four: pv-features `cpuid <-> exits`, vmm
//! `acpi <-> devices`, `boot <-> pvh`, and one of seven modules (`api`, `config`, `control`,
//! `seccomp`, `vcpu`, `vm`, `vm_config`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use syn::visit::Visit;

/// A module's path below its crate root (`[]` for the root).
type ModPath = Vec<String>;

/// One crate root's modules and the references between them.
#[derive(Debug, Default)]
struct ModuleGraph {
    /// Every module, with the file that holds it.
    modules: BTreeMap<ModPath, PathBuf>,
    /// Each module's raw references: (target path as written, resolved to segments below the
    /// crate root; the file and line it was seen at).
    refs: Vec<(ModPath, ModPath, String)>,
}

/// Reads the crate whose root file is `root` (its modules and their references).
fn read_crate(root: &Path) -> Result<ModuleGraph, String> {
    let mut graph = ModuleGraph::default();
    let dir = root
        .parent()
        .ok_or_else(|| format!("{}: no parent", root.display()))?;
    read_file_module(&mut graph, root, dir.to_path_buf(), Vec::new())?;
    Ok(graph)
}

/// Reads the module `path` held by `file`; its child modules' files live in `child_dir`.
fn read_file_module(
    graph: &mut ModuleGraph,
    file: &Path,
    child_dir: PathBuf,
    path: ModPath,
) -> Result<(), String> {
    let text = fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let ast = syn::parse_file(&text).map_err(|e| format!("{}: {e}", file.display()))?;
    read_items(graph, file, &child_dir, path, &ast.items)
}

fn read_items(
    graph: &mut ModuleGraph,
    file: &Path,
    child_dir: &Path,
    path: ModPath,
    items: &[syn::Item],
) -> Result<(), String> {
    graph.modules.insert(path.clone(), file.to_path_buf());
    let mut children = BTreeSet::new();
    for item in items {
        if let syn::Item::Mod(m) = item {
            children.insert(m.ident.to_string());
        }
    }
    let mut collector = RefCollector {
        file,
        path: &path,
        children: &children,
        found: Vec::new(),
    };
    for item in items {
        match item {
            syn::Item::Mod(m) => {
                let name = m.ident.to_string();
                let mut child = path.clone();
                child.push(name.clone());
                if m.attrs.iter().any(|a| a.path().is_ident("path")) {
                    return Err(format!(
                        "{}: `#[path]` on `mod {name}` is not followed by this check",
                        file.display()
                    ));
                }
                match &m.content {
                    Some((_, inner)) => {
                        read_items(graph, file, &child_dir.join(&name), child, inner)?
                    }
                    None => {
                        let flat = child_dir.join(format!("{name}.rs"));
                        let nested = child_dir.join(&name).join("mod.rs");
                        let child_file = if flat.is_file() {
                            flat
                        } else if nested.is_file() {
                            nested
                        } else {
                            return Err(format!("{}: no file for `mod {name}`", file.display()));
                        };
                        read_file_module(graph, &child_file, child_dir.join(&name), child)?;
                    }
                }
            }
            other => collector.visit_item(other),
        }
    }
    for (target, at) in collector.found {
        graph.refs.push((path.clone(), target, at));
    }
    Ok(())
}

/// Collects the crate-local paths one module's items name.
struct RefCollector<'a> {
    file: &'a Path,
    path: &'a ModPath,
    children: &'a BTreeSet<String>,
    found: Vec<(ModPath, String)>,
}

impl RefCollector<'_> {
    /// Resolves `segments` as written in this module to a path below the crate root, or None
    /// for a path outside the crate (another crate, std, a local name).
    fn resolve(&self, segments: &[String]) -> Option<ModPath> {
        let first = segments.first()?;
        let mut base = self.path.clone();
        let mut rest = segments;
        match first.as_str() {
            "crate" => {
                base.clear();
                rest = &rest[1..];
            }
            "self" => rest = &rest[1..],
            "super" => {
                while rest.first().map(String::as_str) == Some("super") {
                    base.pop()?;
                    rest = &rest[1..];
                }
            }
            name if self.children.contains(name) => {}
            _ => return None,
        }
        base.extend(rest.iter().filter(|s| s.as_str() != "self").cloned());
        Some(base)
    }

    fn note(&mut self, segments: &[String], span: proc_macro2::Span) {
        if let Some(target) = self.resolve(segments) {
            let at = format!("{}:{}", self.file.display(), span.start().line);
            self.found.push((target, at));
        }
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                prefix.push(n.ident.to_string());
                self.note(&prefix.clone(), n.ident.span());
                prefix.pop();
            }
            syn::UseTree::Rename(r) => {
                prefix.push(r.ident.to_string());
                self.note(&prefix.clone(), r.ident.span());
                prefix.pop();
            }
            syn::UseTree::Glob(g) => self.note(&prefix.clone(), g.star_token.spans[0]),
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t);
                }
            }
        }
    }
}

impl<'ast> Visit<'ast> for RefCollector<'_> {
    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        self.use_tree(&mut Vec::new(), &u.tree);
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        let segments: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        if p.leading_colon.is_none() && segments.len() > 1 {
            if let Some(first) = p.segments.first() {
                self.note(&segments, first.ident.span());
            }
        }
        syn::visit::visit_path(self, p);
    }
}

/// The sibling edges of a crate: `from → to` with one example reference each.
fn sibling_edges(graph: &ModuleGraph) -> BTreeMap<(ModPath, ModPath), String> {
    let mut edges = BTreeMap::new();
    for (from, target, at) in &graph.refs {
        // The longest prefix of the target that is a module.
        let Some(to) = (0..=target.len())
            .rev()
            .map(|n| target[..n].to_vec())
            .find(|p| graph.modules.contains_key(p))
        else {
            continue;
        };
        let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
        if common == from.len() || common == to.len() {
            continue; // one is the other's ancestor
        }
        let a = from[..=common].to_vec();
        let b = to[..=common].to_vec();
        edges
            .entry((a, b))
            .or_insert_with(|| format!("{at} names {}", display(target)));
    }
    edges
}

fn display(path: &[String]) -> String {
    if path.is_empty() {
        "crate".to_string()
    } else {
        format!("crate::{}", path.join("::"))
    }
}

/// The strongly connected sets of two or more modules (Tarjan's algorithm).
fn cycles(edges: &BTreeMap<(ModPath, ModPath), String>) -> Vec<Vec<ModPath>> {
    let mut next: BTreeMap<&ModPath, Vec<&ModPath>> = BTreeMap::new();
    for (a, b) in edges.keys() {
        next.entry(a).or_default().push(b);
        next.entry(b).or_default();
    }
    struct State<'g> {
        next: BTreeMap<&'g ModPath, Vec<&'g ModPath>>,
        index: BTreeMap<&'g ModPath, usize>,
        low: BTreeMap<&'g ModPath, usize>,
        stack: Vec<&'g ModPath>,
        on_stack: BTreeSet<&'g ModPath>,
        found: Vec<Vec<ModPath>>,
    }
    fn connect<'g>(s: &mut State<'g>, v: &'g ModPath) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.next[v].clone() {
            if !s.index.contains_key(w) {
                connect(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut set = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                set.push(w.clone());
                if w == v {
                    break;
                }
            }
            if set.len() > 1 {
                set.sort();
                s.found.push(set);
            }
        }
    }
    let nodes: Vec<&ModPath> = next.keys().copied().collect();
    let mut s = State {
        next,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in nodes {
        if !s.index.contains_key(v) {
            connect(&mut s, v);
        }
    }
    s.found
}

/// The cycles of the crate rooted at `root`, each under `name` with one example reference
/// per edge, or an empty string.
fn report(root: &Path, name: &str) -> Result<String, String> {
    let graph = read_crate(root)?;
    let edges = sibling_edges(&graph);
    let mut out = String::new();
    for set in cycles(&edges) {
        let names: Vec<String> = set.iter().map(|p| display(p)).collect();
        let _ = writeln!(out, "{name}: import cycle between {}", names.join(", "));
        for ((a, b), example) in &edges {
            if set.contains(a) && set.contains(b) {
                let _ = writeln!(out, "    {} -> {}: {example}", display(a), display(b));
            }
        }
    }
    Ok(out)
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("integration-tests has a parent")
        .to_path_buf()
}

/// Every crate root of ours: the workspace members' and the fuzz crate's.
fn crate_roots() -> Vec<PathBuf> {
    let repo = repo();
    let mut roots = Vec::new();
    for krate in [
        "pv-features",
        "hypervisor-glue",
        "vmm",
        "integration-tests",
        "fuzz",
    ] {
        let src = repo.join(krate).join("src");
        for name in ["lib.rs", "main.rs"] {
            if src.join(name).is_file() {
                roots.push(src.join(name));
            }
        }
        if let Ok(bins) = fs::read_dir(src.join("bin")) {
            let mut bins: Vec<PathBuf> = bins.filter_map(|e| e.ok()).map(|e| e.path()).collect();
            bins.sort();
            roots.extend(
                bins.into_iter()
                    .filter(|p| p.extension().is_some_and(|e| e == "rs")),
            );
        }
    }
    roots
}

#[test]
fn no_crate_of_ours_has_an_import_cycle() {
    let roots = crate_roots();
    assert!(roots.len() >= 5, "found only {roots:?}");
    let mut failures = String::new();
    for root in &roots {
        let rel = root
            .strip_prefix(repo())
            .unwrap_or(root)
            .display()
            .to_string();
        match report(root, &rel) {
            Ok(text) => failures.push_str(&text),
            Err(e) => {
                let _ = writeln!(failures, "{e}");
            }
        }
    }
    assert!(failures.is_empty(), "\n{failures}");
}

/// A throwaway crate under the target directory, for the checker's own tests.
fn scratch_crate(name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("module-cycles")
        .join(name);
    let _ = fs::remove_dir_all(&dir);
    for (path, text) in files {
        let file = dir.join(path);
        fs::create_dir_all(file.parent().expect("a file has a parent"))
            .expect("create the scratch directory");
        fs::write(&file, text).expect("write a scratch file");
    }
    dir.join("lib.rs")
}

#[test]
fn a_two_module_cycle_is_found_with_both_edges() {
    let root = scratch_crate(
        "pair",
        &[
            ("lib.rs", "pub mod a;\npub mod b;\n"),
            ("a.rs", "use crate::b::B;\npub struct A;\n"),
            (
                "b.rs",
                "pub struct B;\npub fn f() -> crate::a::A { crate::a::A }\n",
            ),
        ],
    );
    let text = report(&root, "scratch").expect("the scratch crate parses");
    assert!(
        text.contains("import cycle between crate::a, crate::b"),
        "{text}"
    );
    assert!(
        text.contains("crate::a -> crate::b:") && text.contains("a.rs:1 names crate::b::B"),
        "{text}"
    );
    assert!(
        text.contains("crate::b -> crate::a:") && text.contains("b.rs:2"),
        "{text}"
    );
}

#[test]
fn a_cycle_through_grouped_uses_super_and_nested_folders_is_found() {
    let root = scratch_crate(
        "nested",
        &[
            ("lib.rs", "mod outer;\n"),
            ("outer/mod.rs", "mod x;\nmod y;\nmod z;\n"),
            ("outer/x.rs", "use super::{y::{self, Y}};\n"),
            ("outer/y.rs", "use crate::outer::z::*;\n"),
            (
                "outer/z.rs",
                "#[cfg(test)]\nmod tests {\n    use super::super::x;\n}\n",
            ),
        ],
    );
    let text = report(&root, "scratch").expect("the scratch crate parses");
    assert!(
        text.contains("import cycle between crate::outer::x, crate::outer::y, crate::outer::z"),
        "{text}"
    );
}

#[test]
fn parents_children_and_other_crates_are_not_cycles() {
    let root = scratch_crate(
        "layered",
        &[
            ("lib.rs", "pub mod api;\npub mod low;\npub use api::Thing;\n"),
            ("api/mod.rs", "mod server;\npub use server::Thing;\nuse crate::low::f;\n"),
            ("api/server.rs", "use super::super::low;\npub struct Thing;\nfn g() { std::mem::drop(super::Thing); }\n"),
            ("low.rs", "pub fn f() {}\nmod tests { use super::f; use serde::Serialize; }\n"),
        ],
    );
    let text = report(&root, "scratch").expect("the scratch crate parses");
    assert_eq!(text, "");
}

#[test]
fn a_missing_module_file_is_an_error_not_a_pass() {
    let root = scratch_crate("missing", &[("lib.rs", "mod gone;\n")]);
    let err = report(&root, "scratch").expect_err("no file for mod gone");
    assert!(err.contains("no file for `mod gone`"), "{err}");
}
