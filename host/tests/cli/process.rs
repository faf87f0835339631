//! The `process` tier end to end (issue 16): a signed plugin that faults
//! on request runs in a worker process; each fault gets its documented
//! status, the worker restarts, the next request succeeds, a second plugin
//! answers every request of a concurrent load loop throughout, and the host
//! never dies; `kill -9` of the host leaves no worker.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Keys, Server, config};
use crate::support;

fn client() -> reqwest::blocking::Client {
    crate::harness::http_client()
}

/// GET `path`: status and body.
fn get(server: &Server, path: &str) -> (u16, String) {
    let response = client()
        .get(format!("{}{path}", server.base))
        .send()
        .unwrap();
    (response.status().as_u16(), response.text().unwrap())
}

/// The worker's process id, from the fault plugin's `/ok` (which must
/// answer 200).
fn worker_pid(server: &Server) -> u32 {
    let (status, body) = get(server, "/ok");
    assert_eq!(status, 200, "{body}");
    body.strip_prefix("ok ")
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("not a pid: {body}"))
}

/// The value of the metric line starting with `series` (0 when absent).
fn metric(server: &Server, series: &str) -> u64 {
    let (_, text) = get(server, "/metrics");
    text.lines()
        .find_map(|line| line.strip_prefix(series))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

/// Whether `ps` lists process `pid` (a zombie counts: it is not reaped).
fn ps_lists(pid: u32) -> bool {
    let output = Command::new("ps")
        .args(["-o", "pid=,stat=,args=", "-p", &pid.to_string()])
        .output()
        .expect("ps (procps) is installed by scripts/setup");
    !String::from_utf8_lossy(&output.stdout).trim().is_empty()
}

/// Waits (at most `bound`, which only catches a hang) until `done`.
fn wait_until(bound: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + bound;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {bound:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A server with the weather plugin in `weather_tier`, then the fault
/// fixture in the `process` tier, with `server.process` settings `process`
/// (YAML flow mapping). Weather comes first: a request passes through
/// every plugin's hooks until one answers, so `/weather` requests never
/// reach the fault plugin (whose hooks other than `process_endpoint` are
/// skipped once it said it does not implement them: [`warm_up`]).
fn fault_server(
    dir: &std::path::Path,
    weather_tier: &str,
    process: &str,
    hook_timeout: &str,
) -> Server {
    fault_server_with_env(dir, weather_tier, process, hook_timeout, &[])
}

/// [`fault_server`] with more variables in the host's environment.
fn fault_server_with_env(
    dir: &std::path::Path,
    weather_tier: &str,
    process: &str,
    hook_timeout: &str,
    env: &[(&str, &str)],
) -> Server {
    let keys = Keys::new();
    let fault = keys.signed_copy(&support::fault_plugin(), dir, "libfault.so");
    let weather = keys.signed_copy(&support::weather_plugin(), dir, "libweather.so");
    let config = config(
        dir,
        &keys,
        hook_timeout,
        &format!(
            "  weather:\n    type: external\n    path: {}\n    isolation: {weather_tier}\n  fault:\n    type: external\n    path: {}\n    isolation: process\n",
            weather.display(),
            fault.display()
        ),
    );
    crate::harness::with_server_settings(&config, &format!("  process: {process}\n"));
    let mut command = crate::harness::backworks();
    command
        .args(["serve", "--config"])
        .arg(&config)
        .envs(env.iter().copied());
    crate::harness::start_command(command, "backworks listening on ")
}

/// One request through every plugin, so that the host learns which hooks
/// the fault plugin does not implement (and skips them from then on).
fn warm_up(server: &Server) {
    assert_eq!(get(server, "/weather?city=Paris").0, 200);
}

/// A loop of `GET /weather` on a thread of its own until `stop`: the count
/// of answers, and every answer that was not a 200.
fn load_loop(
    server: &Server,
    stop: &Arc<AtomicBool>,
) -> std::thread::JoinHandle<(usize, Vec<String>)> {
    let url = format!("{}/weather?city=Paris", server.base);
    let stop = Arc::clone(stop);
    std::thread::spawn(move || {
        let http = client();
        let mut answered = 0;
        let mut bad = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            match http.get(&url).send() {
                Ok(response) if response.status() == 200 => answered += 1,
                Ok(response) => bad.push(format!(
                    "{}: {}",
                    response.status(),
                    response.text().unwrap_or_default()
                )),
                Err(e) => bad.push(e.to_string()),
            }
        }
        (answered, bad)
    })
}

#[test]
fn every_fault_in_a_process_plugin_costs_only_its_worker() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = fault_server(
        dir.path(),
        "thread",
        "{max_crashes: 100, memory: 512MiB}",
        "2s",
    );
    warm_up(&server);
    let stop = Arc::new(AtomicBool::new(false));
    let load = load_loop(&server, &stop);

    // Each fault: its status, naming the plugin and the cause; then the
    // worker is a new process and answers.
    let faults: [(&str, u16, &str); 5] = [
        ("/segv", 502, "signal 11 (SIGSEGV"),
        ("/abort", 502, "signal 6 (SIGABRT"),
        ("/stack-overflow", 502, "signal 6 (SIGABRT"),
        ("/exit", 502, "exited with code 3"),
        ("/oom", 502, "signal 6 (SIGABRT"),
    ];
    let mut pid = worker_pid(&server);
    for (path, expected, cause) in faults {
        let (status, body) = get(&server, path);
        assert_eq!(status, expected, "{path}: {body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["plugin"], "fault", "{path}: {body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains("plugin `fault` crashed"), "{path}: {error}");
        assert!(error.contains(cause), "{path}: {error}");
        let next = worker_pid(&server);
        assert_ne!(next, pid, "{path}: the worker was not restarted");
        assert!(!ps_lists(pid), "{path}: worker {pid} is still listed by ps");
        pid = next;
    }

    // A hook that spins: 504 at the deadline, then the worker, which cannot
    // drop it, is killed and restarted.
    let (status, body) = get(&server, "/spin");
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("fault"), "{body}");
    wait_until(
        Duration::from_secs(30),
        "the spinning worker killed",
        || {
            metric(
                &server,
                "backworks_worker_kills_total{plugin=\"fault\",cause=\"hung\"}",
            ) == 1
        },
    );
    let next = worker_pid(&server);
    assert_ne!(next, pid, "the spinning worker was not replaced");

    stop.store(true, Ordering::Relaxed);
    let (answered, bad) = load.join().unwrap();
    assert!(
        bad.is_empty(),
        "the weather plugin failed requests: {bad:?}"
    );
    assert!(answered > 0);
    assert!(server.child.try_wait().unwrap().is_none(), "the host died");
    for (cause, count) in [("signal-11", 1), ("signal-6", 3), ("exit-3", 1)] {
        let series =
            format!("backworks_worker_crashes_total{{plugin=\"fault\",cause=\"{cause}\"}}");
        assert_eq!(metric(&server, &series), count, "{series}");
    }
    assert_eq!(
        metric(
            &server,
            "backworks_worker_restarts_total{plugin=\"fault\",outcome=\"ok\"}"
        ),
        6
    );
}

/// The same faults with the second plugin in the `process` tier too: its
/// own worker never notices.
#[test]
fn a_crash_in_one_worker_never_reaches_another() {
    let dir = tempfile::tempdir().unwrap();
    let server = fault_server(dir.path(), "process", "{max_crashes: 100}", "2s");
    warm_up(&server);
    let stop = Arc::new(AtomicBool::new(false));
    let load = load_loop(&server, &stop);
    let (_, plugins) = get(&server, "/plugins");
    let plugins: Value = serde_json::from_str(&plugins).unwrap();
    let weather_pid = plugins["plugins"][0]["worker"]["pid"].as_u64();
    assert!(weather_pid.is_some(), "{plugins}");
    for path in ["/segv", "/abort", "/exit", "/segv"] {
        assert_eq!(get(&server, path).0, 502, "{path}");
    }
    stop.store(true, Ordering::Relaxed);
    let (answered, bad) = load.join().unwrap();
    assert!(bad.is_empty(), "{bad:?}");
    assert!(answered > 0);
    let (_, plugins) = get(&server, "/plugins");
    let plugins: Value = serde_json::from_str(&plugins).unwrap();
    assert_eq!(plugins["plugins"][0]["worker"]["pid"].as_u64(), weather_pid);
    assert_eq!(plugins["plugins"][1]["isolation"], "process");
}

#[test]
fn a_plugin_whose_worker_crashes_too_often_is_marked_failed() {
    let dir = tempfile::tempdir().unwrap();
    let server = fault_server(
        dir.path(),
        "thread",
        "{max_crashes: 2, crash_window: 10m}",
        "2s",
    );
    warm_up(&server);
    assert_eq!(get(&server, "/exit").0, 502);
    worker_pid(&server);
    assert_eq!(get(&server, "/exit").0, 502);
    let (status, body) = get(&server, "/ok");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("its worker ended 2 times within 600 s"),
        "{body}"
    );
    let (status, health) = get(&server, "/healthz");
    assert_eq!(status, 503, "{health}");
    let health: Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["plugins"]["fault"]["healthy"], false);
    assert!(
        health["plugins"]["fault"]["error"]
            .as_str()
            .unwrap()
            .contains("ended 2 times"),
        "{health}"
    );
    assert_eq!(health["plugins"]["weather"]["healthy"], true);
    // The other plugin serves on.
    assert_eq!(get(&server, "/weather?city=Paris").0, 200);
}

