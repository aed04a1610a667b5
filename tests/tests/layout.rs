//! The layout's rules, checked against the code itself.
//!
//! - Inside every crate, the files' imports of each other (`use crate::`,
//!   `use super::`, `crate::x::` paths) form no circle. A crate's root file
//!   (`lib.rs`, `main.rs`) is its facade: it declares and re-exports the
//!   others, so edges into and out of it are left out; a module's own
//!   `mod.rs` likewise.
//! - The layers' dependencies are the ones ARCHITECTURE.md names: only
//!   `courier-store-fjall` depends on fjall, only `courier-store-jetstream`
//!   on async-nats, only `courier-plugin-host` on wasmtime, only
//!   `courier-api` on axum, the core on none of them, and an
//!   embedder of `courier-engine` pulls in none of the CLI's and the
//!   benchmark's crates.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn crates() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(repo().join("crates"))
        .expect("crates/")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.join("Cargo.toml").is_file())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 8, "crates/ holds the workspace's crates");
    dirs
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

/// `src/a/b.rs` -> `["a", "b"]`; `src/a/mod.rs` -> `["a"]`; roots -> `[]`.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = relative
        .iter()
        .map(|part| part.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_owned());
    }
    parts
}

/// Is this file a facade whose edges are left out (a root or a `mod.rs`)?
fn is_facade(file: &Path) -> bool {
    matches!(
        file.file_name().and_then(|name| name.to_str()),
        Some("lib.rs" | "main.rs" | "mod.rs")
    )
}

/// The module paths a file's code names, resolved against the crate's
/// modules (the longest known prefix of each path).
fn references(
    text: &str,
    here: &[String],
    modules: &BTreeSet<Vec<String>>,
) -> BTreeSet<Vec<String>> {
    let mut found = BTreeSet::new();
    let code = strip_comments(text);
    for (prefix, base) in [("crate::", Vec::new()), ("super::", parent_of(here))] {
        let mut rest = code.as_str();
        while let Some(at) = rest.find(prefix) {
            let before = rest[..at].chars().last();
            rest = &rest[at + prefix.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            for path in expand(rest) {
                let mut full = base.clone();
                full.extend(path);
                while !full.is_empty() && !modules.contains(&full) {
                    full.pop();
                }
                if !full.is_empty() && full.as_slice() != here {
                    found.insert(full);
                }
            }
        }
    }
    found
}

/// The module `super::` names from a file's top level: its parent (a
/// `foo/mod.rs` is module `foo` already, so the same rule holds).
fn parent_of(here: &[String]) -> Vec<String> {
    let mut parent = here.to_vec();
    parent.pop();
    parent
}

/// The paths a `use` tail or an inline path starts: `a::b::C` gives
/// `[a, b, C]`; `{a, b::{c, d}}` gives each branch's first segments.
fn expand(rest: &str) -> Vec<Vec<String>> {
    let rest = rest.trim_start();
    if let Some(group) = rest.strip_prefix('{') {
        let mut depth = 1;
        let mut end = 0;
        for (index, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = index;
                        break;
                    }
                }
                _ => {}
            }
        }
        let inner = &group[..end];
        let mut out = Vec::new();
        let mut depth = 0;
        let mut start = 0;
        for (index, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    out.extend(expand(&inner[start..index]));
                    start = index + 1;
                }
                _ => {}
            }
        }
        out.extend(expand(&inner[start..]));
        return out;
    }
    let mut path = Vec::new();
    let mut tail = rest;
    loop {
        let ident: String = tail
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if ident.is_empty() {
            break;
        }
        tail = &tail[ident.len()..];
        path.push(ident);
        match tail.strip_prefix("::") {
            Some(next) if next.starts_with('{') => {
                let base = path.clone();
                return expand(next)
                    .into_iter()
                    .map(|branch| base.iter().cloned().chain(branch).collect())
                    .collect();
            }
            Some(next) => tail = next,
            None => break,
        }
    }
    vec![path]
}

