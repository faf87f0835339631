//! Reading a registry's files: over HTTP(S) (`reqwest`) or from a
//! directory (regular files only, opened without blocking:
//! [`open_regular`]), each transfer bounded in size and in time
//! (`transfer_timeout` and `min_transfer_rate`: [`Pace`], checked as bytes
//! come and when none do).

use super::*;

/// A registry file being read: an HTTP response or a local file.
pub(super) enum Body {
    Http(reqwest::Response),
    File(Opened),
}

/// A regular file of a directory registry, opened by [`open_regular`], and
/// its size when it was opened.
pub(super) struct Opened {
    pub(super) file: tokio::fs::File,
    pub(super) length: u64,
}

/// Opens the registry file `path` (`url` in messages) as the loader opens a
/// plugin ([`crate::loader::open_bounded`]): without blocking
/// (`O_NONBLOCK`: a FIFO with no writer does not hang the open), and only
/// if `fstat` of the opened descriptor says it is a regular file, so what
/// is checked is what is read. Reading it stays bounded by the caller
/// (sizes) and by the transfer's [`Pace`] (time).
pub(super) fn open_regular(path: &Path, url: &str) -> Result<Opened, MarketplaceError> {
    let failed = |e: std::io::Error| MarketplaceError::Fetch {
        url: url.to_owned(),
        reason: e.to_string(),
    };
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    let file = options.open(path).map_err(failed)?;
    let metadata = file.metadata().map_err(failed)?;
    if !metadata.is_file() {
        return Err(MarketplaceError::NotRegular {
            path: path.to_owned(),
            kind: backworks_artifact::file::kind_of(&metadata.file_type()),
        });
    }
    Ok(Opened {
        file: tokio::fs::File::from_std(file),
        length: metadata.len(),
    })
}

impl Body {
    /// The size announced before the first byte: an HTTP answer's
    /// `Content-Length`, a file's size when it was opened. Only for
    /// refusing early; the bytes received are counted all the same.
    pub(super) fn length(&self) -> Option<u64> {
        match self {
            Self::Http(response) => response.content_length(),
            Self::File(opened) => Some(opened.length),
        }
    }

    /// The next chunk, as received (never copied), within the limits of
    /// `pace`.
    pub(super) async fn next_chunk(
        &mut self,
        url: &str,
        pace: &mut Pace,
    ) -> Result<Option<Chunk>, MarketplaceError> {
        let chunk = pace.wait(self.read_chunk(url)).await?;
        let size = chunk.as_ref().map_or(0, |chunk| (**chunk).as_ref().len());
        pace.observe(Instant::now(), size as u64)?;
        Ok(chunk)
    }

    pub(super) async fn read_chunk(
        &mut self,
        url: &str,
    ) -> Result<Option<Chunk>, MarketplaceError> {
        match self {
            Self::Http(response) => response
                .chunk()
                .await
                .map(|chunk| chunk.map(|bytes| -> Chunk { Arc::new(bytes) }))
                .map_err(|e| fetch_error(url, &e)),
            Self::File(opened) => {
                let mut buffer = vec![0; 256 * 1024];
                let read =
                    opened
                        .file
                        .read(&mut buffer)
                        .await
                        .map_err(|e| MarketplaceError::Fetch {
                            url: url.to_owned(),
                            reason: e.to_string(),
                        })?;
                if read == 0 {
                    Ok(None)
                } else {
                    buffer.truncate(read);
                    Ok(Some(Arc::new(buffer)))
                }
            }
        }
    }
}

/// The limits of every transfer from a registry: `marketplace.
/// transfer_timeout` and `min_transfer_rate` (measured over `window`).
#[derive(Debug, Clone, Copy)]
pub(super) struct TransferLimits {
    pub(super) timeout: Duration,
    pub(super) min_rate: u64,
    pub(super) window: Duration,
}

impl TransferLimits {
    /// The pace of a transfer of `url` starting now.
    pub(super) fn start(&self, url: &str) -> Pace {
        Pace::new(url, *self, Instant::now())
    }
}

