//! `telemetry::init` installs a process-wide subscriber, so each check runs
//! in a child process: this test binary re-run with one test selected and
//! `BACKWORKS_TELEMETRY_CHILD` set.

use std::process::Command;

use backworks_host::telemetry::{self, LogFormat, TelemetryError};

const CHILD: &str = "BACKWORKS_TELEMETRY_CHILD";

/// Runs test `name` of this binary in a child process with `RUST_LOG` set
/// to `filter`; returns its stderr.
fn run_child(name: &str, filter: &str) -> String {
    let output = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .env("RUST_LOG", filter)
        .output()
        .unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        output.status.success(),
        "child {name} failed:\n{stderr}\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
    stderr
}

#[test]
fn child_logs_json() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    // Held to the end: dropping it writes the batched lines.
    let _log = telemetry::init(LogFormat::Json).unwrap();
    tracing::info!(answer = 42, "hello from the child");
    tracing::debug!("filtered out");
    let again = telemetry::init(LogFormat::Text);
    assert!(
        matches!(again, Err(TelemetryError::AlreadyInitialized(_))),
        "{again:?}"
    );
}

#[test]
fn json_events_go_to_stderr_filtered_and_a_second_init_is_an_error() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    let stderr = run_child("telemetry::child_logs_json", "info");
    let events: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(events.len(), 1, "{stderr}");
    assert_eq!(events[0]["message"], "hello from the child");
    assert_eq!(events[0]["answer"], 42);
    assert_eq!(events[0]["level"], "INFO");
}

#[test]
fn child_with_bad_filter() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let error = telemetry::init(LogFormat::Text).unwrap_err();
    assert!(
        matches!(error, TelemetryError::InvalidFilter { .. }),
        "{error:?}"
    );
    // Nothing was installed, so a corrected set-up could still succeed.
    assert!(!tracing::dispatcher::has_been_set());
}

#[test]
fn an_invalid_rust_log_is_reported_not_ignored() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    run_child("telemetry::child_with_bad_filter", "backworks_host=loud");
}
