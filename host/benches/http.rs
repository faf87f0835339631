//! Throughput, latency and server CPU of `backworks serve` in each
//! isolation tier, against a bare axum handler that answers the same JSON,
//! all measured with `wrk` on 127.0.0.1 in the same run, the rows in turn,
//! three rounds, each figure the median of its rounds:
//!
//! - the weather plugin `inline` (on the server's workers);
//! - the weather plugin `thread` (one hand-off to the hook pool);
//! - the weather plugin `process` (in a worker process: one frame each way
//!   per hook call; the CPU column adds the worker's);
//! - the built-in JWT `auth` plugin (a valid bearer token on every request)
//!   and the weather plugin, both `inline`;
//! - the bare handler.
//!
//! Goals (issue 15): `inline` at least 85 % of bare's requests per second,
//! `thread` at least 65 %, p99 of each at most 2x bare's; (issue 16)
//! `process` at least 40 %.
//!
//! Run: `cargo bench -p backworks-host --bench http` (installs Debian's `wrk`
//! when it is missing and this runs as root).

#![forbid(unsafe_code)]

use std::process::Command;
use std::time::Duration;

use axum::Router;
use axum::routing::get;

use backworks_test_support as support;

const DURATION: &str = "5s";
const CONNECTIONS: &str = "32";
/// Each row is measured this many times, alternating with the others.
const ROUNDS: usize = 3;

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

/// CPU time (user + system) process `pid` and its children (the workers of
/// the `process` tier) have used so far, from `/proc` (Linux).
fn cpu_time(pid: u32) -> Duration {
    let children: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|child| child.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect();
    children
        .into_iter()
        .map(own_cpu_time)
        .fold(own_cpu_time(pid), |total, child| total + child)
}