/// `kill -9` of the host: every worker ends with it (checked with `ps`).
#[test]
fn killing_the_host_with_sigkill_leaves_no_worker() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = fault_server(dir.path(), "process", "{max_crashes: 5}", "5s");
    let fault = worker_pid(&server);
    let (_, plugins) = get(&server, "/plugins");
    let plugins: Value = serde_json::from_str(&plugins).unwrap();
    let weather = plugins["plugins"][0]["worker"]["pid"].as_u64().unwrap() as u32;
    assert!(ps_lists(fault) && ps_lists(weather));
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    wait_until(Duration::from_secs(30), "no worker left", || {
        !ps_lists(fault) && !ps_lists(weather)
    });
}

/// Request hooks, failures and the plugin's own log lines go through a
/// worker as they do in-process.
#[test]
fn a_worker_runs_every_hook_and_forwards_the_plugin_log() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new();
    let echo = keys.signed_copy(&support::echo_plugin(), dir.path(), "libecho.so");
    let config = config(
        dir.path(),
        &keys,
        "2s",
        &format!(
            "  echo-plugin:\n    type: external\n    path: {}\n    isolation: process\n",
            echo.display()
        ),
    );
    let server = crate::harness::start(&config, "info");
    let response = client()
        .post(format!("{}/echo", server.base))
        .body("through a worker")
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-echo-after"], "/echo");
    assert_eq!(response.text().unwrap(), "POST through a worker");
    let (status, body) = get(&server, "/deny");
    assert_eq!(status, 401, "{body}");
    let (status, body) = get(&server, "/error");
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("error requested"), "{body}");
    let (status, body) = get(&server, "/panic");
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("panicked"), "{body}");
    // A hook that waits (ABI 1.2) holds no worker thread: more waits than
    // the worker has threads finish together.
    let waits: Vec<_> = (0..6)
        .map(|_| {
            let url = format!("{}/wait", server.base);
            std::thread::spawn(move || client().post(url).body("7").send().unwrap().text().unwrap())
        })
        .collect();
    for wait in waits {
        assert_eq!(wait.join().unwrap(), "waited POST 7");
    }
    let (status, _) = get(&server, "/log");
    assert_eq!(status, 200);
    let seen = AtomicUsize::new(0);
    wait_until(Duration::from_secs(30), "the plugin's log lines", || {
        while let Ok(line) = server.stderr.try_recv() {
            if line.contains("echo: an error event") && line.contains("echo-plugin") {
                seen.fetch_add(1, Ordering::Relaxed);
            }
        }
        seen.load(Ordering::Relaxed) > 0
    });
}

