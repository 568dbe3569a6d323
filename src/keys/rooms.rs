//! The arrows between the key layer's rooms, checked by reading the
//! sources (as `tests/it/layering.rs` checks the layers): the store names
//! nothing of the hierarchy, the providers or the layer's error, and a
//! provider names nothing of the hierarchy.
//!
//! A name counts where it is a path segment or an item of the other room
//! in code or doc links: `hierarchy::`, `KeyHierarchy`, and so on. Plain
//! words in prose ("the hierarchy gives") do not.

use std::path::{Path, PathBuf};

/// What the hierarchy is known by outside its room.
const HIERARCHY: &[&str] = &[
    "hierarchy::",
    "KeyHierarchy",
    "CachePolicy",
    "ErasureWatch",
    "UserKeyStatus",
    "Decommissioned",
];

/// What the providers and the layer's error are known by outside their
/// rooms.
const PROVIDERS_AND_ERROR: &[&str] = &[
    "master::",
    "keyring::",
    "kms::",
    "MasterKeyProvider",
    "MasterKeyError",
    "LocalKeyring",
    "KmsMasterKeys",
    "KmsClient",
    "KeyError",
];

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

/// Whether `name` occurs in `text` as a whole identifier (a name ending in
/// `::` is a path segment, so only its start must be a boundary).
fn names(text: &str, name: &str) -> bool {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(name).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + name.len()..].chars().next();
        !before.is_some_and(is_ident) && (name.ends_with("::") || !after.is_some_and(is_ident))
    })
}

/// Every `file: name` where a file of `room` names one of `forbidden`.
fn violations(room: &str, forbidden: &[&str]) -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/keys")
        .join(room);
    let mut files = Vec::new();
    rust_files(&dir, &mut files);
    files.sort();
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for name in forbidden {
            if names(&text, name) {
                found.push(format!("{}: {name}", file.display()));
            }
        }
    }
    found
}

#[test]
fn the_store_names_no_other_room() {
    let forbidden: Vec<&str> = HIERARCHY
        .iter()
        .chain(PROVIDERS_AND_ERROR)
        .copied()
        .collect();
    let found = violations("store", &forbidden);
    assert!(found.is_empty(), "the store names:\n{}", found.join("\n"));
}

#[test]
fn a_provider_never_names_the_hierarchy() {
    let found = violations("master", HIERARCHY);
    assert!(found.is_empty(), "a provider names:\n{}", found.join("\n"));
}

#[test]
fn the_checker_sees_names_not_words() {
    assert!(names("use crate::keys::hierarchy::cache;", "hierarchy::"));
    assert!(names("use crate::keys::{KeyError, unix_ms};", "KeyError"));
    assert!(!names("the AAD the hierarchy gives", "hierarchy::"));
    assert!(!names("a MasterKeyErrors list", "MasterKeyError"));
    assert!(!names("sub_kms::x", "kms::"));
}