/// CPU time (user + system) of process `pid` alone, from
/// `/proc/<pid>/stat`; zero once it is gone.
fn own_cpu_time(pid: u32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
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

/// What `wrk` measured against one server.
struct Measured {
    rate: f64,
    p50: Duration,
    p99: Duration,
    /// The server's CPU time (user + system) per request.
    cpu: Duration,
}

/// Measures `url` with `wrk` (sending `headers`), and the CPU time process
/// `pid` spent per request meanwhile.
fn measure(url: &str, headers: &[String], pid: u32) -> Measured {
    let before = cpu_time(pid);
    let output = wrk_output(url, headers);
    let spent = cpu_time(pid) - before;
    let requests: f64 = output
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no request count in wrk's output:\n{output}"));
    Measured {
        rate: rate(url, &output),
        p50: percentile(&output, "50%"),
        p99: percentile(&output, "99%"),
        cpu: spent.div_f64(requests),
    }
}

/// Each figure's median over `runs` (an odd number of rounds).
fn median(runs: Vec<Measured>) -> Measured {
    fn mid<T: PartialOrd + Copy>(mut values: Vec<T>) -> T {
        values.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
        values[values.len() / 2]
    }
    Measured {
        rate: mid(runs.iter().map(|m| m.rate).collect()),
        p50: mid(runs.iter().map(|m| m.p50).collect()),
        p99: mid(runs.iter().map(|m| m.p99).collect()),
        cpu: mid(runs.iter().map(|m| m.cpu).collect()),
    }
}

/// A latency percentile of `wrk --latency`'s distribution (`99%  1.23ms`).
fn percentile(output: &str, which: &str) -> Duration {
    let value = output
        .lines()
        .find_map(|l| l.trim().strip_prefix(which))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {which} latency in wrk's output:\n{output}"));
    let split = value
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: f64 = number
        .parse()
        .unwrap_or_else(|_| panic!("latency {value:?}"));
    let seconds = match unit {
        "us" => number / 1e6,
        "ms" => number / 1e3,
        "s" => number,
        "m" => number * 60.0,
        _ => panic!("latency unit {unit:?} in {value:?}"),
    };
    Duration::from_secs_f64(seconds)
}

fn wrk_output(url: &str, headers: &[String]) -> String {
    let output = Command::new("wrk")
        .args(["-t1", "-c", CONNECTIONS, "-d", DURATION, "--latency"])
        .args(headers.iter().flat_map(|h| ["-H", h.as_str()]))
        .arg(url)
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

/// A `serve` of `plugins` (config entries) with every plugin in
/// `isolation`, answering `/weather`.
fn server(
    dir: &std::path::Path,
    keys: &support::harness::Keys,
    plugins: &str,
    isolation: &str,
) -> support::harness::Server {
    std::fs::create_dir_all(dir).unwrap();
    let config = support::harness::config(dir, keys, "5s", plugins);
    support::harness::with_server_settings(&config, &format!("  isolation: {isolation}\n"));
    support::harness::start(&config, "warn")
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
    let weather_entry = format!(
        "  weather:\n    type: external\n    path: {}\n",
        weather.display()
    );
    let secret = "bench-secret";
    let with_auth = format!(
        "  auth:\n    type: builtin\n    config:\n      jwt_secret: \"{secret}\"\n{weather_entry}"
    );
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({"sub": "bench", "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    let bearer = vec![format!("Authorization: Bearer {token}")];

    // The bare handler, on its own runtime in this process.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let bare_url = format!("http://{}/weather", listener.local_addr().unwrap());
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

    // Every server runs for the whole bench; the rows are measured in
    // turn, ROUNDS times over, so that a slow spell of the machine touches
    // every row alike, and each figure is the median of its rounds.
    let mut servers = Vec::new();
    for (label, plugins, isolation, headers) in [
        ("weather, inline", &weather_entry, "inline", &Vec::new()),
        ("weather, thread", &weather_entry, "thread", &Vec::new()),
        ("weather, process", &weather_entry, "process", &Vec::new()),
        ("JWT auth + weather, inline", &with_auth, "inline", &bearer),
    ] {
        let server = server(
            &dir.path().join(isolation).join(label.len().to_string()),
            &keys,
            plugins,
            isolation,
        );
        let url = format!("{}/weather", server.base);
        let check = Command::new("curl")
            .arg("-s")
            .args(headers.iter().flat_map(|h| ["-H", h.as_str()]))
            .arg(&url)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        println!("{label}: backworks answers {check}");
        servers.push((label, url, headers.clone(), server));
    }
    let mut runs: Vec<Vec<Measured>> = (0..=servers.len()).map(|_| Vec::new()).collect();
    for _ in 0..ROUNDS {
        for (i, (_, url, headers, server)) in servers.iter().enumerate() {
            runs[i].push(measure(url, headers, server.child.id()));
        }
        runs[servers.len()].push(measure(&bare_url, &[], std::process::id()));
    }
    let mut medians: Vec<Measured> = runs.into_iter().map(median).collect();
    let bare = medians.pop().expect("the bare row");
    let rows: Vec<(&str, Measured)> = servers
        .iter()
        .map(|(label, ..)| *label)
        .zip(medians)
        .collect();

    println!(
        "wrk -t1 -c{CONNECTIONS} -d{DURATION} on 127.0.0.1, median of {ROUNDS} rounds (rows alternate):"
    );
    println!(
        "  {:<28} {:>10} {:>8} {:>10} {:>10} {:>12}",
        "", "req/s", "of bare", "p50", "p99", "CPU/request"
    );
    let line = |label: &str, m: &Measured| {
        println!(
            "  {label:<28} {:>10.0} {:>7.1}% {:>8.0}µs {:>8.0}µs {:>10.1}µs",
            m.rate,
            m.rate / bare.rate * 100.0,
            m.p50.as_secs_f64() * 1e6,
            m.p99.as_secs_f64() * 1e6,
            m.cpu.as_secs_f64() * 1e6
        );
    };
    for (label, measured) in &rows {
        line(label, measured);
    }
    line("bare axum handler", &bare);
    println!("  goals: inline >= 85% of bare, thread >= 65%, process >= 40%, p99 <= 2x bare's");
}
