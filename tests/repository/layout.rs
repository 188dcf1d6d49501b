//! The code's layering: inside each crate, no module imports one that imports it back,
//! directly or through others; and no source file grows past what one reads at once.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use test_support::repository_root;

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)
        .expect("readable directory")
        .flatten()
    {
        let path = entry.path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
    files
}

/// The module path of a source file relative to `src`: `routes/mod.rs` → `routes`,
/// `http/error.rs` → `http::error`, `lib.rs` → ``.
fn module_of(relative: &Path) -> String {
    let mut parts: Vec<String> = relative
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts.join("::")
}

/// The `crate::…` paths a source file names, braces expanded one level
/// (`crate::{a, b::c}` → `a`, `b::c`).
fn crate_paths(source: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let is_path_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    for (start, _) in source.match_indices("crate::") {
        let rest = &source[start + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let inner = &group[..group.find('}').unwrap_or(group.len())];
            paths.extend(
                inner
                    .split(',')
                    .map(|item| item.trim().split(" as ").next().unwrap_or("").to_owned())
                    .filter(|item| !item.is_empty()),
            );
        } else {
            let end = rest.find(|c| !is_path_char(c)).unwrap_or(rest.len());
            paths.push(rest[..end].trim_end_matches(':').to_owned());
        }
    }
    paths
}

/// The longest known module that `path` starts with.
fn resolve<'a>(path: &str, modules: &'a BTreeSet<String>) -> Option<&'a String> {
    let segments: Vec<&str> = path.split("::").collect();
    (1..=segments.len())
        .rev()
        .map(|n| segments[..n].join("::"))
        .find_map(|candidate| modules.get(&candidate))
}

/// Module → the modules of its own crate it imports.
fn import_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let files: Vec<(String, String)> = rust_files(src)
        .into_iter()
        .map(|file| {
            let module = module_of(file.strip_prefix(src).expect("under src"));
            let source = std::fs::read_to_string(&file).expect("readable source");
            (module, source)
        })
        .collect();
    let modules: BTreeSet<String> = files.iter().map(|(module, _)| module.clone()).collect();
    files
        .iter()
        .map(|(module, source)| {
            let imports = crate_paths(source)
                .iter()
                .filter_map(|path| resolve(path, &modules))
                .filter(|target| *target != module && !target.is_empty())
                // A parent declares its children; a child naming its parent's items is
                // the usual shape, not a cycle.
                .filter(|target| !module.starts_with(&format!("{target}::")))
                .cloned()
                .collect();
            (module.clone(), imports)
        })
        .collect()
}

/// One cycle of the graph, if it has any.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
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
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_crate_has_an_import_cycle_between_its_modules() {
    let crates = repository_root().join("crates");
    for entry in std::fs::read_dir(&crates).expect("crates/").flatten() {
        let src = entry.path().join("src");
        if !src.is_dir() {
            continue;
        }
        let graph = import_graph(&src);
        assert_eq!(
            find_cycle(&graph),
            None,
            "import cycle in {}",
            entry.path().display()
        );
    }
}

/// The longest a source file under `crates/*/src` may be, in lines.
const MAX_SOURCE_LINES: usize = 500;

#[test]
fn no_source_file_is_longer_than_500_lines() {
    let crates = repository_root().join("crates");
    let mut long = Vec::new();
    for entry in std::fs::read_dir(&crates).expect("crates/").flatten() {
        let src = entry.path().join("src");
        if !src.is_dir() {
            continue;
        }
        for file in rust_files(&src) {
            let lines = std::fs::read_to_string(&file)
                .expect("readable source")
                .lines()
                .count();
            if lines > MAX_SOURCE_LINES {
                long.push(format!("{} ({lines} lines)", file.display()));
            }
        }
    }
    assert!(
        long.is_empty(),
        "longer than {MAX_SOURCE_LINES} lines: {long:?}"
    );
}

#[test]
fn a_cycle_through_three_modules_is_found() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("startup", &["routes"][..]),
        ("routes", &["state"]),
        ("state", &["startup"]),
    ]
    .into_iter()
    .map(|(node, edges)| {
        (
            node.to_owned(),
            edges.iter().map(|edge| (*edge).to_owned()).collect(),
        )
    })
    .collect();
    assert_eq!(
        find_cycle(&graph).map(|cycle| cycle.len()),
        Some(4),
        "routes → state → startup → routes"
    );
}

#[test]
fn braced_imports_are_read_one_by_one() {
    assert_eq!(
        crate_paths(
            "use crate::{attachments, posts::routes as r};\nuse crate::http::error::ApiError;"
        ),
        ["attachments", "posts::routes", "http::error::ApiError"]
    );
}
