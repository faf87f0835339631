//! `cargo backworks publish`: sends every target of the current package's
//! version, as `cargo backworks build` left them in the dist layout and
//! `cargo backworks sign` signed them, to a registry
//! (`backworks_registry`).
//!
//! - The package and the dist directory are found as `build` finds them
//!   ([`Workspace`]); the artifacts are the files
//!   `<dist>/<target>/<name>-<version>-<target>.<so|dll|dylib>` of the
//!   package's version in `Cargo.toml`, each with its `.minisig`.
//! - Everything is checked here before anything is sent or written: each
//!   artifact passes `check`, and its signature verifies against the
//!   publisher's public key (`--public-key`, default `./backworks.pub` when
//!   it exists); description and keywords come from `Cargo.toml`.
//! - An `http(s)://` registry gets one `POST <base>/api/v1/publish`,
//!   `multipart/form-data` (parts `metadata`, `artifact`, `signature`), with
//!   `Authorization: Bearer $BACKWORKS_REGISTRY_TOKEN`; artifacts are
//!   streamed from the files already checked, with a bar of bytes sent on a
//!   terminal. Connecting may take [`CONNECT_TIMEOUT`]; the whole request
//!   [`upload_timeout`] (a minute plus one second per 64 KiB sent).
//! - A directory (or `file://`) registry is written here with `backworks-registry`'s
//!   `registry::validate_upload` and `Tree::publish` (atomic; the index is
//!   signed with the registry's secret key, `--registry-key`).

use backworks_artifact::write::PathError;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Seek};
use std::path::{Path, PathBuf};
use std::time::Duration;

use backworks_artifact::check::MAX_FILE_SIZE;
use backworks_artifact::file::{self, MAX_SIGNATURE_SIZE};
use backworks_artifact::signature::{self, KeyId, PublicKey, VerifyError};
use backworks_artifact::terminal::escape;
use backworks_registry::{
    self as registry, RegistryError, Release, Tree, Upload, UploadArtifact, api,
};

use crate::build::{BuildError, Workspace, dist_file_name};
use crate::keys::{self, KeyError, PasswordSource, SecretKeySource, SigningKey};
use crate::progress::Progress;

/// The environment variable holding the token an HTTP registry requires
/// (`Authorization: Bearer <token>`).
pub use registry::api::TOKEN_ENV;

/// The publisher public key used when `--public-key` is not given and this
/// file exists in the current directory (the name `cargo backworks keygen`
/// writes by default).
pub const DEFAULT_PUBLIC_KEY: &str = "backworks.pub";

/// The publish endpoint, relative to an HTTP registry's base URL.
pub use registry::api::PUBLISH_PATH as PUBLISH_ENDPOINT;

/// How long connecting to an HTTP registry may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the whole publish request may take beyond the time to send its
/// bytes at [`MIN_UPLOAD_RATE`]: the registry's checks and its answer.
pub const ANSWER_ALLOWANCE: Duration = Duration::from_secs(60);

/// The slowest average upload, in bytes per second, that is not given up
/// on.
pub const MIN_UPLOAD_RATE: u64 = 64 * 1024;

/// The most of a registry's answer that is read (a release, or an error).
const MAX_ANSWER_BYTES: u64 = 1 << 20;

/// The time limit of a publish request of `bytes`: [`ANSWER_ALLOWANCE`]
/// plus one second per [`MIN_UPLOAD_RATE`] bytes (rounded up), so an upload
/// fails when its average rate falls below 64 KiB/s, however large it is.
pub fn upload_timeout(bytes: u64) -> Duration {
    ANSWER_ALLOWANCE + Duration::from_secs(bytes.div_ceil(MIN_UPLOAD_RATE))
}

/// Where a registry is: a directory written here, or an HTTP server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registry {
    /// A local directory (given as a path or a `file://` URL).
    Directory(PathBuf),
    /// An `http://` or `https://` base URL.
    Http(reqwest::Url),
}

