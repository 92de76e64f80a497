//! The layering rules the compiler does not check, read from the source text of `src/` (and, for
//! the size rules, of the workspace's crates in `crates/`): the top-level modules import each
//! other without a cycle, providers never reach the database, no provider is listed by hand
//! outside `device.rs`, and every file and function stays small enough to read in one sitting.
//!
//! Each file maps to its module (`src/a/b.rs` → `a::b`, `src/a/mod.rs` → `a`), and the graph is
//! drawn between top-level modules: the children of one folder may import each other and their
//! parent. Only production code counts: a test module may build a whole `Settings` to get
//! realistic defaults without that being a dependency of the component it tests. A new rule goes
//! here, with the message that tells the reader what to do instead.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// No file holds more production lines than this (its tests come after).
const MAX_FILE_LINES: usize = 400;
/// No production function is longer than this, from its `fn` line to its closing brace.
const MAX_FN_LINES: usize = 80;
/// Modules a provider must never import: a pusher answers with an outcome, and the fan-out
/// decides what the database does about it.
const PUSH_MUST_NOT_IMPORT: &[&str] = &["database", "prune"];
/// The one file that may list the providers by hand (`Provider::ALL`, `PerProvider`).
const PROVIDERS_LISTED_IN: &str = "src/device.rs";

/// One source file, with its text masked twice (see [`mask`]).
struct Source {
    /// Relative to the workspace root (`src/…`, `crates/NAME/src/…`), for messages.
    path: PathBuf,
    /// `a::b` as `["a", "b"]`, relative to its crate's `src/`; empty for the crate root.
    module: Vec<String>,
    /// Comments blanked, strings kept (`#[error("{}", crate::x::Y(.0))]` is an import too).
    uncommented: Vec<String>,
    /// Comments, strings and character literals blanked: what braces and `fn` are counted in.
    code: Vec<String>,
    /// The index of the `#[cfg(test)]` line of the first test module, or the line count.
    tests_at: usize,
}

impl Source {
    fn top(&self) -> Option<&str> {
        self.module.first().map(String::as_str)
    }

    fn place(&self, line: usize) -> String {
        format!("{}:{}", self.path.display(), line + 1)
    }
}

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The notifier's own files, `src/`: what the layering rules read.
fn sources() -> Vec<Source> {
    sources_under(Path::new("src"))
}

