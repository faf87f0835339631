//! ARCHITECTURE.md's code map names every workspace crate (its directory and
//! its package name) and every top-level module of each (`src/*.rs`,
//! `src/*/mod.rs`), so a crate or module cannot be added, moved or renamed
//! without the map following.

use std::path::Path;

use backworks_test_support::workspace;
use cargo_metadata::MetadataCommand;

/// The "## Code map" section of ARCHITECTURE.md.
fn code_map() -> String {
    let text = std::fs::read_to_string(workspace().join("ARCHITECTURE.md")).unwrap();
    let start = text
        .find("\n## Code map\n")
        .expect("ARCHITECTURE.md has a `## Code map` section");
    let section = &text[start + 1..];
    let end = section[3..].find("\n## ").map_or(section.len(), |i| i + 3);
    section[..end].to_owned()
}

/// `src/*.rs` and `src/*/mod.rs` of the crate in `dir`, as paths relative
/// to `dir`, sorted.
fn top_level_modules(dir: &Path) -> Vec<String> {
    let mut modules = Vec::new();
    for entry in std::fs::read_dir(dir.join("src")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if path.join("mod.rs").is_file() {
                modules.push(format!("src/{name}/mod.rs"));
            }
        } else if name.ends_with(".rs") {
            modules.push(format!("src/{name}"));
        }
    }
    modules.sort();
    modules
}

#[test]
fn every_crate_and_module_is_in_the_code_map() {
    let root = workspace();
    let map = code_map();
    let metadata = MetadataCommand::new()
        .manifest_path(root.join("Cargo.toml"))
        .no_deps()
        .exec()
        .unwrap();
    let mut missing = Vec::new();
    let mut crates = 0;
    for package in metadata.workspace_packages() {
        crates += 1;
        let dir = package.manifest_path.parent().unwrap();
        let relative = dir
            .strip_prefix(&root)
            .unwrap_or_else(|_| panic!("{dir} is outside the workspace"))
            .as_str()
            .to_owned();
        let row = format!("| `{relative}/` (`{}`", package.name);
        if !map.contains(&row) {
            missing.push(format!("crate {}: no row starting `{row}`", package.name));
        }
        for module in top_level_modules(dir.as_std_path()) {
            let path = format!("`{relative}/{module}`");
            if !map.contains(&path) {
                missing.push(format!("module {path} of {}", package.name));
            }
        }
    }
    assert!(crates >= 7, "only {crates} workspace crates found");
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md's code map (section `## Code map`) misses:\n  {}\nadd a row (or name the file in its crate's row) saying what it is for and what it depends on",
        missing.join("\n  ")
    );
}
