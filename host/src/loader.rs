//! Verify, then load: the only module of the host with `unsafe` code.
//!
//! [`load_plugin`] reads a plugin file **once** and works on those bytes
//! only. On Linux the kernel copies the file into a memfd that is sealed
//! (no write, grow or shrink, ever) *before* any check, and every check
//! reads that sealed memfd; elsewhere the file is read into memory. The
//! plugin and its `.minisig` are read through [`open_bounded`]: regular
//! files only (a FIFO or a device is refused, never waited on), a plugin of
//! `max_plugin_size` bytes at most, a signature of [`MAX_SIGNATURE_SIZE`].
//!
//! 1. the metadata record is read from the bytes (no code runs) and checked
//!    against this host's ABI, struct sizes, target and panic strategy; and
//!    the newest glibc release the library needs (its platform floor,
//!    `backworks_artifact::floor`) against the glibc this process runs on
//!    ([`running_glibc`]), so a plugin built against a newer glibc is refused
//!    with both versions named instead of failing inside `dlopen`;
//! 2. the minisign signature next to the file (`<file>.minisig`) is verified
//!    over the bytes against the trusted keys, and its trusted comment must
//!    match the bytes' name, version, target, ABI and sha256;
//! 3. **those same bytes** are loaded: on Linux from the sealed memfd the
//!    checks read (no one can change it), elsewhere from a private copy in a
//!    directory only this process's user can write; on Windows that copy is
//!    also held open sharing reading only, and what the held handle reads is
//!    compared with the verified bytes before `LoadLibrary`, so no process
//!    can change it from then on. Replacing the file on disk after step 1
//!    changes nothing;
//! 4. the record is read again from memory and must equal the one checked;
//!    only then are `plugin_info` and `plugin_vtable` called
//!    ([`RawPlugin::new`]).
//!
//! After step 2 the library's dependency list ([`DependencyList`], the
//! `.dep-v0` section `cargo backworks build` embeds) is read from the same
//! verified bytes, for `GET /plugins`; a library without one has none, and
//! one that cannot be read loads all the same (the list is information, not
//! a check).
//!
//! Libraries are never unloaded: a Rust cdylib's thread-local destructors,
//! its runtime's threads and any pointer it handed out may still refer to
//! its code, so `dlclose` would be unsound. The `Library` is leaked on
//! purpose.
//!
//! [`host_services`] is what a plugin of ABI 1.1 receives at initialization
//! (`docs/abi.md`, "Host services"): its `log` callback turns a plugin's
//! events into host events of target [`PLUGIN_LOG_TARGET`] with the
//! plugin's name, so the host's filter (`RUST_LOG`) decides which appear,
//! and the host's formatter escapes them like any other field.

use std::ffi::{CStr, c_char, c_void};
use std::path::{Path, PathBuf};

use backworks_artifact::deps::{self, Dependency};
use backworks_artifact::floor::{self, GlibcNeed, Version};
use backworks_artifact::inspect::{InspectError, find_metadata};
use backworks_artifact::signature::{self, KeyId, PublicKey, Verified, VerifyError};
use backworks_plugin_sdk::abi::{
    self, AbiError, HostServices, LOG_DEBUG, LOG_ERROR, LOG_INFO, LOG_TRACE, LOG_WARN, PluginInfo,
    PluginVTable, RawPlugin,
};
use backworks_plugin_sdk::metadata::PluginMetadata;

/// What the loader requires of a plugin file.
#[derive(Debug, Clone, Copy)]
pub struct LoadPolicy<'a> {
    /// Keys whose signatures are trusted.
    pub trusted_keys: &'a [PublicKey],
    /// Refuse files without a valid signature (off only for local
    /// development).
    pub require_signatures: bool,
    /// The largest plugin file read (`max_plugin_size` in `backworks.yaml`,
    /// [`DEFAULT_MAX_PLUGIN_SIZE`] when not set).
    pub max_plugin_size: u64,
}

/// `max_plugin_size` when `backworks.yaml` does not set it: 256 MiB.
pub const DEFAULT_MAX_PLUGIN_SIZE: u64 = 256 * 1024 * 1024;

/// The largest `.minisig` read: a minisign signature with a backworks
/// trusted comment is under 1 KiB.
pub const MAX_SIGNATURE_SIZE: u64 = 8 * 1024;

/// A verified library's dependency list, read from its verified bytes
/// ([`VerifiedFile::dependencies`]), as `GET /plugins` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum DependencyList {
    /// The library carries no list (a C plugin, an older build), or it was
    /// not read (a `process`-tier worker's own load).
    #[default]
    Absent,
    /// The list, compact, the plugin's own package left out
    /// ([`backworks_artifact::deps::compact`]).
    Listed(Vec<Dependency>),
    /// The section is there but cannot be read: why (naming the file).
    Unreadable(String),
}

impl DependencyList {
    /// The list of the verified library `path` whose bytes are `bytes`: a
    /// section lookup and the inflation of a few KiB.
    pub fn of_bytes(path: &Path, bytes: &[u8]) -> Self {
        match deps::from_bytes(path, bytes) {
            Ok(info) => Self::Listed(deps::compact(&info)),
            Err(deps::DepsError::Missing { .. }) => Self::Absent,
            Err(error) => Self::Unreadable(error.to_string()),
        }
    }

    /// The listed dependencies (none when absent or unreadable).
    pub fn listed(&self) -> Option<&[Dependency]> {
        match self {
            Self::Listed(list) => Some(list),
            _ => None,
        }
    }
}

/// A plugin whose signature and ABI were checked, loaded from the verified
/// bytes.
#[derive(Debug)]
pub struct LoadedPlugin {
    /// The checked plugin.
    pub raw: RawPlugin,
    /// The file it was read from.
    pub path: PathBuf,
    /// The key that signed it; `None` when signatures are not required and
    /// none was checked.
    pub key_id: Option<KeyId>,
    /// sha256 of the loaded bytes, lower-case hex.
    pub sha256: String,
    /// Its dependency list, read from the verified bytes
    /// ([`DependencyList::Absent`] in a `process`-tier worker, which does
    /// not read it).
    pub dependencies: std::sync::Arc<DependencyList>,
}

impl LoadedPlugin {
    /// The metadata record the plugin was checked against.
    pub fn metadata(&self) -> &PluginMetadata {
        self.raw.metadata()
    }
}

/// Which limit a file read through [`open_bounded`] is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeLimit {
    /// A plugin library: `max_plugin_size` (bytes).
    Plugin(u64),
    /// A `.minisig`: [`MAX_SIGNATURE_SIZE`].
    Signature,
}

impl SizeLimit {
    /// The limit in bytes.
    pub fn bytes(self) -> u64 {
        match self {
            Self::Plugin(bytes) => bytes,
            Self::Signature => MAX_SIGNATURE_SIZE,
        }
    }
}

impl std::fmt::Display for SizeLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Plugin(bytes) => write!(
                f,
                "the limit for a plugin file is {bytes} bytes (`max_plugin_size` in backworks.yaml, default 256MiB); raise `max_plugin_size` if the plugin is meant to be that large"
            ),
            Self::Signature => write!(
                f,
                "a signature file is at most {MAX_SIGNATURE_SIZE} bytes (minisign signatures are under 1 KiB), so this is not one: sign the plugin again"
            ),
        }
    }
}