impl Registry {
    /// Reads a `--registry` value by the registry's one location parser
    /// ([`registry::Location::parse`], the rules of `backworks.yaml`'s
    /// `marketplace.registry`): `http://` and `https://` URLs are HTTP
    /// registries (a host, no query or fragment), a `file:///` URL or
    /// anything without a scheme is a directory (relative to the current
    /// directory); other schemes are refused.
    pub fn parse(value: &str) -> Result<Self, PublishError> {
        match registry::Location::parse(value, |path| PathBuf::from(path)) {
            Ok(registry::Location::Dir(dir)) => Ok(Self::Directory(dir)),
            Ok(registry::Location::Http(url)) => Ok(Self::Http(url)),
            Err(error) => Err(PublishError::InvalidRegistry {
                registry: value.to_owned(),
                reason: error.reason(),
            }),
        }
    }

    /// The URL the publish request goes to: `<base>/api/v1/publish` (a
    /// trailing `/` on the base or not).
    fn endpoint(base: &reqwest::Url) -> String {
        registry::location::endpoint(base, PUBLISH_ENDPOINT).map_or_else(
            |_| format!("{}/{PUBLISH_ENDPOINT}", base.as_str().trim_end_matches('/')),
            String::from,
        )
    }
}

impl fmt::Display for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Directory(dir) => write!(f, "{}", dir.display()),
            Self::Http(url) => write!(f, "{url}"),
        }
    }
}

/// What to publish, and where.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    /// The registry.
    pub registry: Registry,
    /// The `Cargo.toml` to start from (default: cargo's search from the
    /// current directory).
    pub manifest_path: Option<PathBuf>,
    /// The dist directory (default: `<target-dir>/backworks`).
    pub dist_dir: Option<PathBuf>,
    /// The plugin package (default: the one whose directory holds the
    /// current directory, else the workspace's only plugin package).
    pub package: Option<String>,
    /// Directory registries: the registry's secret key file (signs the
    /// index).
    pub registry_key: Option<PathBuf>,
    /// Where the registry key's password comes from, if it has one.
    pub password: PasswordSource,
    /// The publisher's public key: a `.pub` file or the base64 key
    /// (default: [`DEFAULT_PUBLIC_KEY`] when it exists).
    pub public_key: Option<String>,
    /// HTTP registries: the publish token (usually from [`TOKEN_ENV`]).
    pub token: Option<String>,
}

/// A published release.
#[derive(Debug, Clone)]
pub struct Published {
    /// The registry, as given.
    pub registry: String,
    /// The release the registry recorded.
    pub release: Release,
    /// The release as JSON: an HTTP registry's answer as received, or the
    /// `release.json` written into a directory.
    pub json: String,
    /// Whether the signatures were verified here (a publisher public key was
    /// given or found); the registry verifies them in any case.
    pub verified_locally: bool,
}

