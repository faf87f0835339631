//! Start-up with 1, 20 and 200 signed 1 MB plugins: `backworks serve`
//! from spawn to "listening" (read, verify signature and record, load from
//! a sealed memfd, initialize, health-check each), against the floor of
//! what any loader must do: sha256 and dlopen of the same files,
//! in-process. Goal: at most 2x the floor at 20 plugins, and a cost per
//! plugin that does not grow with their number.
//!
//! Run: `cargo bench -p backworks-host --bench startup`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use backworks_test_support as support;

/// The numbers of plugins measured; the largest is built.
const COUNTS: [usize; 3] = [1, 20, 200];
const ROUNDS: usize = 5;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let keys = support::harness::Keys::new();
    let source =
        std::fs::read_to_string(support::fixtures::workspace().join("examples/c-plugin/weather.c"))
            .unwrap();
    let mut plugins: Vec<(String, PathBuf)> = Vec::new();
    for i in 0..COUNTS[COUNTS.len() - 1] {
        // The C weather plugin under its own name, grown to 1 MB by an
        // initialised table (kept by the linker: it is exported).
        let name = format!("bench-{i:03}");
        let c = dir.path().join(format!("{name}.c"));
        std::fs::write(
            &c,
            source.replace("\"weather-c\"", &format!("\"{name}\""))
                + "\nBACKWORKS_EXPORT const unsigned char bench_ballast[1 << 20] = {1};\n",
        )
        .unwrap();
        let library = support::fixtures::cc_build(&name, &[c], None);
        let signed = keys.signed_copy(&library, dir.path(), &format!("lib{name}.so"));
        plugins.push((name, signed));
    }
    println!("signed 1 MB plugins, median of {ROUNDS} rounds each:");
    println!(
        "{:>8} {:>10} {:>14} {:>14} {:>12} {:>7}",
        "plugins", "MB", "serve ms", "floor ms", "serve/plugin", "ratio"
    );
    for count in COUNTS {
        let (serve, floor, size) = measure(dir.path(), &keys, &plugins[..count]);
        println!(
            "{count:>8} {:>10.1} {:>14.1} {:>14.1} {:>10.2}ms {:>6.2}x",
            size as f64 / 1e6,
            serve.as_secs_f64() * 1e3,
            floor.as_secs_f64() * 1e3,
            serve.as_secs_f64() * 1e3 / count as f64,
            serve.as_secs_f64() / floor.as_secs_f64()
        );
    }
    println!("goal: at most 2x at 20 plugins; serve/plugin not growing with the count");
}

/// The median start-up of a server with `plugins`, and of the floor (sha256
/// and dlopen of fresh copies of the same files), and their total size.
fn measure(
    dir: &std::path::Path,
    keys: &support::harness::Keys,
    plugins: &[(String, PathBuf)],
) -> (Duration, Duration, u64) {
    let size: u64 = plugins
        .iter()
        .map(|(_, p)| std::fs::metadata(p).unwrap().len())
        .sum();
    let config = support::harness::config(
        dir,
        keys,
        "5s",
        &support::harness::external_plugins(plugins),
    );

    let mut serve = Vec::new();
    for _ in 0..ROUNDS {
        let server = support::harness::start(&config, "warn");
        serve.push(server.started_in);
    }

    let mut floor = Vec::new();
    for round in 0..ROUNDS {
        // A fresh path each round (made before the clock starts): the
        // dynamic loader would otherwise return the library it already has.
        let copies: Vec<PathBuf> = plugins
            .iter()
            .map(|(name, path)| {
                let copy = dir.join(format!("floor-{}-{round}-{name}.so", plugins.len()));
                std::fs::copy(path, &copy).unwrap();
                copy
            })
            .collect();
        let started = Instant::now();
        for copy in &copies {
            let bytes = std::fs::read(copy).unwrap();
            // The same sha256 implementation as the server's (the fastest
            // here), so the floor is not inflated by a slower one.
            std::hint::black_box(backworks_artifact::signature::sha256(&bytes));
            // SAFETY: the bench's own C plugin, built above.
            let library = unsafe { libloading::Library::new(copy) }.unwrap();
            std::mem::forget(library);
        }
        floor.push(started.elapsed());
        for copy in copies {
            let _ = std::fs::remove_file(copy);
        }
    }
    (median(serve), median(floor), size)
}
