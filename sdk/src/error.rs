//! The error type plugin hooks return.

/// What a plugin hook returns.
pub type BackworksResult<T> = Result<T, BackworksError>;

/// An error raised by a plugin hook.
///
/// Across the C ABI every variant travels as status code `1`
/// (`BACKWORKS_STATUS_PLUGIN_ERROR`) with the `Display` text as message; the
/// host shows that text to operators, so make it say what failed and why.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackworksError {
    /// The configuration passed to `initialize` is unusable.
    #[error("invalid plugin configuration: {0}")]
    Config(String),
    /// The plugin is not healthy (returned from `health_check`).
    #[error("plugin unhealthy: {0}")]
    Unhealthy(String),
    /// A request could not be handled.
    #[error("{0}")]
    Request(String),
    /// A JSON value could not be read or written.
    #[error("json error: {0}")]
    Json(#[from] serde_json::Error),
    /// An I/O operation failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// Any other failure, with its message.
    #[error("{0}")]
    Other(String),
}

impl BackworksError {
    /// An error with a free-form message.
    pub fn msg(message: impl Into<String>) -> Self {
        Self::Other(message.into())
    }
}