#[test]
fn a_worker_whose_initialize_fails_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new();
    let echo = keys.signed_copy(&support::echo_plugin(), dir.path(), "libecho.so");
    let config = config(
        dir.path(),
        &keys,
        "5s",
        &format!(
            "  echo-plugin:\n    type: external\n    path: {}\n    isolation: process\n    config:\n      fail: true\n",
            echo.display()
        ),
    );
    let (code, _, stderr) = crate::harness::run_bounded(
        {
            let mut command = crate::harness::backworks();
            command.args(["serve", "--config"]).arg(&config);
            command
        },
        Duration::from_secs(60),
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("plugin `echo-plugin` failed to start: initialize failed"),
        "{stderr}"
    );
    assert!(stderr.contains("`fail` is true"), "{stderr}");
}

/// POST `body` to `path`: status and body.
fn post(server: &Server, path: &str, body: &str) -> (u16, String) {
    let response = client()
        .post(format!("{}{path}", server.base))
        .body(body.to_owned())
        .send()
        .unwrap();
    (response.status().as_u16(), response.text().unwrap())
}

/// The worker's sandbox: the plugin reads files but writes none (Landlock),
/// and cannot signal the host (seccomp), while the same plugin in the
/// server's own process can write; `/plugins` says how far the sandbox
/// holds.
#[test]
fn a_worker_writes_no_file_and_cannot_signal_its_host() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = fault_server(dir.path(), "process", "{max_crashes: 5}", "5s");
    let (_, plugins) = get(&server, "/plugins");
    let plugins: Value = serde_json::from_str(&plugins).unwrap();
    let sandbox = &plugins["plugins"][1]["worker"]["sandbox"];
    assert_eq!(sandbox["seccomp"], "on", "{plugins}");
    assert_eq!(sandbox["landlock"], "full", "{plugins}");
    // A root host's worker runs as nobody; another's as the host's user.
    let uid_of = |pid: &str| -> u32 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().next())
            .and_then(|uid| uid.parse().ok())
            .unwrap()
    };
    let worker_uid = uid_of(&worker_pid(&server).to_string());
    let expected = match uid_of("self") {
        0 => 65534,
        own => own,
    };
    assert_eq!(worker_uid, expected);
    assert_eq!(sandbox["uid"], expected, "{plugins}");

    let target = dir.path().join("written-by-the-plugin");
    let (status, body) = post(&server, "/write", target.to_str().unwrap());
    assert_eq!(status, 200);
    assert!(body.starts_with("refused:"), "{body}");
    assert!(!target.exists());
    let (status, body) = post(&server, "/read", "/etc/hostname");
    assert_eq!(status, 200);
    assert!(body.starts_with("read "), "{body}");
    // Not the host's entries in /proc (its environment, memory,
    // descriptors: it runs as the same user), though its own.
    for entry in ["environ", "cmdline", "maps"] {
        let path = format!("/proc/{}/{entry}", server.child.id());
        let (_, body) = post(&server, "/read", &path);
        assert!(body.starts_with("refused:"), "{path}: {body}");
    }
    let (_, body) = post(&server, "/read", "/proc/self/status");
    assert!(body.starts_with("read "), "{body}");
    let (status, body) = get(&server, "/signal-parent");
    assert_eq!(status, 200);
    assert!(body.contains("not permitted"), "{body}");
    // What a hostile plugin would try against its host next: each refused.
    let host = server.child.id();
    let limits = std::fs::read_to_string(format!("/proc/{host}/limits")).unwrap();
    for how in ["tkill", "join-group", "sigio", "prlimit", "fork"] {
        let (status, body) = get(&server, &format!("/escape/{how}"));
        assert_eq!(status, 200, "{how}: {body}");
        assert!(body.starts_with("refused:"), "{how}: {body}");
    }
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{host}/limits")).unwrap(),
        limits
    );
    assert!(server.child.try_wait().unwrap().is_none(), "the host died");
    assert_eq!(get(&server, "/weather?city=Paris").0, 200);

    // The same library in the server's own process is not confined.
    let other = tempfile::tempdir().unwrap();
    let keys = Keys::new();
    let fault = keys.signed_copy(&support::fault_plugin(), other.path(), "libfault.so");
    let config = config(
        other.path(),
        &keys,
        "5s",
        &format!(
            "  fault:\n    type: external\n    path: {}\n",
            fault.display()
        ),
    );
    let unconfined = crate::harness::start(&config, "info");
    let (_, body) = post(&unconfined, "/write", target.to_str().unwrap());
    assert_eq!(body, "written");
    assert!(target.exists());
    // Its declared capabilities are shown there, but held in a worker only.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    assert_eq!(post(&unconfined, "/connect", &address).1, "connected");
}

