//! The layout is part of the design: `src/` is a stack of folders, and each folder's `mod.rs`
//! says which others it may use (a line `//! May use: a, b.`). This reads every `crate::` path in
//! the library and holds each folder to its line, so a shortcut upward cannot land quietly.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// The folders `mod_rs` says its folder may use; `None` when it has no `May use:` line.
fn may_use(mod_rs: &str) -> Option<BTreeSet<String>> {
    let line = mod_rs
        .lines()
        .find_map(|l| l.trim_start_matches("//!").trim().strip_prefix("May use:"))?;
    Some(
        line.trim()
            .trim_end_matches('.')
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty() && !s.starts_with("nothing"))
            .collect(),
    )
}

/// The top-level folders named by `crate::NAME` paths in `source`, and any `crate::{` group
/// (which would hide a folder from this check).
fn crate_paths(source: &str) -> (BTreeSet<String>, bool) {
    let mut used = BTreeSet::new();
    let mut grouped = false;
    for (i, _) in source.match_indices("crate::") {
        // `attention_lab::crate::` cannot occur; skip identifiers that merely end in "crate".
        if source[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &source[i + "crate::".len()..];
        if rest.starts_with('{') {
            grouped = true;
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            used.insert(name);
        }
    }
    (used, grouped)
}

/// `src/`'s folders and what each may use, read from their `mod.rs`.
fn folders(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut folders = BTreeMap::new();
    for entry in fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            let name = path.file_name().unwrap().to_str().unwrap().to_string();
            let mod_rs = fs::read_to_string(path.join("mod.rs"))
                .unwrap_or_else(|_| panic!("{name}/ has no mod.rs saying what it holds"));
            let allowed = may_use(&mod_rs)
                .unwrap_or_else(|| panic!("src/{name}/mod.rs has no `//! May use: …` line"));
            folders.insert(name, allowed);
        }
    }
    folders
}

/// The violations of the layout rules in the tree at `src`.
fn violations(src: &Path) -> Vec<String> {
    let folders = folders(src);
    let mut found = Vec::new();
    for (folder, allowed) in &folders {
        for unknown in allowed.iter().filter(|a| !folders.contains_key(*a)) {
            found.push(format!(
                "src/{folder}/mod.rs may use `{unknown}`, which is no folder"
            ));
        }
    }
    // The "may use" relation must be a stack: no folder may reach itself through others.
    for start in folders.keys() {
        let mut stack: Vec<&String> = folders[start].iter().collect();
        let mut seen = BTreeSet::new();
        while let Some(f) = stack.pop() {
            if f == start {
                found.push(format!(
                    "src/{start}/ may use itself through others: a cycle"
                ));
                break;
            }
            if seen.insert(f) {
                stack.extend(folders.get(f).into_iter().flatten());
            }
        }
    }
    for file in rust_files(src) {
        let relative = file.strip_prefix(src).unwrap();
        let mut parts = relative.components();
        let first = parts.next().unwrap().as_os_str().to_str().unwrap();
        if parts.next().is_none() {
            if first != "lib.rs" {
                found.push(format!("src/{first} sits outside every folder"));
            }
            continue;
        }
        let source = fs::read_to_string(&file).unwrap();
        let (used, grouped) = crate_paths(&source);
        if grouped {
            found.push(format!(
                "src/{} groups `crate::{{…}}`: write one path per folder",
                relative.display()
            ));
        }
        for other in used.iter().filter(|u| *u != first) {
            if !folders[first].contains(other) {
                found.push(format!(
                    "src/{} uses crate::{other}, but src/{first}/mod.rs may use only: {}",
                    relative.display(),
                    if folders[first].is_empty() {
                        "nothing".to_string()
                    } else {
                        folders[first]
                            .iter()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                ));
            }
        }
    }
    found
}

#[test]
fn every_folder_uses_only_the_folders_its_mod_rs_allows() {
    let found = violations(Path::new(env!("CARGO_MANIFEST_DIR")).join("src").as_path());
    assert!(
        found.is_empty(),
        "layout rules broken:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_check_catches_an_upward_import_a_cycle_and_a_loose_file() {
    let root = std::env::temp_dir().join(format!("attention-lab-layout-{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    let write = |path: &str, text: &str| {
        let path = root.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    };
    write("lib.rs", "pub mod low;\npub mod high;\n");
    write(
        "low/mod.rs",
        "//! May use: nothing else in the crate.\npub mod a;\n",
    );
    write("low/a.rs", "use crate::low::b;\n");
    write("high/mod.rs", "//! May use: low.\npub mod h;\n");
    write("high/h.rs", "use crate::low::a;\n");
    assert_eq!(violations(&root), Vec::<String>::new());

    write("low/a.rs", "use crate::high::h;\n");
    assert_eq!(
        violations(&root),
        ["src/low/a.rs uses crate::high, but src/low/mod.rs may use only: nothing"]
    );
    write("low/a.rs", "use crate::{high::h};\n");
    assert!(violations(&root)[0].contains("groups `crate::{…}`"));
    write("low/a.rs", "");

    write("low/mod.rs", "//! May use: high.\n");
    assert!(violations(&root).iter().any(|v| v.contains("a cycle")));
    write("low/mod.rs", "//! May use: nothing else in the crate.\n");

    write("loose.rs", "");
    assert_eq!(
        violations(&root),
        ["src/loose.rs sits outside every folder"]
    );
    fs::remove_dir_all(&root).unwrap();
}
