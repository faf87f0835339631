//! The build manifest: what `cargo backworks build` produced, so a second
//! build can be compared against it (`cargo backworks reproduce`).
//!
//! Two files in the dist directory (`<target-dir>/backworks/`), each written
//! through a temporary file and renamed into place:
//!
//! - `SHA256SUMS`: `<sha256>  <target>/<file>` lines, as `sha256sum` writes
//!   them, so `cd target/backworks && sha256sum -c SHA256SUMS` checks them.
//! - `manifest.json` (schema `backworks-build/1`): the same hashes with
//!   package, version, target, size and how each target was built, plus the
//!   profile, the packages asked for, the rustc version (`rustc -vV`) and
//!   this tool's version.
//!
//! Each build rewrites both for what it built.

use std::path::{Path, PathBuf};
use std::process::Command;

use backworks_artifact::write::{self, PathError, WriteOptions};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::build::BuiltPlugin;
use crate::toolchain::Builder;

/// The `schema` of `manifest.json`.
pub(crate) const SCHEMA: &str = "backworks-build/1";

/// Why a manifest could not be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// A file could not be read, hashed or written.
    #[error(transparent)]
    Io(#[from] PathError),
    /// `manifest.json` is not a manifest this tool understands.
    #[error(
        "`{}` is not a build manifest (schema `{SCHEMA}`): {reason}; run `cargo backworks build` to write one",
        path.display()
    )]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// The rustc that built the libraries, from `rustc -vV`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RustcVersion {
    /// The first line: `rustc 1.95.0 (<hash> <date>)`.
    pub version: String,
    /// `host:`.
    pub host: String,
    /// `commit-hash:`.
    pub commit_hash: String,
    /// `LLVM version:`.
    pub llvm_version: String,
}

impl RustcVersion {
    /// `rustc -vV` as run in `dir` (so rustup's toolchain file applies);
    /// fields it does not print are empty.
    pub(crate) fn of(dir: &Path) -> Self {
        let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
        let text = Command::new(rustc)
            .arg("-vV")
            .current_dir(dir)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
                .unwrap_or_default()
        };
        Self {
            version: text.lines().next().unwrap_or_default().trim().to_owned(),
            host: field("host:"),
            commit_hash: field("commit-hash:"),
            llvm_version: field("LLVM version:"),
        }
    }
}

/// One library in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Artifact {
    /// Its path relative to the dist directory: `<target>/<file>`.
    pub file: String,
    /// Package name.
    pub package: String,
    /// Package version.
    pub version: String,
    /// Target triple.
    pub target: String,
    /// Size in bytes.
    pub size: u64,
    /// Lower-case hex SHA-256 of the file.
    pub sha256: String,
}

/// How one target was built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TargetBuilder {
    /// The target triple.
    pub target: String,
    /// `cargo`, `cargo with linker …`, `cargo zigbuild (zig …)`.
    pub builder: String,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Manifest {
    /// [`SCHEMA`].
    pub schema: String,
    /// The version of `cargo-backworks` that built.
    pub cargo_backworks_version: String,
    /// The rustc that built.
    pub rustc: RustcVersion,
    /// `release` or `dev`.
    pub profile: String,
    /// The packages asked for with `-p` (empty: every plugin package).
    pub packages: Vec<String>,
    /// The targets built, in order.
    pub targets: Vec<String>,
    /// How each target was built.
    pub builders: Vec<TargetBuilder>,
    /// Every library, in build order.
    pub artifacts: Vec<Artifact>,
}

/// The lower-case hex SHA-256 and size of a file.
pub(crate) fn sha256_file(path: &Path) -> Result<(String, u64), ManifestError> {
    let error = |source| ManifestError::Io(PathError::new("hash", path, source));
    let mut file = std::fs::File::open(path).map_err(error)?;
    let mut hasher = Sha256::new();
    let size = std::io::copy(&mut file, &mut hasher).map_err(error)?;
    Ok((hex::encode(hasher.finalize()), size))
}

