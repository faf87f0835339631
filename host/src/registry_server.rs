//! `backworks marketplace serve` and `backworks marketplace resign`: an HTTP
//! server over a registry tree on disk (the format of
//! [`backworks_registry`], `docs/registry.md`), and the
//! re-signing of its index.
//!
//! The server serves the tree's files as they are (any static file server
//! could; dot-files such as `.lock` and `.staging-*` never), answers
//! `GET /api/v1/search` from the current index held in memory, and accepts
//! `POST /api/v1/publish` (bearer token, size limit): the whole upload is
//! read into memory and validated (`check` and the publisher's signature)
//! before anything is written, then [`Tree::publish`] writes it atomically,
//! so a request or a server killed at any moment leaves the published index
//! as it was or with the whole new version. A background task re-signs the
//! index when less than half of its lifetime is left, so a long-running
//! registry never serves an expired index, and picks up an index that
//! another writer (`resign`, `cargo backworks publish` into the directory)
//! replaced.

use backworks_artifact::write::PathError;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use backworks_artifact::signature::{
    KeyId, PublicKey, SecretKey, SecretKeyError, SecretKeyText, parse_public_key,
};
use backworks_registry::{
    self as registry, INDEX_PATH, Index, RegistryError, Release, Tree, Upload, UploadArtifact, api,
};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use crate::http_serve::ConnectionLimits;

/// The size of each read when streaming a file of the tree.
const STREAM_CHUNK: usize = 256 * 1024;

/// The environment variable holding the publish token.
pub use backworks_registry::api::TOKEN_ENV;

/// The environment variable holding the password of an encrypted registry
/// key.
pub const KEY_PASSWORD_ENV: &str = "BACKWORKS_REGISTRY_KEY_PASSWORD";

/// The default `--max-upload`: 64 MiB.
pub const DEFAULT_MAX_UPLOAD: u64 = 64 * 1024 * 1024;

/// How long shutdown lets open connections (a download, an upload) finish
/// before closing them.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Search results per page unless the query says otherwise.
pub const DEFAULT_PER_PAGE: usize = 20;

/// The most search results one page may hold.
pub const MAX_PER_PAGE: usize = 100;

/// How `backworks marketplace serve` runs.
#[derive(Debug)]
pub struct ServeOptions {
    /// The registry tree (created if missing).
    pub dir: PathBuf,
    /// The registry's secret key (decrypted).
    pub key: SecretKey,
    /// The keys whose signatures publishing accepts.
    pub publisher_keys: Vec<PublicKey>,
    /// Where to listen (port 0: any free port).
    pub listen: SocketAddr,
    /// The largest publish request body, in bytes.
    pub max_upload: u64,
    /// How many publish requests are read at once (each may hold up to
    /// `max_upload` bytes in memory); more are answered 503.
    pub max_concurrent_uploads: usize,
    /// How long each signed index stays valid, in seconds.
    pub index_lifetime: u64,
    /// The publish token; `None` disables publishing.
    pub token: Option<Token>,
    /// Header and idle timeouts and the connection cap
    /// (`--header-timeout`, `--idle-timeout`, `--max-connections`).
    pub limits: ConnectionLimits,
}

/// A publish token. Its `Debug` never shows it.
#[derive(Clone)]
pub struct Token(String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// Whether `offered` is this token, compared in constant time (over
    /// sha256 digests, so neither content nor length leaks through timing).
    pub fn matches(&self, offered: &str) -> bool {
        let expected = Sha256::digest(self.0.as_bytes());
        let offered = Sha256::digest(offered.as_bytes());
        expected.ct_eq(&offered).into()
    }
}