fn strip_comments(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every circle of `edges` (one per strongly connected component of more
/// than one node), by Tarjan's algorithm.
fn circles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Walk<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, node: &'a str) {
            let n = self.index.len();
            self.index.insert(node, n);
            self.low.insert(node, n);
            self.stack.push(node);
            self.on_stack.insert(node);
            for next in self.edges.get(node).into_iter().flatten() {
                let next = next.as_str();
                if !self.index.contains_key(next) {
                    self.visit(next);
                    let low = self.low[node].min(self.low[next]);
                    self.low.insert(node, low);
                } else if self.on_stack.contains(next) {
                    let low = self.low[node].min(self.index[next]);
                    self.low.insert(node, low);
                }
            }
            if self.low[node] == self.index[node] {
                let mut component = Vec::new();
                while let Some(top) = self.stack.pop() {
                    self.on_stack.remove(top);
                    component.push(top.to_owned());
                    if top == node {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for node in edges.keys() {
        if !walk.index.contains_key(node.as_str()) {
            walk.visit(node);
        }
    }
    walk.found
}

/// The file-to-file import edges of one crate, facades left out.
fn import_edges(crate_dir: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let src = crate_dir.join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let by_module: BTreeMap<Vec<String>, PathBuf> = files
        .iter()
        .map(|file| (module_path(&src, file), file.clone()))
        .collect();
    let modules: BTreeSet<Vec<String>> = by_module.keys().cloned().collect();
    let name = |file: &Path| {
        file.strip_prefix(repo())
            .expect("in the repo")
            .display()
            .to_string()
    };
    let mut edges = BTreeMap::new();
    for file in &files {
        if is_facade(file) {
            continue;
        }
        let here = module_path(&src, file);
        let text = std::fs::read_to_string(file).expect("readable source");
        let targets: BTreeSet<String> = references(&text, &here, &modules)
            .into_iter()
            .filter_map(|module| by_module.get(&module))
            .filter(|target| !is_facade(target))
            .map(|target| name(target))
            .collect();
        edges.insert(name(file), targets);
    }
    edges
}

#[test]
fn no_crate_has_an_import_circle_between_its_files() {
    let mut all = Vec::new();
    for dir in crates() {
        for circle in circles(&import_edges(&dir)) {
            all.push(circle.join(" <-> "));
        }
    }
    assert!(all.is_empty(), "import circles:\n{}", all.join("\n"));
}

#[test]
fn the_circle_finder_finds_a_circle_and_resolves_paths() {
    // The checker must be able to fail: two files naming each other.
    let mut edges = BTreeMap::new();
    edges.insert("a".to_owned(), BTreeSet::from(["b".to_owned()]));
    edges.insert(
        "b".to_owned(),
        BTreeSet::from(["a".to_owned(), "c".to_owned()]),
    );
    edges.insert("c".to_owned(), BTreeSet::new());
    assert_eq!(circles(&edges), vec![vec!["a".to_owned(), "b".to_owned()]]);

    let modules: BTreeSet<Vec<String>> = [vec!["x"], vec!["y"], vec!["y", "z"]]
        .into_iter()
        .map(|path| path.into_iter().map(String::from).collect())
        .collect();
    let text = "use super::y::{z::Thing, Other};\nlet v = crate::x::f(); // crate::nope\n";
    let found = references(text, &["w".to_owned()], &modules);
    let expected: BTreeSet<Vec<String>> = [vec!["x"], vec!["y"], vec!["y", "z"]]
        .into_iter()
        .map(|path| path.into_iter().map(String::from).collect())
        .collect();
    assert_eq!(found, expected);
}

/// The names in a crate's `[dependencies]` (not dev-dependencies).
fn dependencies(crate_dir: &Path) -> BTreeSet<String> {
    let manifest = std::fs::read_to_string(crate_dir.join("Cargo.toml")).expect("manifest");
    let mut in_deps = false;
    let mut names = BTreeSet::new();
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
            continue;
        }
        if in_deps && let Some((name, _)) = line.split_once(['=', '.']) {
            let name = name.trim();
            if !name.is_empty() && !name.starts_with('#') {
                names.insert(name.to_owned());
            }
        }
    }
    names
}

fn package_name(crate_dir: &Path) -> String {
    let manifest = std::fs::read_to_string(crate_dir.join("Cargo.toml")).expect("manifest");
    manifest
        .lines()
        .find_map(|line| line.strip_prefix("name = "))
        .expect("a package name")
        .trim_matches('"')
        .to_owned()
}

#[test]
fn each_engine_dependency_belongs_to_one_layer() {
    let deps: BTreeMap<String, BTreeSet<String>> = crates()
        .iter()
        .map(|dir| (package_name(dir), dependencies(dir)))
        .collect();
    for (dependency, only) in [
        ("fjall", "courier-store-fjall"),
        ("wasmtime", "courier-plugin-host"),
        ("wasmtime-wasi", "courier-plugin-host"),
        ("axum", "courier-api"),
        ("async-nats", "courier-store-jetstream"),
    ] {
        let users: Vec<&String> = deps
            .iter()
            .filter(|(_, names)| names.contains(dependency))
            .map(|(package, _)| package)
            .collect();
        assert_eq!(users, vec![only], "who depends on {dependency}");
    }
    let core = &deps["courier-core"];
    assert!(
        core.iter().all(|name| !name.starts_with("courier-")),
        "the core depends on no other layer: {core:?}"
    );

    // Everything an embedder of the engine builds.
    let mut closure = BTreeSet::new();
    let mut todo = vec!["courier-engine".to_owned()];
    while let Some(package) = todo.pop() {
        if closure.insert(package.clone()) {
            todo.extend(
                deps[&package]
                    .iter()
                    .filter(|name| deps.contains_key(*name))
                    .cloned(),
            );
        }
    }
    for package in &closure {
        for tool in [
            "clap",
            "indicatif",
            "comfy-table",
            "reqwest",
            "hdrhistogram",
            "anyhow",
        ] {
            assert!(
                !deps[package].contains(tool),
                "{package} (built by every embedder of courier-engine) depends on {tool}"
            );
        }
        for product in [
            "courier",
            "courier-bench",
            "courier-client",
            "courier-workload",
        ] {
            assert_ne!(package, product, "courier-engine pulls in {product}");
        }
    }
}