/// Why a plugin file or its `.minisig` was not read
/// ([`open_bounded`], [`read_bounded`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// Opening or reading failed.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The path (after symbolic links) is not a regular file.
    #[error(
        "refusing {}: not a regular file (it is {kind}); a plugin and its .minisig must be regular files",
        path.display()
    )]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is: `a FIFO`, `a character device`, ...
        kind: &'static str,
    },
    /// The file is larger than its limit (or grew past it while read).
    #[error("refusing {}: it is larger than {} bytes: {limit}", path.display(), limit.bytes())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit it exceeds.
        limit: SizeLimit,
    },
}

impl FileError {
    /// True when the file does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// Opens `path` to read at most `limit` bytes of it: the one way the host
/// reads a plugin library or a `.minisig` from disk.
///
/// Symbolic links are followed; what they lead to must be a **regular
/// file**: the file is opened without blocking (`O_NONBLOCK`, so a FIFO
/// with no writer does not hang the open) and refused unless `fstat` of the
/// opened descriptor says regular file (a FIFO, a device such as
/// `/dev/zero`, a socket or a directory is refused), so what is checked is
/// what is read. A file whose size is over the limit is refused before a
/// byte is read; the reader returned stops one byte past the limit, so a
/// file that grows while it is read is caught by [`check_read_size`].
pub fn open_bounded(
    path: &Path,
    limit: SizeLimit,
) -> Result<std::io::Take<std::fs::File>, FileError> {
    use backworks_artifact::file::{self, FileError as Refused};
    use std::io::Read;

    let opened = file::open(path, limit.bytes()).map_err(|refused| match refused {
        Refused::Open { source, .. } | Refused::Read { source, .. } => FileError::Io {
            path: path.to_owned(),
            source,
        },
        Refused::NotRegular { kind, .. } => FileError::NotRegular {
            path: path.to_owned(),
            kind,
        },
        Refused::TooLarge { .. } => FileError::TooLarge {
            path: path.to_owned(),
            limit,
        },
        other => FileError::Io {
            path: path.to_owned(),
            source: std::io::Error::other(other),
        },
    })?;
    Ok(opened.file.take(limit.bytes().saturating_add(1)))
}

/// Refuses `read` bytes of `path` when they are more than `limit` allows
/// (after reading through [`open_bounded`]'s reader: one byte more than the
/// limit means the file was, or grew, too large).
pub fn check_read_size(path: &Path, read: u64, limit: SizeLimit) -> Result<(), FileError> {
    if read > limit.bytes() {
        return Err(FileError::TooLarge {
            path: path.to_owned(),
            limit,
        });
    }
    Ok(())
}

/// The whole file at `path`, held to `limit` (see [`open_bounded`]).
pub fn read_bounded(path: &Path, limit: SizeLimit) -> Result<Vec<u8>, FileError> {
    use std::io::Read;

    let mut reader = open_bounded(path, limit)?;
    let mut bytes = Vec::new();
    reader
        .read_to_end(&mut bytes)
        .map_err(|source| FileError::Io {
            path: path.to_owned(),
            source,
        })?;
    check_read_size(path, bytes.len() as u64, limit)?;
    Ok(bytes)
}

/// The signature file `<path>.minisig` as text, held to
/// [`MAX_SIGNATURE_SIZE`] (see [`open_bounded`]).
pub fn read_signature(path: &Path) -> Result<String, FileError> {
    let signature = signature_path(path);
    let bytes = read_bounded(&signature, SizeLimit::Signature)?;
    String::from_utf8(bytes).map_err(|_| FileError::Io {
        path: signature,
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not UTF-8 text, so not a minisign signature",
        ),
    })
}

/// Why a plugin was not loaded. Nothing of the plugin ran in any case.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The plugin file or its `.minisig` is not a regular file, is too
    /// large, or could not be read ([`open_bounded`]).
    #[error(transparent)]
    File(#[from] FileError),
    /// The file could not be read.
    #[error("cannot read plugin {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file holds no valid metadata record.
    #[error("{} is not a backworks plugin: {source}", path.display())]
    NotAPlugin {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: InspectError,
    },
    /// The plugin's ABI, target or panic strategy does not fit this host.
    #[error("refusing {}: {source}", path.display())]
    Incompatible {
        /// The file.
        path: PathBuf,
        /// What does not fit.
        #[source]
        source: AbiError,
    },
    /// No signature file next to the plugin.
    #[error(
        "refusing {}: no signature at {}; sign it with `cargo backworks sign --key <KEY> {}`, or set `require_signatures: false` for local development",
        path.display(), signature.display(), path.display()
    )]
    Unsigned {
        /// The file.
        path: PathBuf,
        /// Where the signature was expected.
        signature: PathBuf,
    },
    /// Signatures are required but no key is trusted.
    #[error(
        "refusing {}: signatures are required but `trusted_keys` is empty; add the publisher's .pub file to `trusted_keys`",
        path.display()
    )]
    NoTrustedKeys {
        /// The file.
        path: PathBuf,
    },
    /// The signature does not verify, or does not match the bytes.
    #[error("refusing {}: {source}", path.display())]
    Signature {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: VerifyError,
    },
    /// The bytes could not be placed where the dynamic loader can read them.
    #[error("cannot stage {} for loading: {detail}", path.display())]
    Stage {
        /// The file.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
    /// The dynamic loader refused the library.
    #[error("cannot load {}: {source}", path.display())]
    Dlopen {
        /// The file.
        path: PathBuf,
        /// The loader's error.
        #[source]
        source: libloading::Error,
    },
    /// A required symbol is missing from the loaded library.
    #[error("{}: symbol `{symbol}` is missing: {source}", path.display())]
    Symbol {
        /// The file.
        path: PathBuf,
        /// The symbol.
        symbol: &'static str,
        /// The loader's error.
        #[source]
        source: libloading::Error,
    },
    /// The file's record names another plugin than the `backworks.yaml`
    /// entry it was given for ([`VerifiedFile::check_name`]).
    #[error(
        "refusing {} as plugin `{expected}`: its metadata record names plugin `{found}`, not `{expected}`; each key of `plugins` in backworks.yaml is the plugin's name: point `{expected}` at a build of `{expected}`, or name the entry `{found}`",
        path.display()
    )]
    NameMismatch {
        /// The file.
        path: PathBuf,
        /// The plugin's name in `backworks.yaml` (the key of its entry).
        expected: String,
        /// The name in the file's metadata record.
        found: String,
    },
    /// The library needs a newer glibc than the one this process runs on
    /// (its version needs, read before `dlopen`).
    #[error(transparent)]
    GlibcTooOld(Box<GlibcTooOld>),
    /// The record in memory differs from the one checked in the file.
    #[error(
        "refusing {}: the metadata record in memory differs from the one in the verified bytes",
        path.display()
    )]
    RecordChanged {
        /// The file.
        path: PathBuf,
    },
}

