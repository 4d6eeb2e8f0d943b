//! Guards the engine's layout, which the compiler does not:
//!
//! * the files of `actors/src` use one another without circles, so each file can be read,
//!   changed and tested knowing only the files below it (a port of `tools/cycles.py`);
//! * no source file of the engine, the daemon or the load test grows past 600 lines,
//!   the point at which a file stops being readable in one sitting.
//!
//! `LAYOUT_EDGES=1 cargo test -p umsd-actors --test layout -- --nocapture` prints every
//! file's edges in the format of `python3 tools/cycles.py actors/src -v`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Each file (relative to `src`, `/`-separated) and the files it uses.
type Graph = BTreeMap<String, BTreeSet<String>>;

const MAX_LINES: usize = 600;

/// Files allowed past `MAX_LINES`, relative to the workspace root, each with its reason.
const LONG_FILES_ALLOWED: &[(&str, &str)] = &[];

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// `src` with comments and string and char literals turned into spaces (newlines are kept,
/// so lines stay lines): a path mentioned in prose or in a message is not a dependency.
fn blank(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    // The index just past the first `pat` at or after `from`.
    let past = |from: usize, pat: &[char]| {
        (from..c.len())
            .find(|&j| c[j..].starts_with(pat))
            .map_or(c.len(), |j| j + pat.len())
    };
    let (mut out, mut i) = (String::with_capacity(src.len()), 0);
    while i < c.len() {
        let at = |k: usize| c.get(i + k).copied().unwrap_or(' ');
        let hashes = c[i + 1..].iter().take_while(|&&ch| ch == '#').count();
        let end = match (at(0), at(1)) {
            ('/', '/') => past(i, &['\n']),
            ('/', '*') => {
                // Block comments nest.
                let (mut j, mut depth) = (i + 2, 1);
                while j < c.len() && depth > 0 {
                    match (c[j], c.get(j + 1).copied().unwrap_or(' ')) {
                        ('/', '*') => (depth, j) = (depth + 1, j + 1),
                        ('*', '/') => (depth, j) = (depth - 1, j + 1),
                        _ => {}
                    }
                    j += 1;
                }
                j
            }
            ('"', _) => {
                let mut j = i + 1;
                while j < c.len() && c[j] != '"' {
                    j += if c[j] == '\\' { 2 } else { 1 };
                }
                j + 1
            }
            // `r"…"`, `r#"…"#`: up to a quote followed by as many `#` as opened it.
            ('r', _) if at(1 + hashes) == '"' => {
                let close: Vec<char> = format!("\"{}", "#".repeat(hashes)).chars().collect();
                past(i + 2 + hashes, &close)
            }
            // `'\n'`, `'\''`, `'\u{7f}'`; then `'a'`. A lifetime (`'a`, `'static`) has no
            // closing quote, so it stays code.
            ('\'', '\\') => past(i + 3, &['\'']),
            ('\'', _) if at(2) == '\'' => i + 3,
            _ => {
                out.push(c[i]);
                i += 1;
                continue;
            }
        };
        let end = end.min(c.len());
        for &ch in &c[i..end] {
            out.push(if ch == '\n' { '\n' } else { ' ' });
        }
        i = end;
    }
    out
}

/// The child module a line declares (`mod x;`, `pub mod x;`, `pub(crate) mod x;`), if any.
fn declared_mod(line: &str) -> Option<&str> {
    let mut rest = line.trim();
    if let Some(after) = rest.strip_prefix("pub") {
        rest = match after.strip_prefix('(') {
            Some(scope) => &scope[scope.find(')')? + 1..],
            None => after,
        }
        .trim_start();
    }
    let name = rest.strip_prefix("mod ")?.strip_suffix(';')?.trim();
    (!name.is_empty() && name.chars().all(is_ident)).then_some(name)
}

/// `code` as tokens: identifiers, `::` and single other characters, without whitespace.
fn tokens(code: &str) -> Vec<String> {
    let (mut toks, mut prev): (Vec<String>, char) = (Vec::new(), ' ');
    for ch in code.chars() {
        match toks.last_mut() {
            Some(last) if is_ident(ch) && is_ident(prev) => last.push(ch),
            Some(last) if ch == ':' && prev == ':' && last == ":" => last.push(ch),
            _ if !ch.is_whitespace() => toks.push(ch.to_string()),
            _ => {}
        }
        prev = ch;
    }
    toks
}

