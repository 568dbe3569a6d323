//! The layering of `src/` (ARCHITECTURE.md, DESIGN section 10), checked by
//! reading the sources: an import may only point down.
//!
//! ```text
//! 5 server, cli, config, telemetry   process wiring, configuration, command line
//! 4 api                              gRPC adapters
//! 3 content, erasure, keyadmin,      domain services, their error, durable jobs,
//!   error, jobs, receipt             signed erasure receipts
//! 2 keys | blob                      key hierarchy | object storage (not each other)
//! 1 crypto, names, metrics           pure: formats, AEAD, key types, naming rules;
//!                                    the process's metrics
//! ```
//!
//! Every path in a file counts, in code and in doc links alike: `crate::`
//! paths (with `use crate::{a, b::{c, d}}` groups) and `super::` paths,
//! resolved from the file's module (and the inline modules around them) to
//! the module they name. The rank table is ARCHITECTURE.md's: a test checks
//! that the two agree.
//!
//! Within a module, rooms have arrows of their own ([`ROOMS`]): in `keys`,
//! the store names no other room, and the master-key providers name the
//! store and the layer's error but never the hierarchy.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The rank of each top-level module; an import must go to a lower rank,
/// except between modules listed in [`SAME_RANK_ALLOWED`].
const RANKS: &[(&str, u8)] = &[
    ("server", 5),
    ("deployment", 5),
    ("cli", 5),
    ("config", 5),
    ("telemetry", 5),
    ("api", 4),
    ("content", 3),
    ("erasure", 3),
    ("export", 3),
    ("keyadmin", 3),
    ("receipt", 3),
    ("signed_read", 3),
    ("error", 3),
    ("holds", 3),
    ("audit", 3),
    ("jobs", 3),
    ("backup", 3),
    ("keys", 2),
    ("blob", 2),
    ("aws", 1),
    ("clock", 1),
    ("crypto", 1),
    ("disk", 1),
    ("identity", 1),
    ("names", 1),
    ("metrics", 1),
    ("residency", 1),
];

/// Imports between modules of one rank that the design allows: the shell
/// wires itself together, and the domain services share their error type
/// and the job runner.
const SAME_RANK_ALLOWED: &[(&str, &str)] = &[
    ("server", "config"),
    ("server", "deployment"),
    ("server", "telemetry"),
    ("cli", "config"),
    ("cli", "server"),
    ("cli", "telemetry"),
    ("content", "error"),
    ("erasure", "error"),
    ("keyadmin", "error"),
    ("jobs", "error"),
    ("holds", "error"),
    ("audit", "error"),
    ("erasure", "jobs"),
    ("keyadmin", "jobs"),
    ("content", "jobs"),
    ("receipt", "error"),
    ("erasure", "receipt"),
    ("keyadmin", "receipt"),
    ("export", "content"),
    ("export", "error"),
    ("signed_read", "content"),
    ("signed_read", "error"),
];

/// Rooms inside a module, and the rooms of that module each may name: a
/// file under `src/<module>/<room>/` naming `crate::<module>::<other>`
/// (directly or through `super::`) is refused unless `<other>` is listed.
const ROOMS: &[(&str, &str, &[&str])] = &[
    ("keys", "store", &["store"]),
    ("keys", "master", &["master", "store", "error"]),
];