/// A plugin that needs a newer glibc than this process runs on
/// ([`LoadError::GlibcTooOld`]).
#[derive(Debug, thiserror::Error)]
#[error(
    "refusing {}: plugin `{plugin}` needs {need} but this system has glibc {running}; build it against an older glibc (e.g. with zig: `cargo zigbuild --target {target}.2.17`) or run it on a system with glibc {} or newer",
    path.display(), need.version
)]
pub struct GlibcTooOld {
    /// The file.
    pub path: PathBuf,
    /// The plugin's name in its record.
    pub plugin: String,
    /// Its target triple in its record.
    pub target: String,
    /// The newest glibc release it needs, and the need that says so.
    pub need: GlibcNeed,
    /// The glibc this process runs on.
    pub running: Version,
}

/// The signature file of `path`: `<path>.minisig`.
pub fn signature_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".minisig");
    PathBuf::from(name)
}

/// Reads, verifies and loads the plugin at `path` (see the module docs for
/// the order of the checks).
pub fn load_plugin(path: &Path, policy: LoadPolicy<'_>) -> Result<LoadedPlugin, LoadError> {
    PendingLoad::new(verify_file(path, policy)?).load()
}

/// A plugin file read once and verified (steps 1 and 2), not loaded yet.
/// The bytes are private to this value: what [`PendingLoad::load`] loads is
/// exactly what was verified.
pub struct VerifiedFile {
    path: PathBuf,
    /// The verified bytes, already staged (sealed memfd or private copy).
    staged: PathBuf,
    keep_alive: KeepAlive,
    metadata: PluginMetadata,
    key_id: Option<KeyId>,
    sha256: String,
    dependencies: std::sync::Arc<DependencyList>,
}

impl std::fmt::Debug for VerifiedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedFile")
            .field("path", &self.path)
            .field("staged", &self.staged)
            .field("name", &self.metadata.name)
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

impl VerifiedFile {
    /// The file's metadata record.
    pub fn metadata(&self) -> &PluginMetadata {
        &self.metadata
    }

    /// The file it was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// sha256 of the verified bytes, lower-case hex.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The library's dependency list, read from the verified bytes.
    pub fn dependencies(&self) -> &std::sync::Arc<DependencyList> {
        &self.dependencies
    }

    /// The trusted key that signed the bytes; `None` when signatures are
    /// not required and none was checked.
    pub fn key_id(&self) -> Option<KeyId> {
        self.key_id
    }

    /// Where another process of this user can read the staged bytes while
    /// this value lives (the probe of [`crate::lifecycle::probe_within`]):
    /// on Linux the sealed memfd through `/proc/<this pid>/fd/<n>`, elsewhere
    /// the private copy.
    pub fn probe_path(&self) -> PathBuf {
        match self.staged.strip_prefix("/proc/self") {
            Ok(rest) if cfg!(target_os = "linux") => Path::new("/proc")
                .join(std::process::id().to_string())
                .join(rest),
            _ => self.staged.clone(),
        }
    }

    /// The sealed memfd holding the verified bytes, which a worker process
    /// of the `process` tier is given (`crate::process`): the very bytes
    /// verified, never a path to read again. `None` where the bytes are
    /// staged in a private file (not Linux).
    #[cfg(target_os = "linux")]
    pub fn staged_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        self.keep_alive
            .downcast_ref::<memfd::Memfd>()
            .map(|memfd| memfd.as_file().as_fd())
    }

    /// The identity rule, for start-up and every swap alike: a library may
    /// serve the `backworks.yaml` entry `name` only when its metadata record
    /// names that plugin. Otherwise a validly signed library of one plugin
    /// would run as another, with the other's `config` (its secrets).
    /// Checked before the bytes are loaded.
    pub fn check_name(&self, name: &str) -> Result<(), LoadError> {
        if self.metadata.name == name {
            return Ok(());
        }
        Err(LoadError::NameMismatch {
            path: self.path.clone(),
            expected: name.to_owned(),
            found: self.metadata.name.clone(),
        })
    }
}

/// The probe's side of [`crate::lifecycle::probe_within`], in a process of
/// its own (`backworks probe-load`): copies the bytes another process staged
/// at `staged` (see [`VerifiedFile::probe_path`]; they were verified there)
/// into this process's own sealed memfd, finds their record, and loads them
/// as [`PendingLoad::load`] would (`dlopen`, which runs their initialisers,
/// the record re-checked in memory, `plugin_info` and `plugin_vtable`).
/// Errors name `label`, the plugin file the bytes came from.
pub fn probe(staged: &Path, label: &Path, max_plugin_size: u64) -> Result<(), LoadError> {
    let copy = Staged::of_file(staged, SizeLimit::Plugin(max_plugin_size))?;
    let metadata = checked_record(copy.bytes(), label)?;
    let (loadable, keep_alive) =
        copy.into_loadable(&metadata.name)
            .map_err(|detail| LoadError::Stage {
                path: label.to_owned(),
                detail,
            })?;
    let library = open_staged(label, &loadable, keep_alive)?;
    checked_plugin(label, library, &metadata).map(drop)
}

/// The worker's side of the `process` tier (`crate::process::worker`), first
/// half: takes the bytes a `backworks serve` verified and passed as `memfd`
/// (its sealed memfd, inherited): the seals checked (no write, grow or
/// shrink), the record found and checked, the bytes hashed (the handshake
/// reports that sha256, which the host compares with the one it verified).
/// Runs no plugin code: the worker reads the record's declared capabilities
/// from the result and confines itself before [`Inherited::load`]. Errors
/// name `label`, the plugin file the bytes came from.
#[cfg(target_os = "linux")]
pub fn stage_inherited(
    memfd: std::os::fd::OwnedFd,
    label: &Path,
    max_plugin_size: u64,
) -> Result<Inherited, LoadError> {
    use memfd::FileSeal;

    let stage_error = |detail: String| LoadError::Stage {
        path: label.to_owned(),
        detail,
    };
    let memfd = memfd::Memfd::try_from_fd(memfd)
        .map_err(|_| stage_error(String::from("the inherited descriptor is not a memfd")))?;
    let seals = memfd
        .seals()
        .map_err(|e| stage_error(format!("cannot read the memfd's seals: {e}")))?;
    for seal in [
        FileSeal::SealWrite,
        FileSeal::SealGrow,
        FileSeal::SealShrink,
    ] {
        if !seals.contains(&seal) {
            return Err(stage_error(format!(
                "the inherited memfd is not sealed ({seal:?} missing)"
            )));
        }
    }
    let length = memfd
        .as_file()
        .metadata()
        .map_err(|source| LoadError::Read {
            path: label.to_owned(),
            source,
        })?
        .len();
    check_read_size(label, length, SizeLimit::Plugin(max_plugin_size))?;
    // Sealed: checked above.
    let map = map_sealed(&memfd, length).map_err(stage_error)?;
    let staged = Staged { memfd, map };
    let bytes = staged.bytes();
    let metadata = checked_record(bytes, label)?;
    let sha256 = backworks_registry::sha256_hex(bytes);
    Ok(Inherited {
        staged,
        metadata,
        sha256,
        label: label.to_owned(),
    })
}