/// The module paths, from the crate root, that `code` (already blanked) names in the module
/// at `me`: paths from `crate`, `super`, `self` or a child module declared here, plus, for a
/// `::{a, b::C, self}` group, the path to the first segment of each item but `self`.
fn targets(code: &str, me: &[String]) -> Vec<Vec<String>> {
    let kids: Vec<&str> = code.lines().filter_map(declared_mod).collect();
    let toks = tokens(code);
    let tok = |k: usize| toks.get(k).map_or("", String::as_str);
    let word = |k: usize| tok(k).starts_with(is_ident);
    let (mut found, mut t) = (Vec::new(), 0);
    while t < toks.len() {
        let head = tok(t);
        t += 1;
        let mut base = match head {
            _ if t >= 2 && tok(t - 2) == "::" => continue, // inside another path
            "crate" => vec![],
            "self" => me.to_vec(),
            "super" => me[..me.len().saturating_sub(1)].to_vec(),
            kid if kids.contains(&kid) => [me, &[kid.to_string()]].concat(),
            _ => continue,
        };
        let mut segs = Vec::new();
        while tok(t) == "::" && word(t + 1) {
            if head == "super" && tok(t + 1) == "super" && segs.is_empty() {
                base.pop();
            } else {
                segs.push(tok(t + 1).to_string());
            }
            t += 2;
        }
        let mut items = Vec::new();
        if tok(t) == "::" && tok(t + 1) == "{" {
            // An item starts after the `{` or after a comma outside nested groups.
            let (mut depth, mut fresh) = (0, true);
            t += 2;
            while t < toks.len() && !(depth == 0 && tok(t) == "}") {
                let item = tok(t);
                if fresh && word(t) && item != "self" {
                    items.push(item.to_string());
                }
                match item {
                    "{" => depth += 1,
                    "}" => depth -= 1,
                    _ => {}
                }
                fresh = depth == 0 && item == ",";
                t += 1;
            }
        }
        if segs.is_empty() && items.is_empty() {
            continue; // `self.x`, `pub(super)`: a keyword, not a path
        }
        // `use super::{a, b}` names `a` and `b`, not the parent module itself.
        let prefix = [base, segs.clone()].concat();
        if !segs.is_empty() {
            found.push(prefix.clone());
        }
        for item in items {
            found.push([prefix.clone(), vec![item]].concat());
        }
    }
    found
}

/// Every `.rs` file under `dir`, recursively.
fn rs_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(rs_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
    found
}

/// `path` relative to `root`, `/`-separated.
fn rel(path: &Path, root: &Path) -> String {
    path.strip_prefix(root)
        .unwrap()
        .to_string_lossy()
        .replace('\\', "/")
}

/// `a/b.rs` is module `a::b`, `a/mod.rs` is `a`, `lib.rs` the crate root.
fn module_path(file: &str) -> Vec<String> {
    let mut parts: Vec<&str> = file.trim_end_matches(".rs").split('/').collect();
    if parts
        .last()
        .is_some_and(|last| ["mod", "lib", "main"].contains(last))
    {
        parts.pop();
    }
    parts.into_iter().map(String::from).collect()
}

/// The file that holds the longest prefix of `path` that is a file.
fn file_of(path: &[String], files: &BTreeMap<String, String>) -> Option<String> {
    (0..=path.len()).rev().find_map(|n| {
        let pre = path[..n].join("/");
        let candidates = match n {
            0 => vec!["lib.rs".to_string()],
            _ => vec![format!("{pre}.rs"), format!("{pre}/mod.rs")],
        };
        candidates.into_iter().find(|c| files.contains_key(c))
    })
}

/// Which files of the crate at `src` use which.
fn graph(src: &Path) -> Graph {
    let files: BTreeMap<String, String> = rs_files(src)
        .iter()
        .map(|p| (rel(p, src), fs::read_to_string(p).unwrap()))
        .collect();
    let mut graph = Graph::new();
    for (file, text) in &files {
        let mut code = blank(text);
        // Tests may reach anywhere; only what ships counts.
        if let Some(at) = code.find("#[cfg(test)]") {
            code.truncate(at);
        }
        let uses = targets(&code, &module_path(file))
            .iter()
            .filter_map(|t| file_of(t, &files))
            .filter(|used| used != file)
            .collect();
        graph.insert(file.clone(), uses);
    }
    graph
}

/// Tarjan's strongly connected components, keeping those of more than one file.
#[derive(Default)]
struct Tarjan<'g> {
    index: BTreeMap<&'g str, usize>,
    low: BTreeMap<&'g str, usize>,
    stack: Vec<&'g str>,
    circles: Vec<Vec<String>>,
}