fn rank(module: &str) -> Option<u8> {
    RANKS.iter().find(|(m, _)| *m == module).map(|(_, r)| *r)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file (`src/keys/store/sql/mod.rs` ->
/// `keys::store::sql`); empty for the crate root and the binary.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap();
    let mut path: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_str().unwrap().to_string())
        .collect();
    let last = path.pop().unwrap();
    let stem = last.strip_suffix(".rs").unwrap_or(&last).to_string();
    if !(matches!(stem.as_str(), "mod")
        || (path.is_empty() && matches!(stem.as_str(), "lib" | "main")))
    {
        path.push(stem);
    }
    path
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn ident_at(s: &str) -> &str {
    let end = s.find(|c: char| !is_ident_char(c)).unwrap_or(s.len());
    &s[..end]
}

/// The paths of a use tree at the start of `s` (after `crate::` or a
/// resolved `super::`): `a::b::{c, d::{e}}` -> `a::b::c`, `a::b::d::e`.
fn use_tree(s: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    parse_tree(s, Vec::new(), &mut out);
    out
}

/// Parses one use tree at the start of `s` below `path` into `out`; the
/// bytes it read.
fn parse_tree(s: &str, mut path: Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
    let mut i = 0;
    loop {
        if s[i..].starts_with('{') {
            i += 1;
            loop {
                i += s[i..].len() - s[i..].trim_start().len();
                match s[i..].chars().next() {
                    None => return i,
                    Some('}') => return i + 1,
                    Some(c) => match parse_tree(&s[i..], path.clone(), out) {
                        0 => i += c.len_utf8(),
                        used => i += used,
                    },
                }
            }
        }
        let name = ident_at(&s[i..]);
        if name.is_empty() {
            if !path.is_empty() {
                out.push(path);
            }
            return i;
        }
        path.push(name.to_string());
        i += name.len();
        if s[i..].starts_with("::") {
            i += 2;
        } else {
            out.push(path);
            return i;
        }
    }
}

/// The inline modules of `text` (`mod tests { .. }`): their byte ranges
/// and names, so that `super::` inside them resolves from them.
fn inline_modules(text: &str) -> Vec<(std::ops::Range<usize>, String)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = text[from..].find("mod ") {
        let start = from + at;
        from = start + 4;
        if text[..start].chars().next_back().is_some_and(is_ident_char) {
            continue;
        }
        let name = ident_at(&text[from..]);
        let after = text[from + name.len()..].trim_start();
        if name.is_empty() || !after.starts_with('{') {
            continue;
        }
        let open = text.len() - after.len();
        let mut depth = 0usize;
        for (i, c) in text[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        out.push((open..open + i, name.to_string()));
                        break;
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// Every module path named in `text` of the file whose module is `module`:
/// `crate::` paths as written, `super::` paths resolved.
pub fn imports(module: &[String], text: &str) -> Vec<Vec<String>> {
    let inline = inline_modules(text);
    let mut out = Vec::new();
    for prefix in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(at) = text[from..].find(prefix) {
            let start = from + at;
            from = start + prefix.len();
            // `$crate::` in macros, `a::super::` and `self.super` are no
            // path from here.
            let before = text[..start].chars().next_back();
            if before.is_some_and(|c| is_ident_char(c) || c == '$' || c == ':') {
                continue;
            }
            if prefix == "crate::" {
                out.extend(use_tree(&text[from..]));
                continue;
            }
            // The module the text is in: the file's, then inline modules.
            let mut base = module.to_vec();
            for (range, name) in &inline {
                if range.contains(&start) {
                    base.push(name.clone());
                }
            }
            let mut rest = &text[from..];
            base.pop();
            while let Some(more) = rest.strip_prefix("super::") {
                base.pop();
                rest = more;
            }
            from = text.len() - rest.len();
            let tails = use_tree(rest);
            if tails.is_empty() {
                // `super::*`: the module itself.
                out.push(base.clone());
            }
            for tail in tails {
                let mut path = base.clone();
                path.extend(tail);
                out.push(path);
            }
        }
    }
    out
}

/// Every import that points up or sideways, as `file: from -> to`.
pub fn violations(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut found = BTreeSet::new();
    for file in files {
        let module = module_path(src, &file);
        let Some(from) = module.first().cloned() else {
            continue;
        };
        let from_rank =
            rank(&from).unwrap_or_else(|| panic!("module `{from}` has no rank in RANKS"));
        let text = std::fs::read_to_string(&file).unwrap();
        let room = ROOMS
            .iter()
            .find(|(m, r, _)| module.len() >= 2 && module[0] == *m && module[1] == *r);
        for path in imports(&module, &text) {
            let Some(to) = path.first() else { continue };
            if let Some((m, r, allowed)) = room {
                if to == m
                    && path
                        .get(1)
                        .is_some_and(|other| !allowed.contains(&other.as_str()))
                {
                    found.insert(format!(
                        "{}: {m}::{r} -> {m}::{} (the room names only {})",
                        file.display(),
                        path[1],
                        allowed.join(", ")
                    ));
                }
            }
            if *to == from {
                continue;
            }
            let Some(to_rank) = rank(to) else {
                found.insert(format!("{}: {from} -> {to} (not a module)", file.display()));
                continue;
            };
            let allowed =
                to_rank < from_rank || SAME_RANK_ALLOWED.contains(&(from.as_str(), to.as_str()));
            if !allowed {
                found.insert(format!("{}: {from} -> {to}", file.display()));
            }
        }
    }
    found.into_iter().collect()
}

/// The ranks ARCHITECTURE.md's bird's-eye view draws: the first text block
/// after the heading, a rank's number at the start of its first line, its
/// modules in the first column (`a, b` or `a | b`), continued on indented
/// lines.
fn architecture_ranks(text: &str) -> Vec<(String, u8)> {
    let view = &text[text.find("## Bird's-eye view").expect("a bird's-eye view")..];
    let block = view
        .split("```")
        .nth(1)
        .expect("a text block in the bird's-eye view");
    let mut out = Vec::new();
    let mut rank = None;
    for line in block.lines().skip(1) {
        let trimmed = line.trim_start();
        let digits: String = trimmed.chars().take_while(char::is_ascii_digit).collect();
        let indent = line.len() - trimmed.len();
        let column = if digits.is_empty() {
            // A continuation of the modules, or of the description alone.
            if indent > 4 {
                continue;
            }
            trimmed
        } else {
            rank = Some(digits.parse::<u8>().unwrap());
            &trimmed[digits.len()..]
        };
        let Some(rank) = rank else { continue };
        let names = column.trim_start().split("  ").next().unwrap_or("");
        for name in names.split([',', '|']) {
            let name = name.trim();
            if !name.is_empty() {
                out.push((name.to_string(), rank));
            }
        }
    }
    out
}

/// ARCHITECTURE.md draws the ranks this test enforces, module for module.
#[test]
fn the_architecture_document_draws_these_ranks() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("ARCHITECTURE.md"))
            .unwrap();
    let mut drawn = architecture_ranks(&text);
    drawn.sort();
    let mut ranks: Vec<(String, u8)> = RANKS.iter().map(|(m, r)| (m.to_string(), *r)).collect();
    ranks.sort();
    assert_eq!(
        drawn, ranks,
        "ARCHITECTURE.md's bird's-eye view and RANKS differ"
    );
}

