//! What the marketplace client refuses or fails with: [`MarketplaceError`]
//! (each variant names the plugin, version, file or URL and the fix; exit
//! code 1 for refusals, 2 for the rest) and [`Subject`], the plugin, version
//! and URL a download refusal is about.

use super::*;
use backworks_artifact::write::PathError;

/// Why the marketplace client refused or failed. Refusals (exit code 1) say
/// what did not verify; the rest (exit code 2) are configuration, usage,
/// I/O or network errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MarketplaceError {
    /// The configuration has no usable `marketplace:` section.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The lock file cannot be read or written.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// `name@requirement` on the command line does not parse.
    #[error(
        "`{spec}` is not a plugin to install: {reason}; write `name`, `name@1.2.3` (exactly that version) or `name@^1.2` (a semver requirement)"
    )]
    InvalidSpec {
        /// What was given.
        spec: String,
        /// What is wrong.
        reason: String,
    },
    /// A file of the registry could not be fetched (network or file system).
    #[error(
        "cannot fetch {url}: {reason}; check the registry URL in `marketplace.registry` and that it is reachable"
    )]
    Fetch {
        /// The URL or path.
        url: String,
        /// Why.
        reason: String,
    },
    /// A transfer from the registry took longer than
    /// `marketplace.transfer_timeout`.
    #[error(
        "cannot fetch {url}: the transfer took longer than `marketplace.transfer_timeout` ({}); the registry stalls or the network is too slow; raise `marketplace.transfer_timeout` if the registry is sound but slow",
        humane(*limit)
    )]
    TransferTimeout {
        /// The URL or path.
        url: String,
        /// The limit.
        limit: Duration,
    },
    /// A transfer from the registry was slower than
    /// `marketplace.min_transfer_rate` over a whole measuring window.
    #[error(
        "cannot fetch {url}: {received} bytes came in {}, less than `marketplace.min_transfer_rate` ({rate} bytes per second); the registry stalls or the network is too slow; lower `marketplace.min_transfer_rate` if the registry is sound but slow",
        humane(*window)
    )]
    TransferTooSlow {
        /// The URL or path.
        url: String,
        /// The bytes received in the window.
        received: u64,
        /// The window.
        window: Duration,
        /// The minimum rate, bytes per second.
        rate: u64,
    },
    /// A file of a directory registry is not a regular file (a FIFO, a
    /// device such as `/dev/zero`, a socket, a directory): refused before a
    /// byte of it is read, since reading it could block forever or never
    /// end.
    #[error(
        "refusing {}: not a regular file (it is {kind}); every file of a directory registry must be a regular file: put the registry's own file back (or publish again)",
        path.display()
    )]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is: `a FIFO`, `a character device`, ...
        kind: &'static str,
    },
    /// The registry answered with an HTTP error.
    #[error("{url} answered HTTP {status}; check the registry URL in `marketplace.registry`")]
    Status {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The HTTP client could not be built.
    #[error("cannot set up the HTTP client: {0}")]
    Client(String),
    /// A local file (cache, registry state) could not be read or written.
    #[error(transparent)]
    Io(#[from] PathError),
    /// `registry-state.json` is not readable: refusing to forget the serials
    /// it records (that would allow a rollback).
    #[error(
        "{}: {reason}; it records the newest registry index accepted (rollback protection): restore it, or delete it to start over"
    , path.display())]
    State {
        /// The state file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The index is malformed or not signed by the registry key.
    #[error("refusing the registry index: {0}")]
    Index(#[source] RegistryError),
    /// The index is older than one accepted before.
    #[error(
        "refusing the registry index {url}: its serial {serial} is older than serial {last_seen} accepted before (rollback: a stale mirror or an attack); nothing was installed; try again later or use another mirror"
    )]
    Rollback {
        /// Where the index came from.
        url: String,
        /// Its serial.
        serial: u64,
        /// The highest serial accepted before.
        last_seen: u64,
    },
    /// The index has expired.
    #[error(
        "refusing the registry index {url}: it expired at {expires} (unix seconds; now {now}), so it may hide newer releases (freeze); nothing was installed; the registry must re-sign its index (`backworks marketplace resign`)"
    )]
    Expired {
        /// Where the index came from.
        url: String,
        /// Its expiry.
        expires: u64,
        /// The time now.
        now: u64,
    },
    /// The index has no plugin of that name.
    #[error(
        "there is no plugin `{name}` in the registry {registry}; look for it with `backworks plugins search`"
    )]
    UnknownPlugin {
        /// The plugin.
        name: String,
        /// The registry.
        registry: String,
    },
    /// No version of the plugin matches the requirement.
    #[error("no version of `{name}` in the registry matches `{requirement}`; it has {available}")]
    NoMatchingVersion {
        /// The plugin.
        name: String,
        /// The requirement.
        requirement: String,
        /// The versions it has.
        available: String,
    },
    /// Releases match the requirement, but none is built for the plugin
    /// ABI this host speaks.
    #[error(
        "no release of `{name}` matching `{requirement}` is built for plugin ABI v{host_abi}, which this host speaks: the newest, {name} {newest}, is built for ABI v{abi}{older}; install a version built for ABI v{host_abi} (`backworks plugins install {name}@<version>`) or upgrade backworks"
    )]
    NoCompatibleRelease {
        /// The plugin.
        name: String,
        /// The requirement.
        requirement: String,
        /// The newest version matching it.
        newest: Version,
        /// The ABI it is built for.
        abi: u32,
        /// `, and so are the n others` or empty.
        older: String,
        /// The ABI this host speaks.
        host_abi: u32,
    },
    /// A version (the one the lock pins, or the one chosen) is built for a
    /// plugin ABI this host does not speak.
    #[error(
        "{name} {version} is built for plugin ABI v{abi}, this host speaks v{host_abi}: it cannot be loaded here; install a version built for ABI v{host_abi}, or upgrade backworks"
    )]
    IncompatibleAbi {
        /// The plugin.
        name: String,
        /// The version.
        version: String,
        /// The ABI its release is built for.
        abi: u32,
        /// The ABI this host speaks.
        host_abi: u32,
    },
    /// This host's target's artifact needs a newer glibc than the one this
    /// process runs on (its floor as the registry recorded it); nothing was
    /// downloaded.
    #[error(
        "refusing {name} {version}: its artifact for {target} needs glibc {needs} but this system has glibc {running}, so it cannot be loaded here; install a version built against glibc {running} or older (ask its publisher to build one), or run it on a newer system"
    )]
    GlibcTooOld {
        /// The plugin.
        name: String,
        /// The version.
        version: String,
        /// This host's target.
        target: String,
        /// The newest glibc release the artifact needs.
        needs: registry::floor::Version,
        /// The glibc this process runs on.
        running: registry::floor::Version,
    },
    /// The release has no artifact for this host's target.
    #[error(
        "{name} {version} has no artifact for this host's target {target} (it has {available}); ask its publisher to build it for {target}"
    )]
    NoTarget {
        /// The plugin.
        name: String,
        /// The version.
        version: String,
        /// This host's target.
        target: String,
        /// The targets it has.
        available: String,
    },
    /// A release file does not match the signed index, or names paths
    /// outside its own directory.
    #[error("refusing {name} {version}: {reason}")]
    Release {
        /// The plugin.
        name: String,
        /// The version.
        version: String,
        /// Why.
        reason: String,
    },
    /// The artifact is larger than `max_download`.
    #[error(
        "refusing {subject}: it is {size} bytes, more than `marketplace.max_download` ({limit} bytes); raise the limit if you trust this plugin's size"
    )]
    TooLarge {
        /// The plugin, version and URL.
        subject: Box<Subject>,
        /// Its size (announced, or received so far).
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The registry served a different number of bytes than the release
    /// announces.
    #[error(
        "refusing {subject}: wrong size: the release announces {expected} bytes, the registry sent {}; the registry or a mirror serves altered data; the installed version is unchanged",
        if *more { format!("more (at least {received})") } else { received.to_string() }
    )]
    WrongSize {
        /// The plugin, version and URL.
        subject: Box<Subject>,
        /// The size the release announces.
        expected: u64,
        /// The bytes received (when `more`, when the download stopped).
        received: u64,
        /// Whether more bytes than announced arrived (the download was
        /// stopped then).
        more: bool,
    },
    /// The artifact's sha256 is not the release's.
    #[error(
        "refusing {subject}: tampered download: its sha256 is {actual}, the release says {expected}; the registry or a mirror serves altered data; the installed version is unchanged"
    )]
    Tampered {
        /// The plugin, version and URL.
        subject: Box<Subject>,
        /// The release's sha256.
        expected: String,
        /// The downloaded bytes' sha256.
        actual: String,
    },
    /// The artifact is signed by a key `trusted_keys` does not list.
    #[error(
        "refusing {subject}: signed by key {signed_by}, which is not in `trusted_keys` (trusted: {trusted}); add the publisher's public key to `trusted_keys` if you trust it; the installed version is unchanged"
    )]
    UntrustedKey {
        /// The plugin, version and URL.
        subject: Box<Subject>,
        /// The key that signed.
        signed_by: KeyId,
        /// The trusted keys, listed.
        trusted: String,
    },
    /// The signature's trusted comment names another plugin, version or
    /// target than the one requested.
    #[error(
        "refusing {subject}: the signature's trusted comment names {field} {signed:?}, not {expected:?}: the registry serves a signature made for something else; the installed version is unchanged"
    )]
    WrongComment {
        /// The plugin, version and URL.
        subject: Box<Subject>,
        /// `name`, `version` or `target`.
        field: &'static str,
        /// What the comment says.
        signed: String,
        /// What was requested.
        expected: String,
    },
    /// The signature does not verify for another reason.
    #[error("refusing {subject}: {source}")]
    Signature {
        /// The plugin, version and URL.
        subject: Box<Subject>,
        /// Why.
        #[source]
        source: VerifyError,
    },
    /// Installing would go below the locked version.
    #[error(
        "refusing to downgrade {name} from {locked} (in backworks.lock) to {offered}; to go back on purpose, run `backworks plugins remove {name}` first"
    )]
    Downgrade {
        /// The plugin.
        name: String,
        /// The locked version.
        locked: Version,
        /// The version offered.
        offered: Version,
    },
    /// The new version is signed by another key than the locked one.
    #[error(
        "refusing {name} {version}: it is signed by key {new_key}, the locked version by key {locked_key}; a publisher key change needs your decision: `backworks plugins remove {name}`, then install it again"
    )]
    KeyChanged {
        /// The plugin.
        name: String,
        /// The new version.
        version: String,
        /// The locked key id.
        locked_key: String,
        /// The new key id.
        new_key: String,
    },
    /// `--locked`: a plugin is not exactly what the lock pins, or the lock
    /// would change.
    #[error("--locked: {name}: {reason}")]
    LockMismatch {
        /// The plugin.
        name: String,
        /// What differs.
        reason: String,
    },
    /// The registry's artifact of a locked version is not the one the lock
    /// pins: a published version changed.
    #[error(
        "refusing {name} {version}: the registry's artifact for {target} has sha256 {registry_sha256}, backworks.lock pins {locked_sha256}; published versions never change, so the registry or a mirror serves altered data"
    )]
    PinMismatch {
        /// The plugin.
        name: String,
        /// The locked version.
        version: String,
        /// The artifact's target.
        target: String,
        /// The registry's sha256.
        registry_sha256: String,
        /// The lock's sha256.
        locked_sha256: String,
    },
    /// `--offline`, and the plugin is not in the cache.
    #[error(
        "--offline: `{name}` ({requirement}) is not in the cache {}: {reason}; run `backworks plugins install {name}` with the network, or start without --offline"
    , cache.display())]
    Offline {
        /// The plugin.
        name: String,
        /// The requirement.
        requirement: String,
        /// The cache directory.
        cache: PathBuf,
        /// What is missing.
        reason: String,
    },
    /// A name, version or file name from the registry (or the lock) is not
    /// what its grammar allows, so it cannot become a path in the cache.
    #[error(
        "refusing a path in the cache: {0}; backworks never writes such a registry index, release or lock file: the registry (or backworks.lock) was altered"
    )]
    UnsafePath(#[source] RegistryError),
    /// A version's cache directory holds more than one library: which one
    /// the lock pins is not known without guessing.
    #[error(
        "the cache directory {} holds several plugin libraries ({files}), where installs put one; remove the directory (or run `backworks plugins remove` and install again)"
    , dir.display())]
    AmbiguousCache {
        /// The version's cache directory.
        dir: PathBuf,
        /// The libraries in it.
        files: String,
    },
    /// The library's record declares other capabilities than its release
    /// (or the index) says: a registry understating what a plugin asks for.
    #[error(
        "refusing {name} {version}: its library {artifact}, but the registry's release says it {release}; the signature covers the library's declaration, not the registry's copy, so the registry or a mirror serves altered data; the installed version is unchanged"
    )]
    CapabilitiesMismatch {
        /// The plugin.
        name: String,
        /// The version.
        version: String,
        /// What the release says (`declares network none`).
        release: String,
        /// What the library's record says.
        artifact: String,
    },
    /// `plugins update` held back updates that ask for more capabilities
    /// than the locked versions declared (listed in its report).
    #[error(
        "not applied: {held} (listed above); review what each asks for, then apply it with `backworks plugins update <name> --accept-capabilities`"
    )]
    CapabilitiesHeld {
        /// The updates held back, `weather 1.0.0 -> 1.1.0`, joined.
        held: String,
    },
    /// The plugin is not in the lock file.
    #[error("`{name}` is not installed (not in {}); install it with `backworks plugins install {name}`", lock.display())]
    NotInstalled {
        /// The plugin.
        name: String,
        /// The lock file.
        lock: PathBuf,
    },
}

