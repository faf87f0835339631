//! Reads a plugin file's metadata record and platform floor from its bytes,
//! without loading it, and says whether this host could load it (its ABI,
//! target and panic strategy, and the glibc it needs).

use std::path::{Path, PathBuf};

use backworks_artifact::deps::{self, VersionInfo};
use backworks_artifact::floor::{self, FloorReport};
use backworks_artifact::inspect::{InspectError, find_metadata};
use backworks_plugin_sdk::abi::{self, AbiError};
use backworks_plugin_sdk::metadata::PluginMetadata;
use serde_json::json;

use crate::loader::{self, FileError, SizeLimit};
use crate::report::escape;

/// Why a file could not be inspected.
#[derive(Debug, thiserror::Error)]
pub enum InspectFileError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a regular file, or is larger than
    /// [`loader::DEFAULT_MAX_PLUGIN_SIZE`] (see [`loader::open_bounded`]).
    #[error(transparent)]
    Refused(FileError),
    /// The file was read but holds no valid metadata record.
    #[error("{}: {source}", path.display())]
    NotPlugin {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: InspectError,
    },
}

impl InspectFileError {
    /// The process exit code for this error: 2 for I/O, 1 for a file that
    /// is not a valid plugin (not a regular file, too large, no record).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Read { .. } => 2,
            Self::Refused(_) | Self::NotPlugin { .. } => 1,
        }
    }
}

/// A plugin file's metadata and whether this host can load it.
#[derive(Debug)]
pub struct Report {
    /// The file.
    pub path: PathBuf,
    /// Its metadata record.
    pub metadata: PluginMetadata,
    /// `Ok` when this host could load it.
    pub compatibility: Result<(), AbiError>,
    /// The oldest system it loads on (the newest glibc release it needs,
    /// its minimum macOS).
    pub floor: FloorReport,
    /// Why this system's glibc cannot load it: it needs a newer release
    /// than [`loader::running_glibc`].
    pub floor_problem: Option<String>,
    /// With `--deps`: its dependency list (the `.dep-v0` section
    /// `cargo backworks build` embeds), or why it cannot be read.
    pub dependencies: Option<Result<VersionInfo, String>>,
}

/// Reads `path` (a regular file of [`loader::DEFAULT_MAX_PLUGIN_SIZE`]
/// bytes at most, see [`loader::open_bounded`]) and its metadata record,
/// and its dependency list when `with_deps`.
pub fn inspect_file(path: &Path, with_deps: bool) -> Result<Report, InspectFileError> {
    let bytes = loader::read_bounded(path, SizeLimit::Plugin(loader::DEFAULT_MAX_PLUGIN_SIZE))
        .map_err(|error| match error {
            FileError::Io { path, source } => InspectFileError::Read { path, source },
            refused => InspectFileError::Refused(refused),
        })?;
    let metadata = find_metadata(&bytes).map_err(|source| InspectFileError::NotPlugin {
        path: path.to_owned(),
        source,
    })?;
    let compatibility = abi::check_compatible(&metadata);
    let floor = floor::of_bytes(&bytes);
    let floor_problem = match (&floor.glibc, loader::running_glibc()) {
        (Some(need), Some(running)) if need.version > running => Some(format!(
            "it needs {need} but this system has glibc {running}"
        )),
        _ => None,
    };
    let dependencies =
        with_deps.then(|| deps::from_bytes(path, &bytes).map_err(|error| error.to_string()));
    Ok(Report {
        path: path.to_owned(),
        metadata,
        compatibility,
        floor,
        floor_problem,
        dependencies,
    })
}

impl Report {
    /// Human-readable lines. Every string of the record (and the verdict,
    /// which may quote one) comes from the file: [`escape`]d, so a record
    /// cannot drive the terminal or add lines.
    pub fn to_text(&self) -> String {
        let m = &self.metadata;
        let verdict = match self.problem() {
            None => String::from("loadable by this host"),
            Some(problem) => format!("not loadable by this host: {problem}"),
        };
        let floor = self
            .floor
            .describe()
            .unwrap_or_else(|| String::from("none recorded"));
        let mut text = format!(
            "file:        {}\nplugin:      {} {}\ndescription: {}\ntarget:      {}\nabi:         v{}\nsdk:         {}\nneeds:       {}\nfloor:       {}\nverdict:     {}\n",
            escape(&self.path.display().to_string()),
            escape(&m.name),
            escape(&m.version),
            escape(&m.description),
            escape(&m.target),
            m.abi_revision(),
            escape(&m.sdk_version),
            escape(&match &m.capabilities {
                Some(capabilities) => capabilities.to_string(),
                None => String::from("nothing declared (the process tier's defaults)"),
            }),
            escape(&floor),
            escape(&verdict)
        );
        match &self.dependencies {
            None => {}
            Some(Ok(info)) => {
                text.push_str(&format!(
                    "dependencies: {} packages (section `{}`)\n",
                    info.packages.len(),
                    deps::SECTION
                ));
                for package in &info.packages {
                    text.push_str(&format!("  {}\n", escape(&deps::package_line(package))));
                }
            }
            Some(Err(error)) => {
                text.push_str(&format!("dependencies: error: {}\n", escape(error)));
            }
        }
        text
    }

    /// The report as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        let m = &self.metadata;
        let mut value = json!({
            "file": self.path,
            "name": m.name,
            "version": m.version,
            "description": m.description,
            "target": m.target,
            "abi_version": m.abi_version(),
            "abi_revision": m.abi_revision(),
            "sdk_version": m.sdk_version,
            "capabilities": m.capabilities,
            "floor": self.floor,
            "loadable": self.problem().is_none(),
            "problem": self.problem(),
        });
        if let (Some(list), Some(object)) = (&self.dependencies, value.as_object_mut()) {
            let list = match list {
                Ok(info) => serde_json::to_value(info).unwrap_or_default(),
                Err(error) => json!({ "error": error }),
            };
            object.insert("dependencies".to_owned(), list);
        }
        value
    }

    /// The process exit code of `plugins inspect` for this report: 1 when
    /// the dependency list was asked for (`--deps`) and cannot be read,
    /// the library carrying none included (as `cargo backworks check
    /// --deps`), else 0. The report, with why, is printed either way.
    pub fn exit_code(&self) -> u8 {
        match &self.dependencies {
            Some(Err(_)) => 1,
            _ => 0,
        }
    }

    /// Why this host cannot load the plugin: its ABI, target or panic
    /// strategy, else its glibc floor; `None` when it can.
    fn problem(&self) -> Option<String> {
        match &self.compatibility {
            Err(error) => Some(error.to_string()),
            Ok(()) => self.floor_problem.clone(),
        }
    }
}