#[test]
fn imports_only_point_down() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = violations(&src);
    assert!(
        found.is_empty(),
        "imports against the layering:\n{}",
        found.join("\n")
    );
}

/// The checker itself catches each forbidden kind of import.
#[test]
fn the_checker_catches_forbidden_imports() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    let write = |path: &str, text: &str| {
        let p = src.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write("lib.rs", "pub mod api;\n");
    write("crypto/envelope.rs", "use crate::names::check_name;\n");
    write("blob/fs.rs", "use crate::{names, keys::store::KeyStore};\n");
    write("blob/s3/mod.rs", "/// See [`crate::content::Content`].\n");
    write("keys/mod.rs", "use crate::blob::BlobStore;\n");
    write(
        "content/mod.rs",
        "use crate::api::pb;\nuse crate::error::Error;\n",
    );
    write("jobs/gc.rs", "fn f() { crate::api::error::x(); }\n");
    write(
        "server.rs",
        "use crate::api::pb;\nuse crate::config::Config;\n",
    );
    write(
        "names.rs",
        "macro_rules! m { () => { $crate::x } }\nmod tests {\n    use super::*;\n}\n",
    );
    write("content/put.rs", "use super::super::api::pb;\n");
    write(
        "keys/store/sqlite/mod.rs",
        "use crate::keys::{store::StoreError, KeyHierarchy};\n",
    );
    write(
        "keys/store/sql/keys.rs",
        "use super::super::super::cache::Cache;\n",
    );
    write(
        "keys/master/kms/mod.rs",
        "/// [`crate::keys::hierarchy::KeyHierarchy`]\n",
    );
    let found = violations(src);
    let expected = [
        "blob/fs.rs: blob -> keys",
        "blob/s3/mod.rs: blob -> content",
        "content/mod.rs: content -> api",
        "content/put.rs: content -> api",
        "crypto/envelope.rs: crypto -> names",
        "jobs/gc.rs: jobs -> api",
        "keys/master/kms/mod.rs: keys::master -> keys::hierarchy (the room names only master, store, error)",
        "keys/mod.rs: keys -> blob",
        "keys/store/sql/keys.rs: keys::store -> keys::cache (the room names only store)",
        "keys/store/sqlite/mod.rs: keys::store -> keys::KeyHierarchy (the room names only store)",
    ];
    let found: Vec<String> = found
        .iter()
        .map(|f| {
            f.strip_prefix(&format!("{}/", src.display()))
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(found, expected);
}