/// Why the marketplace server or `resign` could not start or run. Every
/// variant is a configuration or I/O problem (exit code 2).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MarketplaceError {
    /// The registry key file could not be read.
    #[error("cannot read the registry key {}: {source}", path.display())]
    ReadKey {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The registry key file is not a usable minisign secret key.
    #[error(
        "{} is not a usable registry key: {source}; give the minisign secret key file of the registry (`cargo backworks keygen` or `minisign -G`), with its password in {KEY_PASSWORD_ENV} when it is password-protected",
        path.display()
    )]
    InvalidKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: SecretKeyError,
    },
    /// A `--publisher-key` is neither a readable `.pub` file nor a key.
    #[error(
        "--publisher-key {arg:?}: {reason}; give a .pub file or the key in base64 (56 characters starting with `RW`)"
    )]
    PublisherKey {
        /// The argument.
        arg: String,
        /// What is wrong.
        reason: String,
    },
    /// Two `--publisher-key`s have one key id: a signature names its key
    /// by id only, so only the first would ever be tried.
    #[error(
        "key id {id} (--publisher-key {second:?}) is also the key id of --publisher-key {first:?}: {problem}"
    )]
    DuplicatePublisherKeyId {
        /// The key id both have.
        id: KeyId,
        /// The first argument with it (a `.pub` file or the key).
        first: String,
        /// The later argument with it.
        second: String,
        /// What is wrong and the fix: the same key twice, or two keys.
        problem: &'static str,
    },
    /// Publishing is enabled but no publisher is registered.
    #[error(
        "a publish token is set but no --publisher-key is given: every upload would be refused; register the publishers' public keys with --publisher-key (or unset {TOKEN_ENV} to serve read-only)"
    )]
    NoPublisherKeys,
    /// The token file could not be read.
    #[error("cannot read the token file {}: {source}", path.display())]
    ReadToken {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The token is empty.
    #[error("the publish token from {origin} is empty; put a long random secret there")]
    EmptyToken {
        /// `$BACKWORKS_REGISTRY_TOKEN` or the file.
        origin: String,
    },
    /// `resign` was pointed at a directory that does not exist.
    #[error(
        "{} is not a directory: give the registry's directory (`backworks marketplace serve --dir` creates one)",
        path.display()
    )]
    NoRegistry {
        /// The path given.
        path: PathBuf,
    },
    /// The registry tree could not be opened, read or signed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The server failed while running.
    #[error("marketplace server error: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads the registry's secret key from `path`: a minisign secret key file
