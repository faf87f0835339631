//! The dependency list `cargo backworks build` links into each plugin: the
//! plugin package's resolved dependency tree, in cargo-auditable's format,
//! so that `rust-audit-info`, `cargo audit bin` and
//! [`backworks_artifact::deps`] read it.
//!
//! - The tree is `cargo metadata --filter-platform <target>` run on the
//!   plugin's own manifest (its root is the plugin package; default
//!   features, as the build has), walked from the root: dev-dependencies
//!   are left out, a package reached only through build scripts or
//!   proc-macros is a `build` dependency (format 1 of `auditable-serde`).
//! - It is `auditable-serde`'s [`VersionInfo`] as JSON, compressed with
//!   zlib, in the `.dep-v0` section of an object file whose symbol
//!   `AUDITABLE_VERSION_INFO` starts it: both written by
//!   [`backworks_artifact::deps`] ([`deps::compress`], [`deps::object_file`]),
//!   the writer its reader is tested against. The object goes to the link
//!   of the plugin's crate only (`-C link-arg=<object>`), with
//!   `--undefined=AUDITABLE_VERSION_INFO` so the linker keeps it.
//! - Reproducible: packages are sorted by name, version and source, no
//!   path is recorded (a path dependency's source is `local`), and the
//!   object is `<target-dir>/backworks-deps/<target>/<name>-<version>-<hash
//!   of its bytes>.o`, a name that does not depend on the plugin's
//!   directory and changes, relinking the plugin, when the list does.
//! - Targets: ELF on x86, x86_64 and AArch64, PE on x86_64 `*-windows-gnu`
//!   (MinGW's ld), Mach-O on x86_64 and AArch64 (`-u _AUDITABLE_VERSION_INFO`
//!   for ld64). Elsewhere (other ELF architectures, whose objects carry ABI
//!   flags the linker compares; x86 Windows, which mangles the symbol) the
//!   plugin is built without a list, as before.

use std::cmp::min;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use auditable_serde::{DependencyKind, Package, Source, VersionInfo};
use backworks_artifact::deps::{self, SYMBOL};
use backworks_artifact::target::{self, Format};
use cargo_metadata::{Metadata, MetadataCommand, Node, TargetKind};
use sha2::Digest;

use crate::build::BuildError;

/// How a package is reached from the root, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Reached {
    /// Only through dev-dependencies: not in the list.
    Development,
    /// Through a build script or a proc-macro.
    Build,
    /// Linked into the plugin.
    Runtime,
}

fn strongest(kinds: &[cargo_metadata::DepKindInfo]) -> Reached {
    kinds
        .iter()
        .map(|k| match k.kind {
            cargo_metadata::DependencyKind::Development => Reached::Development,
            cargo_metadata::DependencyKind::Build => Reached::Build,
            _ => Reached::Runtime,
        })
        .max()
        .unwrap_or(Reached::Runtime)
}

/// Why a metadata resolve gives no list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ResolveError {
    /// `cargo metadata` ran with `--no-deps`.
    #[error("`cargo metadata` gave no resolve")]
    NoResolve,
    /// The manifest is a virtual workspace's.
    #[error("`cargo metadata` gave no root package")]
    NoRoot,
    /// The resolve names a package it does not describe.
    #[error("`cargo metadata`'s resolve names the unknown package `{0}`")]
    UnknownPackage(String),
}

