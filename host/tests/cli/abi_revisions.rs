//! ABI revisions side by side: one `backworks serve` process serves a plugin
//! of ABI 1.0 (the C weather plugin), one of ABI 1.1 (the C fixture
//! `c-abi-1-1`, whose hooks pass every request) and one of ABI 1.2 (the Rust
//! echo fixture, whose hooks the host drives as futures), and the echo
//! plugin's `tracing` and `log` events (host services, since 1.1) reach the
//! host's log under the plugin's name, filtered by the host's `RUST_LOG`.

use std::path::{Path, PathBuf};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use crate::harness::{Keys, Server, config};
use crate::support;

/// A config serving the echo fixture (1.2), the C weather plugin (1.0) and
/// the C plugin of 1.1.
fn side_by_side(dir: &Path, keys: &Keys) -> PathBuf {
    let echo = keys.signed_copy(&support::echo_plugin(), dir, "libecho.so");
    let weather_c = keys.signed_copy(&support::c_plugin(), dir, "libweather_c.so");
    let c_1_1 = keys.signed_copy(&support::c_abi_1_1_plugin(), dir, "libc_abi_1_1.so");
    config(
        dir,
        keys,
        "5s",
        &format!(
            "  echo-plugin:\n    type: external\n    path: {}\n  weather-c:\n    type: external\n    path: {}\n  c-abi-1-1:\n    type: external\n    path: {}\n",
            echo.display(),
            weather_c.display(),
            c_1_1.display()
        ),
    )
}

/// The server's log lines up to and including the `count`-th one holding
/// `marker` (waiting at most 60 s in all: a bound for a hang, not a speed).
fn lines_until(server: &Server, marker: &str, count: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut lines = Vec::new();
    let mut seen = 0;
    while seen < count {
        let left = deadline.saturating_duration_since(Instant::now());
        match server.stderr.recv_timeout(left) {
            Ok(line) => {
                seen += usize::from(line.contains(marker));
                lines.push(line);
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => panic!(
                "{marker:?} seen {seen} of {count} times; the log:\n{}",
                lines.join("\n")
            ),
        }
    }
    lines
}

/// `GET path`: status and body text.
fn get(server: &Server, path: &str) -> (u16, String) {
    let response = crate::harness::http_client()
        .get(format!("{}{path}", server.base))
        .send()
        .unwrap();
    (response.status().as_u16(), response.text().unwrap())
}

#[test]
fn plugins_of_abi_1_0_1_1_and_1_2_serve_side_by_side_and_the_rust_plugin_logs_into_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new();
    let config = side_by_side(dir.path(), &keys);
    let server = crate::harness::start(&config, "info");

    // Each is loaded at its own revision.
    let loaded = lines_until(&server, "plugin verified and loaded", 3);
    let load_line = |name: &str| {
        let name = format!("name=\"{name}\"");
        loaded
            .iter()
            .find(|l| l.contains("plugin verified and loaded") && l.contains(&name))
            .unwrap_or_else(|| panic!("no load line with {name}:\n{}", loaded.join("\n")))
            .clone()
    };
    assert!(load_line("echo-plugin").contains("abi=1.2"), "{loaded:?}");
    assert!(load_line("weather-c").contains("abi=1.0"), "{loaded:?}");
    assert!(load_line("c-abi-1-1").contains("abi=1.1"), "{loaded:?}");

    // Both answer, through the 1.1 plugin's hooks (which pass everything).
    let (status, body) = get(&server, "/weather");
    assert_eq!(status, 200, "{body}");
    let weather: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(weather["temperature"], 25, "{body}");
    let response = crate::harness::http_client()
        .post(format!("{}/echo", server.base))
        .body("side by side")
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.text().unwrap(), "POST side by side");

    // A 1.2 hook that waits, between the others.
    assert_eq!(get(&server, "/wait"), (200, String::from("waited GET ")));

    // The echo plugin logs at every level; twice, so that every line of the
    // first request is in the log before the second request's first line.
    for _ in 0..2 {
        assert_eq!(get(&server, "/log"), (200, String::from("logged")));
    }
    let log = lines_until(&server, "echo: an error event", 2);
    let first = log
        .iter()
        .position(|l| l.contains("echo: an error event"))
        .unwrap();
    let one_request = &log[first..];
    let line = |text: &str| {
        one_request
            .iter()
            .find(|l| l.contains(text))
            .unwrap_or_else(|| panic!("no line with {text:?} in:\n{}", log.join("\n")))
    };
    let error = line("echo: an error event");
    assert!(error.contains(" ERROR "), "{error}");
    assert!(
        error.ends_with(
            r#"backworks::plugin: echo: an error event plugin="echo-plugin" plugin_target="echo_core" fields="{\"bytes\":0,\"method\":\"GET\"}""#
        ),
        "{error}"
    );
    let warning = line("echo: a warning through log from /log");
    assert!(warning.contains(" WARN "), "{warning}");
    assert!(
        warning.ends_with("plugin=\"echo-plugin\" plugin_target=\"echo_core\""),
        "a `log` record has no fields: {warning}"
    );
    let info = line("echo: handled /log");
    assert!(info.contains(" INFO "), "{info}");
    assert!(
        info.ends_with(
            r#"echo: handled /log plugin="echo-plugin" plugin_target="echo_core" fields="{\"count\":3,\"ok\":true,\"user\":\"alice\"}""#
        ),
        "{info}"
    );
    // Text from the plugin is escaped: one line, no raw control character.
    let forged = line("echo: forged");
    assert!(
        forged.ends_with(
            r#"backworks::plugin: echo: forged\nline \u{1b}[2J plugin="echo-plugin" plugin_target="echo_core""#
        ),
        "{forged}"
    );
    assert!(
        !log.iter()
            .any(|l| l.contains('\u{1b}') || l.starts_with("line ")),
        "{log:?}"
    );
    let before_second = &log[..log.len() - 1];
    assert!(
        !before_second
            .iter()
            .any(|l| l.contains("echo: a debug event") || l.contains("echo: a trace event")),
        "RUST_LOG=info shows no debug or trace event:\n{}",
        log.join("\n")
    );
}