/// Why `publish` refused or failed. Every message names the file, registry
/// or variable concerned and says how to fix it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// `--registry` is not a directory or an HTTP(S) URL.
    #[error(
        "`{registry}` is not a registry: {reason}; give a directory, a file:// URL or an http(s):// URL"
    )]
    InvalidRegistry {
        /// The value given.
        registry: String,
        /// What is wrong.
        reason: String,
    },
    /// A directory registry without its secret key.
    #[error(
        "publishing into the directory registry {} signs its index with the registry's secret key: pass --registry-key <the registry's .key file>",
        dir.display()
    )]
    NoRegistryKey {
        /// The registry directory.
        dir: PathBuf,
    },
    /// `--registry-key` with an HTTP registry.
    #[error(
        "--registry-key is only for directory registries: the registry at {url} signs its own index; drop --registry-key"
    )]
    RegistryKeyForHttp {
        /// The registry URL.
        url: String,
    },
    /// An HTTP registry without a token.
    #[error("publishing to {url} needs the registry's publish token: set {TOKEN_ENV} to it")]
    NoToken {
        /// The registry URL.
        url: String,
    },
    /// The token variable holds bytes that are not UTF-8.
    #[error("environment variable {TOKEN_ENV} does not hold UTF-8 text; set it to the token")]
    TokenNotUnicode,
    /// A directory registry without a publisher key to verify with.
    #[error(
        "publishing into the directory registry {} checks each signature against the publisher's public key: pass --public-key <.pub file or base64 key> (the default, ./{DEFAULT_PUBLIC_KEY}, does not exist)",
        dir.display()
    )]
    NoPublisherKey {
        /// The registry directory.
        dir: PathBuf,
    },
    /// The workspace could not be read, or has no such plugin package.
    #[error(transparent)]
    Workspace(#[from] BuildError),
    /// Several plugin packages and none chosen.
    #[error(
        "the workspace has several plugin packages ({available}): name the one to publish with --package"
    )]
    SeveralPackages {
        /// The plugin packages.
        available: String,
    },
    /// The package's `description` or `keywords` break the registry's
    /// limits.
    #[error("cannot publish {}: in its `[package]`, {source}", manifest.display())]
    Listing {
        /// The package's `Cargo.toml`.
        manifest: PathBuf,
        /// Which limit.
        #[source]
        source: Box<RegistryError>,
    },
    /// No artifact of the package's version in the dist directory.
    #[error(
        "no artifact of {name} {version} in {}: build it with `cargo backworks build --release` (and sign it with `cargo backworks sign`), or point --dist-dir at the dist directory",
        dist.display()
    )]
    NoArtifacts {
        /// The package.
        name: String,
        /// Its version in `Cargo.toml`.
        version: String,
        /// The dist directory searched.
        dist: PathBuf,
    },
    /// An artifact without its signature.
    #[error(
        "{} is not signed ({} is missing): sign it with `cargo backworks sign {} --key <your .key file>`",
        artifact.display(),
        keys::signature_path(artifact).display(),
        artifact.display()
    )]
    Unsigned {
        /// The artifact.
        artifact: PathBuf,
    },
    /// An artifact that is not a valid plugin.
    #[error("{} is not a valid plugin, refusing to publish it:\n{report}", artifact.display())]
    Invalid {
        /// The artifact.
        artifact: PathBuf,
        /// The `check` report.
        report: String,
    },
    /// An artifact whose signature does not verify.
    #[error("refusing to publish {}: {source}", artifact.display())]
    Signature {
        /// The artifact.
        artifact: PathBuf,
        /// Why.
        #[source]
        source: VerifyError,
    },
    /// A file could not be read.
    #[error(transparent)]
    Io(#[from] PathError),
    /// A key could not be read.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Publishing into a directory registry failed or was refused.
    #[error("cannot publish into {}: {source}", registry.display())]
    Registry {
        /// The registry directory.
        registry: PathBuf,
        /// Why.
        #[source]
        source: RegistryError,
    },
    /// The HTTP client could not be set up.
    #[error("cannot set up the HTTP client: {0}")]
    Client(String),
    /// The request could not be sent, or no answer came.
    #[error(
        "cannot publish to {url}: {reason}; check that the registry is running and the URL is right"
    )]
    Network {
        /// The publish URL.
        url: String,
        /// The errors, outermost first.
        reason: String,
    },
    /// The registry closed the connection while the upload was being sent,
    /// without an answer that could be read.
    #[error(
        "the registry at {url} closed the connection before the upload was sent in full ({reason}): a registry does this when it refuses an upload from its headers alone, one larger than it accepts or without a valid token, and its answer was lost with the connection; check its upload limit and {TOKEN_ENV}"
    )]
    ClosedDuringUpload {
        /// The publish URL.
        url: String,
        /// The errors, outermost first.
        reason: String,
    },
    /// The request took longer than its time limit.
    #[error(
        "publishing to {url} timed out: no connection within {connect} s or no answer within {total} s (a minute plus one second per 64 KiB uploaded); check the registry and the network"
    )]
    TimedOut {
        /// The publish URL.
        url: String,
        /// The connect timeout in seconds.
        connect: u64,
        /// The request's time limit in seconds.
        total: u64,
    },
    /// The registry answered with an error.
    #[error("the registry at {url} refused the upload ({status}): {message}{hint}")]
    Refused {
        /// The publish URL.
        url: String,
        /// The HTTP status, e.g. `409 Conflict`.
        status: String,
        /// The registry's `error` message (or its answer's text).
        message: String,
        /// What to do about it, starting with `; `, or empty.
        hint: &'static str,
        /// The status code.
        code: u16,
    },
    /// The registry said 201 Created but its answer is not a release.
    #[error(
        "the registry at {url} answered 201 Created, but not with a release: {reason}; the version may be published: look it up in the registry's index"
    )]
    BadAnswer {
        /// The publish URL.
        url: String,
        /// What is wrong with the answer.
        reason: String,
    },
}

