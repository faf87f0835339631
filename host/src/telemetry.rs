//! Logging set-up for the `backworks` binary: one global `tracing`
//! subscriber writing to stderr, as human-readable text or JSON lines,
//! filtered by `RUST_LOG` (default `info`).
//!
//! Log lines quote what registries, plugins and files said (an update
//! check's refusal, a plugin's error message, a path): in the text format
//! every field and message is escaped by the formatter (`EscapedFields`,
//! `report::escape`), so no event can break its line (CR, LF), forge
//! another one or drive the terminal (ESC, C1, bidirectional controls),
//! whichever call site logged it. The JSON format is escaped by its
//! encoder (every character below U+0020 as `\uXXXX`).
//!
//! Lines go out through [`crate::log_output`]: `info` and below batched by
//! a background thread, `warn` and `error` at once. [`init`] returns a
//! [`LogGuard`]: keep it until the process ends; dropping it writes what is
//! still batched.

use std::fmt::{self, Write as _};
use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};
use tracing_subscriber::util::SubscriberInitExt;

use crate::report::escape;

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

impl LogFormat {
    /// The name `--log-format` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
        }
    }
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
/// (default `info`) go to stderr in `format`. Keep the returned guard until
/// the process ends (see [`LogGuard`]).
///
/// Fails, without changing anything, if `RUST_LOG` does not parse or if a
/// global subscriber is already installed (so a second call returns
/// [`TelemetryError::AlreadyInitialized`] rather than panicking).
pub fn init(format: LogFormat) -> Result<LogGuard, TelemetryError> {
    let value = match std::env::var(FILTER_ENV) {
        Ok(value) => Some(value),
        Err(std::env::VarError::NotPresent) => None,
        Err(std::env::VarError::NotUnicode(_)) => return Err(TelemetryError::FilterNotUnicode),
    };
    let filter = filter(value.as_deref())?;
    let writer = crate::log_output::stderr();
    let installed = match format {
        LogFormat::Text => text_subscriber(filter, writer, std::io::stderr().is_terminal())
            .try_init()
            .map_err(|e| e.to_string()),
        LogFormat::Json => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(writer)
            .json()
            .flatten_event(true)
            .try_init()
            .map_err(|e| e.to_string()),
    };
    installed.map_err(TelemetryError::AlreadyInitialized)?;
    // A panic's report (written by the default hook, straight to stderr)
    // comes after the lines logged before it.
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        crate::log_output::try_flush();
        previous(info);
    }));
    Ok(LogGuard(()))
}

/// Keeps the log's batched lines from being lost: dropping it writes every
/// line still waiting to stderr. Hold it (in `main`) until the process
/// ends; a process that ends without dropping it (`std::process::exit`)
/// may lose up to [`crate::log_output::BATCH_DELAY`] of `info` lines.
#[must_use = "dropping the guard at once leaves later log lines to be lost at exit: keep it"]
#[derive(Debug)]
pub struct LogGuard(());

impl Drop for LogGuard {
    fn drop(&mut self) {
        crate::log_output::flush();
    }
}

/// The text format's subscriber: events that pass `filter` written to
/// `writer`, colored when `ansi`, every field escaped ([`EscapedFields`]).
fn text_subscriber<W>(
    filter: EnvFilter,
    writer: W,
    ansi: bool,
) -> impl tracing::Subscriber + Send + Sync + 'static
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi)
        .fmt_fields(EscapedFields)
        .finish()
}

/// tracing-subscriber's default field format (`name=value`, the message
/// first), with every value, the message included, written through
/// `report::escape`: a value holding CR, LF, ESC or another control
/// character stays on its line as `\r`, `\n`, `\u{1b}`.
struct EscapedFields;

impl<'w> MakeVisitor<Writer<'w>> for EscapedFields {
    type Visitor = Escaped<DefaultVisitor<'w>>;

    fn make_visitor(&self, target: Writer<'w>) -> Self::Visitor {
        Escaped(DefaultVisitor::new(target, true))
    }
}

/// A field visitor that hands `V` each value as its escaped text.
struct Escaped<V>(V);

impl<V: Visit> Escaped<V> {
    /// Records `text`, as the field's value would be written, escaped.
    fn escaped(&mut self, field: &Field, text: &str) {
        self.0
            .record_debug(field, &format_args!("{}", escape(text)));
    }
}

impl<V: Visit> Visit for Escaped<V> {
    fn record_str(&mut self, field: &Field, value: &str) {
        // As the default format writes them: the message as it is, other
        // strings quoted.
        if field.name() == "message" {
            self.escaped(field, value);
        } else {
            self.escaped(field, &format!("{value:?}"));
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let mut text = value.to_string();
        let mut source = value.source();
        while let Some(error) = source {
            let _ = write!(text, ": {error}");
            source = error.source();
        }
        self.escaped(field, &text);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.escaped(field, &format!("{value:?}"));
    }
}

impl<V: VisitOutput<fmt::Result>> VisitOutput<fmt::Result> for Escaped<V> {
    fn finish(self) -> fmt::Result {
        self.0.finish()
    }
}

impl<V: VisitFmt> VisitFmt for Escaped<V> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        self.0.writer()
    }
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

    /// A `MakeWriter` into a shared buffer.
    #[derive(Clone, Default)]
    struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn log_lines_escape_what_they_quote() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = text_subscriber(filter(None).unwrap(), move || writer.clone(), false);
        // What a registry can put in an error: serde's "unknown field"
        // quotes its field name.
        let error =
            "unknown field `\u{1b}[2J`\r\n2026-01-01T00:00:00Z  INFO plugin ready\u{9b}\u{202e}";
        let source = std::io::Error::other(format!("outer: {error}"));
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(plugin = "weather", "update check failed: {error}");
            tracing::warn!(
                plugin = "weather",
                display = %error,
                debug = ?error,
                text = error,
                error = &source as &(dyn std::error::Error + 'static),
                "refused"
            );
        });
        let out = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert_eq!(out.lines().count(), 2, "{out}");
        assert!(
            !out.contains(['\u{1b}', '\r', '\u{9b}', '\u{202e}']),
            "{out:?}"
        );
        let escaped = "unknown field `\\u{1b}[2J`\\r\\n2026-01-01T00:00:00Z  INFO plugin ready\\u{9b}\\u{202e}";
        let first = out.lines().next().unwrap();
        assert!(
            first.ends_with(&format!(
                "update check failed: {escaped} plugin=\"weather\""
            )),
            "{first}"
        );
        let second = out.lines().nth(1).unwrap();
        assert!(second.contains(&format!("display={escaped} ")), "{second}");
        assert!(
            second.contains("debug=\"unknown field `\\u{1b}[2J`\\r\\n"),
            "{second}"
        );
        assert!(
            second.contains("text=\"unknown field `\\u{1b}[2J`\\r\\n"),
            "{second}"
        );
        assert!(
            second.contains(&format!("error=outer: {escaped}")),
            "{second}"
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
