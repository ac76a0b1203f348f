//! The modules of `proxy/src` depend on each other one way only: no import cycle.
//!
//! Reads every source file, resolves each path that names a module of the crate (`crate::…`,
//! `super::…`, `self::…`, a child module by name, grouped imports `crate::a::{b, c::D}`) to the
//! longest module it names, and looks for a cycle in the resulting graph. A parent declaring a
//! child (`mod x;`) is ownership, not a dependency; a child using its parent's items is one.
//! `cargo test --test module_graph -- --nocapture` prints the graph.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path, `crate::a::b`.
type Module = String;

fn module_of(src: &Path, file: &Path) -> Option<Module> {
    let rel = file.strip_prefix(src).ok()?;
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop()?;
    match last.as_str() {
        "lib.rs" if parts.is_empty() => {}
        "main.rs" if parts.is_empty() => return None,
        "mod.rs" => {}
        name => parts.push(name.strip_suffix(".rs")?.to_string()),
    }
    let mut m = String::from("crate");
    for p in parts {
        m.push_str("::");
        m.push_str(&p);
    }
    Some(m)
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The text without comments.
fn code(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every path (as segments) starting at byte `i` of `s`: `a::b::{c, d::e}` gives `a::b::c` and
/// `a::b::d::e`.
fn paths_at(s: &[char], mut i: usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
    let mut segs = prefix;
    loop {
        while i < s.len() && s[i].is_whitespace() {
            i += 1;
        }
        if i < s.len() && s[i] == '{' {
            i += 1;
            loop {
                i = paths_at(s, i, segs.clone(), out);
                while i < s.len() && (s[i].is_whitespace() || s[i] == ',') {
                    i += 1;
                }
                if i >= s.len() || s[i] == '}' {
                    return i + 1;
                }
            }
        }
        let start = i;
        while i < s.len() && is_ident(s[i]) {
            i += 1;
        }
        if start == i {
            out.push(segs);
            return i;
        }
        segs.push(s[start..i].iter().collect());
        if i + 1 < s.len() && s[i] == ':' && s[i + 1] == ':' {
            i += 2;
        } else {
            out.push(segs);
            return i;
        }
    }
}

/// The modules `text` (the code of module `me`, whose child modules are `children`) refers to.
fn references(me: &str, text: &str, children: &BTreeSet<String>) -> Vec<Vec<String>> {
    let s: Vec<char> = text.chars().collect();
    let mut out = vec![];
    let mut i = 0;
    while i < s.len() {
        if !is_ident(s[i]) || (i > 0 && (is_ident(s[i - 1]) || s[i - 1] == ':')) {
            i += 1;
            continue;
        }
        let start = i;
        while i < s.len() && is_ident(s[i]) {
            i += 1;
        }
        let word: String = s[start..i].iter().collect();
        if !(i + 1 < s.len() && s[i] == ':' && s[i + 1] == ':') {
            continue;
        }
        let base: Vec<String> = match word.as_str() {
            "crate" => vec!["crate".into()],
            "self" => me.split("::").map(str::to_string).collect(),
            "super" => {
                let mut m: Vec<String> = me.split("::").map(str::to_string).collect();
                m.pop();
                // `super::super::…`
                let mut j = i + 2;
                while s[j..].starts_with(&['s', 'u', 'p', 'e', 'r', ':', ':']) {
                    m.pop();
                    j += 7;
                }
                i = j - 2;
                m
            }
            w if children.contains(w) => {
                let mut m: Vec<String> = me.split("::").map(str::to_string).collect();
                m.push(w.to_string());
                m
            }
            _ => continue,
        };
        let mut found = vec![];
        i = paths_at(&s, i + 2, base, &mut found);
        out.extend(found);
    }
    out
}

/// The longest module a path names.
fn resolve(path: &[String], modules: &BTreeSet<Module>) -> Option<Module> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].join("::"))
        .find(|m| modules.contains(m))
}