/// Every crate's production files: the notifier's and each `crates/NAME/src/`, for the size
/// rules.
fn all_sources() -> Vec<Source> {
    let mut crates: Vec<PathBuf> = std::fs::read_dir(workspace().join("crates"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|dir| dir.join("src").is_dir())
        .map(|dir| dir.strip_prefix(workspace()).unwrap().join("src"))
        .collect();
    crates.sort();
    let mut all = sources();
    for src in crates {
        all.extend(sources_under(&src));
    }
    all
}

/// The `.rs` files under `src` (relative to the workspace root).
fn sources_under(src: &Path) -> Vec<Source> {
    let root = workspace().join(src);
    let mut paths = Vec::new();
    collect_rs(&root, &mut paths);
    paths.sort();
    paths
        .into_iter()
        .map(|full| {
            let in_crate = full.strip_prefix(&root).unwrap().to_path_buf();
            let text = std::fs::read_to_string(&full).unwrap();
            let (uncommented, code) = mask(&text);
            let tests_at = tests_at(&code);
            Source {
                module: module_of(&in_crate),
                path: src.join(in_crate),
                uncommented,
                code,
                tests_at,
            }
        })
        .collect()
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_rs(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `a/b.rs` → `a::b`, `a/mod.rs` → `a`; `lib.rs` and `main.rs` are the roots.
fn module_of(path: &Path) -> Vec<String> {
    let mut parts: Vec<String> = path
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The text twice, line for line: once with comments blanked, once with comments, strings and
/// character literals blanked too. Blanking keeps columns and line numbers, so a place found in
/// either is a place in the file.
fn mask(text: &str) -> (Vec<String>, Vec<String>) {
    let chars: Vec<char> = text.chars().collect();
    let (mut uncommented, mut code) = (String::new(), String::new());
    let mut keep = |uncommented_c: char, code_c: char| {
        let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
        uncommented.push(if uncommented_c == '\0' {
            blank(code_c)
        } else {
            uncommented_c
        });
        code.push(if code_c == '\0' {
            blank(uncommented_c)
        } else {
            code_c
        });
    };
    let mut i = 0;
    while i < chars.len() {
        let (c, next) = (chars[i], chars.get(i + 1).copied());
        let end = match (c, next) {
            ('/', Some('/')) => line_end(&chars, i),
            ('/', Some('*')) => block_comment_end(&chars, i),
            _ => {
                if let Some(end) = literal_end(&chars, i) {
                    for &c in &chars[i..end] {
                        keep(c, '\0');
                    }
                    i = end;
                } else {
                    keep(c, c);
                    i += 1;
                }
                continue;
            }
        };
        for &c in &chars[i..end] {
            keep('\0', if c == '\n' { '\n' } else { '\0' });
        }
        i = end;
    }
    let lines = |s: String| s.lines().map(str::to_string).collect();
    (lines(uncommented), lines(code))
}

fn line_end(chars: &[char], i: usize) -> usize {
    chars[i..]
        .iter()
        .position(|&c| c == '\n')
        .map_or(chars.len(), |p| i + p)
}

/// Block comments nest in Rust.
fn block_comment_end(chars: &[char], start: usize) -> usize {
    let (mut depth, mut i) = (0usize, start);
    while i + 1 < chars.len() {
        match (chars[i], chars[i + 1]) {
            ('/', '*') => (depth, i) = (depth + 1, i + 2),
            ('*', '/') => {
                (depth, i) = (depth - 1, i + 2);
                if depth == 0 {
                    return i;
                }
            }
            _ => i += 1,
        }
    }
    chars.len()
}

/// Where a string, raw string or character literal that starts at `i` ends; `None` if none
/// starts there (a lifetime, or an identifier that merely ends in `r` or `b`).
fn literal_end(chars: &[char], i: usize) -> Option<usize> {
    let ident_before = i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
    let mut j = i;
    if !ident_before && chars[j] == 'b' {
        j += 1;
    }
    if !ident_before && chars.get(j) == Some(&'r') {
        let hashes = chars[j + 1..].iter().take_while(|&&c| c == '#').count();
        if chars.get(j + 1 + hashes) != Some(&'"') {
            return None;
        }
        let close: Vec<char> = std::iter::once('"')
            .chain(std::iter::repeat_n('#', hashes))
            .collect();
        let body = j + 2 + hashes;
        return (body..chars.len())
            .find(|&k| chars[k..].starts_with(&close))
            .map(|k| k + close.len())
            .or(Some(chars.len()));
    }
    match chars.get(j) {
        Some('"') => Some(quoted_end(chars, j, '"')),
        Some('\'') => match (chars.get(j + 1), chars.get(j + 2)) {
            (Some('\\'), _) => Some(quoted_end(chars, j, '\'')),
            (Some(_), Some('\'')) => Some(j + 3),
            _ => None,
        },
        _ => None,
    }
}

fn quoted_end(chars: &[char], open: usize, quote: char) -> usize {
    let mut k = open + 1;
    while k < chars.len() {
        match chars[k] {
            '\\' => k += 2,
            c if c == quote => return k + 1,
            _ => k += 1,
        }
    }
    chars.len()
}

/// The `#[cfg(test)]` line of the first test module, or the line count.
fn tests_at(code: &[String]) -> usize {
    (0..code.len())
        .find(|&i| {
            code[i].trim() == "#[cfg(test)]"
                && code[i + 1..]
                    .iter()
                    .map(|l| l.trim())
                    .find(|l| !l.is_empty() && !l.starts_with("#["))
                    .is_some_and(|l| l.split_whitespace().any(|w| w == "mod"))
        })
        .unwrap_or(code.len())
}

/// Where the block whose `{` is the first at or after (`line`, `column`) closes: its line.
fn block_end(code: &[String], line: usize, column: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (n, text) in code.iter().enumerate().skip(line) {
        let from = if n == line { column } else { 0 };
        for c in text.chars().skip(from) {
            match c {
                '{' => depth += 1,
                '}' if depth == 1 => return Some(n),
                '}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
    }
    None
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The top-level modules a line of production code names as `crate::a…`, `crate::{a…, b…}`
/// or `$crate::a…`.
fn crate_paths(line: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (at, _) in line.match_indices("crate::") {
        if line[..at].chars().next_back().is_some_and(is_ident) {
            continue;
        }
        let rest = &line[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => found.push(std::mem::take(&mut item)),
                    _ => item.push(c),
                }
            }
            found.push(item);
        } else {
            found.push(rest.to_string());
        }
    }
    found
        .iter()
        .map(|item| item.trim().chars().take_while(|&c| is_ident(c)).collect())
        .filter(|name: &String| !name.is_empty())
        .collect()
}

/// Top-level module → the modules it imports, each with the first place that does.
type Graph = BTreeMap<String, BTreeMap<String, String>>;

fn import_graph(sources: &[Source]) -> Graph {
    let modules: BTreeSet<&str> = sources.iter().filter_map(Source::top).collect();
    let mut graph = Graph::new();
    for source in sources {
        let Some(from) = source.top() else { continue };
        let edges = graph.entry(from.to_string()).or_default();
        for (n, line) in source.uncommented[..source.tests_at].iter().enumerate() {
            for to in crate_paths(line) {
                if to != from && modules.contains(to.as_str()) {
                    edges.entry(to).or_insert_with(|| source.place(n));
                }
            }
        }
    }
    graph
}

/// A cycle as `a → b → … → a`, each step with the place that imports.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        graph: &Graph,
        node: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flat_map(|e| e.keys()) {
            if let Some(cycle) = visit(graph, next, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|start| visit(graph, start, &mut Vec::new(), &mut done))
}

#[test]
fn the_top_level_modules_import_each_other_without_a_cycle() {
    let graph = import_graph(&sources());
    assert!(
        graph
            .get("config")
            .is_some_and(|e| e.contains_key("content")),
        "the scan sees config's imports: {graph:#?}"
    );
    if let Some(cycle) = find_cycle(&graph) {
        let steps: Vec<String> = cycle
            .windows(2)
            .map(|w| format!("  {} → {}  ({})", w[0], w[1], graph[&w[0]][&w[1]]))
            .collect();
        panic!(
            "import cycle {}:\n{}\nmove the shared type to the module lower in the flow, or \
             give the lower module its own error type",
            cycle.join(" → "),
            steps.join("\n")
        );
    }
}

#[test]
fn providers_never_reach_the_database_or_prune() {
    let mut found = Vec::new();
    for source in sources().iter().filter(|s| s.top() == Some("push")) {
        for (n, line) in source.uncommented[..source.tests_at].iter().enumerate() {
            for to in crate_paths(line) {
                if PUSH_MUST_NOT_IMPORT.contains(&to.as_str()) {
                    found.push(format!("{}: crate::{to}", source.place(n)));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "a pusher returns an outcome; the fan-out acts on it:\n{}",
        found.join("\n")
    );
}

/// Whether one item of a list (or one alternative of a pattern) names a provider: a
/// `Provider::Variant` path, or a string that is a provider's name.
fn names_a_provider(item: &str) -> bool {
    let item = item.trim();
    if let Some(name) = item.strip_prefix('"').and_then(|i| i.strip_suffix('"')) {
        return notifier::Provider::ALL.iter().any(|p| p.as_str() == name);
    }
    let Some((path, variant)) = item.rsplit_once("::") else {
        return false;
    };
    let variant_like = variant.starts_with(|c: char| c.is_ascii_uppercase())
        && variant.chars().all(is_ident)
        && variant.chars().any(|c| c.is_ascii_lowercase());
    (path == "Provider" || path.ends_with("::Provider")) && variant_like
}

/// The index of the bracket that closes the one at `open` (any of `([{`, nesting counted).
fn closing(code: &[char], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, &c) in code.iter().enumerate().skip(open) {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// `text[from..to]` cut at `separator` where `code` has it outside any bracket.
fn split_top_level(
    code: &[char],
    text: &[char],
    from: usize,
    to: usize,
    separator: char,
) -> Vec<String> {
    let (mut items, mut depth, mut start) = (Vec::new(), 0usize, from);
    for i in from..to {
        match code[i] {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            c if c == separator && depth == 0 => {
                items.push(text[start..i].iter().collect());
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(text[start..to].iter().collect());
    items
}

/// The places in production code where two or more providers are listed by hand: a list
/// (`[Provider::Fcm, Provider::Apns]`, `vec![…]`, `["fcm", "apns"]`) or the alternatives of a
/// `matches!` (`Provider::Fcm | Provider::Apns`), every item of which names a provider.
fn provider_lists(source: &Source) -> Vec<String> {
    let code: Vec<char> = source.code[..source.tests_at].join("\n").chars().collect();
    let text: Vec<char> = source.uncommented[..source.tests_at]
        .join("\n")
        .chars()
        .collect();
    let mut found = Vec::new();
    for open in 0..code.len() {
        let before: String = code[open.saturating_sub(8)..open].iter().collect();
        let (from, separator) = match code[open] {
            '[' => (open + 1, ','),
            '(' if before == "matches!" => {
                let Some(close) = closing(&code, open) else {
                    continue;
                };
                let Some(comma) = (open + 1..close).find(|&i| code[i] == ',') else {
                    continue;
                };
                (comma + 1, '|')
            }
            _ => continue,
        };
        let Some(close) = closing(&code, open) else {
            continue;
        };
        let items: Vec<String> = split_top_level(&code, &text, from, close, separator)
            .into_iter()
            .map(|item| {
                item.split(" if ")
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string()
            })
            .filter(|item| !item.is_empty())
            .collect();
        if items.len() >= 2 && items.iter().all(|item| names_a_provider(item)) {
            let line = code[..open].iter().filter(|&&c| c == '\n').count();
            found.push(format!("{}: {}", source.place(line), items.join(", ")));
        }
    }
    found
}

#[test]
fn no_provider_is_listed_by_hand_outside_device_rs() {
    let found: Vec<String> = sources()
        .iter()
        .filter(|s| s.path != Path::new(PROVIDERS_LISTED_IN))
        .flat_map(provider_lists)
        .collect();
    assert!(
        found.is_empty(),
        "a list of providers misses the next one without a word from the compiler; iterate \
         Provider::ALL, keep one of each in a PerProvider, or match every variant without a \
         wildcard ({PROVIDERS_LISTED_IN} is the one place that lists them):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_provider_list_scan_finds_lists_and_patterns_but_not_single_providers() {
    let text = "let a = [Provider::Fcm, Provider::Apns];\n\
                let b = vec![\n    crate::device::Provider::Apns,\n    Provider::WebPush,\n];\n\
                let c = matches!(p, Provider::Fcm | Provider::WebPush if x);\n\
                #[arg(value_parser = [\"fcm\", \"apns\", \"webpush\"])]\n\
                let d = [Provider::Fcm];\nlet e = [(Provider::Fcm, 1), (Provider::Apns, 2)];\n\
                let f = matches!(p, Provider::Fcm);\nlet g = [Provider::ALL, Provider::ALL];\n\
                // [Provider::Fcm, Provider::Apns]\nlet h = \"[Provider::Fcm, Provider::Apns]\";\n\
                let i = [\"android\", \"ios\"];\n";
    let (uncommented, code) = mask(text);
    let source = Source {
        path: PathBuf::from("src/x.rs"),
        module: vec!["x".into()],
        tests_at: code.len(),
        uncommented,
        code,
    };
    let found = provider_lists(&source);
    assert_eq!(
        found,
        [
            "src/x.rs:1: Provider::Fcm, Provider::Apns",
            "src/x.rs:2: crate::device::Provider::Apns, Provider::WebPush",
            "src/x.rs:6: Provider::Fcm, Provider::WebPush",
            "src/x.rs:7: \"fcm\", \"apns\", \"webpush\"",
        ]
    );
}

#[test]
fn no_file_holds_more_than_400_production_lines() {
    let all = all_sources();
    assert!(
        all.iter().any(|s| s.path.starts_with("crates/stand-in")),
        "the scan reads the crates too"
    );
    let long: Vec<String> = all
        .iter()
        .filter(|s| s.tests_at > MAX_FILE_LINES)
        .map(|s| format!("{}: {} lines", s.path.display(), s.tests_at))
        .collect();
    assert!(
        long.is_empty(),
        "split these by what a reader looks for (at most {MAX_FILE_LINES} lines before the \
         tests):\n{}",
        long.join("\n")
    );
}

#[test]
fn nothing_but_tests_follows_a_test_module() {
    let mut found = Vec::new();
    for source in all_sources() {
        let code = &source.code;
        let Some(mut n) = (source.tests_at < code.len()).then_some(source.tests_at) else {
            continue;
        };
        let mut test_attribute = false;
        while n < code.len() {
            let line = code[n].trim();
            if line.is_empty() {
                n += 1;
                continue;
            }
            if line.starts_with("#[") {
                test_attribute |= line.contains("cfg(test)");
                n += 1;
                continue;
            }
            if !test_attribute {
                found.push(format!("{}: {line}", source.place(n)));
            }
            test_attribute = false;
            n = match line.ends_with(';') {
                true => n + 1,
                false => block_end(code, n, 0).map_or(code.len(), |end| end + 1),
            };
        }
    }
    assert!(
        found.is_empty(),
        "production items after a test module (move them above it):\n{}",
        found.join("\n")
    );
}

/// Each production `fn` item with a body, as (place, length in lines).
fn functions(source: &Source) -> Vec<(String, usize)> {
    let mut found = Vec::new();
    for (n, line) in source.code[..source.tests_at].iter().enumerate() {
        for (at, _) in line.match_indices("fn ") {
            let before_ok = !line[..at].chars().next_back().is_some_and(is_ident);
            let named = line[at + 3..]
                .trim_start()
                .starts_with(|c: char| is_ident(c));
            if !before_ok || !named {
                continue;
            }
            if let Some((open_line, open_column)) = body_start(&source.code, n, at) {
                let end = block_end(&source.code, open_line, open_column).unwrap_or(n);
                found.push((source.place(n), end + 1 - n));
            }
        }
    }
    found
}

/// The `{` that opens the body of the `fn` at (`line`, `column`); `None` for a declaration
/// (`;` first). Brackets are tracked so that `[u8; N]` in a signature ends nothing.
fn body_start(code: &[String], line: usize, column: usize) -> Option<(usize, usize)> {
    let mut depth = 0i32;
    for (n, text) in code.iter().enumerate().skip(line) {
        let from = if n == line { column } else { 0 };
        for (k, c) in text.char_indices().filter(|&(k, _)| k >= from) {
            match c {
                '(' | '[' => depth += 1,
                ')' | ']' => depth -= 1,
                ';' if depth == 0 => return None,
                '{' if depth == 0 => return Some((n, k)),
                _ => {}
            }
        }
    }
    None
}

#[test]
fn no_function_is_longer_than_80_lines() {
    let sources = all_sources();
    let all: Vec<(String, usize)> = sources.iter().flat_map(functions).collect();
    assert!(
        all.len() > 100,
        "the scan finds the functions: {}",
        all.len()
    );
    let long: Vec<String> = all
        .into_iter()
        .filter(|(_, lines)| *lines > MAX_FN_LINES)
        .map(|(place, lines)| format!("{place}: {lines} lines"))
        .collect();
    assert!(
        long.is_empty(),
        "split these into steps with names (at most {MAX_FN_LINES} lines each):\n{}",
        long.join("\n")
    );
}

#[test]
fn the_scanner_reads_what_rust_means() {
    let text = "use crate::{a::B, c};\nlet s = \"crate::d { fn x() {\";\n// crate::e\n\
                #[error(\"{}\", crate::f::G(.0))]\nfn h<'a>(x: &'a str) -> char { '{' }\n\
                const L: &str = r#\"crate::i \"{\"#;\n";
    let (uncommented, code) = mask(text);
    let imports: Vec<String> = uncommented.iter().flat_map(|l| crate_paths(l)).collect();
    assert_eq!(imports, ["a", "c", "d", "f", "i"]);
    assert!(
        code[1].starts_with("let s = ") && code[1].ends_with(';'),
        "{code:?}"
    );
    assert!(
        !code[1].contains('{') && !code[1].contains("fn"),
        "{code:?}"
    );
    assert_eq!(block_end(&code, 4, 0), Some(4), "{code:?}");
    assert_eq!(module_of(Path::new("a/b.rs")), ["a", "b"]);
    assert_eq!(module_of(Path::new("a/mod.rs")), ["a"]);
}