impl PublishError {
    /// The process exit code: 1 when an artifact is not a valid plugin or
    /// its signature does not verify (here, or as the registry's 422); 5
    /// when the registry refused the upload otherwise (token, version
    /// already published, size) or could not be reached; 2 for usage,
    /// configuration, key and I/O errors.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Invalid { .. } | Self::Signature { .. } => 1,
            Self::Refused { code: 422, .. } => 1,
            Self::Refused { .. }
            | Self::Network { .. }
            | Self::ClosedDuringUpload { .. }
            | Self::TimedOut { .. }
            | Self::BadAnswer { .. } => 5,
            Self::Registry { source, .. } => match source {
                RegistryError::AlreadyPublished { .. }
                | RegistryError::VersionCaseCollision { .. } => 5,
                RegistryError::Io(_) | RegistryError::Sign(_) => 2,
                _ => 1,
            },
            Self::Workspace(e) => e.exit_code(),
            Self::Key(e) => e.exit_code(),
            _ => 2,
        }
    }
}

/// The token from [`TOKEN_ENV`], if set (an empty value counts as unset).
pub fn token_from_env() -> Result<Option<String>, PublishError> {
    match std::env::var(TOKEN_ENV) {
        Ok(token) if token.trim().is_empty() => Ok(None),
        Ok(token) => Ok(Some(token.trim().to_owned())),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(PublishError::TokenNotUnicode),
    }
}

/// The package being published: what `Cargo.toml` says of it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Package {
    name: String,
    version: String,
    description: Option<String>,
    keywords: Vec<String>,
}

/// An artifact checked here, its file still open: the bytes sent or
/// written are read from this handle, the one the checks read.
#[derive(Debug)]
struct Checked {
    path: PathBuf,
    file_name: String,
    size: u64,
    signature: String,
    file: File,
}

/// Publishes every target of the current package's version: finds and
/// checks them all, then sends them to the HTTP registry in one request, or
/// writes them into the directory registry. Nothing is sent or written
/// unless every artifact is signed and passes the checks.
pub fn publish(options: &PublishOptions, progress: &Progress) -> Result<Published, PublishError> {
    // What the registry needs is asked for first: nothing is read or built
    // for a publish that cannot happen.
    let registry_key = match (&options.registry, &options.registry_key) {
        (Registry::Directory(dir), None) => {
            return Err(PublishError::NoRegistryKey { dir: dir.clone() });
        }
        (Registry::Directory(_), Some(file)) => Some(file),
        (Registry::Http(url), Some(_)) => {
            return Err(PublishError::RegistryKeyForHttp {
                url: url.to_string(),
            });
        }
        (Registry::Http(url), None) => {
            if options.token.is_none() {
                return Err(PublishError::NoToken {
                    url: url.to_string(),
                });
            }
            None
        }
    };
    let publisher = publisher_key(options.public_key.as_deref())?;
    if let (Registry::Directory(dir), None) = (&options.registry, &publisher) {
        return Err(PublishError::NoPublisherKey { dir: dir.clone() });
    }
    // A bad registry key or password fails before anything is checked.
    let registry_key = registry_key
        .map(|file| SigningKey::load(&SecretKeySource::File(file.clone()), &options.password))
        .transpose()?;

    progress.status("reading the workspace");
    let workspace = Workspace::read(
        options.manifest_path.as_deref(),
        None,
        options.dist_dir.as_deref(),
    )?;
    let package = current_package(&workspace, options)?;
    let artifacts = find_artifacts(&workspace.dist_dir, &package)?;
    let mut checked = Vec::with_capacity(artifacts.len());
    for artifact in &artifacts {
        progress.status(&format!("checking {}", artifact.display()));
        let (artifact, key_id) = check_artifact(artifact, publisher.as_ref())?;
        progress.step(&format!(
            "   Checked {}{}",
            artifact.path.display(),
            key_id.map_or_else(
                || String::from(" (signature not verified here: no publisher public key)"),
                |id| format!(", signed by key {id}")
            )
        ));
        checked.push(artifact);
    }

    let (release, json) = match (&options.registry, registry_key) {
        (Registry::Directory(dir), Some(key)) => {
            let publisher = publisher.as_slice();
            let release = publish_to_directory(dir, key, publisher, &package, checked, progress)?;
            // The release file as written (the index holds its hash); its
            // name and version passed the registry's grammar checks, and
            // are joined one plain component at a time all the same.
            let file = registry::join_component(&dir.join("plugins"), "plugin name", &release.name)
                .and_then(|d| registry::join_component(&d, "version", &release.version))
                .map(|d| d.join(registry::RELEASE_FILE))
                .map_err(|source| PublishError::Registry {
                    registry: dir.clone(),
                    source,
                })?;
            let json = fs::read_to_string(&file).map_err(|source| {
                PublishError::Io(PathError::new(
                    "read the published release",
                    file.clone(),
                    source,
                ))
            })?;
            (release, json.trim_end().to_owned())
        }
        (Registry::Http(url), _) => {
            let token = options.token.as_deref().unwrap_or_default();
            publish_over_http(url, token, &package, checked, progress)?
        }
        (Registry::Directory(dir), None) => {
            return Err(PublishError::NoRegistryKey { dir: dir.clone() });
        }
    };
    Ok(Published {
        registry: options.registry.to_string(),
        release,
        json,
        verified_locally: publisher.is_some(),
    })
}

