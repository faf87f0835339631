//! `cargo backworks reproduce`: rebuild what the last `build` wrote in a
//! clean copy of the source, in another directory, and compare the bytes
//! with its manifest.
//!
//! 1. The manifest (`<target-dir>/backworks/manifest.json`) gives the
//!    profile, targets and packages.
//! 2. The workspace's source is copied into a fresh temporary directory:
//!    the files git knows (`git ls-files --cached --others
//!    --exclude-standard`: tracked, and untracked but not ignored), or, out
//!    of a git checkout, every file but the target directory and `.git`.
//! 3. It is built there with the same options and `--locked`, into a fresh
//!    target directory (or `--target-dir`), its dist layout in the temporary
//!    directory: the original artifacts are not touched.
//! 4. Each artifact's SHA-256 is compared with the manifest's; every
//!    difference is reported.

use std::path::{Path, PathBuf};
use std::process::Command;

use cargo_metadata::MetadataCommand;

use crate::build::{BuildError, BuildOptions};
use crate::manifest::{Manifest, ManifestError, RustcVersion, sha256_file};
use crate::progress::Progress;

/// What to reproduce.
#[derive(Debug, Clone, Default)]
pub struct ReproduceOptions {
    /// The workspace's `Cargo.toml` [default: cargo's search from the
    /// current directory].
    pub manifest_path: Option<PathBuf>,
    /// The build manifest to compare with (default:
    /// `<target-dir>/backworks/manifest.json`).
    pub build_manifest: Option<PathBuf>,
    /// The target directory of the rebuild [default: a fresh one in the
    /// temporary directory, so nothing is reused].
    pub target_dir: Option<PathBuf>,
}

/// One artifact whose rebuild differs from the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// `<target>/<file>`.
    pub file: String,
    /// The manifest's SHA-256.
    pub expected: String,
    /// The rebuild's, or `None` when the rebuild produced no such file.
    pub got: Option<String>,
}

/// The outcome of a reproduction.
#[derive(Debug, Clone)]
pub struct ReproduceReport {
    /// The build manifest compared with.
    pub manifest: PathBuf,
    /// How many artifacts were compared.
    pub compared: usize,
    /// The ones that differ.
    pub differences: Vec<Difference>,
    /// The rustc of the original build and of the rebuild, when they differ.
    pub rustc_changed: Option<(String, String)>,
}

/// Why a reproduction could not be made, or did not match.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReproduceError {
    /// `cargo metadata` failed.
    #[error("cannot read the workspace with `cargo metadata`: {0}")]
    Metadata(#[source] cargo_metadata::Error),
    /// The manifest could not be read.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// Copying the source failed.
    #[error("cannot copy `{}` into the clean checkout: {source}", path.display())]
    Copy {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The rebuild failed.
    #[error("the rebuild in a clean checkout failed: {0}")]
    Build(#[from] BuildError),
    /// The rebuild's bytes differ from the manifest's.
    #[error("{} of {compared} artifacts did not reproduce:\n{details}", differences.len())]
    Mismatch {
        /// How many were compared.
        compared: usize,
        /// Each difference.
        differences: Vec<Difference>,
        /// One line per difference (and the rustc change, if any).
        details: String,
    },
}

impl ReproduceError {
    /// The process exit code: 1 when the bytes differ, 3 when the rebuild
    /// failed in cargo, 4 when a tool is missing, 2 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Mismatch { .. } => 1,
            Self::Build(error) => error.exit_code(),
            _ => 2,
        }
    }
}