impl<'g> Tarjan<'g> {
    fn visit(&mut self, graph: &'g Graph, v: &'g str) {
        let n = self.index.len();
        self.index.insert(v, n);
        self.low.insert(v, n);
        self.stack.push(v);
        for w in graph[v].iter().map(String::as_str) {
            let reach = if !self.index.contains_key(w) {
                self.visit(graph, w);
                self.low[w]
            } else if self.stack.contains(&w) {
                self.index[w]
            } else {
                continue;
            };
            let low = self.low.get_mut(v).unwrap();
            *low = (*low).min(reach);
        }
        if self.low[v] == self.index[v] {
            let at = self.stack.iter().rposition(|&x| x == v).unwrap();
            let mut circle: Vec<String> = self.stack.drain(at..).map(String::from).collect();
            if circle.len() > 1 {
                circle.sort();
                self.circles.push(circle);
            }
        }
    }
}

fn circles(graph: &Graph) -> Vec<Vec<String>> {
    let mut tarjan = Tarjan::default();
    for v in graph.keys() {
        if !tarjan.index.contains_key(v.as_str()) {
            tarjan.visit(graph, v);
        }
    }
    tarjan.circles.sort();
    tarjan.circles
}

/// Each circle's files and the edges between them, as `tools/cycles.py` prints them.
fn describe(graph: &Graph, circles: &[Vec<String>]) -> String {
    let mut out = String::new();
    for circle in circles {
        out += &format!("{} files in a circle: {}\n", circle.len(), circle.join(" "));
        for file in circle {
            let inside: Vec<&str> = graph[file]
                .iter()
                .filter(|u| circle.contains(u))
                .map(String::as_str)
                .collect();
            out += &format!("    {file} -> {}\n", inside.join(" "));
        }
    }
    out
}

#[test]
fn engine_files_have_no_import_circles() {
    let graph = graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    if std::env::var_os("LAYOUT_EDGES").is_some() {
        for (file, uses) in &graph {
            let uses: Vec<&str> = uses.iter().map(String::as_str).collect();
            println!("{file} -> {}", uses.join(" "));
        }
    }
    let found = circles(&graph);
    assert!(
        found.is_empty(),
        "the engine's files must form a tree of dependencies: a file may not use, directly or \
         through others, a file that uses it. `mod` declarations are not dependencies, and a \
         type's `impl` blocks may live in child files (they use `super::Type`) as long as the \
         parent does not use what those children define.\n{}",
        describe(&graph, &found)
    );
}

#[test]
fn a_circle_is_found() {
    // A crate of its own, so the check is seen to fail, not just to pass.
    let dir = std::env::temp_dir().join(format!("umsd-layout-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    for (name, text) in [
        ("lib.rs", "mod a;\nmod b;\nmod c;\n"),
        ("a.rs", "use crate::b::X;\npub struct Y;\n"),
        ("b.rs", "use crate::a::Y;\npub struct X;\n"),
        ("c.rs", "use crate::a::Y;\n"),
    ] {
        fs::write(dir.join(name), text).unwrap();
    }
    let graph = graph(&dir);
    fs::remove_dir_all(&dir).unwrap();
    let found = circles(&graph);
    assert_eq!(found, vec![vec!["a.rs".to_string(), "b.rs".to_string()]]);
    let text = describe(&graph, &found);
    assert!(
        text.contains("a.rs -> b.rs") && text.contains("b.rs -> a.rs"),
        "{text}"
    );
}

#[test]
fn scanner_sees_only_code() {
    let src = r##"//! Only prose mentions crate::x.
fn f<'a>(s: &'a str) -> &'a str { s }
const Q: char = '"';
const S: &str = "super::y \" self::z";
/* crate::block /* nested */ crate::still */
const R: &str = r#"crate::raw"#;
use crate::a::{b, c::D};
use super::{p, self};
mod k;
fn g() -> k::Z { k::Z }
"##;
    let found = targets(&blank(src), &["m".to_string(), "n".to_string()]);
    let expected = ["a", "a b", "a c", "m p", "m n k Z", "m n k Z"];
    assert_eq!(
        found.iter().map(|p| p.join(" ")).collect::<Vec<_>>(),
        expected
    );
}

#[test]
fn no_file_over_600_lines() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut too_long = Vec::new();
    for dir in ["actors/src", "src", "loadtest/src"] {
        for path in rs_files(&workspace.join(dir)) {
            let rel = rel(&path, workspace);
            let lines = fs::read_to_string(&path).unwrap().lines().count();
            if lines > MAX_LINES && !LONG_FILES_ALLOWED.iter().any(|(f, _)| *f == rel) {
                too_long.push(format!("{rel}: {lines} lines"));
            }
        }
    }
    too_long.sort();
    assert!(
        too_long.is_empty(),
        "files over {MAX_LINES} lines; split them by concern (or list one in LONG_FILES_ALLOWED \
         with its reason):\n{}",
        too_long.join("\n")
    );
}
