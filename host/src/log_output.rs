//! The log's way out to stderr: lines at `info` and below are batched in
//! memory and written by a background thread, so that a request's access
//! log line costs the server's worker a copy, not a `write(2)`.
//!
//! The contract:
//! - lines reach stderr in the order they were logged, whole (one line is
//!   never split between two writes of different lines);
//! - a `warn` or `error` line is written before its `log` call returns,
//!   after every line logged before it: what matters most is never held
//!   back, and is on stderr if the process dies right after;
//! - a batched line waits at most [`BATCH_DELAY`] (plus the time to write
//!   the lines before it); memory is bounded: a writer that finds
//!   [`MAX_BATCHED`] bytes waiting writes them itself;
//! - [`flush`] writes whatever waits (`main` calls it before it returns;
//!   the panic hook tries it without waiting). A process ended with
//!   `_exit` (the exit watchdog, a probe) writes no batch, but the exit
//!   watchdog's grace is far longer than [`BATCH_DELAY`]. While the log is
//!   idle the background thread sleeps and costs nothing.
//!
//! `tracing-appender`'s non-blocking writer was measured for this job and
//! not kept: it hands each line to its thread over a channel and wakes the
//! thread per line when it sleeps, which costs about what the write it
//! saves (see the issue 15 note).

use std::io::Write as _;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError, TryLockError};
use std::time::Duration;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// How long the first line of a batch waits for others to join it.
pub const BATCH_DELAY: Duration = Duration::from_millis(2);
/// The most bytes that wait in memory; the writer that goes past it writes
/// the batch itself.
pub const MAX_BATCHED: usize = 1 << 20;

/// Where batches are written: stderr in the server, a test's buffer in the
/// unit tests.
type Sink = Box<dyn std::io::Write + Send>;

struct Shared {
    /// Lines waiting for the background thread.
    batch: Mutex<Vec<u8>>,
    /// Signalled when a line lands in an empty batch.
    filled: Condvar,
    /// The output, held while a batch (and an urgent line) is written, so
    /// that writes keep the order lines were logged in.
    out: Mutex<Sink>,
}

impl Shared {
    fn batch(&self) -> MutexGuard<'_, Vec<u8>> {
        // No code panics while holding these locks; a poisoned lock still
        // holds whole lines.
        self.batch.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn out(&self) -> MutexGuard<'_, Sink> {
        self.out.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes the waiting lines, then `line`, to `out`. Errors writing to
    /// stderr are dropped: there is nowhere left to report them.
    fn write_through(&self, out: &mut Sink, line: &[u8]) {
        let waiting = std::mem::take(&mut *self.batch());
        let _ = out.write_all(&waiting);
        let _ = out.write_all(line);
        let _ = out.flush();
    }

    /// Appends `line` to the batch; writes the batch at once when it is
    /// full, or when `urgent`.
    fn log(&self, line: &[u8], urgent: bool) {
        if !urgent {
            let mut batch = self.batch();
            if batch.len() + line.len() <= MAX_BATCHED {
                let was_empty = batch.is_empty();
                batch.extend_from_slice(line);
                drop(batch);
                if was_empty {
                    self.filled.notify_one();
                }
                return;
            }
        }
        let mut out = self.out();
        self.write_through(&mut out, line);
    }

    /// The background thread: waits for a first line, lets the batch
    /// gather for [`BATCH_DELAY`], writes it; never ends (the process
    /// does).
    fn run(&self) {
        loop {
            {
                let mut batch = self.batch();
                while batch.is_empty() {
                    batch = self
                        .filled
                        .wait(batch)
                        .unwrap_or_else(PoisonError::into_inner);
                }
            }
            std::thread::sleep(BATCH_DELAY);
            let mut out = self.out();
            self.write_through(&mut out, &[]);
        }
    }
}

/// A batched log output ([`MakeWriter`] for `tracing_subscriber`); without
/// its thread (`None`), lines are written to stderr directly.
#[derive(Clone)]
pub(crate) struct LogOutput(Option<Arc<Shared>>);

impl LogOutput {
    /// An output writing to `sink`, with its background thread started;
    /// `None` (the caller writes directly) when the OS refuses the thread.
    fn new(sink: Sink) -> Option<Self> {
        let shared = Arc::new(Shared {
            batch: Mutex::new(Vec::new()),
            filled: Condvar::new(),
            out: Mutex::new(sink),
        });
        let worker = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("backworks-log".to_owned())
            .spawn(move || worker.run())
            .ok()?;
        Some(Self(Some(shared)))
    }

    /// The shared state of a batched output (tests).
    #[cfg(test)]
    fn shared(&self) -> &Shared {
        self.0.as_deref().expect("a batched output")
    }

    /// Writes whatever waits, blocking for the output.
    fn flush(&self) {
        if let Some(shared) = &self.0 {
            let mut out = shared.out();
            shared.write_through(&mut out, &[]);
        }
    }

