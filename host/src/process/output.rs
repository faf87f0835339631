//! A worker's standard error, relayed into the server's log.
//!
//! The plugin runs inside its worker and can write anything to descriptor
//! 2. So the worker's standard error is a pipe that the server reads, never
//! the server's own: nothing a plugin writes reaches the operator's log as
//! it wrote it. The worker logs in JSON ([`crate::telemetry::LogFormat::Json`]);
//! each line that is one of its events (the plugin's own log calls through
//! the host's services, or the worker's messages) is logged again by the
//! server, in the server's format and filter, **under the plugin's entry
//! name**, whatever the line says its plugin is. Any other line (a plugin
//! writing to descriptor 2 itself, a panic report) is logged as a warning
//! `worker output`, its text escaped by the server's formatter like every
//! field. A line is cut at 16 KiB (`MAX_LINE`); more than
//! 1000 lines (`LINES_PER_SECOND`) in one second are dropped and counted.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use crate::loader::PLUGIN_LOG_TARGET;

/// The target of the events the server logs for what a worker wrote that is
/// not the plugin's log.
pub const WORKER_LOG_TARGET: &str = "backworks::worker";

/// The longest line relayed whole; the rest of a longer line is dropped.
pub(crate) const MAX_LINE: usize = 16 * 1024;

/// The most lines relayed per worker and second.
pub(crate) const LINES_PER_SECOND: u32 = 1000;

/// Reads `stderr` (a worker's standard error) to its end, logging each line
/// for the plugin of entry `entry` (see the module docs).
pub(crate) async fn relay(entry: String, stderr: impl AsyncRead + Unpin) {
    let mut budget = Budget::new(Instant::now());
    read_lines(stderr, |line, cut| {
        if budget.take(Instant::now(), &entry) {
            log_line(&entry, line, cut);
        }
    })
    .await;
    budget.report(&entry);
}

/// Calls `each` with every line of `input` (its newline included, at most
/// [`MAX_LINE`] bytes) and whether it was cut, to the end of `input` (or
/// its first read error); never holds more than one line.
async fn read_lines(input: impl AsyncRead + Unpin, mut each: impl FnMut(&[u8], bool)) {
    let mut reader = BufReader::with_capacity(64 * 1024, input);
    let mut line: Vec<u8> = Vec::new();
    let mut cut = false;
    loop {
        let available = match reader.fill_buf().await {
            Ok([]) | Err(_) => break,
            Ok(available) => available,
        };
        let (take, ends) = match available.iter().position(|&b| b == b'\n') {
            Some(newline) => (newline + 1, true),
            None => (available.len(), false),
        };
        let room = MAX_LINE.saturating_sub(line.len());
        line.extend_from_slice(&available[..take.min(room)]);
        cut |= take > room;
        reader.consume(take);
        if ends {
            each(&line, cut);
            line.clear();
            cut = false;
        }
    }
    if !line.is_empty() {
        each(&line, cut);
    }
}

/// Lines left in the current second, and those dropped in it.
struct Budget {
    window: Instant,
    left: u32,
    dropped: u64,
}

impl Budget {
    fn new(now: Instant) -> Self {
        Self {
            window: now,
            left: LINES_PER_SECOND,
            dropped: 0,
        }
    }

    /// Whether one more line may be logged at `now`.
    fn take(&mut self, now: Instant, entry: &str) -> bool {
        if now.duration_since(self.window) >= Duration::from_secs(1) {
            self.report(entry);
            *self = Self::new(now);
        }
        if self.left == 0 {
            self.dropped += 1;
            return false;
        }
        self.left -= 1;
        true
    }

    fn report(&mut self, entry: &str) {
        if self.dropped > 0 {
            tracing::warn!(
                target: WORKER_LOG_TARGET,
                plugin = entry,
                dropped = self.dropped,
                "worker output over {LINES_PER_SECOND} lines a second: lines dropped"
            );
            self.dropped = 0;
        }
    }
}

/// Logs one line the worker of `entry` wrote (`cut`: longer than
/// [`MAX_LINE`]).
fn log_line(entry: &str, line: &[u8], cut: bool) {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches(['\n', '\r']);
    if text.is_empty() {
        return;
    }
    if !cut && let Some(event) = WorkerEvent::parse(text) {
        event.log(entry);
        return;
    }
    tracing::warn!(
        target: WORKER_LOG_TARGET,
        plugin = entry,
        cut,
        output = text,
        "worker output"
    );
}