/// (or only its key line). An encrypted key is decrypted with the password
/// in [`KEY_PASSWORD_ENV`].
pub fn load_registry_key(path: &Path) -> Result<SecretKey, MarketplaceError> {
    let invalid = |source| MarketplaceError::InvalidKey {
        path: path.to_owned(),
        source,
    };
    let bytes = std::fs::read(path).map_err(|source| MarketplaceError::ReadKey {
        path: path.to_owned(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|_| {
        invalid(SecretKeyError::Invalid {
            reason: String::from("it is not text"),
        })
    })?;
    let parsed = SecretKeyText::parse(&text).map_err(invalid)?;
    let password = if parsed.is_encrypted() {
        match std::env::var(KEY_PASSWORD_ENV) {
            Ok(password) => Some(password),
            Err(_) => return Err(invalid(SecretKeyError::PasswordRequired)),
        }
    } else {
        None
    };
    parsed.open(password).map_err(invalid)
}

/// Reads each `--publisher-key`: a `.pub` file when a file of that name
/// exists, otherwise the key itself in base64. Two keys with one key id
/// are refused, naming both (as the host's `trusted_keys` are): a
/// signature names its key by id only, so uploads signed with the second
/// would be refused as altered.
pub fn load_publisher_keys(args: &[String]) -> Result<Vec<PublicKey>, MarketplaceError> {
    let keys = args
        .iter()
        .map(|arg| {
            let error = |reason: String| MarketplaceError::PublisherKey {
                arg: arg.clone(),
                reason,
            };
            let path = Path::new(arg);
            let text = if path.is_file() {
                std::fs::read_to_string(path).map_err(|e| error(format!("cannot read it: {e}")))?
            } else {
                arg.clone()
            };
            parse_public_key(&text).map_err(|e| {
                if path.is_file() {
                    error(e.to_string())
                } else {
                    error(format!("no such file, and {e}"))
                }
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    for (i, key) in keys.iter().enumerate() {
        let id = KeyId::of_public_key(key);
        let Some(first) = keys[..i]
            .iter()
            .position(|earlier| KeyId::of_public_key(earlier) == id)
        else {
            continue;
        };
        let problem = if keys[first].to_base64() == key.to_base64() {
            "the same key is given twice; remove one of the two"
        } else {
            "they are two different keys with the same id, and a signature names its key by id only, so uploads signed with the second would be refused as altered; keep the one the publisher signs with (compare with its .pub file) and remove the other"
        };
        return Err(MarketplaceError::DuplicatePublisherKeyId {
            id,
            first: args[first].clone(),
            second: args[i].clone(),
            problem,
        });
    }
    Ok(keys)
}

/// The publish token: the contents of `token_file` (trimmed) when given,
/// else [`TOKEN_ENV`]; `None` when neither is set (publishing disabled).
pub fn load_token(token_file: Option<&Path>) -> Result<Option<Token>, MarketplaceError> {
    let (token, origin) = match token_file {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|source| MarketplaceError::ReadToken {
                    path: path.to_owned(),
                    source,
                })?;
            (text.trim().to_owned(), path.display().to_string())
        }
        None => match std::env::var(TOKEN_ENV) {
            Ok(token) => (token, format!("${TOKEN_ENV}")),
            Err(_) => return Ok(None),
        },
    };
    if token.is_empty() {
        return Err(MarketplaceError::EmptyToken { origin });
    }
    Ok(Some(Token(token)))
}

/// Parses an index lifetime: a whole number and a unit, `s`, `m`, `h` or
/// `d`, e.g. `30d`; at least 2 seconds, so the index can be re-signed
/// before it expires.
pub fn parse_lifetime(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits = text.len() - text.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let (number, unit) = text.split_at(digits);
    let bad = || {
        format!(
            "{text:?} is not a lifetime; write a whole number and a unit, `s`, `m`, `h` or `d`, like \"30d\""
        )
    };
    let number: u64 = number.parse().map_err(|_| bad())?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 24 * 3600,
        _ => return Err(bad()),
    };
    let seconds = number
        .checked_mul(scale)
        .ok_or_else(|| format!("{text:?} is too long"))?;
    if seconds < 2 {
        return Err(format!(
            "{text:?} is too short; an index must live at least 2 seconds"
        ));
    }
    Ok(seconds)
}

/// `backworks marketplace resign`: re-signs the index of the registry in
/// `dir` with serial + 1 and a fresh expiry (`lifetime` seconds). Returns
/// the new index.
pub fn resign(dir: &Path, key: SecretKey, lifetime: u64) -> Result<Index, MarketplaceError> {
    if !dir.is_dir() {
        return Err(MarketplaceError::NoRegistry {
            path: dir.to_owned(),
        });
    }
    let tree = Tree::open(dir, key, lifetime)?;
    Ok(tree.resign()?)
}

/// The index served to searches, replaced whole when a newer one is signed.
#[derive(Debug)]
struct CurrentIndex {
    index: RwLock<Arc<Index>>,
}

impl CurrentIndex {
    fn get(&self) -> Arc<Index> {
        Arc::clone(&self.index.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Installs `index` unless the current one is as new or newer (two
    /// publishes may reload in the other order than they committed).
    fn offer(&self, index: Index) {
        let mut current = self.index.write().unwrap_or_else(|e| e.into_inner());
        if index.serial > current.serial {
            *current = Arc::new(index);
        }
    }
}

#[derive(Clone, Debug)]
struct AppState {
    tree: Arc<Tree>,
    root: Arc<PathBuf>,
    index: Arc<CurrentIndex>,
    publishers: Arc<[PublicKey]>,
    token: Option<Token>,
    max_upload: u64,
    /// One permit per upload being read (`max_concurrent_uploads`).
    uploads: Arc<Semaphore>,
}

/// Runs the marketplace server until `shutdown` resolves: binds
/// `options.listen`, calls `on_bound` with the bound address, then serves
/// the tree. An empty directory gets a signed empty index (serial 1) first.
pub async fn serve(
    options: ServeOptions,
    on_bound: impl FnOnce(SocketAddr),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), MarketplaceError> {
    if options.token.is_some() && options.publisher_keys.is_empty() {
        return Err(MarketplaceError::NoPublisherKeys);
    }
    let lifetime = options.index_lifetime;
    let tree = Arc::new(Tree::open(&options.dir, options.key, lifetime)?);
    let mut index = blocking(&tree, Tree::index).await?;
    if index.serial == 0 {
        index = blocking(&tree, Tree::resign).await?;
        tracing::info!(dir = %tree.root().display(), "new registry: signed an empty index");
    }
    let root = tokio::fs::canonicalize(tree.root()).await?;
    let registry_key = KeyId::of_public_key(tree.public_key());
    tracing::info!(
        dir = %root.display(),
        %registry_key,
        serial = index.serial,
        plugins = index.plugins.len(),
        publishing = options.token.is_some(),
        "registry opened"
    );
    if options.token.is_none() {
        tracing::warn!("no publish token ({TOKEN_ENV} or --token-file): publishing is disabled");
    }
    let current = Arc::new(CurrentIndex {
        index: RwLock::new(Arc::new(index)),
    });
    let state = AppState {
        tree: Arc::clone(&tree),
        root: Arc::new(root),
        index: Arc::clone(&current),
        publishers: options.publisher_keys.into(),
        token: options.token,
        max_upload: options.max_upload,
        uploads: Arc::new(Semaphore::new(options.max_concurrent_uploads.max(1))),
    };
    let app = Router::new()
        .route(&api::route(api::SEARCH_PATH), get(search))
        // The publish handler bounds its body itself (`limited`).
        .route(
            &api::route(api::PUBLISH_PATH),
            post(publish).layer(DefaultBodyLimit::disable()),
        )
        .route("/{*path}", get(static_file))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state);
    let addr = options.listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| MarketplaceError::Bind { addr, source })?;
    on_bound(listener.local_addr()?);
    let keeper = tokio::spawn(keep_index_fresh(tree, current, lifetime));
    // No Nagle: a file's headers and its first body bytes are separate
    // writes, and the second waited for the client's delayed ACK (40 ms a
    // download on loopback, measured with `cargo bench --bench install`).
    let settings = crate::http_serve::ServeSettings {
        limits: options.limits,
        nodelay: true,
        drain: DRAIN_TIMEOUT,
    };
    crate::http_serve::serve(listener, app, settings, shutdown).await;
    keeper.abort();
    tracing::info!("marketplace server stopped");
    Ok(())
}

/// Runs `f` on the tree on a blocking thread (tree operations read, hash,
/// sign and sync files).
async fn blocking<T: Send + 'static>(
    tree: &Arc<Tree>,
    f: impl FnOnce(&Tree) -> Result<T, RegistryError> + Send + 'static,
) -> Result<T, RegistryError> {
    let tree = Arc::clone(tree);
    tokio::task::spawn_blocking(move || f(&tree))
        .await
        .unwrap_or_else(|e| {
            Err(RegistryError::Io(PathError::new(
                "run a registry task on",
                PathBuf::from(INDEX_PATH),
                std::io::Error::other(e.to_string()),
            )))
        })
}

/// How often the background task looks at the index: an eighth of its
/// lifetime, between 1 s and 60 s.
fn refresh_period(lifetime: u64) -> Duration {
    Duration::from_secs((lifetime / 8).clamp(1, 60))
}

/// Whether an index must be re-signed at `now`: less than half of its
/// lifetime (`expires - issued`) is left.
fn needs_resign(index: &Index, now: u64) -> bool {
    let lifetime = index.expires.saturating_sub(index.issued);
    index.expires.saturating_sub(now) < lifetime.div_ceil(2)
}

/// The background task: picks up an `index.json` another writer replaced,
/// and re-signs the index when less than half of its lifetime is left.
async fn keep_index_fresh(tree: Arc<Tree>, current: Arc<CurrentIndex>, lifetime: u64) {
    let mut ticks = tokio::time::interval(refresh_period(lifetime));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let index_path = tree.root().join(INDEX_PATH);
    let mut seen: Option<(SystemTime, u64)> = None;
    loop {
        ticks.tick().await;
        let stamp = tokio::fs::metadata(&index_path)
            .await
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())));
        if stamp.is_some() && stamp != seen {
            match blocking(&tree, Tree::index).await {
                Ok(index) => current.offer(index),
                Err(error) => tracing::error!("cannot reload the index: {error}"),
            }
            seen = stamp;
        }
        if needs_resign(&current.get(), registry::now()) {
            match blocking(&tree, Tree::resign).await {
                Ok(index) => {
                    tracing::info!(
                        serial = index.serial,
                        expires = index.expires,
                        "index re-signed before expiry"
                    );
                    current.offer(index);
                }
                Err(error) => tracing::error!("cannot re-sign the index: {error}"),
            }
        }
    }
}

