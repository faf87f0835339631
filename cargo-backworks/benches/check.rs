//! `check_file` on real artifacts: the C weather plugin grown to 50 MiB
//! with a non-loaded section (objcopy), the same plugin as built, and the
//! system C library (thousands of exports). The goal for the 50 MiB
//! artifact is under 50 ms: `check` maps the file and reads only headers,
//! export structures and the record, so its cost must not grow with the
//! file.
//!
//! Run: `cargo bench -p cargo-backworks --bench check`; medians are printed
//! at the end.

#![forbid(unsafe_code)]

use std::hint::black_box;
use std::path::{Path, PathBuf};

use cargo_backworks::check::check_file;
use criterion::Criterion;

#[allow(dead_code, unused_imports)]
use backworks_test_support::check_files as fixtures;

const CASES: [&str; 3] = ["grown_50mb", "c_plugin", "system_libc"];

fn benches(c: &mut Criterion) {
    let grown = fixtures::grown_plugin(50);
    let files: [PathBuf; 3] = [grown, fixtures::c_plugin(), fixtures::system_library()];
    for (id, file) in CASES.iter().zip(&files) {
        let report = check_file(file).expect("the file is readable");
        println!(
            "{id}: {} ({} bytes, {} exports, valid: {})",
            file.display(),
            report.size().unwrap_or(0),
            report.exports().map_or(0, |e| e.count),
            report.is_valid()
        );
    }
    assert!(
        std::fs::metadata(&files[0]).unwrap().len() >= 50 << 20,
        "the grown plugin is at least 50 MiB"
    );
    assert!(check_file(&files[0]).unwrap().is_valid());

    let mut group = c.benchmark_group("check_file");
    for (id, file) in CASES.iter().zip(&files) {
        group.bench_function(*id, |b| {
            b.iter(|| black_box(check_file(black_box(file)).unwrap()))
        });
    }
    group.finish();
}

/// Prints the median of each benchmark from criterion's saved estimates.
fn print_medians(target: &Path) {
    println!("\nmedians of check_file:");
    for id in CASES {
        let path = target
            .join("criterion/check_file")
            .join(id)
            .join("new/estimates.json");
        match std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .and_then(|estimates| estimates["median"]["point_estimate"].as_f64())
        {
            Some(ns) => println!("  {id:<12} {ns:>12.0} ns  ({:.3} ms)", ns / 1e6),
            None => println!("  {id:<12} (no estimate at {})", path.display()),
        }
    }
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    benches(&mut criterion);
    criterion.final_summary();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(Into::into)
        .unwrap_or_else(|| fixtures::workspace().join("target"));
    print_medians(&target);
}