/// The publisher key: `--public-key`, else `./backworks.pub` if it exists.
fn publisher_key(value: Option<&str>) -> Result<Option<PublicKey>, PublishError> {
    match value {
        Some(value) => Ok(Some(keys::read_public_key_value(value, "--public-key")?)),
        None if Path::new(DEFAULT_PUBLIC_KEY).is_file() => Ok(Some(keys::read_public_key_value(
            DEFAULT_PUBLIC_KEY,
            "--public-key",
        )?)),
        None => Ok(None),
    }
}

/// The package to publish: `--package`; else the plugin package whose
/// directory holds the current directory (or `--manifest-path`); else the
/// workspace's only plugin package.
fn current_package(
    workspace: &Workspace,
    options: &PublishOptions,
) -> Result<Package, PublishError> {
    let names: Vec<String> = options.package.iter().cloned().collect();
    let plugins = workspace.plugin_packages(&names)?;
    let here = match &options.manifest_path {
        Some(manifest) => std::path::absolute(manifest)
            .ok()
            .and_then(|m| m.parent().map(Path::to_path_buf)),
        None => std::env::current_dir().ok(),
    };
    let chosen = match plugins.as_slice() {
        [only] => *only,
        _ => here
            .and_then(|here| {
                plugins
                    .iter()
                    .filter(|p| {
                        p.manifest_path
                            .parent()
                            .is_some_and(|dir| here.starts_with(dir.as_std_path()))
                    })
                    .max_by_key(|p| p.manifest_path.as_str().len())
                    .copied()
            })
            .ok_or_else(|| PublishError::SeveralPackages {
                available: plugins
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?,
    };
    // What the registry would refuse after the upload is refused here,
    // before it.
    registry::check_listing(chosen.description.as_deref(), &chosen.keywords).map_err(|source| {
        PublishError::Listing {
            manifest: chosen.manifest_path.clone().into_std_path_buf(),
            source: Box::new(source),
        }
    })?;
    Ok(Package {
        name: chosen.name.to_string(),
        version: chosen.version.to_string(),
        description: chosen.description.clone(),
        keywords: chosen.keywords.clone(),
    })
}

/// Every `<dist>/<target>/<name>-<version>-<target>.<ext>` of the package,
/// by target.
fn find_artifacts(dist: &Path, package: &Package) -> Result<Vec<PathBuf>, PublishError> {
    let none = || PublishError::NoArtifacts {
        name: package.name.clone(),
        version: package.version.clone(),
        dist: dist.to_owned(),
    };
    let entries = match fs::read_dir(dist) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(none()),
        Err(source) => {
            return Err(PublishError::Io(PathError::new(
                "read the dist directory",
                dist.to_owned(),
                source,
            )));
        }
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| {
            PublishError::Io(PathError::new(
                "read the dist directory",
                dist.to_owned(),
                source,
            ))
        })?;
        let Some(target) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let path = entry
            .path()
            .join(dist_file_name(&package.name, &package.version, &target));
        if path.is_file() {
            found.push(path);
        }
    }
    if found.is_empty() {
        return Err(none());
    }
    found.sort();
    Ok(found)
}