/// Rebuilds in a clean copy and compares (see the module documentation).
pub fn reproduce(
    options: &ReproduceOptions,
    progress: &Progress,
) -> Result<ReproduceReport, ReproduceError> {
    let mut metadata_command = MetadataCommand::new();
    metadata_command
        .cargo_path(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .no_deps();
    if let Some(manifest) = &options.manifest_path {
        metadata_command.manifest_path(manifest);
    }
    progress.status("reading the workspace");
    let metadata = metadata_command.exec().map_err(ReproduceError::Metadata)?;
    let root = metadata.workspace_root.clone().into_std_path_buf();
    let target_dir = metadata.target_directory.clone().into_std_path_buf();
    let manifest_file = options
        .build_manifest
        .clone()
        .unwrap_or_else(|| target_dir.join("backworks").join("manifest.json"));
    let manifest = Manifest::read(&manifest_file)?;

    let temporary = tempfile::Builder::new()
        .prefix("backworks-reproduce-")
        .tempdir()
        .map_err(|source| ReproduceError::Copy {
            path: std::env::temp_dir(),
            source,
        })?;
    let checkout = temporary.path().join("source");
    progress.status("copying the source");
    for file in source_files(&root, &target_dir)? {
        let to = checkout.join(&file);
        let copy = |path: &Path| -> std::io::Result<()> {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::copy(root.join(&file), path).map(drop)
        };
        copy(&to).map_err(|source| ReproduceError::Copy {
            path: root.join(&file),
            source,
        })?;
    }
    progress.step(&format!(
        "Reproducing {} in {}",
        manifest_file.display(),
        checkout.display()
    ));
    let dist = temporary.path().join("dist");
    let report = crate::build::build(
        &BuildOptions {
            manifest_path: Some(checkout.join("Cargo.toml")),
            release: manifest.profile == "release",
            targets: manifest.targets.clone(),
            packages: manifest.packages.clone(),
            fail_fast: true,
            locked: true,
            target_dir: Some(
                options
                    .target_dir
                    .clone()
                    .unwrap_or_else(|| temporary.path().join("target")),
            ),
            dist_dir: Some(dist.clone()),
        },
        progress,
    )?;
    if let Some(error) = report.failure() {
        return Err(error.into());
    }

    let mut differences = Vec::new();
    for artifact in &manifest.artifacts {
        let rebuilt = dist.join(&artifact.file);
        let got = rebuilt
            .is_file()
            .then(|| sha256_file(&rebuilt).map(|(hash, _)| hash))
            .transpose()?;
        if got.as_deref() != Some(artifact.sha256.as_str()) {
            differences.push(Difference {
                file: artifact.file.clone(),
                expected: artifact.sha256.clone(),
                got,
            });
        }
    }
    let now = RustcVersion::of(&root);
    let rustc_changed = (now.version != manifest.rustc.version)
        .then(|| (manifest.rustc.version.clone(), now.version));
    if !differences.is_empty() {
        let mut details: Vec<String> = differences
            .iter()
            .map(|d| {
                format!(
                    "  {}: expected sha256 {}, got {}",
                    d.file,
                    d.expected,
                    d.got.as_deref().unwrap_or("no such file")
                )
            })
            .collect();
        if let Some((then, now)) = &rustc_changed {
            details.push(format!(
                "  the manifest was built with {then}, this rebuild with {now}"
            ));
        }
        return Err(ReproduceError::Mismatch {
            compared: manifest.artifacts.len(),
            differences,
            details: details.join("\n"),
        });
    }
    Ok(ReproduceReport {
        manifest: manifest_file,
        compared: manifest.artifacts.len(),
        differences,
        rustc_changed,
    })
}

/// The workspace's source files, relative to `root`.
fn source_files(root: &Path, target_dir: &Path) -> Result<Vec<PathBuf>, ReproduceError> {
    let git = Command::new("git")
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .current_dir(root)
        .output();
    if let Ok(output) = git
        && output.status.success()
    {
        return Ok(output
            .stdout
            .split(|b| *b == 0)
            .filter(|name| !name.is_empty())
            .map(|name| PathBuf::from(String::from_utf8_lossy(name).into_owned()))
            .filter(|name| root.join(name).is_file())
            .collect());
    }
    let mut files = Vec::new();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|source| ReproduceError::Copy {
            path: dir.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| ReproduceError::Copy {
                path: dir.clone(),
                source,
            })?;
            let path = entry.path();
            let kind = entry.file_type().map_err(|source| ReproduceError::Copy {
                path: path.clone(),
                source,
            })?;
            if kind.is_dir() {
                if path != target_dir && entry.file_name() != ".git" {
                    pending.push(path);
                }
            } else if kind.is_file()
                && let Ok(relative) = path.strip_prefix(root)
            {
                files.push(relative.to_owned());
            }
        }
    }
    files.sort();
    Ok(files)
}