/// Verified bytes a worker inherited, checked but not loaded yet
/// ([`stage_inherited`]).
#[cfg(target_os = "linux")]
pub struct Inherited {
    staged: Staged,
    metadata: PluginMetadata,
    sha256: String,
    label: PathBuf,
}

#[cfg(target_os = "linux")]
impl std::fmt::Debug for Inherited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inherited")
            .field("label", &self.label)
            .field("name", &self.metadata.name)
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

#[cfg(target_os = "linux")]
impl Inherited {
    /// The record, checked: what the plugin declares it needs included.
    pub fn metadata(&self) -> &PluginMetadata {
        &self.metadata
    }

    /// The second half, as [`PendingLoad::load`] does it: `dlopen` of the
    /// memfd itself, the record re-checked in memory.
    pub fn load(self) -> Result<LoadedPlugin, LoadError> {
        let label = self.label;
        let (loadable, keep_alive) =
            self.staged
                .into_loadable(&self.metadata.name)
                .map_err(|detail| LoadError::Stage {
                    path: label.clone(),
                    detail,
                })?;
        let library = open_staged(&label, &loadable, keep_alive)?;
        let raw = checked_plugin(&label, library, &self.metadata)?;
        Ok(LoadedPlugin {
            raw,
            path: label,
            key_id: None,
            sha256: self.sha256,
            dependencies: Default::default(),
        })
    }
}

/// Steps 1 and 2 for the file at `path`: read it once, check its record and
/// signature, and stage those bytes where they cannot change. Runs no plugin
/// code, so many files may be verified at once on several threads.
///
/// On Linux the file is copied by the kernel straight into a memfd, which is
/// sealed before anything is checked; the checks read the sealed memfd's
/// mapping, and the dynamic loader opens that same memfd. Elsewhere the
/// bytes are read into memory, checked, and written to a private copy.
pub fn verify_file(path: &Path, policy: LoadPolicy<'_>) -> Result<VerifiedFile, LoadError> {
    let staged = Staged::of_file(path, SizeLimit::Plugin(policy.max_plugin_size))?;
    let bytes = staged.bytes();
    let (metadata, verified) = verify_bytes(path, bytes, policy)?;
    let sha256 = match &verified {
        Some(verified) => verified.claims.sha256_hex(),
        None => signature::Claims::of(bytes)
            .map(|claims| claims.sha256_hex())
            .map_err(|_| LoadError::RecordChanged {
                path: path.to_owned(),
            })?,
    };
    // Verified: read from the bytes that were checked and will be loaded.
    let dependencies = std::sync::Arc::new(DependencyList::of_bytes(path, bytes));
    let (staged, keep_alive) =
        staged
            .into_loadable(&metadata.name)
            .map_err(|detail| LoadError::Stage {
                path: path.to_owned(),
                detail,
            })?;
    Ok(VerifiedFile {
        path: path.to_owned(),
        staged,
        keep_alive,
        key_id: verified.map(|v| v.key_id),
        metadata,
        sha256,
        dependencies,
    })
}

/// A verified file on its way into the process: counted by
/// [`load_in_flight`] from [`PendingLoad::new`] (called on the thread that
/// decides to load, before it hands the file to a loading thread) until
/// [`PendingLoad::load`] returns or the value is dropped. A loading thread
/// that has not been scheduled yet therefore counts as in flight too: once
/// it runs, its `dlopen` may take the dynamic loader's lock for good.
pub struct PendingLoad {
    file: VerifiedFile,
    _loading: Loading,
}

impl std::fmt::Debug for PendingLoad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingLoad")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl PendingLoad {
    /// Announces the loading of `file` ([`load_in_flight`] reports it).
    pub fn new(file: VerifiedFile) -> Self {
        // Started while no loading of ours can hold the loader's lock.
        let _ = exit_watchdog();
        let loading = Loading::start(&file.path);
        Self {
            file,
            _loading: loading,
        }
    }

    /// Steps 3 and 4: loads the verified bytes and checks the loaded plugin.
    pub fn load(self) -> Result<LoadedPlugin, LoadError> {
        let Self { file, _loading } = self;
        let library = open_staged(&file.path, &file.staged, file.keep_alive);
        // The loader's lock is released: no longer in flight.
        drop(_loading);
        let raw = checked_plugin(&file.path, library?, &file.metadata)?;
        Ok(LoadedPlugin {
            raw,
            path: file.path,
            key_id: file.key_id,
            sha256: file.sha256,
            dependencies: file.dependencies,
        })
    }
}

/// Step 1: the record found in `bytes` and checked against this host's
/// ABI, and the library's glibc floor against [`running_glibc`]; errors
/// name `path`.
fn checked_record(bytes: &[u8], path: &Path) -> Result<PluginMetadata, LoadError> {
    let metadata = find_metadata(bytes).map_err(|source| LoadError::NotAPlugin {
        path: path.to_owned(),
        source,
    })?;
    abi::check_compatible(&metadata).map_err(|source| LoadError::Incompatible {
        path: path.to_owned(),
        source,
    })?;
    check_glibc_floor(bytes, path, &metadata, running_glibc())?;
    Ok(metadata)
}

/// Refuses `bytes` when they need a newer glibc release than `running`
/// (`None`: not a glibc system, nothing to compare). A floor that cannot be
/// read is not refused here: `dlopen` still checks every version need.
fn check_glibc_floor(
    bytes: &[u8],
    path: &Path,
    metadata: &PluginMetadata,
    running: Option<Version>,
) -> Result<(), LoadError> {
    let Some(running) = running else {
        return Ok(());
    };
    match floor::of_bytes(bytes).glibc {
        Some(need) if need.version > running => {
            Err(LoadError::GlibcTooOld(Box::new(GlibcTooOld {
                path: path.to_owned(),
                plugin: metadata.name.clone(),
                target: metadata.target.clone(),
                need,
                running,
            })))
        }
        _ => Ok(()),
    }
}

/// The glibc release this process runs on (`gnu_get_libc_version`), or
/// `None` off glibc (musl, macOS, Windows), where no plugin's glibc floor
/// is compared.
pub fn running_glibc() -> Option<Version> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `gnu_get_libc_version` takes no argument and returns a
        // pointer to a static NUL-terminated string of glibc's (`"2.36"`),
        // valid and unchanged for the life of the process.
        let version = unsafe { CStr::from_ptr(libc::gnu_get_libc_version()) };
        Version::parse(version.to_str().ok()?)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

/// Steps 1 and 2: the record and the signature, from the bytes alone.
/// `None` when signatures are not required (nothing was verified).
pub fn verify_bytes(
    path: &Path,
    bytes: &[u8],
    policy: LoadPolicy<'_>,
) -> Result<(PluginMetadata, Option<Verified>), LoadError> {
    let metadata = checked_record(bytes, path)?;
    if !policy.require_signatures {
        return Ok((metadata, None));
    }
    if policy.trusted_keys.is_empty() {
        return Err(LoadError::NoTrustedKeys {
            path: path.to_owned(),
        });
    }
    let text = match read_signature(path) {
        Ok(text) => text,
        Err(e) if e.is_not_found() => {
            return Err(LoadError::Unsigned {
                path: path.to_owned(),
                signature: signature_path(path),
            });
        }
        Err(e) => return Err(e.into()),
    };
    let verified = signature::verify(bytes, &text, policy.trusted_keys).map_err(|source| {
        LoadError::Signature {
            path: path.to_owned(),
            source,
        }
    })?;
    Ok((metadata, Some(verified)))
}