/// A plugin that declares what it needs (the fault fixture's `Cargo.toml`:
/// network none, `/etc/hostname`, `FAULT_VISIBLE`; signed in its record)
/// gets that and no more in its worker: no connection, no other file, no
/// other variable of the host's environment. `/plugins` shows the
/// declaration and how the kernel holds it.
#[test]
fn a_worker_holds_its_plugin_to_the_declared_capabilities() {
    let dir = tempfile::tempdir().unwrap();
    let server = fault_server_with_env(
        dir.path(),
        "thread",
        "{max_crashes: 5}",
        "5s",
        &[("FAULT_VISIBLE", "shown"), ("FAULT_HIDDEN", "secret")],
    );
    let (_, plugins) = get(&server, "/plugins");
    let plugins: Value = serde_json::from_str(&plugins).unwrap();
    let fault = &plugins["plugins"][1];
    assert_eq!(
        fault["capabilities"],
        serde_json::json!({
            "network": "none",
            "files": {"read": ["/etc/hostname"], "write": []},
            "env": ["FAULT_VISIBLE"],
        }),
        "{plugins}"
    );
    assert_eq!(plugins["plugins"][0]["capabilities"], Value::Null);
    let held = fault["worker"]["sandbox"]["capabilities"].as_str().unwrap();
    assert!(
        held.starts_with("enforced: network none (no sockets); files: 1 read, 0 write"),
        "{plugins}"
    );

    connect_refused(&server);
    assert!(
        post(&server, "/read", "/etc/hostname")
            .1
            .starts_with("read ")
    );
    for outside in ["/etc/passwd", "/etc/group"] {
        let (_, body) = post(&server, "/read", outside);
        assert!(body.starts_with("refused:"), "{outside}: {body}");
    }
    // Its own /proc entries stay readable (the runtime reads them).
    assert!(
        post(&server, "/read", "/proc/self/status")
            .1
            .starts_with("read ")
    );
    assert_eq!(post(&server, "/env", "FAULT_VISIBLE").1, "set: shown");
    assert!(
        post(&server, "/env", "FAULT_HIDDEN")
            .1
            .starts_with("refused:")
    );
    assert_eq!(get(&server, "/weather?city=Paris").0, 200);
}