/// Checks one artifact: its `.minisig` exists, it passes `check`, and the
/// signature verifies with the publisher key when there is one. Returns it
/// with its file open and rewound, and the key id that signed it when
/// verified.
fn check_artifact(
    path: &Path,
    publisher: Option<&PublicKey>,
) -> Result<(Checked, Option<KeyId>), PublishError> {
    let signature_path = keys::signature_path(path);
    if !signature_path.is_file() {
        return Err(PublishError::Unsigned {
            artifact: path.to_owned(),
        });
    }
    let read_error = |path: &Path| {
        let path = path.to_owned();
        move |source| PublishError::Io(PathError::new("read", path, source))
    };
    // Opened without blocking, a regular file within check's limit, or
    // refused before it is read (a FIFO would hang the read).
    let refused = |error| PublishError::Key(KeyError::file("read", error));
    let mut opened = file::open(path, MAX_FILE_SIZE).map_err(refused)?;
    let bytes = file::read_opened(path, &mut opened, MAX_FILE_SIZE).map_err(refused)?;
    let mut file = opened.file;
    file.rewind().map_err(read_error(path))?;
    let report = backworks_artifact::check::check_bytes(path, &bytes);
    if !report.is_valid() {
        return Err(PublishError::Invalid {
            artifact: path.to_owned(),
            report: report.render_text(),
        });
    }
    let signature = keys::read_bounded(&signature_path, MAX_SIGNATURE_SIZE, "read")?;
    let signature = String::from_utf8(signature).map_err(|_| {
        PublishError::Io(PathError::new(
            "read",
            signature_path.clone(),
            io::Error::new(
                io::ErrorKind::InvalidData,
                "not UTF-8 text, so not a minisign signature",
            ),
        ))
    })?;
    let key_id = publisher
        .map(|key| {
            // Both signatures, as the registry checks an upload.
            signature::verify_both_signatures(&bytes, &signature, std::slice::from_ref(key))
                .map(|verified| verified.key_id)
                .map_err(|source| PublishError::Signature {
                    artifact: path.to_owned(),
                    source,
                })
        })
        .transpose()?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok((
        Checked {
            path: path.to_owned(),
            file_name,
            size: bytes.len() as u64,
            signature,
            file,
        },
        key_id,
    ))
}

/// Validates the upload with `backworks-registry` (check and publisher signature again,
/// consistency of the artifacts) and publishes it into the tree at `dir`.
fn publish_to_directory(
    dir: &Path,
    key: SigningKey,
    publishers: &[PublicKey],
    package: &Package,
    checked: Vec<Checked>,
    progress: &Progress,
) -> Result<Release, PublishError> {
    let registry_error = |source| PublishError::Registry {
        registry: dir.to_owned(),
        source,
    };
    let mut artifacts = Vec::with_capacity(checked.len());
    for mut artifact in checked {
        let mut bytes = Vec::with_capacity(usize::try_from(artifact.size).unwrap_or_default());
        artifact.file.read_to_end(&mut bytes).map_err(|source| {
            PublishError::Io(PathError::new("read", artifact.path.clone(), source))
        })?;
        artifacts.push(UploadArtifact {
            file_name: artifact.file_name,
            bytes,
            signature: artifact.signature,
        });
    }
    let upload = Upload {
        description: package.description.clone(),
        keywords: package.keywords.clone(),
        artifacts,
    };
    progress.status(&format!("publishing into {}", dir.display()));
    let validated = registry::validate_upload(upload, publishers).map_err(registry_error)?;
    let tree = Tree::open(
        dir,
        key.into_secret_key(),
        registry::DEFAULT_INDEX_LIFETIME_SECS,
    )
    .map_err(registry_error)?;
    tree.publish(validated).map_err(registry_error)
}

/// Sends the upload as one multipart `POST <base>/api/v1/publish` and reads
/// the registry's answer: the release (201) or its error.
///
/// The request runs on reqwest's async client on a current-thread runtime:
/// the registry's answer is taken as soon as it comes, even one sent before
/// the whole body was (a 401 or 413 answered from the headers), and a
/// failed connection is reported as such. (reqwest's blocking client, given
/// a streamed body, reports the body's broken channel instead of either.)
fn publish_over_http(
    base: &reqwest::Url,
    token: &str,
    package: &Package,
    checked: Vec<Checked>,
    progress: &Progress,
) -> Result<(Release, String), PublishError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| PublishError::Client(format!("cannot start its runtime: {e}")))?;
    runtime.block_on(send_upload(base, token, package, checked, progress))
}