impl Manifest {
    /// The manifest of `built`, whose files are in `dist_dir`.
    pub(crate) fn new(
        release: bool,
        packages: &[String],
        built: &[BuiltPlugin],
        builders: &[(String, Builder)],
        dist_dir: &Path,
        rustc: RustcVersion,
    ) -> Result<Self, ManifestError> {
        let mut artifacts = Vec::new();
        let mut targets: Vec<String> = Vec::new();
        for plugin in built {
            let (sha256, size) = sha256_file(&plugin.dist_path)?;
            let file = plugin
                .dist_path
                .strip_prefix(dist_dir)
                .unwrap_or(&plugin.dist_path)
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            if !targets.contains(&plugin.target) {
                targets.push(plugin.target.clone());
            }
            artifacts.push(Artifact {
                file,
                package: plugin.package.clone(),
                version: plugin.version.clone(),
                target: plugin.target.clone(),
                size,
                sha256,
            });
        }
        Ok(Self {
            schema: SCHEMA.to_owned(),
            cargo_backworks_version: env!("CARGO_PKG_VERSION").to_owned(),
            rustc,
            profile: if release { "release" } else { "dev" }.to_owned(),
            packages: packages.to_vec(),
            builders: builders
                .iter()
                .filter(|(target, _)| targets.contains(target))
                .map(|(target, builder)| TargetBuilder {
                    target: target.clone(),
                    builder: builder.to_string(),
                })
                .collect(),
            targets,
            artifacts,
        })
    }

    /// The `SHA256SUMS` text: `<hash>  <target>/<file>` per library.
    pub(crate) fn sha256sums(&self) -> String {
        self.artifacts
            .iter()
            .map(|a| format!("{}  {}\n", a.sha256, a.file))
            .collect()
    }

    /// Writes `SHA256SUMS` and `manifest.json` into `dir`, each atomically;
    /// returns their paths.
    pub(crate) fn write(&self, dir: &Path) -> Result<(PathBuf, PathBuf), ManifestError> {
        let sums = dir.join("SHA256SUMS");
        let json = dir.join("manifest.json");
        let mut text = serde_json::to_string_pretty(self).expect("a manifest serialises");
        text.push('\n');
        write_atomically(&sums, self.sha256sums().as_bytes())?;
        write_atomically(&json, text.as_bytes())?;
        Ok((sums, json))
    }

    /// Reads a `manifest.json`.
    pub(crate) fn read(path: &Path) -> Result<Self, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(PathError::on("read", path))?;
        let manifest: Self = serde_json::from_str(&text).map_err(|e| ManifestError::Invalid {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        if manifest.schema != SCHEMA {
            return Err(ManifestError::Invalid {
                path: path.to_owned(),
                reason: format!("its schema is `{}`", manifest.schema),
            });
        }
        Ok(manifest)
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ManifestError> {
    Ok(write::write_atomically(
        path,
        bytes,
        WriteOptions::default(),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_are_sha256sum_lines_and_json_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let target_dir = dir.path().join("x86_64-unknown-linux-gnu");
        std::fs::create_dir_all(&target_dir).unwrap();
        let library = target_dir.join("demo-0.1.0-x86_64-unknown-linux-gnu.so");
        std::fs::write(&library, b"abc").unwrap();
        let built = [BuiltPlugin {
            package: "demo".into(),
            version: "0.1.0".into(),
            target: "x86_64-unknown-linux-gnu".into(),
            cargo_path: library.clone(),
            dist_path: library,
            capabilities: None,
            floor: Default::default(),
        }];
        let manifest = Manifest::new(
            true,
            &[],
            &built,
            &[("x86_64-unknown-linux-gnu".into(), Builder::Cargo)],
            dir.path(),
            RustcVersion::of(dir.path()),
        )
        .unwrap();
        assert_eq!(
            manifest.sha256sums(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad  x86_64-unknown-linux-gnu/demo-0.1.0-x86_64-unknown-linux-gnu.so\n"
        );
        let (sums, json) = manifest.write(dir.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(sums).unwrap(),
            manifest.sha256sums()
        );
        assert_eq!(Manifest::read(&json).unwrap(), manifest);
        assert_eq!(manifest.builders[0].builder, "cargo");

        std::fs::write(&json, r#"{"schema":"other/9"}"#).unwrap();
        assert!(matches!(
            Manifest::read(&json),
            Err(ManifestError::Invalid { .. })
        ));
    }
}