/// One transfer's progress against its [`TransferLimits`]: an overall
/// deadline, and at least `min_rate` bytes per second over each window.
/// Checked when bytes arrive and, while none do, when the deadline or the
/// window's end comes ([`Pace::wait`]): a registry that drips a byte now
/// and then, keeping every read under the per-read timeout, is given up.
#[derive(Debug)]
pub(super) struct Pace {
    pub(super) url: String,
    pub(super) limits: TransferLimits,
    pub(super) deadline: Instant,
    pub(super) window_start: Instant,
    pub(super) window_bytes: u64,
}

impl Pace {
    pub(super) fn new(url: &str, limits: TransferLimits, now: Instant) -> Self {
        Self {
            url: url.to_owned(),
            limits,
            deadline: now + limits.timeout,
            window_start: now,
            window_bytes: 0,
        }
    }

    /// When the limits are next checked if nothing arrives.
    pub(super) fn next_check(&self) -> Instant {
        self.deadline.min(self.window_start + self.limits.window)
    }

    /// Counts `bytes` received at `now` and checks the limits: an error
    /// once the deadline has passed, or when a whole window went by with
    /// fewer bytes than the minimum rate asks for; each window's count
    /// starts afresh.
    pub(super) fn observe(&mut self, now: Instant, bytes: u64) -> Result<(), MarketplaceError> {
        self.window_bytes = self.window_bytes.saturating_add(bytes);
        if now >= self.deadline {
            return Err(MarketplaceError::TransferTimeout {
                url: self.url.clone(),
                limit: self.limits.timeout,
            });
        }
        let elapsed = now.duration_since(self.window_start);
        if elapsed >= self.limits.window {
            let needed = u128::from(self.limits.min_rate) * elapsed.as_millis() / 1000;
            if u128::from(self.window_bytes) < needed {
                return Err(MarketplaceError::TransferTooSlow {
                    url: self.url.clone(),
                    received: self.window_bytes,
                    window: elapsed,
                    rate: self.limits.min_rate,
                });
            }
            self.window_start = now;
            self.window_bytes = 0;
        }
        Ok(())
    }

    /// Runs `future` (a request or one read) to its end, checking the
    /// limits whenever the deadline or a window's end comes first. The
    /// future is kept and polled on after each check, never cancelled
    /// half-way, unless a limit is hit.
    pub(super) async fn wait<T>(
        &mut self,
        future: impl Future<Output = Result<T, MarketplaceError>>,
    ) -> Result<T, MarketplaceError> {
        let mut future = std::pin::pin!(future);
        loop {
            let check = tokio::time::Instant::from_std(self.next_check());
            match tokio::time::timeout_at(check, future.as_mut()).await {
                Ok(outcome) => return outcome,
                Err(_) => self.observe(Instant::now(), 0)?,
            }
        }
    }
}

/// A duration as a person writes it: `2s`, `1m 30s`, `750ms`.
pub(super) fn humane(duration: Duration) -> String {
    let (secs, millis) = (duration.as_secs(), duration.subsec_millis());
    match (secs, millis) {
        (0, millis) => format!("{millis}ms"),
        (secs, 0) if secs >= 60 && secs % 60 == 0 => format!("{}m", secs / 60),
        (secs, 0) if secs >= 60 => format!("{}m {}s", secs / 60, secs % 60),
        (secs, 0) => format!("{secs}s"),
        (secs, millis) => format!("{secs}.{millis:03}s"),
    }
}

