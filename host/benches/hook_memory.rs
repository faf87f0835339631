//! Memory over 1 million hook calls: the echo plugin, verified and loaded by
//! the host's loader, called through the same path the pipeline uses
//! (before_request with a typed request, process_endpoint, after_response,
//! and failing calls), with RSS read from /proc/self/status before and after.
//!
//! Run: `cargo bench -p backworks-host --bench hook_memory`.

#![forbid(unsafe_code)]

use std::ffi::CString;
use std::time::Instant;

use backworks_plugin_sdk::{HttpRequest, HttpResponse, json};

use backworks_test_support as support;

const CALLS: usize = 1_000_000;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let keys = support::harness::Keys::new();
    let echo = keys.signed_copy(&support::fixtures::echo_plugin(), dir.path(), "libecho.so");
    let trusted = [keys.pk.clone()];
    let plugin = backworks_host::loader::load_plugin(
        &echo,
        backworks_host::loader::LoadPolicy {
            trusted_keys: &trusted,
            require_signatures: true,
            max_plugin_size: backworks_host::loader::DEFAULT_MAX_PLUGIN_SIZE,
        },
    )
    .unwrap()
    .raw;
    plugin.initialize(c"{}").unwrap();
    let request = HttpRequest {
        method: "POST".into(),
        path: "/api/orders".into(),
        query: Some("page=2".into()),
        headers: [("content-type".to_owned(), "application/json".to_owned())].into(),
        body: Some(r#"{"id":42}"#.into()),
    };
    let response = HttpResponse::json(200, &json!({"ok": true}));
    let data = CString::new("payload").unwrap();
    let call = |i: usize| match i % 4 {
        0 => drop(plugin.call_before_request(&request).unwrap()),
        1 => drop(plugin.process_endpoint(c"/echo", c"POST", &data).unwrap()),
        2 => drop(plugin.call_after_response(&request, &response).unwrap()),
        _ => drop(plugin.process_endpoint(c"/error", c"GET", c"").unwrap_err()),
    };
    for i in 0..10_000 {
        call(i);
    }
    let before = rss_kib();
    let started = Instant::now();
    for i in 0..CALLS {
        call(i);
    }
    let elapsed = started.elapsed();
    let after = rss_kib();
    println!("{CALLS} hook calls through the loaded echo plugin in {elapsed:.2?}:");
    println!(
        "  RSS before: {before} KiB, after: {after} KiB, growth: {} KiB",
        after as i64 - before as i64
    );
    plugin.shutdown().unwrap();
}