#[test]
fn the_hosts_filter_decides_which_plugin_events_appear() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new();
    let config = side_by_side(dir.path(), &keys);
    // (RUST_LOG, events shown, events not shown)
    let cases: [(&str, &[&str], &[&str]); 2] = [
        (
            "warn",
            &["echo: an error event", "echo: a warning through log"],
            &[
                "echo: handled /log",
                "echo: a debug event",
                "echo: a trace event",
            ],
        ),
        (
            "warn,backworks::plugin=debug",
            &[
                "echo: an error event",
                "echo: a warning through log",
                "echo: handled /log",
                "echo: a debug event",
            ],
            &["echo: a trace event"],
        ),
    ];
    for (filter, shown, hidden) in cases {
        let server = crate::harness::start(&config, filter);
        for _ in 0..2 {
            assert_eq!(
                get(&server, "/log"),
                (200, String::from("logged")),
                "{filter}"
            );
        }
        // Every line of the first request comes before the second's error.
        let log = lines_until(&server, "echo: an error event", 2);
        let first = log
            .iter()
            .position(|l| l.contains("echo: an error event"))
            .unwrap();
        let one_request = &log[first..log.len() - 1];
        for text in shown {
            assert!(
                one_request.iter().any(|l| l.contains(text)),
                "RUST_LOG={filter} shows {text:?}:\n{}",
                log.join("\n")
            );
        }
        for text in hidden {
            assert!(
                !log.iter().any(|l| l.contains(text)),
                "RUST_LOG={filter} hides {text:?}:\n{}",
                log.join("\n")
            );
        }
    }
}