/// The HTTP client: rustls with the ring provider (installed once per
/// process), bounded connect and read times. The system's root certificates
/// are read only for an `https://` registry: reading them costs tens of
/// milliseconds (a third of a 10 MB install from a loopback registry,
/// measured with `cargo bench --bench install`), and a plain `http://`
/// registry never uses them (a redirect to `https://` then fails its
/// certificate check: name the `https://` URL in the config instead).
pub(super) fn http_client(url: &reqwest::Url) -> Result<reqwest::Client, MarketplaceError> {
    // Another part of the process may have installed a provider already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let builder = if url.scheme() == "https" {
        reqwest::Client::builder()
    } else {
        reqwest::Client::builder().tls_certs_only([])
    };
    builder
        .user_agent(concat!("backworks/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| MarketplaceError::Client(error_chain(&e)))
}

pub(super) async fn read_response(
    response: reqwest::Response,
    url: &str,
    limit: u64,
    pace: &mut Pace,
) -> Result<Vec<u8>, MarketplaceError> {
    if !response.status().is_success() {
        return Err(MarketplaceError::Status {
            url: url.to_owned(),
            status: response.status().as_u16(),
        });
    }
    let mut body = Body::Http(response);
    let mut bytes = Vec::new();
    while let Some(chunk) = body.next_chunk(url, pace).await? {
        let chunk = (*chunk).as_ref();
        if (bytes.len() + chunk.len()) as u64 > limit {
            return Err(MarketplaceError::Fetch {
                url: url.to_owned(),
                reason: format!("the answer is larger than {limit} bytes"),
            });
        }
        bytes.extend_from_slice(chunk);
    }
    Ok(bytes)
}

pub(super) fn fetch_error(url: &str, error: &reqwest::Error) -> MarketplaceError {
    MarketplaceError::Fetch {
        url: url.to_owned(),
        reason: error_chain(error),
    }
}

/// An error and its sources, joined: reqwest's own message alone says
/// little ("error sending request").
pub(super) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

impl PluginMarketplace {
    /// Where a tree path is, for messages: a URL or a path.
    pub(super) fn location(&self, tree_path: &str) -> String {
        self.registry.file(tree_path)
    }

    /// Opens a file of the registry for streaming, within the limits of
    /// `pace` (the answer's headers count as part of the transfer; so does
    /// opening a directory registry's file, which must be a regular file:
    /// [`open_regular`]).
    pub(super) async fn open(
        &self,
        tree_path: &str,
        url: &str,
        pace: &mut Pace,
    ) -> Result<Body, MarketplaceError> {
        match (&self.registry, &self.client) {
            (RegistryLocation::Http(base), Some(client)) => {
                let full = base.join(tree_path).map_err(|e| MarketplaceError::Fetch {
                    url: url.to_owned(),
                    reason: e.to_string(),
                })?;
                let response = pace
                    .wait(async {
                        client
                            .get(full)
                            .send()
                            .await
                            .map_err(|e| fetch_error(url, &e))
                    })
                    .await?;
                if !response.status().is_success() {
                    return Err(MarketplaceError::Status {
                        url: url.to_owned(),
                        status: response.status().as_u16(),
                    });
                }
                Ok(Body::Http(response))
            }
            (RegistryLocation::Dir(root), _) => {
                let path = root.join(tree_path);
                let (named, opening) = (url.to_owned(), path);
                let opened = pace
                    .wait(async {
                        tokio::task::spawn_blocking(move || open_regular(&opening, &named))
                            .await
                            .map_err(|e| MarketplaceError::Fetch {
                                url: url.to_owned(),
                                reason: format!("the thread opening it failed: {e}"),
                            })?
                    })
                    .await?;
                Ok(Body::File(opened))
            }
            (RegistryLocation::Http(_), None) => Err(MarketplaceError::Client(String::from(
                "no HTTP client for an HTTP registry",
            ))),
        }
    }

    /// Reads a small file of the registry whole, refusing more than `limit`
    /// bytes.
    pub(super) async fn fetch_small(
        &self,
        tree_path: &str,
        limit: u64,
    ) -> Result<Vec<u8>, MarketplaceError> {
        let url = self.location(tree_path);
        let mut pace = self.limits.start(&url);
        let mut body = self.open(tree_path, &url, &mut pace).await?;
        let too_large = || MarketplaceError::Fetch {
            url: url.clone(),
            reason: format!("it is larger than {limit} bytes, more than expected"),
        };
        if body.length().is_some_and(|length| length > limit) {
            return Err(too_large());
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = body.next_chunk(&url, &mut pace).await? {
            let chunk = (*chunk).as_ref();
            if (bytes.len() + chunk.len()) as u64 > limit {
                return Err(too_large());
            }
            bytes.extend_from_slice(chunk);
        }
        Ok(bytes)
    }
}