    /// Writes whatever waits unless another thread holds the output or the
    /// batch (a panic or the exit watchdog must not wait on a log).
    fn try_flush(&self) {
        let Some(shared) = &self.0 else { return };
        let mut out = match shared.out.try_lock() {
            Ok(out) => out,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        let waiting = match shared.batch.try_lock() {
            Ok(mut batch) => std::mem::take(&mut *batch),
            Err(TryLockError::Poisoned(poisoned)) => std::mem::take(&mut *poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => return,
        };
        let _ = out.write_all(&waiting);
        let _ = out.flush();
    }
}

/// One event's writer: `tracing_subscriber` formats an event, then writes
/// it with one `write_all`; the line goes to the batch, or straight out
/// when urgent.
pub(crate) struct LineWriter {
    output: LogOutput,
    urgent: bool,
}

impl std::io::Write for LineWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        match &self.output.0 {
            Some(shared) => shared.log(bytes, self.urgent),
            None => std::io::stderr().write_all(bytes)?,
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogOutput {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            output: self.clone(),
            urgent: true,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        LineWriter {
            output: self.clone(),
            urgent: *meta.level() <= Level::WARN,
        }
    }
}

/// The process's output, once [`stderr`] made it.
static STDERR: OnceLock<LogOutput> = OnceLock::new();

/// The batched stderr of this process (made on first use); when its
/// thread cannot be started, an output that writes to stderr directly.
pub(crate) fn stderr() -> LogOutput {
    STDERR
        .get_or_init(|| LogOutput::new(Box::new(std::io::stderr())).unwrap_or(LogOutput(None)))
        .clone()
}

/// Writes every line still waiting to stderr, blocking until it is out.
/// Call before the process exits.
pub fn flush() {
    if let Some(output) = STDERR.get() {
        output.flush();
    }
}

/// As [`flush`], but gives up rather than wait for a lock: for a panic
/// hook or a watchdog that must end the process whatever the log does.
pub fn try_flush() {
    if let Some(output) = STDERR.get() {
        output.try_flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that records each write, to see batching and order.
    #[derive(Clone, Default)]
    struct Writes(Arc<Mutex<Vec<Vec<u8>>>>);

    impl std::io::Write for Writes {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            if !bytes.is_empty() {
                self.0.lock().unwrap().push(bytes.to_vec());
            }
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Writes {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().concat()).unwrap()
        }

        fn count(&self) -> usize {
            self.0.lock().unwrap().len()
        }
    }

    fn output() -> (LogOutput, Writes) {
        let writes = Writes::default();
        let output = LogOutput::new(Box::new(writes.clone())).unwrap();
        (output, writes)
    }

    #[test]
    fn lines_are_batched_and_written_in_order_by_the_background_thread() {
        let (output, writes) = output();
        // Holding the output, as a write in progress would: every line
        // lands in the batch meanwhile.
        let held = output.shared().out();
        for i in 0..100 {
            output.shared().log(format!("info {i}\n").as_bytes(), false);
        }
        drop(held);
        // Counted, not timed: wait (bounded only to catch a hang) until the
        // background thread wrote all hundred lines.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while writes.text().lines().count() < 100 {
            assert!(std::time::Instant::now() < deadline, "lines never written");
            std::thread::sleep(Duration::from_millis(1));
        }
        let expected: String = (0..100).map(|i| format!("info {i}\n")).collect();
        assert_eq!(writes.text(), expected);
        assert_eq!(writes.count(), 1, "100 lines not written as one batch");
    }

    #[test]
    fn an_urgent_line_is_written_at_once_after_the_lines_before_it() {
        let (output, writes) = output();
        // Hold the output so the background thread cannot write the batch.
        let held = output.shared().out();
        output.shared().log(b"info 1\n", false);
        output.shared().log(b"info 2\n", false);
        drop(held);
        output.shared().log(b"warn 3\n", true);
        assert_eq!(writes.text(), "info 1\ninfo 2\nwarn 3\n");
    }

    #[test]
    fn a_full_batch_is_written_by_the_writer_that_fills_it() {
        let (output, writes) = output();
        let held = output.shared().out();
        let line = vec![b'x'; MAX_BATCHED / 2];
        output.shared().log(&line, false);
        output.shared().log(&line, false);
        assert_eq!(output.shared().batch().len(), MAX_BATCHED);
        drop(held);
        output.shared().log(b"\n", false);
        // Memory stays bounded: the third line found the batch full and
        // wrote it (and itself) at once.
        assert_eq!(writes.text().len(), MAX_BATCHED + 1);
        assert!(output.shared().batch().is_empty());
    }

    #[test]
    fn flush_writes_what_waits_and_try_flush_never_waits_for_a_held_output() {
        let (output, writes) = output();
        let held = output.shared().out();
        output.shared().log(b"info 1\n", false);
        // Another thread holds the output: try_flush returns, writing nothing.
        output.try_flush();
        assert_eq!(writes.text(), "");
        drop(held);
        output.flush();
        assert_eq!(writes.text(), "info 1\n");
    }
}