/// A JSON error answer: `{"error": message}`.
fn error(status: StatusCode, message: impl fmt::Display) -> Response {
    let answer = api::ErrorAnswer {
        error: message.to_string(),
    };
    (status, axum::Json(answer)).into_response()
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such file in this registry")
}

async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "method not allowed: the tree and {} are read with GET, {} takes POST",
            api::route(api::SEARCH_PATH),
            api::route(api::PUBLISH_PATH)
        ),
    )
}

/// `GET /api/v1/search?q=&page=&per_page=`: one page of
/// [`registry::search`] over the current index.
async fn search(
    State(state): State<AppState>,
    query: Result<Query<api::SearchParams>, QueryRejection>,
) -> Response {
    let Query(query) = match query {
        Ok(query) => query,
        Err(rejection) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "{}; the parameters are q (text), page (from 1) and per_page (1 to {MAX_PER_PAGE})",
                    rejection.body_text().to_lowercase()
                ),
            );
        }
    };
    let page = query.page.unwrap_or(1);
    let per_page = query.per_page.unwrap_or(DEFAULT_PER_PAGE);
    if page == 0 {
        return error(StatusCode::BAD_REQUEST, "page must be 1 or more");
    }
    if !(1..=MAX_PER_PAGE).contains(&per_page) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("per_page must be 1 to {MAX_PER_PAGE}, not {per_page}"),
        );
    }
    let index = state.index.get();
    match tokio::task::spawn_blocking(move || registry::search(&index, &query.q, page, per_page))
        .await
    {
        Ok(results) => axum::Json(results).into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("search failed: {e}"),
        ),
    }
}

