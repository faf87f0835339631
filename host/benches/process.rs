//! The process tier against its baselines, in one run (issue 16):
//!
//! 1. one hook round trip (`before_request`, a ~150-byte JSON request, a
//!    typed `RequestAction` back) of the echo fixture: called in this
//!    process (the `inline` tier's call, the floor), through a worker
//!    process (`ProcessPlugin::call`, the `process` tier), and through a
//!    tonic gRPC child over a Unix socket (go-plugin's transport:
//!    `host/benches/grpc-child`, its own client process timing the same
//!    request shape); goal: process tier ≤ 1/4 of gRPC's median;
//! 2. worker start: from a plugin with no worker to its first request
//!    answered (spawn, load, handshake, `initialize`, one call); goal
//!    median ≤ 10 ms;
//! 3. restart: from a request that crashes the worker (`exit(3)`) to the
//!    next request answered by a new worker; goal median ≤ 50 ms.
//!
//! Run: `cargo bench -p backworks-host --bench process` (Linux). Medians
//! of `CALLS` calls (1) and `STARTS` starts (2, 3).

#![forbid(unsafe_code)]

#[cfg(target_os = "linux")]
fn main() {
    linux::main();
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("the process tier (and this benchmark) is Linux only");
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io::{BufRead, BufReader, Write};
    use std::path::Path;
    use std::process::{Command, Stdio};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use backworks_host::config::ProcessConfig;
    use backworks_host::loader::{self, LoadPolicy, VerifiedFile};
    use backworks_host::process::{Answer, CallFailure, ProcessPlugin, WorkerSettings};
    use backworks_plugin_sdk::abi::Hook;
    use backworks_plugin_sdk::{HttpRequest, RequestAction, json};
    use backworks_test_support as support;

    const CALLS: usize = 20_000;
    const WARMUP: usize = 2_000;
    const STARTS: usize = 40;

    fn request() -> HttpRequest {
        HttpRequest {
            method: "GET".into(),
            path: "/weather".into(),
            query: Some("city=Paris".into()),
            headers: [
                ("accept".to_owned(), "application/json".to_owned()),
                ("user-agent".to_owned(), "bench".to_owned()),
                ("x-request-id".to_owned(), "5f3c9a0d1e2b4c6f".to_owned()),
            ]
            .into(),
            body: None,
        }
    }

    fn verified(library: &Path, keys: &support::harness::Keys) -> VerifiedFile {
        let trusted = [keys.pk.clone()];
        loader::verify_file(
            library,
            LoadPolicy {
                trusted_keys: &trusted,
                require_signatures: true,
                max_plugin_size: loader::DEFAULT_MAX_PLUGIN_SIZE,
            },
        )
        .unwrap()
    }

    fn settings() -> WorkerSettings {
        WorkerSettings {
            program: support::harness::binary(),
            limits: ProcessConfig {
                max_crashes: 1_000_000,
                ..ProcessConfig::default()
            },
            hook_timeout: Duration::from_secs(5),
            max_plugin_size: loader::DEFAULT_MAX_PLUGIN_SIZE,
        }
    }

    /// Median, 90th and 99th percentile of `samples` (sorted here).
    fn summary(samples: &mut [Duration]) -> [Duration; 3] {
        samples.sort_unstable();
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
        [at(0.5), at(0.9), at(0.99)]
    }

    fn micros(d: Duration) -> String {
        format!("{:.1} µs", d.as_secs_f64() * 1e6)
    }

    fn millis(d: Duration) -> String {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    }

    fn is_echo_rewrite(action: &RequestAction) -> bool {
        matches!(action, RequestAction::Rewrite(r) if r.headers.get("x-echo").map(String::as_str) == Some("1"))
    }

    pub(super) fn main() {
        let dir = tempfile::tempdir().unwrap();
        let keys = support::harness::Keys::new();
        let echo = keys.signed_copy(&support::fixtures::echo_plugin(), dir.path(), "libecho.so");
        let fault = keys.signed_copy(
            &support::fixtures::fault_plugin(),
            dir.path(),
            "libfault.so",
        );
        let grpc_child = support::fixtures::grpc_child();
        let request = request();
        let size = serde_json::to_vec(&request).unwrap().len();
        println!(
            "one before_request round trip, a {size}-byte JSON request, typed answer; {CALLS} calls after {WARMUP}"
        );

        // 1a. In this process: the C-ABI call the inline tier makes.
        let raw = loader::load_plugin(
            &echo,
            LoadPolicy {
                trusted_keys: std::slice::from_ref(&keys.pk),
                require_signatures: true,
                max_plugin_size: loader::DEFAULT_MAX_PLUGIN_SIZE,
            },
        )
        .unwrap()
        .raw;
        raw.initialize(c"{}").unwrap();
        let mut samples = Vec::with_capacity(CALLS);
        for i in 0..WARMUP + CALLS {
            let started = Instant::now();
            let action = raw.call_before_request(&request).unwrap();
            let elapsed = started.elapsed();
            assert!(is_echo_rewrite(&action));
            if i >= WARMUP {
                samples.push(elapsed);
            }
        }
        let in_process = summary(&mut samples);

        // 1b. Through a worker process.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let worker = Arc::new(ProcessPlugin::new(
            "echo-plugin",
            verified(&echo, &keys),
            Arc::new(json!({})),
            settings(),
        ));
        let process = runtime.block_on(async {
            let answer = worker.call(Hook::Initialize, vec![b"{}".to_vec()]).await;
            assert_eq!(answer, Ok(Answer::Nothing));
            let mut samples = Vec::with_capacity(CALLS);
            for i in 0..WARMUP + CALLS {
                let started = Instant::now();
                let payload = serde_json::to_vec(&request).unwrap();
                let answer = worker
                    .call(Hook::BeforeRequest, vec![payload])
                    .await
                    .unwrap();
                let Answer::Text(text) = answer else {
                    panic!("unexpected answer {answer:?}")
                };
                let action: RequestAction = serde_json::from_slice(&text).unwrap();
                let elapsed = started.elapsed();
                assert!(is_echo_rewrite(&action));
                if i >= WARMUP {
                    samples.push(elapsed);
                }
            }
            summary(&mut samples)
        });
        drop(worker);

        // 1c. A tonic gRPC child over a Unix socket, timed by its own client
        // process.
        let socket = dir.path().join("grpc.sock");
        let mut server = Command::new(&grpc_child)
            .args(["serve", "--socket"])
            .arg(&socket)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut ready = String::new();
        BufReader::new(server.stdout.take().unwrap())
            .read_line(&mut ready)
            .unwrap();
        assert_eq!(ready.trim(), "ready");
        let output = Command::new(&grpc_child)
            .args(["bench", "--socket"])
            .arg(&socket)
            .args([
                "--calls",
                &CALLS.to_string(),
                "--warmup",
                &WARMUP.to_string(),
            ])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "grpc-child bench: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let figures: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let ns = |field: &str| Duration::from_nanos(figures[field].as_u64().unwrap());
        let grpc = [ns("median_ns"), ns("p90_ns"), ns("p99_ns")];
        // Its stdin's end stops it.
        if let Some(mut stdin) = server.stdin.take() {
            let _ = stdin.flush();
        }
        let _ = server.wait();

        println!("{:<34} {:>10} {:>10} {:>10}", "", "median", "p90", "p99");
        for (name, [median, p90, p99]) in [
            ("in this process (C ABI call)", in_process),
            ("process tier (worker, socket pair)", process),
            ("tonic gRPC child (Unix socket)", grpc),
        ] {
            println!(
                "{name:<34} {:>10} {:>10} {:>10}",
                micros(median),
                micros(p90),
                micros(p99)
            );
        }
        let ratio = process[0].as_secs_f64() / grpc[0].as_secs_f64();
        println!(
            "process tier / gRPC child, median: {ratio:.3} (goal ≤ 0.25: {})",
            if ratio <= 0.25 { "met" } else { "missed" }
        );

        // 2. Worker start: no worker → first request answered.
        let mut starts = Vec::with_capacity(STARTS);
        runtime.block_on(async {
            for _ in 0..STARTS {
                let plugin = ProcessPlugin::new(
                    "echo-plugin",
                    verified(&echo, &keys),
                    Arc::new(json!({})),
                    settings(),
                );
                let payload = serde_json::to_vec(&request).unwrap();
                let started = Instant::now();
                plugin
                    .call(Hook::Initialize, vec![b"{}".to_vec()])
                    .await
                    .unwrap();
                let answer = plugin.call(Hook::BeforeRequest, vec![payload]).await;
                starts.push(started.elapsed());
                assert!(matches!(answer, Ok(Answer::Text(_))), "{answer:?}");
            }
        });
        let start = summary(&mut starts);

        // 3. Restart: a request that crashes the worker → the next request
        // answered by a new one. A plugin of its own each time: a first
        // crash is restarted at once, later ones within the crash window
        // with backoff (on purpose).
        let endpoint = |path: &str| vec![path.as_bytes().to_vec(), b"GET".to_vec(), Vec::new()];
        let mut restarts = Vec::with_capacity(STARTS);
        runtime.block_on(async {
            for _ in 0..STARTS {
                let plugin = ProcessPlugin::new(
                    "fault",
                    verified(&fault, &keys),
                    Arc::new(json!({})),
                    settings(),
                );
                plugin
                    .call(Hook::Initialize, vec![b"null".to_vec()])
                    .await
                    .unwrap();
                let started = Instant::now();
                let crashed = plugin.call(Hook::ProcessEndpoint, endpoint("/exit")).await;
                assert!(
                    matches!(crashed, Err(CallFailure::Crashed(_))),
                    "{crashed:?}"
                );
                let answer = plugin.call(Hook::ProcessEndpoint, endpoint("/ok")).await;
                restarts.push(started.elapsed());
                assert!(matches!(answer, Ok(Answer::Text(_))), "{answer:?}");
            }
        });
        let restart = summary(&mut restarts);
        println!("{:<34} {:>10} {:>10} {:>10}", "", "median", "p90", "p99");
        println!(
            "{:<34} {:>10} {:>10} {:>10}   (goal: median ≤ 10 ms: {})",
            "worker start → first answer",
            millis(start[0]),
            millis(start[1]),
            millis(start[2]),
            if start[0] <= Duration::from_millis(10) {
                "met"
            } else {
                "missed"
            }
        );
        println!(
            "{:<34} {:>10} {:>10} {:>10}   (goal: median ≤ 50 ms: {})",
            "crash → restarted worker's answer",
            millis(restart[0]),
            millis(restart[1]),
            millis(restart[2]),
            if restart[0] <= Duration::from_millis(50) {
                "met"
            } else {
                "missed"
            }
        );
    }
}
