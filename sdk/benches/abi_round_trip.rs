//! One `before_request` round trip through the C ABI, from the host's side
//! (150-byte JSON request in, JSON out, string freed with the plugin's
//! `free_string`), against a direct Rust call of the same trait method on
//! the same plugin type, driven the same way (`block_on` on a tokio runtime
//! of the same shape as a plugin's).
//!
//! The plugin is the echo fixture, built with cargo (release) and loaded
//! with libloading, exactly as the tests do. Run: `cargo bench -p
//! backworks-plugin-sdk`; medians are printed at the end.

use std::ffi::CString;
use std::hint::black_box;
use std::path::Path;

use backworks_plugin_sdk::{BackworksPlugin, HttpRequest};
use criterion::Criterion;

use backworks_test_support as support;
use echo_core as echo;

const REQUEST: &str = r#"{"method":"POST","path":"/api/orders","query":"page=2&limit=5","headers":{"accept":"application/json","content-type":"application/json"},"body":"{\"id\":42}"}"#;

fn benches(c: &mut Criterion) {
    assert!(
        (140..=160).contains(&REQUEST.len()),
        "the request must be about 150 bytes, is {}",
        REQUEST.len()
    );
    let request: HttpRequest = serde_json::from_str(REQUEST).unwrap();

    let loaded = support::load_fresh(&support::echo_plugin());
    let plugin = loaded.plugin().unwrap();
    plugin.initialize(c"{}").unwrap();
    let input = CString::new(REQUEST).unwrap();
    let out = plugin
        .before_request(&input)
        .unwrap()
        .expect("echo rewrites");
    println!(
        "request: {} bytes in, {} bytes out",
        REQUEST.len(),
        out.as_c_str().to_bytes().len()
    );
    drop(out);

    let mut group = c.benchmark_group("before_request");
    group.bench_function("c_abi", |b| {
        b.iter(|| {
            let out = plugin.before_request(black_box(&input)).unwrap();
            black_box(out.as_ref().map(|s| s.as_c_str().to_bytes().len()));
            // `out` drops here: the plugin's free_string releases it.
        })
    });
    group.bench_function("c_abi_typed", |b| {
        b.iter(|| black_box(plugin.call_before_request(black_box(&request)).unwrap()))
    });

    let direct = echo::EchoPlugin::default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let handle = runtime.handle().clone();
    group.bench_function("direct", |b| {
        b.iter(|| {
            black_box(
                handle
                    .block_on(direct.before_request(black_box(&request)))
                    .unwrap(),
            )
        })
    });
    group.finish();
    plugin.shutdown().unwrap();
}

/// Prints the median of each benchmark from criterion's saved estimates.
fn print_medians(target: &Path) {
    println!("\nmedians (ns per call):");
    for id in ["c_abi", "c_abi_typed", "direct"] {
        let path = target
            .join("criterion/before_request")
            .join(id)
            .join("new/estimates.json");
        match std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        {
            Some(estimates) => println!(
                "  before_request/{id:<12} {:>9.1}",
                estimates["median"]["point_estimate"]
                    .as_f64()
                    .unwrap_or(f64::NAN)
            ),
            None => println!(
                "  before_request/{id:<12} (no estimate at {})",
                path.display()
            ),
        }
    }
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    benches(&mut criterion);
    criterion.final_summary();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(Into::into)
        .unwrap_or_else(|| support::workspace().join("target"));
    print_medians(&target);
}