/// A plugin that writes to its worker's socket itself (it can: it runs in
/// the worker) breaks the protocol: the worker is killed, its call gets a
/// 502, the next worker answers.
#[test]
fn a_plugin_forging_frames_gets_its_worker_killed() {
    let dir = tempfile::tempdir().unwrap();
    let server = fault_server(dir.path(), "thread", "{max_crashes: 5}", "5s");
    warm_up(&server);
    let before = worker_pid(&server);
    let (status, body) = get(&server, "/escape/forge");
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("broke the protocol"), "{body}");
    assert_eq!(
        metric(
            &server,
            "backworks_worker_kills_total{plugin=\"fault\",cause=\"protocol\"}"
        ),
        1
    );
    assert_ne!(worker_pid(&server), before);
    assert_eq!(get(&server, "/weather?city=Paris").0, 200);
}

/// A plugin that declares the endpoints it connects to reaches their ports
/// and no other (Landlock's network rules hold ports; host names are
/// shown, not enforced): the same library, declaring `127.0.0.1:9`.
#[test]
fn a_worker_connects_only_to_the_declared_ports() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new();
    let fault = keys.signed_copy(
        &support::fault_plugin_connecting_to_port_9(),
        dir.path(),
        "libfault.so",
    );
    let config = config(
        dir.path(),
        &keys,
        "5s",
        &format!(
            "  fault:\n    type: external\n    path: {}\n    isolation: process\n",
            fault.display()
        ),
    );
    let server = crate::harness::start(&config, "info");
    let (_, plugins) = get(&server, "/plugins");
    let plugins: Value = serde_json::from_str(&plugins).unwrap();
    let held = plugins["plugins"][0]["worker"]["sandbox"]["capabilities"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        held.starts_with("enforced: network: TCP connect to ports 9 only"),
        "{plugins}"
    );
    // Port 9: the kernel lets the connection through (nothing listens, or
    // something does); any other port: refused before it leaves.
    let (_, body) = post(&server, "/connect", "127.0.0.1:9");
    assert!(!body.contains("Permission denied"), "{body}");
    let body = connect_refused(&server);
    assert!(body.contains("Permission denied"), "{body}");
    // No files declared: none read.
    assert!(
        post(&server, "/read", "/etc/hostname")
            .1
            .starts_with("refused:")
    );
}

