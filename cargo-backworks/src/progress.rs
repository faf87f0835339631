//! What the long-running commands tell the user while they work: a spinner
//! with the current step on a terminal (indicatif), plain lines otherwise,
//! nothing but errors and diagnostics with `--quiet`. A transfer (`publish`)
//! turns the spinner into a bar of bytes sent, on a terminal only.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// A progress reporter on standard error.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    quiet: bool,
}

impl Progress {
    /// A spinner when standard error is a terminal and `quiet` is off; plain
    /// lines otherwise.
    pub fn new(quiet: bool) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new_spinner();
            if let Ok(style) = ProgressStyle::with_template("{spinner:.green} {elapsed:>3} {msg}") {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        Self { bar, quiet }
    }

    /// Whether a terminal spinner is showing (so child tools may use colour).
    pub fn is_terminal(&self) -> bool {
        self.bar.is_some()
    }

    /// Whether only errors and diagnostics are shown.
    pub fn is_quiet(&self) -> bool {
        self.quiet
    }

    /// A finished step worth a line of its own (not shown with `--quiet`).
    pub fn step(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None if !self.quiet => eprintln!("{line}"),
            None => {}
        }
    }

    /// The current activity: the spinner's message (no line when not on a
    /// terminal).
    pub fn status(&self, message: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(message.to_owned());
        }
    }

    /// Turns the spinner into a bar counting `total` bytes, labelled
    /// `message`, and returns it to wrap the readers whose bytes it counts
    /// ([`ProgressBar::wrap_read`]); `None` when no terminal bar is showing
    /// (not a terminal, or `--quiet`), so nothing counts.
    pub fn bytes(&self, total: u64, message: &str) -> Option<ProgressBar> {
        let bar = self.bar.as_ref()?;
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner:.green} {msg} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_length(total);
        bar.set_position(0);
        bar.set_message(message.to_owned());
        Some(bar.clone())
    }

    /// A line from a child process (compiler diagnostics): always shown.
    pub fn forward(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    /// Removes the spinner.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
