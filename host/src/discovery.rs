//! Discovery: the plugin libraries in the configured directories, described
//! from their bytes alone (metadata record and signature status). Nothing
//! found here is loaded: `serve` loads what `backworks.yaml` names, through
//! the loader.

use std::path::{Path, PathBuf};

use backworks_plugin_sdk::metadata::PluginMetadata;
use serde_json::json;

use crate::config::{Isolation, PluginConfig, PluginKind};
use crate::loader::{self, LoadError, LoadPolicy, SizeLimit};

/// What discovery says about one file.
#[derive(Debug)]
pub struct Discovered {
    /// The file.
    pub path: PathBuf,
    /// Its metadata, when it is a plugin.
    pub metadata: Option<PluginMetadata>,
    /// `verified by <key id>`, `signatures not required`, or why it would be
    /// refused.
    pub status: Result<String, String>,
    /// The `backworks.yaml` entry that runs this file, with its tier:
    /// set by [`match_entries`].
    pub entry: Option<(String, Isolation)>,
}

/// Sets each file's [`Discovered::entry`]: the `type: external` entry
/// whose `path` is that file, else the entry named as the file's record.
pub fn match_entries(found: &mut [Discovered], plugins: &[PluginConfig]) {
    let same_file = |a: &Path, b: &Path| {
        a == b
            || matches!(
                (std::fs::canonicalize(a), std::fs::canonicalize(b)),
                (Ok(a), Ok(b)) if a == b
            )
    };
    for plugin in found {
        let by_path = plugins.iter().find(|entry| {
            matches!(&entry.kind, PluginKind::External { path } if same_file(path, &plugin.path))
        });
        let by_name = || {
            let name = &plugin.metadata.as_ref()?.name;
            plugins.iter().find(|entry| entry.name == *name)
        };
        plugin.entry = by_path
            .or_else(by_name)
            .map(|entry| (entry.name.clone(), entry.isolation));
    }
}

impl Discovered {
    /// As JSON for `backworks plugins list --json`.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "path": self.path,
            "name": self.metadata.as_ref().map(|m| &m.name),
            "version": self.metadata.as_ref().map(|m| &m.version),
            "target": self.metadata.as_ref().map(|m| &m.target),
            "abi_version": self.metadata.as_ref().map(PluginMetadata::abi_version),
            "loadable": self.status.is_ok(),
            "status": match &self.status { Ok(s) | Err(s) => s },
            "entry": self.entry.as_ref().map(|(name, _)| name),
            "isolation": self.entry.as_ref().map(|(_, isolation)| isolation.as_str()),
        })
    }
}

/// Why a directory could not be scanned.
#[derive(Debug, thiserror::Error)]
#[error("cannot scan plugin directory {}: {source}", path.display())]
pub struct ScanError {
    /// The directory.
    pub path: PathBuf,
    /// The I/O error.
    #[source]
    pub source: std::io::Error,
}

/// Every file with this platform's library extension in `dirs` (not
/// recursive), sorted, each described without loading it.
pub fn scan_for_plugins(
    dirs: &[PathBuf],
    policy: LoadPolicy<'_>,
) -> Result<Vec<Discovered>, ScanError> {
    let mut found = Vec::new();
    for dir in dirs {
        let entries = std::fs::read_dir(dir).map_err(|source| ScanError {
            path: dir.clone(),
            source,
        })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.extension().and_then(|e| e.to_str()) == Some(std::env::consts::DLL_EXTENSION)
            })
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        found.extend(files.iter().map(|path| describe(path, policy)));
    }
    Ok(found)
}

/// Describes one file: its record and whether the loader would accept it.
pub fn describe(path: &Path, policy: LoadPolicy<'_>) -> Discovered {
    // Held to `max_plugin_size`, regular files only: a FIFO or a device
    // among the plugins is refused, not waited on or read forever.
    let bytes = match loader::read_bounded(path, SizeLimit::Plugin(policy.max_plugin_size)) {
        Ok(bytes) => bytes,
        Err(e) => {
            return Discovered {
                path: path.to_owned(),
                metadata: None,
                status: Err(e.to_string()),
                entry: None,
            };
        }
    };
    match loader::verify_bytes(path, &bytes, policy) {
        Ok((metadata, verified)) => Discovered {
            path: path.to_owned(),
            metadata: Some(metadata),
            status: Ok(match verified {
                Some(v) => format!("verified, signed by key {}", v.key_id),
                None => String::from("signatures not required (not verified)"),
            }),
            entry: None,
        },
        Err(error) => Discovered {
            path: path.to_owned(),
            metadata: backworks_artifact::inspect::find_metadata(&bytes).ok(),
            status: Err(match error {
                LoadError::NotAPlugin { source, .. } => format!("not a plugin: {source}"),
                other => other.to_string(),
            }),
            entry: None,
        },
    }
}