/// Has the fault plugin connect to a listener of this test on 127.0.0.1:
/// its answer must be `refused: ...` (returned) and the listener must have
/// accepted nothing.
fn connect_refused(server: &Server) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (status, body) = post(server, "/connect", &address);
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("refused:"), "{body}");
    assert_eq!(
        listener.accept().unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "the plugin reached the listener"
    );
    body
}

/// What a plugin writes to standard error itself never reaches the
/// server's log as written: each line is logged by the server, escaped and
/// under the plugin's name; a line in the worker's JSON log format is
/// logged as the plugin's, not as the server's own.
#[test]
fn a_worker_cannot_write_into_the_servers_log() {
    let dir = tempfile::tempdir().unwrap();
    let server = fault_server(dir.path(), "thread", "{max_crashes: 5}", "5s");
    warm_up(&server);
    let forged = concat!(
        "plain \u{1b}[2J text\n",
        r#"{"level":"ERROR","message":"forged by the plugin","target":"backworks","plugin":"weather"}"#,
        "\n"
    );
    let (status, body) = post(&server, "/stderr", forged);
    assert_eq!((status, body.as_str()), (200, "written to stderr"));
    let mut lines = Vec::new();
    wait_until(Duration::from_secs(30), "both lines relayed", || {
        while let Ok(line) = server.stderr.try_recv() {
            lines.push(line);
        }
        lines.iter().any(|l| l.contains("forged by the plugin"))
            && lines.iter().any(|l| l.contains("worker output"))
    });
    assert!(
        lines.iter().all(|line| !line.contains('\u{1b}')),
        "a raw escape reached the log: {lines:?}"
    );
    let output = lines.iter().find(|l| l.contains("worker output")).unwrap();
    assert!(
        output.contains("plugin=\"fault\"") && output.contains(r"plain \u{1b}[2J text"),
        "{output}"
    );
    let event = lines
        .iter()
        .find(|l| l.contains("forged by the plugin"))
        .unwrap();
    assert!(
        event.contains("ERROR backworks::worker") && event.contains("plugin=\"fault\""),
        "{event}"
    );
    assert!(!event.contains("weather"), "{event}");
}