/// A library whose loading (`dlopen`, which runs its initialisers) has not
/// returned yet ([`load_in_flight`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadInFlight {
    /// The plugin file whose bytes are being loaded.
    pub path: PathBuf,
    /// How long ago the loading started.
    pub elapsed: std::time::Duration,
}

/// The loadings that have not returned, by start order: (id, file, start).
static IN_FLIGHT: std::sync::Mutex<Vec<(u64, PathBuf, std::time::Instant)>> =
    std::sync::Mutex::new(Vec::new());

fn in_flight() -> std::sync::MutexGuard<'static, Vec<(u64, PathBuf, std::time::Instant)>> {
    IN_FLIGHT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The oldest loading that has not returned, if any.
///
/// A library's initialisers (C constructors, `.init_array`) run inside
/// `dlopen`, and glibc's dynamic loader holds its **process-wide** lock
/// while they run: while one hangs, every other `dlopen` of the process
/// waits (whatever library, whichever thread), and so does the process's
/// `exit`, whose `_dl_fini` takes the same lock. Nothing in the process can
/// interrupt it. Callers use this to refuse further loads at once instead
/// of queueing behind the stuck one, and to leave the process without
/// `exit` ([`exit_now`]).
pub fn load_in_flight() -> Option<LoadInFlight> {
    in_flight().first().map(|(_, path, started)| LoadInFlight {
        path: path.clone(),
        elapsed: started.elapsed(),
    })
}

/// Ends the process with `code` at once: flushes standard output and error,
/// then `_exit`, which skips the `atexit` handlers and glibc's `_dl_fini`.
/// For when [`load_in_flight`] says a library's loading never returned:
/// `exit` would wait for the dynamic loader's lock forever.
pub fn exit_now(code: u8) -> ! {
    use std::io::Write;

    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // Nothing else of this process needs to run at exit (the host keeps no
    // state that needs flushing there).
    exit_without_flushing(code)
}

/// How long [`exit_unless_ended`] lets the process end by itself.
pub const EXIT_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Makes sure the process ends with `code` within `grace` from now, even if
/// the thread that is on its way out blocks first: after a loading that
/// never returned, any thread that takes glibc's loader lock waits forever
/// (`exit`, `dlsym`, the first thread-local with a destructor on a thread),
/// and which code on the way out touches it is not under this crate's
/// control (tokio, tracing, std). If the process still runs at the
/// deadline, the exit watchdog writes `message` to standard error as it is
/// and calls `_exit(code)`.
///
/// The watchdog is a thread started by the first [`PendingLoad::new`] of
/// the process, before that loading's thread exists, and it has set up all
/// it needs by then: once armed it only waits on a futex, writes and exits,
/// so it never needs the loader's lock. Without a watchdog (its thread
/// could not be started) this does nothing.
pub fn exit_unless_ended(code: u8, message: String, grace: std::time::Duration) {
    if let Some(watchdog) = exit_watchdog() {
        watchdog.arm(code, message.into_bytes(), grace);
    }
}

/// The exit watchdog of [`exit_unless_ended`]: armed at most once.
struct ExitWatchdog {
    /// `(code, message, deadline)` once armed.
    armed: std::sync::Mutex<Option<(u8, Vec<u8>, std::time::Instant)>>,
    wake: std::sync::Condvar,
}

impl ExitWatchdog {
    fn arm(&self, code: u8, message: Vec<u8>, grace: std::time::Duration) {
        let mut armed = self
            .armed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if armed.is_none() {
            *armed = Some((code, message, std::time::Instant::now() + grace));
            self.wake.notify_one();
        }
    }

    /// The watchdog thread: waits until armed and the deadline has passed,
    /// then ends the process. Only futex waits, `write` and `_exit`.
    fn watch(&self) -> ! {
        let mut armed = self
            .armed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            let wait = match &*armed {
                None => None,
                Some((code, message, deadline)) => {
                    let now = std::time::Instant::now();
                    if now >= *deadline {
                        write_all_to_stderr(message);
                        exit_without_flushing(*code);
                    }
                    Some(*deadline - now)
                }
            };
            armed = match wait {
                None => self
                    .wake
                    .wait(armed)
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
                Some(wait) => {
                    self.wake
                        .wait_timeout(armed, wait)
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .0
                }
            };
        }
    }
}

/// The process's exit watchdog, started on first use; `None` if its
/// thread could not be started. Returns once the thread runs its loop.
fn exit_watchdog() -> Option<&'static ExitWatchdog> {
    static WATCHDOG: std::sync::OnceLock<Option<&'static ExitWatchdog>> =
        std::sync::OnceLock::new();
    *WATCHDOG.get_or_init(|| {
        let watchdog: &'static ExitWatchdog = Box::leak(Box::new(ExitWatchdog {
            armed: std::sync::Mutex::new(None),
            wake: std::sync::Condvar::new(),
        }));
        // The thread is running (its thread-locals set up) once it holds
        // the lock: `ready` is set under the same lock before it waits.
        let ready = std::sync::Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
        let theirs = std::sync::Arc::clone(&ready);
        std::thread::Builder::new()
            .name(String::from("backworks-exit-watchdog"))
            .spawn(move || {
                {
                    let (started, signal) = &*theirs;
                    *started
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
                    signal.notify_one();
                }
                drop(theirs);
                watchdog.watch()
            })
            .ok()?;
        let (started, signal) = &*ready;
        let _started = signal
            .wait_while(
                started
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
                |started| !*started,
            )
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Some(watchdog)
    })
}

/// Writes `bytes` to file descriptor 2 with `write`, without std's stderr
/// lock (which a thread of the watchdog's kind must not need).
fn write_all_to_stderr(bytes: &[u8]) {
    #[cfg(unix)]
    let mut bytes = bytes;
    #[cfg(unix)]
    while !bytes.is_empty() {
        // SAFETY: `bytes` is a valid, initialised buffer of `bytes.len()`
        // bytes for the duration of the call; fd 2 is only written.
        let written = unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
        match usize::try_from(written) {
            Ok(0) => return,
            Ok(n) => bytes = &bytes[n..],
            Err(_) if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {
            }
            Err(_) => return,
        }
    }
    #[cfg(not(unix))]
    {
        use std::io::Write;
        let _ = std::io::stderr().write_all(bytes);
    }
}

/// `_exit(code)`: no `atexit` handlers, no `_dl_fini`, no flushing.
fn exit_without_flushing(code: u8) -> ! {
    #[cfg(unix)]
    // SAFETY: `_exit` ends the process without running any code of it;
    // callers have written what must be written.
    unsafe {
        libc::_exit(i32::from(code))
    }
    #[cfg(not(unix))]
    std::process::exit(i32::from(code))
}

/// Registers one loading in [`IN_FLIGHT`] until dropped.
struct Loading(u64);

impl Loading {
    fn start(path: &Path) -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        in_flight().push((id, path.to_owned(), std::time::Instant::now()));
        Self(id)
    }
}

