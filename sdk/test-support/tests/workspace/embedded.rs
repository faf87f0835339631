//! `cargo-backworks/embedded/` is the packaged crate's copy of
//! `plugin-template/` and `ci/` (what `cargo backworks new` writes): the two
//! never differ.

use std::path::{Path, PathBuf};

use backworks_test_support::workspace;

/// The files under `dir` (relative paths, sorted), `target/` and
/// `Cargo.lock` left out (a build of the template in place makes them).
fn files(dir: &Path) -> Vec<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            let relative = path.strip_prefix(root).unwrap().to_owned();
            if relative == Path::new("target") || relative == Path::new("Cargo.lock") {
                continue;
            }
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.push(relative);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Every (source, copy) pair: `plugin-template/` and `ci/` against their
/// copies in `cargo-backworks/embedded/`, the template's `Cargo.toml` as
/// `Cargo.toml.in`.
fn pairs() -> Vec<(PathBuf, PathBuf)> {
    let root = workspace();
    let embedded = root.join("cargo-backworks/embedded");
    let mut pairs = Vec::new();
    for dir in ["plugin-template", "ci"] {
        for file in files(&root.join(dir)) {
            let copy = if file == Path::new("Cargo.toml") {
                PathBuf::from("Cargo.toml.in")
            } else {
                file.clone()
            };
            pairs.push((root.join(dir).join(&file), embedded.join(dir).join(copy)));
        }
    }
    pairs
}

const RESYNC: &str = "edit plugin-template/ and ci/, never the copies; re-sync the copies with \
     `BACKWORKS_BLESS=1 cargo test -p backworks-test-support --test workspace embedded_copies_are_the_sources`";

#[test]
fn embedded_copies_are_the_sources() {
    let pairs = pairs();
    assert!(
        pairs.len() >= 6,
        "the template and the CI files are missing: {pairs:?}"
    );
    let bless = std::env::var_os("BACKWORKS_BLESS").is_some();
    let mut stale = Vec::new();
    for (source, copy) in &pairs {
        let want = std::fs::read(source).unwrap();
        if bless {
            std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
            let tmp = copy.with_extension("bless-tmp");
            std::fs::write(&tmp, &want).unwrap();
            std::fs::rename(&tmp, copy).unwrap();
        }
        if std::fs::read(copy).ok().as_deref() != Some(&want[..]) {
            stale.push(format!(
                "{} differs from {}",
                copy.display(),
                source.display()
            ));
        }
    }
    // A file left in the copy that no source has any more.
    let embedded = workspace().join("cargo-backworks/embedded");
    let copies: Vec<PathBuf> = pairs.iter().map(|(_, copy)| copy.clone()).collect();
    for dir in ["plugin-template", "ci"] {
        for file in files(&embedded.join(dir)) {
            let copy = embedded.join(dir).join(file);
            if !copies.contains(&copy) {
                stale.push(format!(
                    "{} has no source any more: remove it",
                    copy.display()
                ));
            }
        }
    }
    assert!(stale.is_empty(), "{}\n{RESYNC}", stale.join("\n"));
}