/// `GET /<tree path>`: a file of the tree, streamed from disk. Dot
/// components (`.lock`, `.staging-*`, `..`), empty components and anything
/// that resolves outside the root are not found.
async fn static_file(
    State(state): State<AppState>,
    path: Result<axum::extract::Path<String>, PathRejection>,
) -> Response {
    let Ok(axum::extract::Path(path)) = path else {
        return not_found().await;
    };
    let Some(relative) = tree_path(&path) else {
        return not_found().await;
    };
    let full = state.root.join(&relative);
    // A symbolic link may point outside the tree: resolve, then check.
    let Ok(resolved) = tokio::fs::canonicalize(&full).await else {
        return not_found().await;
    };
    if !resolved.starts_with(state.root.as_path()) {
        return not_found().await;
    }
    let file = match tokio::fs::File::open(&resolved).await {
        Ok(file) => file,
        Err(_) => return not_found().await,
    };
    let metadata = match file.metadata().await {
        Ok(metadata) if metadata.is_file() => metadata,
        _ => return not_found().await,
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(api::content_type_of(&path)),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(metadata.len()));
    // The index changes; everything else in the tree is immutable once
    // published.
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if relative == Path::new(INDEX_PATH) {
            "no-cache"
        } else {
            "public, max-age=31536000, immutable"
        }),
    );
    // 256 KiB reads: the default 4 KiB made a 10 MB download 2 560 reads
    // and body frames (measured: 108 ms on loopback, against 10 ms).
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
        file,
        STREAM_CHUNK,
    ));
    (headers, body).into_response()
}

/// The relative path a request path names in the tree, or `None` when it
/// has an empty, `.`-leading (dot-files, `..`) or otherwise unsafe
/// component.
fn tree_path(path: &str) -> Option<PathBuf> {
    let mut relative = PathBuf::new();
    for component in path.split('/') {
        if component.is_empty()
            || component.starts_with('.')
            || component.contains(['\\', '\0', ':'])
        {
            return None;
        }
        relative.push(component);
    }
    let normal = relative
        .components()
        .all(|c| matches!(c, Component::Normal(_)));
    (normal && relative.components().next().is_some()).then_some(relative)
}

/// Why an upload was refused, as an HTTP answer.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, message: impl fmt::Display) -> Self {
        Self {
            status,
            message: message.to_string(),
        }
    }

    fn invalid(message: impl fmt::Display) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }
}