impl Drop for Loading {
    fn drop(&mut self) {
        in_flight().retain(|(id, _, _)| *id != self.0);
    }
}

/// Step 3: opens the staged copy of the verified bytes.
fn open_staged(
    path: &Path,
    staged: &Path,
    keep_alive: KeepAlive,
) -> Result<&'static libloading::Library, LoadError> {
    // SAFETY: loading runs the library's initialisers. The staged bytes are
    // the ones whose record and signature were checked, in a place where they
    // cannot change (sealed memfd or private copy); this is the documented
    // point where plugin code first runs.
    let library = unsafe { libloading::Library::new(staged) }.map_err(|source| LoadError::Dlopen {
        path: path.to_owned(),
        source,
    });
    let library = library?;
    // Kept for the life of the process, like the library: the dynamic loader
    // knows the library by its staged path (`/proc/self/fd/N`); were the
    // descriptor closed, the next plugin's memfd could get the same N, and
    // `dlopen` would hand back this library instead of loading new bytes.
    std::mem::forget(keep_alive);
    // Never unloaded (see the module docs).
    Ok(Box::leak(Box::new(library)))
}

/// What keeps the staged path valid and unique (a memfd, or the private
/// directory); kept for the life of the process.
type KeepAlive = Box<dyn std::any::Any + Send + Sync>;

/// A plugin file's bytes, read once, in a place where they cannot change
/// between the checks and the load.
#[cfg(target_os = "linux")]
struct Staged {
    memfd: memfd::Memfd,
    /// The sealed memfd's bytes; `None` for an empty file (nothing to map).
    map: Option<memmap2::Mmap>,
}

#[cfg(target_os = "linux")]
impl Staged {
    /// Copies the file at `path` (a regular file of `limit` bytes at most,
    /// see [`open_bounded`]) into a new memfd (in the kernel:
    /// `copy_file_range` or `sendfile`, no copy through this process), seals
    /// it against writing, growing and shrinking, and maps it read-only.
    fn of_file(path: &Path, limit: SizeLimit) -> Result<Self, LoadError> {
        use memfd::{FileSeal, MemfdOptions};

        let read_error = |source| LoadError::Read {
            path: path.to_owned(),
            source,
        };
        let stage_error = |detail: String| LoadError::Stage {
            path: path.to_owned(),
            detail,
        };
        let mut file = open_bounded(path, limit)?;
        let name = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let memfd = MemfdOptions::default()
            .allow_sealing(true)
            .close_on_exec(true)
            .create(format!("backworks-plugin-{name}"))
            .map_err(|e| stage_error(format!("memfd_create failed: {e}")))?;
        let length = std::io::copy(&mut file, &mut memfd.as_file()).map_err(read_error)?;
        check_read_size(path, length, limit)?;
        memfd
            .add_seals(&[
                FileSeal::SealShrink,
                FileSeal::SealGrow,
                FileSeal::SealWrite,
                FileSeal::SealSeal,
            ])
            .map_err(|e| stage_error(format!("cannot seal the memfd: {e}")))?;
        let map = map_sealed(&memfd, length).map_err(stage_error)?;
        Ok(Self { memfd, map })
    }

    fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or_default()
    }

    /// The path the dynamic loader opens (the memfd itself, so it loads the
    /// very bytes checked), and the descriptor that keeps it valid.
    fn into_loadable(self, _name: &str) -> Result<(PathBuf, KeepAlive), String> {
        use std::os::fd::AsRawFd;

        drop(self.map);
        let path = PathBuf::from(format!(
            "/proc/self/fd/{}",
            self.memfd.as_file().as_raw_fd()
        ));
        Ok((path, Box::new(self.memfd)))
    }
}

/// A read-only map of `memfd`'s `length` bytes (`None` when empty: nothing
/// to map). The caller has sealed the memfd against writing, growing and
/// shrinking, or checked that it is.
#[cfg(target_os = "linux")]
fn map_sealed(memfd: &memfd::Memfd, length: u64) -> Result<Option<memmap2::Mmap>, String> {
    if length == 0 {
        return Ok(None);
    }
    // SAFETY: the memfd is sealed against writing, growing and shrinking
    // (the caller's contract; seals cannot be removed), so neither this
    // process nor anyone else holding the descriptor can change or truncate
    // the mapped bytes while the map lives, and reading them cannot fault.
    unsafe { memmap2::Mmap::map(memfd.as_file()) }
        .map(Some)
        .map_err(|e| format!("cannot map the memfd: {e}"))
}

/// A plugin file's bytes, read once into memory.
#[cfg(not(target_os = "linux"))]
struct Staged {
    bytes: Vec<u8>,
}

#[cfg(not(target_os = "linux"))]
impl Staged {
    fn of_file(path: &Path, limit: SizeLimit) -> Result<Self, LoadError> {
        Ok(Self {
            bytes: read_bounded(path, limit)?,
        })
    }

    fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Writes the checked bytes to a private copy the dynamic loader opens:
    /// a directory only this user can write, removed after `dlopen` (the
    /// mapping keeps the code; Windows keeps the file until exit).
    ///
    /// On Windows the copy is then opened again sharing reading only, and
    /// that handle is kept for the life of the process: from then on no
    /// process can write, replace, rename or delete the file (each of those
    /// opens is refused with a sharing violation), while `LoadLibrary`,
    /// which only reads and maps it, still can. What the handle reads must
    /// be the verified bytes, so whatever another process of this user did
    /// to the copy between its writing and that open is caught before the
    /// load.
    fn into_loadable(self, name: &str) -> Result<(PathBuf, KeepAlive), String> {
        let dir = tempfile::Builder::new()
            .prefix("backworks-plugin-")
            .tempdir()
            .map_err(|e| format!("cannot create a private directory: {e}"))?;
        let file = dir
            .path()
            .join(format!("{name}.{}", std::env::consts::DLL_EXTENSION));
        std::fs::write(&file, &self.bytes)
            .map_err(|e| format!("cannot write a private copy: {e}"))?;
        // The handle first: dropped (never, in practice) before the
        // directory is removed.
        #[cfg(windows)]
        let keep_alive: KeepAlive = Box::new((hold_private_copy(&file, &self.bytes)?, dir));
        #[cfg(not(windows))]
        let keep_alive: KeepAlive = Box::new(dir);
        Ok((file, keep_alive))
    }
}

/// Opens the private copy at `file` sharing reading only, and checks that
/// it holds `verified` ([`Staged::into_loadable`]); the handle keeps every
/// other writer, renamer and deleter out while it is open.
#[cfg(windows)]
fn hold_private_copy(file: &Path, verified: &[u8]) -> Result<std::fs::File, String> {
    use std::io::Read;
    use std::os::windows::fs::OpenOptionsExt;
    /// `FILE_SHARE_READ`: others may open the file to read only.
    const FILE_SHARE_READ: u32 = 0x1;
    let mut held = std::fs::OpenOptions::new()
        .read(true)
        .share_mode(FILE_SHARE_READ)
        .open(file)
        .map_err(|e| format!("cannot hold the private copy {}: {e}", file.display()))?;
    let mut copy = Vec::with_capacity(verified.len());
    held.read_to_end(&mut copy)
        .map_err(|e| format!("cannot read back the private copy {}: {e}", file.display()))?;
    if copy != verified {
        return Err(format!(
            "the private copy {} is not the verified bytes: another process changed it before it was held",
            file.display()
        ));
    }
    Ok(held)
}