/// One JSON event of the worker's log.
#[derive(Debug, PartialEq, Eq)]
struct WorkerEvent {
    level: tracing::Level,
    /// The plugin's log (through the host's services) or not.
    plugin_log: bool,
    /// The plugin's own target (`plugin_target`) or the worker's module.
    target: String,
    message: String,
    /// The plugin's structured fields, as it passed them.
    fields: Option<String>,
}

impl WorkerEvent {
    /// The event of `line`, when it is a JSON object with a known `level`
    /// and a string `message`.
    fn parse(line: &str) -> Option<Self> {
        let Value::Object(event) = serde_json::from_str::<Value>(line).ok()? else {
            return None;
        };
        let text = |key: &str| event.get(key).and_then(Value::as_str);
        let level = text("level")?.parse::<tracing::Level>().ok()?;
        let message = text("message")?.to_owned();
        let plugin_log = text("target") == Some(PLUGIN_LOG_TARGET);
        let target = if plugin_log {
            text("plugin_target")
        } else {
            text("target")
        };
        Some(Self {
            level,
            plugin_log,
            target: target.unwrap_or_default().to_owned(),
            message,
            fields: text("fields").map(str::to_owned),
        })
    }

    /// Logs it again in the server, for the plugin of entry `entry`.
    fn log(&self, entry: &str) {
        let (target, message) = (&*self.target, &*self.message);
        if self.plugin_log {
            let fields = self.fields.as_deref();
            crate::loader::log_plugin_event(self.level, entry, target, fields, message);
            return;
        }
        macro_rules! emit {
            ($level:expr) => {
                tracing::event!(
                    target: WORKER_LOG_TARGET,
                    $level,
                    plugin = entry,
                    worker_target = target,
                    "{message}"
                )
            };
        }
        match self.level {
            tracing::Level::ERROR => emit!(tracing::Level::ERROR),
            tracing::Level::WARN => emit!(tracing::Level::WARN),
            tracing::Level::INFO => emit!(tracing::Level::INFO),
            tracing::Level::DEBUG => emit!(tracing::Level::DEBUG),
            tracing::Level::TRACE => emit!(tracing::Level::TRACE),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plugin_log_event_is_read_from_its_json_line() {
        let line = r#"{"timestamp":"t","level":"WARN","message":"an error event","plugin":"forged","plugin_target":"echo","fields":"{\"n\":1}","target":"backworks::plugin"}"#;
        assert_eq!(
            WorkerEvent::parse(line),
            Some(WorkerEvent {
                level: tracing::Level::WARN,
                plugin_log: true,
                target: String::from("echo"),
                message: String::from("an error event"),
                fields: Some(String::from(r#"{"n":1}"#)),
            })
        );
        let worker =
            r#"{"level":"ERROR","message":"plugin worker: cannot load","target":"backworks"}"#;
        let event = WorkerEvent::parse(worker).unwrap();
        assert!(!event.plugin_log);
        assert_eq!(event.target, "backworks");
    }

    #[test]
    fn anything_else_is_not_an_event() {
        for line in [
            "thread 'main' panicked at src/lib.rs:3:5:",
            "[1, 2]",
            r#"{"level":"LOUD","message":"m"}"#,
            r#"{"level":"INFO"}"#,
            r#"{"level":"INFO","message":7}"#,
            "\u{1b}[2J{\"level\":\"INFO\",\"message\":\"m\"}",
        ] {
            assert_eq!(WorkerEvent::parse(line), None, "{line}");
        }
    }

    #[test]
    fn lines_over_the_budget_are_dropped_and_the_budget_comes_back() {
        let start = Instant::now();
        let mut budget = Budget::new(start);
        let taken = (0..LINES_PER_SECOND + 5)
            .filter(|_| budget.take(start, "p"))
            .count();
        assert_eq!(taken, LINES_PER_SECOND as usize);
        assert_eq!(budget.dropped, 5);
        assert!(budget.take(start + Duration::from_secs(1), "p"));
        assert_eq!(budget.dropped, 0);
    }

    #[tokio::test]
    async fn a_long_line_is_cut_and_reading_goes_on_to_the_end() {
        let mut input = b"first\n".to_vec();
        input.extend_from_slice(&vec![b'x'; MAX_LINE * 3]);
        input.extend_from_slice(b"\nlast, without newline");
        let mut lines = Vec::new();
        read_lines(&input[..], |line, cut| lines.push((line.to_vec(), cut))).await;
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], (b"first\n".to_vec(), false));
        assert_eq!(lines[1], (vec![b'x'; MAX_LINE], true));
        assert_eq!(lines[2], (b"last, without newline".to_vec(), false));
    }
}