impl From<RegistryError> for Refusal {
    fn from(e: RegistryError) -> Self {
        let status = match &e {
            RegistryError::AlreadyPublished { .. } | RegistryError::VersionCaseCollision { .. } => {
                StatusCode::CONFLICT
            }
            RegistryError::NoArtifacts
            | RegistryError::InvalidArtifact { .. }
            | RegistryError::InvalidFileName { .. }
            | RegistryError::MissingSignature { .. }
            | RegistryError::OrphanSignature { .. }
            | RegistryError::Signature { .. }
            | RegistryError::Inconsistent { .. }
            | RegistryError::InvalidName { .. }
            | RegistryError::ReservedName { .. }
            | RegistryError::InvalidTarget { .. }
            | RegistryError::UnsafePath { .. }
            | RegistryError::InvalidListing { .. }
            | RegistryError::DependencyList { .. }
            | RegistryError::InvalidVersion { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, e)
    }
}

/// `POST /api/v1/publish`: token, then the whole multipart body, then
/// validation, then the atomic write; 201 with the release.
async fn publish(State(state): State<AppState>, request: Request) -> Response {
    match publish_upload(&state, request).await {
        Ok(release) => (
            StatusCode::from_u16(api::PUBLISHED).unwrap_or(StatusCode::CREATED),
            axum::Json(release),
        )
            .into_response(),
        Err(refusal) => {
            let mut response = error(refusal.status, &refusal.message);
            if refusal.status == StatusCode::UNAUTHORIZED {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(api::AUTH_SCHEME),
                );
            }
            if refusal.status == StatusCode::SERVICE_UNAVAILABLE {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            if refusal.status.is_server_error() {
                tracing::error!("publish failed: {}", refusal.message);
            } else {
                tracing::warn!(
                    status = refusal.status.as_u16(),
                    "publish refused: {}",
                    refusal.message
                );
            }
            response
        }
    }
}

/// How long a refused upload's body is read and discarded at most.
const DRAIN_TIME: Duration = Duration::from_secs(30);

/// The most of an unauthenticated request's body read and discarded, after
/// its answer went out (see [`refuse_unauthenticated`]).
const UNAUTHENTICATED_DRAIN: u64 = 4 * 1024 * 1024;

/// How many unauthenticated bodies are discarded at once, in the whole
/// process; beyond that, their connections are closed at once.
static UNAUTHENTICATED_DRAINS: Semaphore = Semaphore::const_new(8);

/// Refuses a request that failed [`authorize`] without reading its body
/// first and without an upload slot: the answer is sent at once. What the
/// client sends meanwhile is discarded on a task of its own, at most
/// [`UNAUTHENTICATED_DRAIN`] bytes (and none when the declared length is
/// larger) for at most [`DRAIN_TIME`], a few such tasks at a time, so a
/// client that writes its whole (small) body before it reads still gets
/// the answer; any other connection is closed after the answer.
fn refuse_unauthenticated(body: Body, declared: Option<u64>) {
    if declared.is_some_and(|length| length > UNAUTHENTICATED_DRAIN) {
        return;
    }
    let Ok(permit) = UNAUTHENTICATED_DRAINS.try_acquire() else {
        return;
    };
    tokio::spawn(async move {
        let _permit = permit;
        drain(&mut body.into_data_stream(), UNAUTHENTICATED_DRAIN).await;
    });
}

/// Reads and discards what is left of a refused request's body, at most
/// `bound` bytes and [`DRAIN_TIME`]: a client that sends its whole body
/// before it reads the answer (as blocking HTTP clients do) then gets the
/// answer instead of a reset connection. A longer body is cut off.
async fn drain(stream: &mut axum::body::BodyDataStream, bound: u64) {
    let discard = async {
        let mut seen = 0u64;
        while let Some(Ok(chunk)) = stream.next().await {
            seen += chunk.len() as u64;
            if seen > bound {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, discard).await;
}

/// `body` as a stream that fails once more than `limit` bytes came,
/// setting `too_large` and first draining up to `limit` more bytes (see
/// [`drain`]).
fn limited(
    body: Body,
    limit: u64,
    too_large: Arc<AtomicBool>,
) -> impl futures_util::Stream<Item = Result<axum::body::Bytes, std::io::Error>> + Send {
    futures_util::stream::unfold(
        (body.into_data_stream(), 0u64, false),
        move |(mut stream, seen, done)| {
            let too_large = Arc::clone(&too_large);
            async move {
                if done {
                    return None;
                }
                match stream.next().await? {
                    Ok(chunk) => {
                        let seen = seen + chunk.len() as u64;
                        if seen > limit {
                            too_large.store(true, Ordering::SeqCst);
                            drain(&mut stream, limit).await;
                            let error = std::io::Error::other("the upload is too large");
                            Some((Err(error), (stream, seen, true)))
                        } else {
                            Some((Ok(chunk), (stream, seen, false)))
                        }
                    }
                    Err(e) => Some((Err(std::io::Error::other(e)), (stream, seen, true))),
                }
            }
        },
    )
}

async fn publish_upload(state: &AppState, request: Request) -> Result<Release, Refusal> {
    let (parts, body) = request.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let limit = state.max_upload;
    if let Err(refusal) = authorize(state.token.as_ref(), &parts.headers) {
        refuse_unauthenticated(body, declared);
        return Err(refusal);
    }
    if let Some(length) = declared
        && length > limit
    {
        if length <= limit.saturating_mul(2) {
            drain(&mut body.into_data_stream(), length).await;
        }
        return Err(too_large(limit));
    }
    // Held until the upload is published or refused: bounds the memory
    // uploads hold to `max_concurrent_uploads` times `max_upload`.
    let Ok(_slot) = Arc::clone(&state.uploads).try_acquire_owned() else {
        // Drained (not kept) so the client reads the reason.
        drain(&mut body.into_data_stream(), limit).await;
        return Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the registry is reading as many uploads as it allows at once (--max-concurrent-uploads); publish again in a few seconds",
        ));
    };
    let too_large_seen = Arc::new(AtomicBool::new(false));
    let body = Body::from_stream(limited(body, limit, Arc::clone(&too_large_seen)));
    let mut multipart = Multipart::from_request(Request::from_parts(parts, body), &())
        .await
        .map_err(|rejection| {
            Refusal::new(
                rejection.status(),
                format!(
                    "the upload is not multipart/form-data: {}",
                    rejection.body_text().to_lowercase()
                ),
            )
        })?;
    let upload = read_upload(&mut multipart, limit, &too_large_seen).await?;
    let publishers = Arc::clone(&state.publishers);
    let tree = Arc::clone(&state.tree);
    let release = tokio::task::spawn_blocking(move || {
        let validated = registry::validate_upload(upload, &publishers)?;
        tree.publish(validated)
    })
    .await
    .map_err(|e| {
        Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the publishing task failed: {e}"),
        )
    })??;
    match blocking(&state.tree, Tree::index).await {
        Ok(index) => state.index.offer(index),
        Err(error) => tracing::error!("published, but cannot reload the index: {error}"),
    }
    tracing::info!(
        name = %release.name,
        version = %release.version,
        targets = %release.targets.keys().cloned().collect::<Vec<_>>().join(","),
        publisher = %release.publisher,
        "published"
    );
    Ok(release)
}