/// What a download refusal is about: the plugin, its version and the URL
/// (or path) of the file refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// The plugin.
    pub name: String,
    /// The version.
    pub version: String,
    /// The URL or path.
    pub url: String,
}

impl Subject {
    pub(super) fn new(name: &str, version: &str, url: &str) -> Box<Self> {
        Box::new(Self {
            name: name.to_owned(),
            version: version.to_owned(),
            url: url.to_owned(),
        })
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} from {}", self.name, self.version, self.url)
    }
}

impl MarketplaceError {
    /// 1 for a refusal (verification, rollback, expiry, downgrade, key
    /// change, `--locked` mismatch, capabilities, a glibc floor this system
    /// cannot meet), 2 for configuration, usage, I/O and
    /// network errors.
    pub fn exit_code(&self) -> u8 {
        if self.is_refusal() { 1 } else { 2 }
    }

    /// Whether this is a refusal: something did not verify or a policy
    /// forbids it.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Self::Index(_)
                | Self::Rollback { .. }
                | Self::Expired { .. }
                | Self::Release { .. }
                | Self::TooLarge { .. }
                | Self::NotRegular { .. }
                | Self::WrongSize { .. }
                | Self::Tampered { .. }
                | Self::UntrustedKey { .. }
                | Self::WrongComment { .. }
                | Self::Signature { .. }
                | Self::Downgrade { .. }
                | Self::KeyChanged { .. }
                | Self::LockMismatch { .. }
                | Self::PinMismatch { .. }
                | Self::UnsafePath(_)
                | Self::CapabilitiesMismatch { .. }
                | Self::CapabilitiesHeld { .. }
                | Self::GlibcTooOld { .. }
        )
    }
}

pub(super) fn io_error(
    action: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> MarketplaceError {
    let path = path.to_owned();
    move |source| MarketplaceError::Io(PathError::new(action, path, source))
}

/// `items` joined with commas, or `empty` when there are none.
pub(super) fn list_or<T: fmt::Display>(items: impl IntoIterator<Item = T>, empty: &str) -> String {
    let list = items
        .into_iter()
        .map(|item| item.to_string())
        .collect::<Vec<_>>();
    if list.is_empty() {
        empty.to_owned()
    } else {
        list.join(", ")
    }
}
