//! Waiting is free (issue 15, ABI 1.2): 1,000 requests at once, over warm
//! keep-alive connections, to a hook that awaits a 200 ms timer (the echo
//! fixture's `/wait`) all complete, each with its own answer, in the
//! `inline` and in the `thread` tier, and the server's thread count does not
//! grow with them: a waiting hook holds no thread (the plugin's runtime
//! drives its timer and wakes the host's task). A hook that waits past the
//! hook timeout gets its 504 in both tiers.

use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::harness::{Keys, Server, config};
use crate::support;

/// Requests at once, one per connection.
const REQUESTS: usize = 1000;

/// How many threads the server may gain while the requests wait, over its
/// count after the same burst of requests that do not wait. A hook that
/// held a thread while it waited would need one per request (about 1,000,
/// or the hook pool's cap of 512); the slack covers the pool's growth under
/// a burst of short jobs (one thread per millisecond a job is queued).
const THREAD_SLACK: usize = 32;

/// A bound for a hang, not a speed.
const HANG: Duration = Duration::from_secs(180);

/// Threads of process `pid` now (Linux `/proc`).
fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("read /proc/<pid>/task")
        .count()
}

/// One HTTP/1.1 exchange on a keep-alive connection: status and body.
async fn exchange(
    stream: &mut BufReader<TcpStream>,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, String) {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.get_mut().write_all(head.as_bytes()).await.unwrap();
    let mut status_line = String::new();
    stream.read_line(&mut status_line).await.unwrap();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not a status line: {status_line:?}"));
    let mut length = 0;
    loop {
        let mut line = String::new();
        stream.read_line(&mut line).await.unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.unwrap();
    (status, String::from_utf8(body).unwrap())
}

/// Sends `method path` with body `i` on every connection at once; each
/// answer must be `expected(i)`. While they run, samples the server's
/// thread count every millisecond; returns the highest.
async fn burst(
    connections: &mut [BufReader<TcpStream>],
    pid: u32,
    method: &str,
    path: &str,
    expected: fn(usize) -> String,
) -> usize {
    let requests = connections
        .iter_mut()
        .enumerate()
        .map(|(i, stream)| async move {
            let (status, body) = exchange(stream, method, path, &i.to_string()).await;
            assert_eq!((status, body), (200, expected(i)), "request {i} to {path}");
        });
    let all = futures_util::future::join_all(requests);
    let mut all = std::pin::pin!(all);
    let mut most = threads(pid);
    let started = Instant::now();
    loop {
        tokio::select! {
            _ = &mut all => return most,
            () = tokio::time::sleep(Duration::from_millis(1)) => {
                most = most.max(threads(pid));
                assert!(started.elapsed() < HANG, "{path}: no answer to every request within {HANG:?}");
            }
        }
    }
}

fn waiting_costs_no_thread_in(isolation: &str) {
    backworks_host::http_serve::raise_open_file_limit();
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new();
    let echo = keys.signed_copy(&support::echo_plugin(), dir.path(), "libecho.so");
    let config = config(
        dir.path(),
        &keys,
        "60s",
        &format!(
            "  echo-plugin:\n    type: external\n    path: {}\n    isolation: {isolation}\n",
            echo.display()
        ),
    );
    let server: Server = crate::harness::start(&config, "warn");
    let pid = server.child.id();
    let addr = server.base.trim_start_matches("http://").to_owned();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (before, during) = runtime.block_on(async {
        let mut connections = Vec::with_capacity(REQUESTS);
        for _ in 0..REQUESTS {
            let stream = TcpStream::connect(&addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            connections.push(BufReader::new(stream));
        }
        // Warm: every connection served once, by a hook that does not
        // wait, in the same burst (the hook pool grows as it would).
        let expected_echo = |i: usize| format!("POST {i}");
        burst(&mut connections, pid, "POST", "/echo", expected_echo).await;
        burst(&mut connections, pid, "POST", "/echo", expected_echo).await;
        let before = threads(pid);
        let expected_wait = |i: usize| format!("waited POST {i}");
        let during = burst(&mut connections, pid, "POST", "/wait", expected_wait).await;
        // The connections stay usable after the wait.
        burst(&mut connections, pid, "POST", "/echo", expected_echo).await;
        (before, during)
    });
    assert!(
        during <= before + THREAD_SLACK,
        "{isolation}: the server had {before} threads after {REQUESTS} requests that do not wait, and {during} while {REQUESTS} requests waited"
    );
}

#[test]
fn a_thousand_waiting_requests_hold_no_thread_inline() {
    waiting_costs_no_thread_in("inline");
}

#[test]
fn a_thousand_waiting_requests_hold_no_thread_in_the_thread_tier() {
    waiting_costs_no_thread_in("thread");
}

/// A hook that waits past the hook timeout gets the request its 504, as a
/// hook that blocks does, and the call is dropped (the plugin cancels its
/// future); the plugin and the connection serve on.
fn a_wait_past_the_deadline_is_a_504_in(isolation: &str) {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new();
    let echo = keys.signed_copy(&support::echo_plugin(), dir.path(), "libecho.so");
    let config = config(
        dir.path(),
        &keys,
        "1s",
        &format!(
            "  echo-plugin:\n    type: external\n    path: {}\n    isolation: {isolation}\n",
            echo.display()
        ),
    );
    let server: Server = crate::harness::start(&config, "warn");
    let addr = server.base.trim_start_matches("http://").to_owned();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let stream = TcpStream::connect(&addr).await.unwrap();
        let mut stream = BufReader::new(stream);
        for _ in 0..3 {
            let (status, body) = exchange(&mut stream, "POST", "/wait-long", "late").await;
            assert_eq!(status, 504, "{isolation}: {body}");
            let body: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(body["hook"], "process_endpoint", "{body}");
            assert_eq!(body["plugin"], "echo-plugin", "{body}");
            let (status, body) = exchange(&mut stream, "POST", "/echo", "on time").await;
            assert_eq!(
                (status, body.as_str()),
                (200, "POST on time"),
                "{isolation}"
            );
        }
    });
}

#[test]
fn a_wait_past_the_deadline_is_a_504_inline() {
    a_wait_past_the_deadline_is_a_504_in("inline");
}

#[test]
fn a_wait_past_the_deadline_is_a_504_in_the_thread_tier() {
    a_wait_past_the_deadline_is_a_504_in("thread");
}
