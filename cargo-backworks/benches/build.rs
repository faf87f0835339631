//! `cargo backworks build --release` against plain `cargo build --release` of
//! the same freshly generated plugin, warm: dependencies are built first,
//! then each round either changes nothing (no-op build) or touches
//! `src/lib.rs` (the plugin crate recompiles and relinks). Each tool has its
//! own target directory, so that neither finds the other's work (in one,
//! they would not rebuild each other's dependencies: `cargo backworks
//! build` builds with `--target`, into its own directory, and cargo keeps
//! dependencies compiled with and without the remaps apart).
//!
//! Run: `cargo bench -p cargo-backworks --bench build`. Prints medians and
//! the overhead of `cargo backworks build` over `cargo build`.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

const ROUNDS: usize = 7;

fn run(command: &mut Command) -> Duration {
    let start = Instant::now();
    let output = command.output().expect("run the build");
    let elapsed = start.elapsed();
    assert!(
        output.status.success(),
        "{:?} failed:\n{}",
        command,
        String::from_utf8_lossy(&output.stderr)
    );
    elapsed
}

fn touch(file: &Path) {
    std::fs::File::options()
        .write(true)
        .open(file)
        .and_then(|f| f.set_modified(SystemTime::now()))
        .expect("touch src/lib.rs");
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned();
    let bench_dir = workspace.join("target").join("bench-build");
    std::fs::create_dir_all(&bench_dir).unwrap();
    let scratch = tempfile::tempdir_in(&bench_dir).unwrap();
    let plugin = scratch.path().join("bench-plugin");
    run(Command::new(env!("CARGO_BIN_EXE_cargo-backworks"))
        .args(["backworks", "new"])
        .arg(&plugin));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let plain_target: PathBuf = bench_dir.join("plain");
    let tool_target: PathBuf = bench_dir.join("tool");

    let plain = || {
        let mut command = Command::new(&cargo);
        command
            .args(["build", "--release", "--quiet"])
            .current_dir(&plugin)
            .env("CARGO_TARGET_DIR", &plain_target);
        command
    };
    let tool = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_cargo-backworks"));
        command
            .args(["backworks", "build", "--release", "--quiet"])
            .current_dir(&plugin)
            .env("CARGO", &cargo)
            .env("CARGO_TARGET_DIR", &tool_target);
        command
    };
    // Warm up: dependencies, then one round of each.
    run(&mut plain());
    run(&mut tool());

    let lib = plugin.join("src/lib.rs");
    let mut results = Vec::new();
    for (label, change) in [("no-op", false), ("touched src/lib.rs", true)] {
        let (mut plain_times, mut tool_times) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            if change {
                touch(&lib);
            }
            plain_times.push(run(&mut plain()));
            if change {
                touch(&lib);
            }
            tool_times.push(run(&mut tool()));
        }
        results.push((label, median(plain_times), median(tool_times)));
    }
    println!("warm builds of the template plugin, median of {ROUNDS}:");
    for (label, plain, tool) in results {
        let overhead = (tool.as_secs_f64() / plain.as_secs_f64() - 1.0) * 100.0;
        println!(
            "  {label:<20} cargo build {:>8.1} ms   cargo backworks build {:>8.1} ms   overhead {:+.1}% ({:+.1} ms)",
            plain.as_secs_f64() * 1e3,
            tool.as_secs_f64() * 1e3,
            overhead,
            (tool.as_secs_f64() - plain.as_secs_f64()) * 1e3
        );
    }
}