/// The dependency list of the root of `metadata`'s resolve.
pub(crate) fn version_info(metadata: &Metadata) -> Result<VersionInfo, ResolveError> {
    let resolve = metadata.resolve.as_ref().ok_or(ResolveError::NoResolve)?;
    let root = resolve.root.as_ref().ok_or(ResolveError::NoRoot)?;
    let nodes: HashMap<&str, &Node> = resolve
        .nodes
        .iter()
        .map(|n| (n.id.repr.as_str(), n))
        .collect();
    let packages: HashMap<&str, &cargo_metadata::Package> = metadata
        .packages
        .iter()
        .map(|p| (p.id.repr.as_str(), p))
        .collect();
    let is_proc_macro = |id: &str| {
        packages.get(id).is_some_and(|p| {
            p.targets
                .iter()
                .any(|t| t.kind.contains(&TargetKind::ProcMacro))
        })
    };
    // Breadth first from the root; a package is visited again when reached
    // more strongly than before.
    let mut reached: HashMap<&str, Reached> = HashMap::new();
    reached.insert(root.repr.as_str(), Reached::Runtime);
    let mut queue = vec![root.repr.as_str()];
    while let Some(id) = queue.pop() {
        let parent = reached[id];
        let node = nodes
            .get(id)
            .ok_or_else(|| ResolveError::UnknownPackage(id.to_owned()))?;
        for dep in &node.deps {
            let child = dep.pkg.repr.as_str();
            let mut kind = min(strongest(&dep.dep_kinds), parent);
            if is_proc_macro(child) {
                kind = min(kind, Reached::Build);
            }
            if reached.get(child).is_none_or(|before| kind > *before) {
                reached.insert(child, kind);
                queue.push(child);
            }
        }
    }
    let source = |p: &cargo_metadata::Package| match &p.source {
        None => Source::Local,
        Some(s) if s.is_crates_io() => Source::CratesIo,
        Some(s) => Source::from(s.repr.split('+').next().unwrap_or_default()),
    };
    let mut listed: Vec<(&cargo_metadata::Package, Reached)> = metadata
        .packages
        .iter()
        .filter_map(|p| match reached.get(p.id.repr.as_str()) {
            Some(kind) if *kind > Reached::Development => Some((p, *kind)),
            _ => None,
        })
        .collect();
    listed.sort_by(|(a, _), (b, _)| {
        (
            a.name.as_str(),
            &a.version,
            String::from(source(a)),
            &a.id.repr,
        )
            .cmp(&(
                b.name.as_str(),
                &b.version,
                String::from(source(b)),
                &b.id.repr,
            ))
    });
    let index: HashMap<&str, usize> = listed
        .iter()
        .enumerate()
        .map(|(i, (p, _))| (p.id.repr.as_str(), i))
        .collect();
    let packages = listed
        .iter()
        .map(|(p, kind)| {
            let mut dependencies: Vec<usize> = nodes
                .get(p.id.repr.as_str())
                .map(|node| {
                    node.deps
                        .iter()
                        // A dev-dependency edge may close a cycle.
                        .filter(|d| strongest(&d.dep_kinds) > Reached::Development)
                        .filter_map(|d| index.get(d.pkg.repr.as_str()).copied())
                        .collect()
                })
                .unwrap_or_default();
            dependencies.sort_unstable();
            dependencies.dedup();
            Package {
                name: p.name.to_string(),
                version: p.version.clone(),
                source: source(p),
                kind: if *kind == Reached::Build {
                    DependencyKind::Build
                } else {
                    DependencyKind::Runtime
                },
                dependencies,
                root: p.id == *root,
            }
        })
        .collect();
    Ok(VersionInfo {
        packages,
        format: 1,
    })
}

/// The flags for the plugin crate's link that embed `object` and keep it
/// (`ld64`'s `-u` takes the mangled name).
fn link_flags(triple: &str, object: &Path) -> Vec<String> {
    let keep = match target::parse(triple).map(|info| info.format) {
        Some(Format::MachO) => format!("-Clink-arg=-Wl,-u,_{SYMBOL}"),
        _ => format!("-Clink-arg=-Wl,--undefined={SYMBOL}"),
    };
    vec![format!("-Clink-arg={}", object.display()), keep]
}

/// What the build of `package` (version `version`, manifest `manifest`)
/// for `triple` needs to carry its dependency list: resolves its tree,
/// writes the object file under `target_dir`, and returns the plugin
/// crate's flags (none for a target that gets no list).
pub(crate) fn prepare(
    package: &str,
    version: &str,
    manifest: &Path,
    triple: &str,
    target_dir: &Path,
    locked: bool,
    cargo: &std::ffi::OsStr,
) -> Result<Vec<String>, BuildError> {
    let error = |problem: String| BuildError::DependencyList {
        package: package.to_owned(),
        target: triple.to_owned(),
        problem,
    };
    if deps::object_format(triple).is_none() {
        return Ok(Vec::new());
    }
    let mut options = vec!["--filter-platform".to_owned(), triple.to_owned()];
    if locked {
        options.push("--locked".to_owned());
    }
    let metadata = MetadataCommand::new()
        .cargo_path(cargo)
        .manifest_path(manifest)
        .other_options(options)
        .exec()
        .map_err(|e| error(format!("`cargo metadata` failed: {e}")))?;
    let info = version_info(&metadata).map_err(|e| error(e.to_string()))?;
    let object =
        deps::object_file(triple, &deps::compress(&info)).map_err(|e| error(e.to_string()))?;
    let hash = hex::encode(&sha2::Sha256::digest(&object)[..8]);
    let dir = target_dir.join("backworks-deps").join(triple);
    let path: PathBuf = dir.join(format!("{package}-{version}-{hash}.o"));
    if !path.is_file() {
        std::fs::create_dir_all(&dir).map_err(|source| BuildError::Dist {
            path: dir.clone(),
            source,
        })?;
        backworks_artifact::write::write_atomically(
            &path,
            object.as_slice(),
            backworks_artifact::write::WriteOptions::default(),
        )
        .map_err(|failed| BuildError::Dist {
            path: path.clone(),
            source: failed.source,
        })?;
    }
    Ok(link_flags(triple, &path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_flags_keep_the_symbol() {
        assert_eq!(
            link_flags("aarch64-apple-darwin", Path::new("d.o"))[1],
            "-Clink-arg=-Wl,-u,_AUDITABLE_VERSION_INFO"
        );
        let flags = link_flags(
            "x86_64-unknown-linux-gnu",
            Path::new("/t/backworks-deps/x/demo-0.1.0-00.o"),
        );
        assert_eq!(
            flags,
            [
                "-Clink-arg=/t/backworks-deps/x/demo-0.1.0-00.o",
                "-Clink-arg=-Wl,--undefined=AUDITABLE_VERSION_INFO"
            ]
        );
    }
}