fn graph() -> BTreeMap<Module, BTreeSet<Module>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = vec![];
    files(&src, &mut all);
    let sources: BTreeMap<Module, String> = all
        .iter()
        .filter_map(|f| Some((module_of(&src, f)?, std::fs::read_to_string(f).ok()?)))
        .collect();
    let modules: BTreeSet<Module> = sources.keys().cloned().collect();
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (me, text) in &sources {
        let prefix = format!("{me}::");
        let children: BTreeSet<String> = modules
            .iter()
            .filter_map(|m| m.strip_prefix(&prefix))
            .filter(|rest| !rest.contains("::"))
            .map(str::to_string)
            .collect();
        let out = edges.entry(me.clone()).or_default();
        // An inline test module (`#[cfg(test)] mod tests { use super::*; ... }`) is a child:
        // its `super` is this module.
        let code = code(text);
        let (body, tests) = match code.find("#[cfg(test)]\nmod tests") {
            Some(i) => code.split_at(i),
            None => (code.as_str(), ""),
        };
        let in_tests = format!("{me}::tests");
        let paths = references(me, body, &children)
            .into_iter()
            .chain(references(&in_tests, tests, &BTreeSet::new()));
        for path in paths {
            if let Some(target) = resolve(&path, &modules)
                && &target != me
            {
                out.insert(target);
            }
        }
    }
    edges
}

/// A cycle, if there is one.
fn cycle(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Option<Vec<Module>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    fn visit(
        m: &Module,
        edges: &BTreeMap<Module, BTreeSet<Module>>,
        marks: &mut BTreeMap<Module, Mark>,
        stack: &mut Vec<Module>,
    ) -> Option<Vec<Module>> {
        marks.insert(m.clone(), Mark::Open);
        stack.push(m.clone());
        for next in edges.get(m).into_iter().flatten() {
            match marks.get(next).copied().unwrap_or(Mark::New) {
                Mark::Open => {
                    let from = stack.iter().position(|x| x == next).unwrap();
                    let mut c = stack[from..].to_vec();
                    c.push(next.clone());
                    return Some(c);
                }
                Mark::New => {
                    if let Some(c) = visit(next, edges, marks, stack) {
                        return Some(c);
                    }
                }
                Mark::Done => {}
            }
        }
        stack.pop();
        marks.insert(m.clone(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for m in edges.keys() {
        if marks.get(m).copied().unwrap_or(Mark::New) == Mark::New {
            let mut stack = vec![];
            if let Some(c) = visit(m, edges, &mut marks, &mut stack) {
                return Some(c);
            }
        }
    }
    None
}

#[test]
fn the_reader_finds_paths_of_every_form() {
    let children: BTreeSet<String> = ["store".to_string()].into();
    let text = "use crate::a::{b::C, d};\nuse super::x::Y;\nlet s = store::open();\nuse self::z;";
    let got: Vec<String> = references("crate::m::n", text, &children)
        .iter()
        .map(|p| p.join("::"))
        .collect();
    assert_eq!(
        got,
        [
            "crate::a::b::C",
            "crate::a::d",
            "crate::m::x::Y",
            "crate::m::n::store::open",
            "crate::m::n::z",
        ]
    );
    assert_eq!(
        references("crate::a::b", "super::super::c::D", &BTreeSet::new())[0].join("::"),
        "crate::c::D"
    );
}

#[test]
fn the_module_graph_has_no_cycle() {
    let edges = graph();
    for (m, to) in &edges {
        println!(
            "{m} -> {}",
            to.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    // The reader saw the crate: the front door calls the engine, the engine the vault.
    assert!(edges.len() > 30, "{} modules", edges.len());
    assert!(edges["crate::http::query"].contains("crate::engine"));
    assert!(edges["crate::engine::connection"].contains("crate::vault"));
    if let Some(c) = cycle(&edges) {
        panic!("import cycle: {}", c.join(" -> "));
    }
    // The engine knows nothing of HTTP: no edge to the front door, no HTTP crate.
    for (m, to) in &edges {
        let inside = |p: &str| m == p || m.starts_with(&format!("{p}::"));
        if inside("crate::engine") || inside("crate::auth") || inside("crate::vault") {
            let http: Vec<_> = to
                .iter()
                .filter(|t| t.starts_with("crate::http") || *t == "crate::app")
                .collect();
            assert!(http.is_empty(), "{m} depends on {http:?}");
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = vec![];
    files(&src, &mut all);
    for f in all {
        let m = module_of(&src, &f).unwrap_or_default();
        let protocol_free = [
            "crate::engine",
            "crate::auth",
            "crate::vault",
            "crate::error",
            "crate::context",
        ]
        .iter()
        .any(|p| m == *p || m.starts_with(&format!("{p}::")));
        if protocol_free {
            let text = code(&std::fs::read_to_string(&f).unwrap());
            for word in ["axum", "StatusCode", "HeaderMap", "hyper"] {
                assert!(!text.contains(word), "{m} uses {word}");
            }
        }
    }
}