async fn send_upload(
    base: &reqwest::Url,
    token: &str,
    package: &Package,
    checked: Vec<Checked>,
    progress: &Progress,
) -> Result<(Release, String), PublishError> {
    use reqwest::multipart::{Form, Part};
    use tokio::io::AsyncReadExt as _;
    use tokio_util::io::ReaderStream;

    let url = Registry::endpoint(base);
    let metadata = serde_json::to_string(&registry::api::UploadMetadata {
        description: package.description.clone(),
        keywords: package.keywords.clone(),
    })
    .map_err(|e| PublishError::Client(e.to_string()))?;
    let total: u64 = checked.iter().map(|a| a.size).sum();
    let sent_total = total
        + checked
            .iter()
            .map(|a| a.signature.len() as u64)
            .sum::<u64>()
        + metadata.len() as u64;
    let timeout = upload_timeout(sent_total);

    let mime = |part: Part, mime: &str| {
        part.mime_str(mime)
            .map_err(|e| PublishError::Client(e.to_string()))
    };
    let count = checked.len();
    let artifacts = if count == 1 { "artifact" } else { "artifacts" };
    let bar = progress.bytes(total, &format!("uploading {count} {artifacts}"));
    let mut form = Form::new().part(
        api::PART_METADATA,
        mime(Part::text(metadata), api::CONTENT_TYPE_JSON)?,
    );
    for artifact in checked {
        // The handle the checks read, rewound; never more than was checked.
        let file = tokio::fs::File::from_std(artifact.file).take(artifact.size);
        let body = match &bar {
            Some(bar) => reqwest::Body::wrap_stream(ReaderStream::new(bar.wrap_async_read(file))),
            None => reqwest::Body::wrap_stream(ReaderStream::new(file)),
        };
        let signature_name = format!("{}{}", artifact.file_name, api::SIGNATURE_SUFFIX);
        form = form
            .part(
                api::PART_ARTIFACT,
                mime(
                    Part::stream_with_length(body, artifact.size).file_name(artifact.file_name),
                    api::CONTENT_TYPE_BINARY,
                )?,
            )
            .part(
                api::PART_SIGNATURE,
                mime(
                    Part::text(artifact.signature).file_name(signature_name),
                    api::CONTENT_TYPE_SIGNATURE,
                )?,
            );
    }

    // reqwest's TLS is rustls with ring's provider; installing it again
    // (or after another) is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(timeout)
        .user_agent(concat!("cargo-backworks/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| PublishError::Client(error_chain(&e)))?;
    progress.step(&format!(
        "   Uploading {count} {artifacts} ({}) to {url}",
        indicatif::HumanBytes(total)
    ));
    let network_error = |e: reqwest::Error| {
        if e.is_timeout() {
            PublishError::TimedOut {
                url: url.clone(),
                connect: CONNECT_TIMEOUT.as_secs(),
                total: timeout.as_secs(),
            }
        } else if closed_by_peer(&e) {
            PublishError::ClosedDuringUpload {
                url: url.clone(),
                reason: error_chain(&e.without_url()),
            }
        } else {
            PublishError::Network {
                url: url.clone(),
                reason: error_chain(&e.without_url()),
            }
        }
    };
    let mut response = client
        .post(&url)
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await
        .map_err(network_error)?;
    if let Some(bar) = &bar {
        bar.set_message("waiting for the registry's answer");
    }
    let status = response.status();
    let mut answer = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(network_error)? {
        let room = usize::try_from(MAX_ANSWER_BYTES).unwrap_or(usize::MAX) - answer.len();
        answer.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if answer.len() as u64 >= MAX_ANSWER_BYTES {
            break;
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    if status.as_u16() == api::PUBLISHED {
        let release: Release =
            registry::parse_json(answer.as_bytes()).map_err(|reason| PublishError::BadAnswer {
                url: url.clone(),
                reason,
            })?;
        return Ok((release, answer.trim_end().to_owned()));
    }
    Err(refusal(url, status, &answer))
}

/// The error for a registry's non-201 answer: its `{"error": ...}` message
/// (or the start of its text) with a hint for the usual statuses. The
/// registry's text is escaped ([`escape`]): it is printed, and must not be
/// able to drive the terminal or add lines.
fn refusal(url: String, status: reqwest::StatusCode, answer: &str) -> PublishError {
    let message = serde_json::from_str::<api::ErrorAnswer>(answer)
        .ok()
        .map(|answer| answer.error)
        .unwrap_or_else(|| {
            let text = answer.trim();
            match text.char_indices().nth(300) {
                Some((end, _)) => format!("{}…", &text[..end]),
                None if text.is_empty() => String::from("(the answer has no message)"),
                None => text.to_owned(),
            }
        });
    let message = escape(&message).into_owned();
    let hint = match status.as_u16() {
        401 => "; check the token in BACKWORKS_REGISTRY_TOKEN",
        403 => "; the registry does not accept publishing with this token (ask its operator)",
        409 => "; bump the version in Cargo.toml, rebuild, sign and publish again",
        413 => "; the upload is larger than the registry accepts (its --max-upload)",
        422 => {
            "; the registry checks every artifact and verifies its signature with the publisher keys registered with it"
        }
        _ => "",
    };
    PublishError::Refused {
        url,
        status: status.to_string(),
        message,
        hint,
        code: status.as_u16(),
    }
}

/// Whether the connection broke under an established request: the peer
/// closed or reset it (not a connection that could not be made).
fn closed_by_peer(error: &reqwest::Error) -> bool {
    let mut current: Option<&dyn std::error::Error> = Some(error);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return matches!(
                io.kind(),
                io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::UnexpectedEof
            );
        }
        current = e.source();
    }
    false
}

/// An error and its sources, outermost first, each once.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(error);
    while let Some(e) = current {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_values() {
        assert_eq!(
            Registry::parse("./registry").unwrap(),
            Registry::Directory(PathBuf::from("./registry"))
        );
        assert_eq!(
            Registry::parse("file:///srv/registry").unwrap(),
            Registry::Directory(PathBuf::from("/srv/registry"))
        );
        assert!(matches!(
            Registry::parse("http://127.0.0.1:8080").unwrap(),
            Registry::Http(_)
        ));
        for (value, reason) in [
            ("", "it is empty"),
            (
                "ftp://example.invalid/r",
                "the scheme `ftp` is not supported",
            ),
            ("http://", "empty host"),
        ] {
            match Registry::parse(value) {
                Err(PublishError::InvalidRegistry { reason: found, .. }) => {
                    assert_eq!(found, reason, "{value:?}")
                }
                other => panic!("{value:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_endpoint_is_under_the_base_url() {
        for base in ["http://127.0.0.1:8080", "http://127.0.0.1:8080/"] {
            let url = reqwest::Url::parse(base).unwrap();
            assert_eq!(
                Registry::endpoint(&url),
                "http://127.0.0.1:8080/api/v1/publish"
            );
        }
        let url = reqwest::Url::parse("https://example.invalid/registry/").unwrap();
        assert_eq!(
            Registry::endpoint(&url),
            "https://example.invalid/registry/api/v1/publish"
        );
    }

    #[test]
    fn the_time_limit_grows_with_the_upload() {
        assert_eq!(upload_timeout(0), Duration::from_secs(60));
        assert_eq!(upload_timeout(1), Duration::from_secs(61));
        assert_eq!(upload_timeout(64 << 20), Duration::from_secs(60 + 1024));
    }

    #[test]
    fn refusals_carry_the_registry_message_and_a_hint() {
        let error = refusal(
            String::from("http://r/api/v1/publish"),
            reqwest::StatusCode::CONFLICT,
            r#"{"error": "demo 0.1.0 is already published"}"#,
        );
        assert_eq!(error.exit_code(), 5);
        assert_eq!(
            error.to_string(),
            "the registry at http://r/api/v1/publish refused the upload (409 Conflict): demo 0.1.0 is already published; bump the version in Cargo.toml, rebuild, sign and publish again"
        );
        let error = refusal(
            String::from("u"),
            reqwest::StatusCode::UNPROCESSABLE_ENTITY,
            "not json",
        );
        assert_eq!(error.exit_code(), 1);
        assert!(
            error
                .to_string()
                .contains("(422 Unprocessable Entity): not json;")
        );
        let error = refusal(String::from("u"), reqwest::StatusCode::BAD_GATEWAY, "");
        assert!(
            error
                .to_string()
                .ends_with("(502 Bad Gateway): (the answer has no message)"),
            "{error}"
        );
    }
}
