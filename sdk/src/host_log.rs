//! A plugin's `tracing` events and `log` records, forwarded into the host's
//! log (ABI 1.1, `docs/abi.md`, "Host services").
//!
//! A plugin library has its own copies of `tracing-core` and `log`: without
//! this module its events go nowhere. [`install`] (called once per library,
//! when the host hands over its services in `initialize_with_host`) sets,
//! in those copies, a global `tracing` dispatcher and a `log` logger that
//! ask the host whether it wants an event (`log_enabled`: the host's filter
//! decides, before anything is formatted) and hand it over (`log`) with its
//! level, target, message and other fields (a JSON object). Spans are not
//! forwarded. A subscriber or logger the plugin installed first is kept.
//!
//! Everything here may run on any plugin thread at once (hook threads of the
//! host, the plugin's runtime workers); nothing here panics or blocks.

use std::fmt;

use serde_json::{Map, Value};
use tracing_core::field::{Field, Visit};
use tracing_core::span::{Attributes, Id, Record};
use tracing_core::subscriber::Interest;
use tracing_core::{Dispatch, Event, Level, Metadata, Subscriber};

use crate::abi::{LOG_DEBUG, LOG_ERROR, LOG_INFO, LOG_TRACE, LOG_WARN};

/// Installs the forwarding `tracing` dispatcher and `log` logger, unless the
/// plugin already installed its own.
pub(crate) fn install() {
    // Refused when the plugin set its own first: it keeps it.
    let _ = tracing_core::dispatcher::set_global_default(Dispatch::new(HostSubscriber));
    if log::set_logger(&HostLogger).is_ok() {
        log::set_max_level(log::LevelFilter::Trace);
    }
}

/// The ABI's level of a `tracing` level.
fn tracing_level(level: &Level) -> u32 {
    match *level {
        Level::ERROR => LOG_ERROR,
        Level::WARN => LOG_WARN,
        Level::INFO => LOG_INFO,
        Level::DEBUG => LOG_DEBUG,
        Level::TRACE => LOG_TRACE,
    }
}

/// The ABI's level of a `log` level.
fn log_level(level: log::Level) -> u32 {
    match level {
        log::Level::Error => LOG_ERROR,
        log::Level::Warn => LOG_WARN,
        log::Level::Info => LOG_INFO,
        log::Level::Debug => LOG_DEBUG,
        log::Level::Trace => LOG_TRACE,
    }
}

/// Whether the host wants an event of `level` from `target`.
fn enabled(level: u32, target: &str) -> bool {
    crate::abi::host().is_some_and(|host| host.log_enabled(level, target))
}

/// The dispatcher: events to the host, spans nowhere.
struct HostSubscriber;

impl Subscriber for HostSubscriber {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        // Ask `enabled` at every event: the host's filter decides.
        Interest::sometimes()
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.is_event() && enabled(tracing_level(metadata.level()), metadata.target())
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        // Never called for a span `enabled` refused; an id is required.
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let Some(host) = crate::abi::host() else {
            return;
        };
        let metadata = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let json = (!fields.others.is_empty()).then(|| Value::Object(fields.others).to_string());
        host.log(
            tracing_level(metadata.level()),
            metadata.target(),
            &fields.message,
            json.as_deref(),
        );
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

/// An event's `message` and its other fields as JSON values.
#[derive(Default)]
struct Fields {
    message: String,
    others: Map<String, Value>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        if field.name() == "message" {
            self.message = match value {
                Value::String(text) => text,
                other => other.to_string(),
            };
        } else {
            self.others.insert(field.name().to_owned(), value);
        }
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_owned()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }
}

/// The `log` logger: records to the host.
struct HostLogger;

impl log::Log for HostLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        enabled(log_level(metadata.level()), metadata.target())
    }

    fn log(&self, record: &log::Record<'_>) {
        let level = log_level(record.level());
        let Some(host) = crate::abi::host() else {
            return;
        };
        // Formatted only when the host wants it.
        if host.log_enabled(level, record.target()) {
            host.log(level, record.target(), &record.args().to_string(), None);
        }
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_map_one_to_one() {
        let tracing = [
            Level::ERROR,
            Level::WARN,
            Level::INFO,
            Level::DEBUG,
            Level::TRACE,
        ]
        .map(|l| tracing_level(&l));
        let log = [
            log::Level::Error,
            log::Level::Warn,
            log::Level::Info,
            log::Level::Debug,
            log::Level::Trace,
        ]
        .map(log_level);
        assert_eq!(tracing, [1, 2, 3, 4, 5]);
        assert_eq!(log, tracing);
    }

    #[test]
    fn without_a_host_nothing_is_enabled() {
        // The unit test binary never received host services.
        assert!(crate::abi::host().is_none());
        assert!(!enabled(LOG_ERROR, "any"));
        assert!(!log::Log::enabled(
            &HostLogger,
            &log::Metadata::builder().level(log::Level::Error).build()
        ));
    }
}
