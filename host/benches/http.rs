//! Throughput of `backworks serve` with the weather plugin plus a plugin with
//! a trivial `before_request` (the C weather plugin: its hooks return NULL),
//! against a bare axum handler returning the same JSON, both measured with
//! `wrk` on 127.0.0.1 in the same run.
//!
//! Run: `cargo bench -p backworks-host --bench http` (installs Debian's `wrk`
//! when it is missing and this runs as root).

#![forbid(unsafe_code)]

use std::process::Command;
use std::time::Duration;

use axum::Router;
use axum::routing::get;

use backworks_test_support as support;

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

/// CPU time (user + system) process `pid` has used so far, from
/// `/proc/<pid>/stat` (Linux).
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/<pid>/stat");
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let rest = &stat[stat.rfind(')').expect("a stat line") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let per_second: u64 = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100);
    Duration::from_secs_f64(ticks as f64 / per_second as f64)
}

/// Requests per second `wrk` measured against `url`, and the CPU time
/// process `pid` spent per request meanwhile.
fn measure(url: &str, pid: u32) -> (f64, Duration) {
    let before = cpu_time(pid);
    let output = wrk_output(url);
    let spent = cpu_time(pid) - before;
    let requests: f64 = output
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no request count in wrk's output:\n{output}"));
    (rate(url, &output), spent.div_f64(requests))
}

fn wrk_output(url: &str) -> String {
    let output = Command::new("wrk")
        .args(["-t1", "-c", CONNECTIONS, "-d", DURATION, "--latency", url])
        .output()
        .expect("run wrk");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn rate(url: &str, text: &str) -> f64 {
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
            // The entry's name is the one the library's record gives.
            ("weather-c".into(), trivial),
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

    let (backworks, backworks_cpu) =
        measure(&format!("{}/weather", server.base), server.child.id());
    let (bare, bare_cpu) = measure(&bare, std::process::id());
    println!("wrk -t1 -c{CONNECTIONS} -d{DURATION} on 127.0.0.1 (req/s; server CPU per request):");
    println!(
        "  backworks serve (weather + trivial plugin): {backworks:>10.0} req/s {:>8.1} µs",
        backworks_cpu.as_secs_f64() * 1e6
    );
    println!(
        "  bare axum handler, same JSON:                {bare:>10.0} req/s {:>8.1} µs",
        bare_cpu.as_secs_f64() * 1e6
    );
    println!(
        "  ratio: {:.1}% of bare (goal: at least 85%)",
        backworks / bare * 100.0
    );
}
