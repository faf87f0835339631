//! Logging set-up for the `backworks` binary: one global `tracing`
//! subscriber writing to stderr, as human-readable text or JSON lines,
//! filtered by `RUST_LOG` (default `info`).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;

/// The environment variable holding the log filter
/// (`tracing_subscriber::EnvFilter` directives, e.g. `info,backworks_host=debug`).
pub const FILTER_ENV: &str = "RUST_LOG";

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event (colored on a terminal).
    #[default]
    Text,
    /// One JSON object per line, the event's fields at the top level.
    Json,
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// `RUST_LOG` holds a directive that does not parse.
    #[error("invalid {FILTER_ENV} {value:?}: {source}")]
    InvalidFilter {
        /// The variable's value.
        value: String,
        /// What is wrong with it.
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    /// `RUST_LOG` is set but is not valid Unicode.
    #[error("invalid {FILTER_ENV}: not valid unicode")]
    FilterNotUnicode,
    /// A global subscriber is already installed (e.g. `init` was called
    /// before).
    #[error("logging is already initialized: {0}")]
    AlreadyInitialized(String),
}

/// The filter for `value`, the content of `RUST_LOG`: `info` when unset or
/// empty, else its directives, every one of which must parse.
fn filter(value: Option<&str>) -> Result<EnvFilter, TelemetryError> {
    let value = value.unwrap_or_default();
    EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .parse(value)
        .map_err(|source| TelemetryError::InvalidFilter {
            value: value.to_owned(),
            source,
        })
}

/// Installs the global subscriber: events that pass `RUST_LOG`'s filter
/// (default `info`) go to stderr in `format`.
///
/// Fails, without changing anything, if `RUST_LOG` does not parse or if a
/// global subscriber is already installed (so a second call returns
/// [`TelemetryError::AlreadyInitialized`] rather than panicking).
pub fn init(format: LogFormat) -> Result<(), TelemetryError> {
    let value = match std::env::var(FILTER_ENV) {
        Ok(value) => Some(value),
        Err(std::env::VarError::NotPresent) => None,
        Err(std::env::VarError::NotUnicode(_)) => return Err(TelemetryError::FilterNotUnicode),
    };
    let filter = filter(value.as_deref())?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    installed.map_err(|e| TelemetryError::AlreadyInitialized(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_or_empty_filter_means_info() {
        for value in [None, Some("")] {
            assert_eq!(filter(value).unwrap().to_string(), "info", "{value:?}");
        }
    }

    #[test]
    fn directives_are_kept() {
        let filter = filter(Some("warn,backworks_host=debug")).unwrap();
        let text = filter.to_string();
        assert!(text.contains("backworks_host=debug"), "{text}");
        assert!(text.contains("warn"), "{text}");
    }

    #[test]
    fn an_invalid_directive_is_an_error_naming_the_variable() {
        let error = filter(Some("info,backworks_host=loud")).unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with("invalid RUST_LOG \"info,backworks_host=loud\": "),
            "{message}"
        );
    }

    #[test]
    fn log_format_parses_from_the_command_line() {
        use clap::ValueEnum;
        assert_eq!(LogFormat::from_str("json", false), Ok(LogFormat::Json));
        assert_eq!(LogFormat::from_str("text", false), Ok(LogFormat::Text));
        assert!(LogFormat::from_str("yaml", false).is_err());
    }
}
