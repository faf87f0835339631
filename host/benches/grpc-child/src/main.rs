//! A benchmark fixture for issue 16: HashiCorp go-plugin's transport (gRPC
//! to a child process over a Unix socket) built in Rust with tonic, so the
//! process tier's hook round trip (`host/benches/process.rs`) has a
//! baseline to be measured against.
//!
//! ```text
//! grpc-child serve --socket PATH
//! grpc-child bench --socket PATH --calls N --warmup W
//! ```
//!
//! `serve` is the plugin child: service `backworks.Plugin`, unary method
//! `BeforeRequest(HttpRequest) returns (RequestAction)`, answering as the
//! echo fixture's `before_request` does; it prints `ready` once listening
//! and exits at its stdin's end or on SIGTERM. `bench` is the host's side:
//! W warm-up calls, then N timed calls, one after another on one channel,
//! and one line of JSON on stdout:
//! `{"calls":N,"median_ns":…,"p90_ns":…,"p99_ns":…,"mean_ns":…}`.

#![forbid(unsafe_code)]

mod bench;
mod proto;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};

const USAGE: &str = "usage: grpc-child serve --socket PATH\n       \
                     grpc-child bench --socket PATH --calls N --warmup W";

/// A parsed command line.
#[derive(Debug)]
enum Command {
    Serve {
        socket: PathBuf,
    },
    Bench {
        socket: PathBuf,
        calls: usize,
        warmup: usize,
    },
}

/// Parses `args` (without the program name): a subcommand, then
/// `--flag value` pairs in any order.
fn parse(mut args: impl Iterator<Item = std::ffi::OsString>) -> anyhow::Result<Command> {
    let subcommand = args.next().context("no subcommand")?;
    let mut socket = None;
    let mut calls = None;
    let mut warmup = None;
    while let Some(flag) = args.next() {
        let flag = flag.to_string_lossy().into_owned();
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        let number = |value: &std::ffi::OsStr| -> anyhow::Result<usize> {
            value
                .to_str()
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("{flag} takes a count, not {value:?}"))
        };
        match flag.as_str() {
            "--socket" => socket = Some(PathBuf::from(value)),
            "--calls" => calls = Some(number(&value)?),
            "--warmup" => warmup = Some(number(&value)?),
            _ => bail!("unknown flag {flag}"),
        }
    }
    let socket = socket.context("--socket PATH is required")?;
    match subcommand.to_str() {
        Some("serve") => {
            if calls.is_some() || warmup.is_some() {
                bail!("serve takes only --socket");
            }
            Ok(Command::Serve { socket })
        }
        Some("bench") => Ok(Command::Bench {
            socket,
            calls: calls.context("--calls N is required")?,
            warmup: warmup.context("--warmup W is required")?,
        }),
        _ => bail!("unknown subcommand {subcommand:?}"),
    }
}

fn run() -> anyhow::Result<()> {
    let command =
        parse(std::env::args_os().skip(1)).map_err(|e| anyhow::anyhow!("{e:#}\n{USAGE}"))?;
    // Current-thread runtimes on both sides: calls come one after another,
    // and measured on two cores a multi-thread client took 1.6-1.9 times as
    // long at the median (and 5 times at p90), a multi-thread server no
    // less; so the baseline is tonic at its fastest.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    match command {
        Command::Serve { socket } => runtime.block_on(serve::serve(&socket)),
        Command::Bench {
            socket,
            calls,
            warmup,
        } => runtime.block_on(bench::bench(&socket, calls, warmup)),
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The chain, each cause once (tonic's transport errors repeat
            // the I/O error that caused them).
            let mut message = String::from("grpc-child");
            for cause in e.chain().map(ToString::to_string) {
                if !message.ends_with(&cause) {
                    message = format!("{message}: {cause}");
                }
            }
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}