/// Checks the bearer token: 403 when publishing is disabled, 401 when the
/// token is missing or wrong.
fn authorize(token: Option<&Token>, headers: &HeaderMap) -> Result<(), Refusal> {
    let Some(token) = token else {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            format!(
                "publishing is disabled on this registry: its server was started without a publish token ({TOKEN_ENV} or --token-file)"
            ),
        ));
    };
    let offered = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix(api::AUTH_SCHEME)?.strip_prefix(' '))
        .ok_or_else(|| {
            Refusal::new(
                StatusCode::UNAUTHORIZED,
                format!(
                    "missing publish token: send `Authorization: Bearer <token>` (cargo backworks publish reads it from {TOKEN_ENV})"
                ),
            )
        })?;
    if token.matches(offered.trim()) {
        Ok(())
    } else {
        Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "wrong publish token: check the token the registry was started with",
        ))
    }
}

fn too_large(limit: u64) -> Refusal {
    Refusal::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the upload is larger than this registry's limit of {limit} bytes (--max-upload)"),
    )
}

/// Reads every part of the upload into memory (bounded by the body limit):
/// `metadata`, `artifact` parts and their `signature` parts, paired by
/// file name.
async fn read_upload(
    multipart: &mut Multipart,
    limit: u64,
    too_large_seen: &AtomicBool,
) -> Result<Upload, Refusal> {
    let read_error = |e: axum::extract::multipart::MultipartError| {
        if too_large_seen.load(Ordering::SeqCst) {
            too_large(limit)
        } else {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                format!("cannot read the upload: {}", e.body_text().to_lowercase()),
            )
        }
    };
    let mut metadata: Option<api::UploadMetadata> = None;
    let mut artifacts: Vec<(String, Vec<u8>)> = Vec::new();
    let mut signatures: Vec<(String, String)> = Vec::new();
    while let Some(field) = multipart.next_field().await.map_err(read_error)? {
        let name = field.name().unwrap_or_default().to_owned();
        let file_name = field.file_name().map(str::to_owned);
        match name.as_str() {
            api::PART_METADATA => {
                let bytes = field.bytes().await.map_err(read_error)?;
                if metadata.is_some() {
                    return Err(Refusal::invalid(format!(
                        "the upload has two `{}` parts",
                        api::PART_METADATA
                    )));
                }
                metadata = Some(serde_json::from_slice(&bytes).map_err(|e| {
                    Refusal::invalid(format!(
                        "the `{}` part is not JSON {{\"description\": \"...\", \"keywords\": [\"...\"]}}: {e}",
                        api::PART_METADATA
                    ))
                })?);
            }
            api::PART_ARTIFACT | api::PART_SIGNATURE => {
                let Some(file_name) = file_name.filter(|f| !f.is_empty()) else {
                    return Err(Refusal::invalid(format!(
                        "an `{name}` part has no file name; give each part the file's name"
                    )));
                };
                let bytes = field.bytes().await.map_err(read_error)?;
                if artifacts.iter().any(|(f, _)| *f == file_name)
                    || signatures.iter().any(|(f, _)| *f == file_name)
                {
                    return Err(Refusal::invalid(format!(
                        "the upload has two parts named {file_name:?}"
                    )));
                }
                if name == api::PART_ARTIFACT {
                    artifacts.push((file_name, bytes.to_vec()));
                } else {
                    let text = String::from_utf8(bytes.to_vec()).map_err(|_| {
                        Refusal::invalid(format!("signature {file_name} is not text"))
                    })?;
                    signatures.push((file_name, text));
                }
            }
            other => {
                return Err(Refusal::invalid(format!(
                    "unknown part {other:?}: the parts are `{}`, `{}` and `{}`",
                    api::PART_METADATA,
                    api::PART_ARTIFACT,
                    api::PART_SIGNATURE
                )));
            }
        }
    }
    let metadata = metadata.unwrap_or_default();
    let mut upload = Upload {
        description: metadata.description,
        keywords: metadata.keywords,
        artifacts: Vec::new(),
    };
    for (file_name, bytes) in artifacts {
        let wanted = format!("{file_name}{}", api::SIGNATURE_SUFFIX);
        let Some(position) = signatures.iter().position(|(f, _)| *f == wanted) else {
            return Err(RegistryError::MissingSignature { file: file_name }.into());
        };
        let (_, signature) = signatures.swap_remove(position);
        upload.artifacts.push(UploadArtifact {
            file_name,
            bytes,
            signature,
        });
    }
    if let Some((file, _)) = signatures.into_iter().next() {
        return Err(RegistryError::OrphanSignature { file }.into());
    }
    Ok(upload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publisher_keys_with_one_key_id_are_refused_naming_both() {
        let dir = tempfile::tempdir().unwrap();
        let pair = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
        // Another key with the same key id (bytes 2..10 of a public key).
        let mut bytes = minisign::KeyPair::generate_unencrypted_keypair()
            .unwrap()
            .pk
            .to_bytes();
        bytes[2..10].copy_from_slice(pair.pk.keynum());
        let impostor = minisign::PublicKey::from_bytes(&bytes).unwrap();
        let file = dir.path().join("release.pub");
        std::fs::write(&file, pair.pk.to_box().unwrap().into_string()).unwrap();
        let file = file.to_str().unwrap().to_owned();
        let id = KeyId::of_public_key(&pair.pk).to_string();
        let other = minisign::KeyPair::generate_unencrypted_keypair()
            .unwrap()
            .pk
            .to_base64();
        for (second, problem) in [
            (impostor.to_base64(), "two different keys with the same id"),
            (pair.pk.to_base64(), "the same key is given twice"),
        ] {
            let args = [file.clone(), other.clone(), second.clone()];
            let error = load_publisher_keys(&args).unwrap_err();
            assert!(
                matches!(error, MarketplaceError::DuplicatePublisherKeyId { .. }),
                "{error}"
            );
            let message = error.to_string();
            for needle in [id.clone(), format!("{file:?}"), format!("{second:?}")] {
                assert!(message.contains(&needle), "{needle}: {message}");
            }
            assert!(message.contains(problem), "{message}");
        }
        // Keys with distinct ids load, in order.
        let keys = load_publisher_keys(&[file, other]).unwrap();
        assert_eq!(keys.len(), 2);
    }

    #[test]
    fn lifetimes() {
        assert_eq!(parse_lifetime("30d"), Ok(30 * 24 * 3600));
        assert_eq!(parse_lifetime("4s"), Ok(4));
        assert_eq!(parse_lifetime("2h"), Ok(7200));
        for bad in ["", "30", "1s", "0d", "5w", "99999999999999999999d"] {
            assert!(parse_lifetime(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tree_paths_refuse_dot_and_empty_components() {
        assert_eq!(tree_path("index.json"), Some(PathBuf::from("index.json")));
        assert_eq!(
            tree_path("plugins/weather/1.0.0+b.1/release.json"),
            Some(PathBuf::from("plugins/weather/1.0.0+b.1/release.json"))
        );
        for bad in [
            "",
            ".lock",
            "../x",
            "plugins/../index.json",
            "plugins/./x",
            ".staging-abc/release.json",
            "plugins//x",
            "/etc/passwd",
            "plugins\\..\\x",
            "c:/x",
        ] {
            assert_eq!(tree_path(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn an_index_is_resigned_when_half_its_life_is_gone() {
        let mut index = Index::empty();
        index.issued = 1000;
        index.expires = 1100;
        assert!(!needs_resign(&index, 1000));
        assert!(!needs_resign(&index, 1049));
        assert!(needs_resign(&index, 1051));
        assert!(needs_resign(&index, 2000));
        assert_eq!(refresh_period(4), Duration::from_secs(1));
        assert_eq!(refresh_period(30 * 24 * 3600), Duration::from_secs(60));
    }

    #[test]
    fn tokens_match_only_themselves() {
        let token = Token(String::from("s3cret"));
        assert!(token.matches("s3cret"));
        assert!(!token.matches("s3cre"));
        assert!(!token.matches("s3cret "));
        assert!(!token.matches(""));
        assert_eq!(format!("{token:?}"), "Token(..)");
    }
}