/// Step 4: the record from memory, then the plugin's own functions.
fn checked_plugin(
    path: &Path,
    library: &'static libloading::Library,
    checked: &PluginMetadata,
) -> Result<RawPlugin, LoadError> {
    let symbol_error = |symbol: &'static str| {
        let path = path.to_owned();
        move |source| LoadError::Symbol {
            path,
            symbol,
            source,
        }
    };
    // SAFETY: the exported record is data; reading the symbol's address as
    // `*const u8` is what the ABI defines it to be.
    let record: *const u8 = unsafe {
        *library
            .get::<*const u8>(abi::METADATA_SYMBOL.as_bytes())
            .map_err(symbol_error("backworks_plugin_metadata"))?
    };
    // SAFETY: `record` is the library's exported metadata record, and the
    // library is never unloaded.
    let in_memory = unsafe { abi::read_metadata_at(record) };
    if in_memory.as_ref() != Ok(checked) {
        return Err(LoadError::RecordChanged {
            path: path.to_owned(),
        });
    }
    // SAFETY: ABI v1 (checked from the record above) declares these two
    // exported functions with exactly these signatures.
    let (info, vtable) = unsafe {
        (
            *library
                .get::<extern "C" fn() -> PluginInfo>(abi::PLUGIN_INFO_SYMBOL.as_bytes())
                .map_err(symbol_error("plugin_info"))?,
            *library
                .get::<extern "C" fn() -> PluginVTable>(abi::PLUGIN_VTABLE_SYMBOL.as_bytes())
                .map_err(symbol_error("plugin_vtable"))?,
        )
    };
    // SAFETY: both functions come from `library`, which is never unloaded;
    // `RawPlugin::new` checks the record again before calling them.
    unsafe { RawPlugin::new(checked.clone(), info, vtable) }.map_err(|source| {
        LoadError::Incompatible {
            path: path.to_owned(),
            source,
        }
    })
}

/// The target of every event a plugin logs through its host services: a
/// `RUST_LOG` directive for it (e.g. `warn,backworks::plugin=debug`) sets
/// how much of the plugins' logs the host shows. Each event carries the
/// plugin's name (`plugin`), its own target (`plugin_target`) and, when it
/// has any, its other fields as one JSON object (`fields`).
pub const PLUGIN_LOG_TARGET: &str = "backworks::plugin";

/// What a plugin's log callbacks know: whose events they are.
#[derive(Debug)]
struct PluginLog {
    plugin: String,
}

/// The host services handed to plugin `plugin` (its entry's name) at
/// initialization (ABI 1.1; a 1.0 plugin never sees them).
///
/// The struct and its context live for the rest of the process: a plugin
/// may call them for as long as its library is loaded, and libraries are
/// never unloaded. One is made per plugin name and shared by every
/// implementation of that plugin (start-up and each replacement), so swaps
/// do not add up.
pub fn host_services(plugin: &str) -> &'static HostServices {
    /// The services made so far, by plugin name.
    static MADE: std::sync::Mutex<Vec<(&'static str, &'static HostServices)>> =
        std::sync::Mutex::new(Vec::new());
    let mut made = MADE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, services)) = made.iter().find(|(name, _)| *name == plugin) {
        return services;
    }
    let context: &'static PluginLog = Box::leak(Box::new(PluginLog {
        plugin: plugin.to_owned(),
    }));
    let services: &'static HostServices = Box::leak(Box::new(HostServices {
        struct_size: std::mem::size_of::<HostServices>() as u32,
        reserved: 0,
        context: (context as *const PluginLog).cast_mut().cast::<c_void>(),
        log_enabled: Some(plugin_log_enabled),
        log: Some(plugin_log),
    }));
    made.push((context.plugin.as_str(), services));
    services
}

/// The host's level for the ABI's `level`: 1 (error) to 5 (trace); a level
/// beyond 5 counts as trace, 0 as error.
fn host_level(level: u32) -> tracing::Level {
    match level {
        0 | LOG_ERROR => tracing::Level::ERROR,
        LOG_WARN => tracing::Level::WARN,
        LOG_INFO => tracing::Level::INFO,
        LOG_DEBUG => tracing::Level::DEBUG,
        LOG_TRACE.. => tracing::Level::TRACE,
    }
}

/// Whether the host's filter keeps plugin events of `level`.
fn plugin_level_enabled(level: tracing::Level) -> bool {
    match level {
        tracing::Level::ERROR => {
            tracing::enabled!(target: PLUGIN_LOG_TARGET, tracing::Level::ERROR)
        }
        tracing::Level::WARN => tracing::enabled!(target: PLUGIN_LOG_TARGET, tracing::Level::WARN),
        tracing::Level::INFO => tracing::enabled!(target: PLUGIN_LOG_TARGET, tracing::Level::INFO),
        tracing::Level::DEBUG => {
            tracing::enabled!(target: PLUGIN_LOG_TARGET, tracing::Level::DEBUG)
        }
        tracing::Level::TRACE => {
            tracing::enabled!(target: PLUGIN_LOG_TARGET, tracing::Level::TRACE)
        }
    }
}

/// `HostServices::log_enabled`: the plugin's target does not matter, only
/// the level against the filter of [`PLUGIN_LOG_TARGET`].
extern "C" fn plugin_log_enabled(_: *mut c_void, level: u32, _: *const c_char) -> i32 {
    std::panic::catch_unwind(|| plugin_level_enabled(host_level(level)))
        .is_ok_and(|enabled| enabled)
        .into()
}

/// A string the plugin passed: `""` for NULL, invalid UTF-8 replaced.
///
/// # Safety
/// `text` is NULL or NUL-terminated and valid for `'a`.
unsafe fn plugin_text<'a>(text: *const c_char) -> std::borrow::Cow<'a, str> {
    if text.is_null() {
        return std::borrow::Cow::Borrowed("");
    }
    // SAFETY: non-NULL, NUL-terminated and valid for 'a (contract above).
    unsafe { CStr::from_ptr(text) }.to_string_lossy()
}

/// `HostServices::log`: one host event of target [`PLUGIN_LOG_TARGET`].
extern "C" fn plugin_log(
    context: *mut c_void,
    level: u32,
    target: *const c_char,
    message: *const c_char,
    fields: *const c_char,
) {
    // A panic must not cross into the plugin (it would abort): a failed
    // event is dropped.
    let _ = std::panic::catch_unwind(|| {
        if context.is_null() {
            return;
        }
        // SAFETY: `context` is the leaked `PluginLog` of `host_services`,
        // which plugins pass back unchanged (ABI 1.1) and which lives forever.
        let plugin = unsafe { &*context.cast_const().cast::<PluginLog>() }
            .plugin
            .as_str();
        // SAFETY: the ABI makes each string NULL or NUL-terminated UTF-8
        // valid for the call.
        let (target, message, fields) = unsafe {
            (
                plugin_text(target),
                plugin_text(message),
                plugin_text(fields),
            )
        };
        let fields = (!fields.is_empty()).then_some(&*fields);
        log_plugin_event(host_level(level), plugin, &target, fields, &message);
    });
}

