//! The registry tree on disk (feature `server`): [`Tree`] opens it, signs
//! its index and publishes validated uploads into it (staging directory
//! renamed into place, the index rename as commit point, a lock file
//! serialising writers, stale staging directories removed);
//! [`write_atomically`] replaces one file.

use backworks_artifact::write::PathError;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::signature::{PublicKey, SecretKey};
use crate::*;

/// The lock file that serialises writers of one tree (never served).
pub(crate) const LOCK_PATH: &str = ".lock";
/// Prefix of the directories a release is written into before it is
/// renamed into place.
pub(crate) const STAGING_PREFIX: &str = ".staging-";

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RegistryError {
    let path = path.to_owned();
    move |source| RegistryError::Io(PathError::new(action, path, source))
}

/// A registry tree on disk, and the key that signs its index.
#[derive(Debug)]
pub struct Tree {
    root: PathBuf,
    key: SecretKey,
    public: PublicKey,
    lifetime: u64,
}

impl Tree {
    /// The tree at `root` (created if missing), signed with `key` (a
    /// decrypted secret key), with indexes valid for `lifetime` seconds.
    pub fn open(root: &Path, key: SecretKey, lifetime: u64) -> Result<Self, RegistryError> {
        fs::create_dir_all(root).map_err(io_error("create the registry directory", root))?;
        let public =
            PublicKey::from_secret_key(&key).map_err(|e| RegistryError::Sign(e.to_string()))?;
        Ok(Self {
            root: root.to_owned(),
            key,
            public,
            lifetime,
        })
    }

