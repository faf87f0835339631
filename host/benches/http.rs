//! Throughput of `backworks serve` with the weather plugin plus a plugin with
//! a trivial `before_request` (the C weather plugin: its hooks return NULL),
//! against a bare axum handler returning the same JSON, both measured with
//! `wrk` on 127.0.0.1 in the same run.
//!
//! Run: `cargo bench -p backworks-host --bench http` (installs Debian's `wrk`
//! when it is missing and this runs as root).

use std::process::Command;

use axum::Router;
use axum::routing::get;

#[path = "common/mod.rs"]
mod support;

const DURATION: &str = "10s";
const CONNECTIONS: &str = "32";

fn ensure_wrk() {
    if Command::new("wrk").arg("--version").output().is_ok() {
        return;
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false);
    assert!(
        root,
        "wrk is missing: install it with `apt-get install wrk`"
    );
    let ok = Command::new("sh")
        .args([
            "-c",
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk",
        ])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "could not install wrk with apt-get");
}

/// Requests per second `wrk` measured against `url`.
fn wrk(url: &str) -> f64 {
    let output = Command::new("wrk")
        .args(["-t1", "-c", CONNECTIONS, "-d", DURATION, "--latency", url])
        .output()
        .expect("run wrk");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        !text.contains("Non-2xx"),
        "{url} answered with errors:\n{text}"
    );
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk's output:\n{text}"))
}

fn main() {
    ensure_wrk();
    let dir = tempfile::tempdir().unwrap();
    let keys = support::harness::Keys::new();
    let weather = keys.signed_copy(
        &support::fixtures::weather_plugin(),
        dir.path(),
        "libweather.so",
    );
    let trivial = keys.signed_copy(&support::fixtures::c_plugin(), dir.path(), "libtrivial.so");
    let config = support::harness::config(
        dir.path(),
        &keys,
        "5s",
        &support::harness::external_plugins(&[
            ("weather".into(), weather),
            ("trivial".into(), trivial),
        ]),
    );
    let server = support::harness::start(&config, "warn");
    let check = Command::new("curl")
        .args(["-s", &format!("{}/weather", server.base)])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    println!("backworks answers: {check}");

    // The bare handler, on its own runtime in this process.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let bare = format!("http://{}/weather", listener.local_addr().unwrap());
    runtime.spawn(async move {
        let app = Router::new().route(
            "/weather",
            get(|| async {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    r#"{"humidity":60,"temperature":25}"#,
                )
            }),
        );
        axum::serve(listener, app).await.unwrap();
    });

    let backworks = wrk(&format!("{}/weather", server.base));
    let bare = wrk(&bare);
    println!("wrk -t1 -c{CONNECTIONS} -d{DURATION} on 127.0.0.1:");
    println!("  backworks serve (weather + trivial plugin): {backworks:>10.0} req/s");
    println!("  bare axum handler, same JSON:                {bare:>10.0} req/s");
    println!(
        "  ratio: {:.1}% of bare (goal: at least 85%)",
        backworks / bare * 100.0
    );
}
