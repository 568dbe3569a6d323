//! The layering of `src/` (ARCHITECTURE.md, DESIGN section 10), checked by
//! reading the sources: an import may only point down.
//!
//! ```text
//! 5 server, cli, config, telemetry   process wiring, configuration, command line
//! 4 api                              gRPC adapters
//! 3 content, erasure, keyadmin,      domain services, their error, durable jobs
//!   error, jobs
//! 2 keys | blob                      key hierarchy | object storage (not each other)
//! 1 crypto, names, metrics           pure: formats, AEAD, key types, naming rules;
//!                                    the process's metrics
//! ```
//!
//! Every `crate::<module>` path in a file counts, in code and in doc links
//! alike, including `use crate::{a, b}` groups.

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
    ("keyadmin", 3),
    ("error", 3),
    ("holds", 3),
    ("audit", 3),
    ("jobs", 3),
    ("keys", 2),
    ("blob", 2),
    ("aws", 1),
    ("clock", 1),
    ("crypto", 1),
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

/// The top-level module a file belongs to (`src/content/put.rs` -> `content`);
/// `None` for the crate root and the binary.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_string())
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// Every top-level module named by a `crate::` path in `text`.
pub fn crate_imports(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        // `$crate::` in macros is not this crate's path.
        let preceded_by_ident = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
        rest = &rest[at + "crate::".len()..];
        if preceded_by_ident {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a, b::c, d}`: the first segment of each item.
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name = ident_at(item.trim());
                if !name.is_empty() {
                    out.insert(name.to_string());
                }
            }
        } else {
            let name = ident_at(rest);
            if !name.is_empty() {
                out.insert(name.to_string());
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
    let mut found = Vec::new();
    for file in files {
        let Some(from) = module_of(src, &file) else {
            continue;
        };
        let from_rank =
            rank(&from).unwrap_or_else(|| panic!("module `{from}` has no rank in RANKS"));
        let text = std::fs::read_to_string(&file).unwrap();
        for to in crate_imports(&text) {
            if to == from {
                continue;
            }
            let Some(to_rank) = rank(&to) else {
                found.push(format!("{}: {from} -> {to} (not a module)", file.display()));
                continue;
            };
            let allowed =
                to_rank < from_rank || SAME_RANK_ALLOWED.contains(&(from.as_str(), to.as_str()));
            if !allowed {
                found.push(format!("{}: {from} -> {to}", file.display()));
            }
        }
    }
    found
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
    write("names.rs", "macro_rules! m { () => { $crate::x } }\n");
    let found = violations(src);
    let expected = [
        "blob/fs.rs: blob -> keys",
        "blob/s3/mod.rs: blob -> content",
        "content/mod.rs: content -> api",
        "crypto/envelope.rs: crypto -> names",
        "jobs/gc.rs: jobs -> api",
        "keys/mod.rs: keys -> blob",
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