    /// The registry root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The registry's public key (clients pin it).
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The current index, verified with the registry key (expiry not
    /// checked: the owner may re-sign an expired index), or an empty one
    /// when the tree has none yet.
    pub fn index(&self) -> Result<Index, RegistryError> {
        let path = self.root.join(INDEX_PATH);
        match fs::read(&path) {
            Ok(bytes) => verify_index(
                &bytes,
                &self.public,
                Freshness {
                    last_serial: None,
                    now: 0,
                },
                &path.display().to_string(),
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Index::empty()),
            Err(e) => Err(io_error("read", &path)(e)),
        }
    }

    /// Writes the index signed with a serial one above the current one and
    /// a fresh expiry; the caller holds the lock.
    fn commit(&self, mut index: Index) -> Result<Index, RegistryError> {
        // What this writer writes is its own format (an index of another
        // one was refused by `index`).
        index.format = FORMAT;
        index.serial += 1;
        index.issued = now();
        index.expires = index.issued.saturating_add(self.lifetime);
        let bytes = sign_index(&index, &self.key)?;
        write_atomically(&self.root.join(INDEX_PATH), &bytes)?;
        Ok(index)
    }

    /// Removes the staging directories in the root. Only a writer holding
    /// the lock has one, so under the lock every one found was left by a
    /// writer killed before its commit (never referred to by the index).
    /// Best effort: one that cannot be removed is tried again next time.
    fn remove_stale_staging(&self) {
        let Ok(entries) = fs::read_dir(&self.root) else {
            return;
        };
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(STAGING_PREFIX)
                && entry.file_type().is_ok_and(|t| t.is_dir())
            {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }

    /// Takes the tree's writer lock (released when the guard drops).
    fn lock(&self) -> Result<fs::File, RegistryError> {
        let path = self.root.join(LOCK_PATH);
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_error("open the lock file", &path))?;
        file.lock().map_err(io_error("lock", &path))?;
        Ok(file)
    }

    /// Re-signs the current index with serial + 1 and a fresh expiry (run
    /// before the index expires). Returns the new index.
    pub fn resign(&self) -> Result<Index, RegistryError> {
        let _lock = self.lock()?;
        let index = self.index()?;
        self.commit(index)
    }

    /// Publishes a validated upload: refused when the version exists, or
    /// one that differs from it only in letter case (one directory on a
    /// case-insensitive file system); otherwise the release directory is
    /// staged and renamed into place, and the new index (serial + 1)
    /// replaces the old one by a rename. Writers of one tree are serialised
    /// by a lock file. Staging directories left by a writer killed before
    /// its commit are removed first, and so is a version directory the
    /// index does not list; one it lists is never removed.
    pub fn publish(&self, upload: ValidatedUpload) -> Result<Release, RegistryError> {
        let _lock = self.lock()?;
        self.remove_stale_staging();
        let mut index = self.index()?;
        let release = upload.release;
        refuse_listed(&index, &release.name, &release.version)?;
        // Checked again here: every path below is one of these, joined one
        // plain component at a time.
        for (target, artifact) in &upload.files {
            check_coordinates(&release.name, &release.version, target)?;
            check_file_name(&artifact.file_name)?;
        }
        let staging = tempfile::Builder::new()
            .prefix(STAGING_PREFIX)
            .tempdir_in(&self.root)
            .map_err(io_error("create a staging directory in", &self.root))?;
        let prefix = version_dir(&release.name, &release.version);
        for (target, artifact) in &upload.files {
            let target_dir = join_component(staging.path(), "target", target)?;
            fs::create_dir(&target_dir).map_err(io_error("create", &target_dir))?;
            write_synced(
                &join_component(&target_dir, "file name", &artifact.file_name)?,
                &artifact.bytes,
            )?;
            write_synced(
                &join_component(
                    &target_dir,
                    "file name",
                    &format!("{}{}", artifact.file_name, crate::api::SIGNATURE_SUFFIX),
                )?,
                artifact.signature.as_bytes(),
            )?;
        }
        let mut release_bytes =
            serde_json::to_vec_pretty(&release).map_err(|e| RegistryError::Sign(e.to_string()))?;
        release_bytes.push(b'\n');
        write_synced(&staging.path().join(RELEASE_FILE), &release_bytes)?;
        let plugin_dir = join_component(&self.root.join("plugins"), "plugin name", &release.name)?;
        let version_dir = join_component(&plugin_dir, "version", &release.version)?;
        fs::create_dir_all(&plugin_dir).map_err(io_error("create", &plugin_dir))?;
        // A directory the index does not list is what a publisher killed
        // before its commit left behind: nobody refers to it. Checked again
        // right here, ignoring case: on a case-insensitive file system the
        // directory found may be another listed version's.
        if version_dir.exists() {
            refuse_listed(&index, &release.name, &release.version)?;
            fs::remove_dir_all(&version_dir).map_err(io_error("remove the stale", &version_dir))?;
        }
        let staged = staging.keep();
        fs::rename(&staged, &version_dir)
            .map_err(io_error("move the release into", &version_dir))?;
        let entry = index
            .plugins
            .entry(release.name.clone())
            .or_insert_with(|| IndexEntry {
                description: String::new(),
                keywords: Vec::new(),
                versions: BTreeMap::new(),
            });
        entry.versions.insert(
            release.version.clone(),
            ReleaseRef {
                path: format!("{prefix}{RELEASE_FILE}"),
                sha256: sha256_hex(&release_bytes),
                size: release_bytes.len() as u64,
                abi: Some(release.abi),
                capabilities: release.capabilities.clone(),
                floors: ReleaseRef::floors_of(&release),
                deps: ReleaseRef::deps_of(&release),
            },
        );
        let newest = semver::Version::parse(&release.version).ok();
        let is_newest = entry
            .versions
            .keys()
            .filter_map(|v| semver::Version::parse(v).ok())
            .max()
            == newest;
        if is_newest {
            entry.description.clone_from(&release.description);
            entry.keywords.clone_from(&release.keywords);
        }
        self.commit(index)?;
        Ok(release)
    }
}

/// Refuses to publish `name` `version` when the index lists it
/// ([`RegistryError::AlreadyPublished`]) or lists a version that differs
/// from it only in ASCII case ([`RegistryError::VersionCaseCollision`]),
/// whose directory it would be on a case-insensitive file system.
fn refuse_listed(index: &Index, name: &str, version: &str) -> Result<(), RegistryError> {
    match index.listed_ignoring_case(name, version) {
        None => Ok(()),
        Some(listed) if listed == version => Err(RegistryError::AlreadyPublished {
            name: name.to_owned(),
            version: version.to_owned(),
        }),
        Some(listed) => Err(RegistryError::VersionCaseCollision {
            name: name.to_owned(),
            version: version.to_owned(),
            published: listed.to_owned(),
        }),
    }
}

/// Writes `bytes` to a new file at `path` (refused if it exists) and
/// flushes it to disk.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), RegistryError> {
    // A new file only: nothing that exists (or a link) is ever written
    // through.
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io_error("create", path))?;
    file.write_all(bytes).map_err(io_error("write", path))?;
    file.sync_all().map_err(io_error("sync", path))
}

/// Replaces `path` by a file holding `bytes` (`backworks_artifact::write`:
/// a temporary file in the same directory, synced, then renamed over
/// `path`).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), RegistryError> {
    backworks_artifact::write::write_atomically(
        path,
        bytes,
        backworks_artifact::write::WriteOptions::default(),
    )?;
    Ok(())
}
