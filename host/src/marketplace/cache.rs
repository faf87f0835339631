//! The cache on disk: `<cache_dir>/<name>/<version>/<target>/` (every part
//! one checked path component), its lock files (one for installs, one for
//! the registry state and the lock file), staging directories left by a
//! killed process, and `registry-state.json` ([`STATE_FILE`]: the newest
//! index serial accepted per registry key).

use super::*;

/// The client's record of the newest index accepted, per registry key.
pub const STATE_FILE: &str = "registry-state.json";
/// Prefix of the staging directories downloads are written into.
pub(super) const STAGING_PREFIX: &str = ".download-";
/// Held shared by every install, exclusively by the one cleaning stale
/// staging directories.
pub(super) const CACHE_LOCK: &str = ".lock";
/// Serialises the read-modify-write of the registry state and the lock file.
pub(super) const STATE_LOCK: &str = ".state.lock";
/// The client's record of the newest index accepted from each registry.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct State {
    pub(super) format: u32,
    /// By registry key id.
    pub(super) registries: std::collections::BTreeMap<String, SeenIndex>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SeenIndex {
    /// The highest serial accepted.
    pub(super) serial: u64,
    /// Its expiry (unix seconds).
    pub(super) expires: u64,
    /// Where it came from last.
    pub(super) registry: String,
}

/// An advisory lock on a file in the cache, released when dropped (and by
/// the system when the process dies).
#[derive(Debug)]
pub(super) struct Held {
    pub(super) _file: File,
}

/// The recording of an accepted index's serial in the state file, running
/// on a blocking thread (see [`PluginMarketplace::accept_index`]).
#[must_use = "wait for the recording before pinning anything"]
pub(super) struct Recording(
    pub(super)  Option<(
        PathBuf,
        tokio::task::JoinHandle<Result<(), MarketplaceError>>,
    )>,
);

impl Recording {
    /// Waits until the serial is recorded (at once when there was nothing
    /// new to record).
    pub(super) async fn wait(self) -> Result<(), MarketplaceError> {
        match self.0 {
            None => Ok(()),
            Some((path, recording)) => recording.await.map_err(|e| MarketplaceError::State {
                path,
                reason: format!("the thread writing it failed: {e}"),
            })?,
        }
    }
}

pub(super) fn create_dir(dir: &Path) -> Result<(), MarketplaceError> {
    std::fs::create_dir_all(dir).map_err(io_error("create", dir))
}

pub(super) fn open_lock_file(path: &Path) -> Result<File, MarketplaceError> {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_error("open the lock file", path))
}

/// Writes a file of the cache. Not flushed to disk: the cache is verified
/// again every time it is used (sha256, signature, the lock's pin), so what
/// a crash can leave half-written is refused and downloaded again, never
/// loaded; flushing 10 MB costed more than the download (measured with
/// `cargo bench --bench install`). The lock file and the registry state are
/// flushed before they replace the old ones.
pub(super) fn write_cached(path: &Path, bytes: &[u8]) -> Result<(), MarketplaceError> {
    std::fs::write(path, bytes).map_err(io_error("write", path))
}

pub(super) fn read_state(path: &Path) -> Result<State, MarketplaceError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| MarketplaceError::State {
            path: path.to_owned(),
            reason: format!("not a registry state file: {e}"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
        Err(e) => Err(io_error("read", path)(e)),
    }
}

impl PluginMarketplace {
    /// The library of `pin` in the cache, if its directory holds one: the
    /// one file there that is not a signature nor a dot-file. An install
    /// writes exactly one; a directory holding several (a user's edit) is
    /// an error naming them, never a choice in directory order.
    pub fn cached(&self, pin: &LockedPlugin) -> Result<Option<PathBuf>, MarketplaceError> {
        let dir = self.version_dir(&pin.name, &pin.version, &pin.target)?;
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error("read the cache directory", &dir)(e)),
        };
        let mut libraries = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_error("read the cache directory", &dir))?;
            let file_name = entry.file_name();
            let file_name = file_name.to_string_lossy();
            if !file_name.starts_with('.') && !file_name.ends_with(api::SIGNATURE_SUFFIX) {
                libraries.push(entry.path());
            }
        }
        libraries.sort();
        match libraries.len() {
            0 | 1 => Ok(libraries.pop()),
            _ => Err(MarketplaceError::AmbiguousCache {
                files: libraries
                    .iter()
                    .filter_map(|path| path.file_name())
                    .map(|name| name.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(", "),
                dir,
            }),
        }
    }

    /// `<cache_dir>/<name>/<version>/<target>`: the name must be a plugin
    /// name and each part one plain path component, so the directory is
    /// inside the cache whatever the registry or the lock says.
    pub(super) fn version_dir(
        &self,
        name: &str,
        version: &Version,
        target: &str,
    ) -> Result<PathBuf, MarketplaceError> {
        let version = version.to_string();
        registry::check_name(name)
            .and_then(|()| registry::check_version(name, &version))
            .and_then(|_| registry::join_component(&self.cache_dir, "plugin name", name))
            .and_then(|dir| registry::join_component(&dir, "version", &version))
            .and_then(|dir| registry::join_component(&dir, "target", target))
            .map_err(MarketplaceError::UnsafePath)
    }

    /// Takes the cache's install lock (shared), first removing staging
    /// directories left by killed installs when no other install runs.
    pub(super) fn hold_for_install(&self) -> Result<Held, MarketplaceError> {
        let path = self.cache_dir.join(CACHE_LOCK);
        let file = open_lock_file(&path)?;
        match file.try_lock() {
            Ok(()) => {
                self.clean_staging()?;
                file.unlock().map_err(io_error("unlock", &path))?;
            }
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(e)) => return Err(io_error("lock", &path)(e)),
        }
        file.lock_shared().map_err(io_error("lock", &path))?;
        Ok(Held { _file: file })
    }

    /// Removes every staging directory (the caller holds the install lock
    /// exclusively: none is in use).
    pub(super) fn clean_staging(&self) -> Result<(), MarketplaceError> {
        let entries = std::fs::read_dir(&self.cache_dir)
            .map_err(io_error("read the cache directory", &self.cache_dir))?;
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(STAGING_PREFIX)
            {
                let path = entry.path();
                let removed = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                if let Err(e) = removed {
                    tracing::warn!(path = %path.display(), "cannot remove a stale download: {e}");
                } else {
                    tracing::info!(path = %path.display(), "removed a stale download");
                }
            }
        }
        Ok(())
    }

    /// Takes the lock file `name` in the cache directory.
    pub(super) fn hold(&self, name: &str, exclusive: bool) -> Result<Held, MarketplaceError> {
        create_dir(&self.cache_dir)?;
        let path = self.cache_dir.join(name);
        let file = open_lock_file(&path)?;
        if exclusive {
            file.lock().map_err(io_error("lock", &path))?;
        } else {
            file.lock_shared().map_err(io_error("lock", &path))?;
        }
        Ok(Held { _file: file })
    }
}