/// One event of a plugin's log, as the server logs it: target
/// [`PLUGIN_LOG_TARGET`], the plugin's entry name, its own target and
/// structured fields. In-process plugins' calls and a worker's relayed
/// lines (`process::output`) both end here.
pub(crate) fn log_plugin_event(
    level: tracing::Level,
    plugin: &str,
    plugin_target: &str,
    fields: Option<&str>,
    message: &str,
) {
    macro_rules! emit {
        ($level:expr) => {
            tracing::event!(
                target: PLUGIN_LOG_TARGET,
                $level,
                plugin,
                plugin_target,
                fields,
                "{message}"
            )
        };
    }
    match level {
        tracing::Level::ERROR => emit!(tracing::Level::ERROR),
        tracing::Level::WARN => emit!(tracing::Level::WARN),
        tracing::Level::INFO => emit!(tracing::Level::INFO),
        tracing::Level::DEBUG => emit!(tracing::Level::DEBUG),
        tracing::Level::TRACE => emit!(tracing::Level::TRACE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A list is listed compact, no section is absent, a garbled section
    /// is unreadable with why (naming the file): never an error of the load.
    #[test]
    fn a_dependency_list_is_listed_absent_or_unreadable() {
        let path = Path::new("plugins/libweather.so");
        let info: deps::VersionInfo = serde_json::from_str(
            r#"{"packages":[{"name":"weather","version":"1.0.0","source":"local","dependencies":[1],"root":true},{"name":"serde","version":"1.0.228","source":"crates.io"}]}"#,
        )
        .unwrap();
        let object =
            |contents: &[u8]| deps::object_file("x86_64-unknown-linux-gnu", contents).unwrap();
        assert_eq!(
            DependencyList::of_bytes(path, &object(&deps::compress(&info))),
            DependencyList::Listed(vec![Dependency {
                name: String::from("serde"),
                version: String::from("1.0.228"),
                source: String::from("crates.io"),
                build: false,
            }])
        );
        let c_plugin = std::fs::read(backworks_test_support::fixtures::c_plugin()).unwrap();
        assert_eq!(
            DependencyList::of_bytes(path, &c_plugin),
            DependencyList::Absent
        );
        match DependencyList::of_bytes(path, &object(b"not zlib")) {
            DependencyList::Unreadable(why) => assert!(
                why.starts_with(
                    "plugins/libweather.so: the `.dep-v0` section is not zlib-compressed data"
                ),
                "{why}"
            ),
            other => panic!("{other:?}"),
        }
    }

    /// A plugin needing `GLIBC_2.99` is refused by a glibc older than that,
    /// with both versions, the need and the plugin named; one as new, or
    /// no glibc at all to compare with, lets it through to `dlopen`.
    #[test]
    fn a_plugin_needing_a_newer_glibc_is_refused_before_dlopen() {
        let path = backworks_test_support::fixtures::c_plugin_needing_glibc_2_99();
        let bytes = std::fs::read(&path).unwrap();
        let metadata = find_metadata(&bytes).unwrap();
        let error = check_glibc_floor(&bytes, &path, &metadata, Version::parse("2.36"))
            .expect_err("2.99 is newer than 2.36");
        assert!(matches!(error, LoadError::GlibcTooOld(_)), "{error:?}");
        assert_eq!(
            error.to_string(),
            format!(
                "refusing {}: plugin `weather-c` needs glibc 2.99 (symbol version GLIBC_2.99 of libc.so.6) but this system has glibc 2.36; build it against an older glibc (e.g. with zig: `cargo zigbuild --target {}.2.17`) or run it on a system with glibc 2.99 or newer",
                path.display(),
                metadata.target
            )
        );
        for running in [
            Some(Version::new(2, 99, 0)),
            Some(Version::new(3, 0, 0)),
            None,
        ] {
            check_glibc_floor(&bytes, &path, &metadata, running).unwrap();
        }
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn the_running_glibc_is_known_on_glibc() {
        let running = running_glibc().expect("a glibc version");
        assert!(running >= Version::new(2, 17, 0), "{running}");
    }

    /// Set in the child process of
    /// `the_exit_watchdog_ends_a_process_whose_way_out_blocks`.
    const WATCHDOG_CHILD: &str = "BACKWORKS_TEST_EXIT_WATCHDOG_CHILD";

    /// The process ends with the armed code and message although the thread
    /// on its way out never gets there (here it parks for good, as a thread
    /// waiting on glibc's loader lock would). Run in a child process (this
    /// test binary, re-executed for this one test).
    #[test]
    fn the_exit_watchdog_ends_a_process_whose_way_out_blocks() {
        let name = "loader::tests::the_exit_watchdog_ends_a_process_whose_way_out_blocks";
        if std::env::var_os(WATCHDOG_CHILD).is_some() {
            assert!(exit_watchdog().is_some());
            exit_unless_ended(
                7,
                String::from("stuck on the way out\n"),
                std::time::Duration::from_millis(50),
            );
            loop {
                std::thread::park();
            }
        }
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([name, "--exact", "--nocapture", "--test-threads", "1"])
            .env(WATCHDOG_CHILD, "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Only catches a hang: the child ends after 50 ms.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("the exit watchdog did not end the child process");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        assert_eq!(status.code(), Some(7), "{stderr}");
        assert!(stderr.contains("stuck on the way out\n"), "{stderr}");
    }

    #[test]
    fn plugin_levels_map_to_the_hosts() {
        use tracing::Level;
        let levels = [
            0,
            LOG_ERROR,
            LOG_WARN,
            LOG_INFO,
            LOG_DEBUG,
            LOG_TRACE,
            6,
            u32::MAX,
        ];
        assert_eq!(
            levels.map(host_level),
            [
                Level::ERROR,
                Level::ERROR,
                Level::WARN,
                Level::INFO,
                Level::DEBUG,
                Level::TRACE,
                Level::TRACE,
                Level::TRACE
            ]
        );
    }

    #[test]
    fn host_services_are_complete_and_follow_the_hosts_filter() {
        let services = host_services("p");
        assert_eq!(
            services.struct_size as usize,
            std::mem::size_of::<HostServices>()
        );
        assert!(!services.context.is_null());
        let (enabled, log) = (services.log_enabled.unwrap(), services.log.unwrap());
        let filter = tracing_subscriber::EnvFilter::new("warn");
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::sink)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let target = c"plugin::module".as_ptr();
            assert_eq!(enabled(services.context, LOG_WARN, target), 1);
            assert_eq!(enabled(services.context, LOG_INFO, target), 0);
            // NULL strings and a NULL context are harmless.
            log(
                services.context,
                LOG_ERROR,
                std::ptr::null(),
                std::ptr::null(),
                std::ptr::null(),
            );
            log(
                std::ptr::null_mut(),
                LOG_ERROR,
                target,
                c"m".as_ptr(),
                std::ptr::null(),
            );
        });
    }
}
