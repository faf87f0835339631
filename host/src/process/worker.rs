//! `backworks plugin-worker`: a plugin of the `process` tier in a process
//! of its own, started and supervised by `backworks serve`
//! ([`super::supervisor`]).
//!
//! Before any byte of the plugin is loaded the worker gives up root (when
//! the host runs as root: it runs as `nobody`), checks that its parent is
//! still the host, sets `no_new_privs` and its resource limits.
//! Then it loads the verified bytes it inherited (the host's sealed memfd,
//! never a path: [`crate::loader::stage_inherited`]; the sandbox is set
//! between reading its record and loading it, as its declared capabilities
//! say), says who it is
//! (`Hello`: name, version, sha256 of the bytes loaded) and serves calls:
//! each request hook is a task on this process's runtime, which polls the
//! plugin's [`HookCall`](backworks_plugin_sdk::abi::HookCall) future
//! directly (a plugin that blocks blocks only its own process); lifecycle
//! hooks run on a blocking thread. The plugin's log goes to the host's
//! standard error, in the host's format, through the same host services as
//! in-process plugins.
//!
//! The worker exits when the host closes the socket, without running the
//! plugin's destructors (`_exit`).

use std::collections::HashMap;
use std::ffi::CString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use backworks_plugin_sdk::abi::{FailureKind, Hook, RawPlugin};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::confine;
use super::wire::{Answer, Frames, FromWorker, Hello, PROTOCOL, ToWorker};

/// Exit code of a worker that refused to run (its reason on standard
/// error): the plugin could not be loaded, or the host is gone.
pub const WORKER_REFUSED: u8 = 70;

/// What `backworks plugin-worker` is told on its command line.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// The plugin's entry name in `backworks.yaml` (its log lines carry it).
    pub name: String,
    /// The plugin file the bytes came from, for messages.
    pub label: PathBuf,
    /// The host's process id.
    pub parent: u32,
    /// The address-space limit, in bytes.
    pub memory: u64,
    /// The open-file limit.
    pub open_files: u64,
    /// The largest plugin the host reads.
    pub max_plugin_size: u64,
}

/// Why a worker did not serve.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Its parent is not the host that started it.
    #[error("the host (process {0}) is gone; not starting")]
    Orphaned(u32),
    /// A descriptor the host passes is missing.
    #[error(
        "descriptor {0} was not inherited: `backworks plugin-worker` is started by `backworks serve` only"
    )]
    Missing(i32),
    /// A confinement step failed.
    #[error("cannot {0}: {1}")]
    Confine(&'static str, std::io::Error),
    /// The plugin could not be loaded.
    #[error(transparent)]
    Load(#[from] crate::loader::LoadError),
    /// The runtime or the socket failed.
    #[error("the worker's {0} failed: {1}")]
    Io(&'static str, std::io::Error),
}

/// Runs the worker until the host closes the socket; `Err` before it
/// served (the caller reports it and exits with [`WORKER_REFUSED`]).
pub fn run(options: &WorkerOptions) -> Result<(), WorkerError> {
    // First: nothing else runs with root's rights.
    let uid = confine::drop_root().map_err(|e| WorkerError::Confine("give up root", e))?;
    if !confine::parent_is(options.parent) {
        return Err(WorkerError::Orphaned(options.parent));
    }
    confine::no_new_privs().map_err(|e| WorkerError::Confine("set no_new_privs", e))?;
    // The worker's own runtime first: its threads' reservations are not the
    // plugin's share of address space.
    // One thread serves the calls (see `serve`); lifecycle hooks run on
    // its blocking pool.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .thread_name("backworks-worker")
        .enable_all()
        .build()
        .map_err(|e| WorkerError::Io("runtime", e))?;
    confine::limit(options.memory, options.open_files)
        .map_err(|e| WorkerError::Confine("set the resource limits", e))?;
    let staged =
        confine::inherited(confine::STAGED_FD).ok_or(WorkerError::Missing(confine::STAGED_FD))?;
    let socket =
        confine::inherited(confine::SOCKET_FD).ok_or(WorkerError::Missing(confine::SOCKET_FD))?;
    // The record (what the plugin declares it needs) from the verified
    // bytes, without running any of their code.
    let inherited =
        crate::loader::stage_inherited(staged, &options.label, options.max_plugin_size)?;
    // Before the plugin is loaded: its initialisers run inside.
    let confinement = super::sandbox::confine(
        std::process::id(),
        uid,
        inherited.metadata().capabilities.as_ref(),
    );
    let loaded = inherited.load()?;
    confine::undumpable().map_err(|e| WorkerError::Confine("make the worker undumpable", e))?;
    let hello = Hello {
        protocol: PROTOCOL,
        name: loaded.raw.metadata().name.clone(),
        version: loaded.raw.metadata().version.clone(),
        sha256: loaded.sha256.clone(),
        abi: loaded.raw.abi_revision().to_string(),
        confinement,
    };
    // Never unloaded (as in the server): calls borrow it for the process's
    // life.
    let plugin: &'static RawPlugin = Box::leak(Box::new(loaded.raw));
    let name = options.name.clone();
    runtime.block_on(async move {
        let socket = std::os::unix::net::UnixStream::from(socket);
        socket
            .set_nonblocking(true)
            .map_err(|e| WorkerError::Io("socket", e))?;
        let socket =
            tokio::net::UnixStream::from_std(socket).map_err(|e| WorkerError::Io("socket", e))?;
        serve(plugin, name, socket, hello)
            .await
            .map_err(|e| WorkerError::Io("socket", e))
    })
}

/// Answers of calls that waited (and of lifecycle hooks), for the I/O loop
/// to write.
type Outbox = mpsc::UnboundedSender<FromWorker>;

/// The calls waiting now, by id, to drop on [`ToWorker::Cancel`].
type Running = Arc<Mutex<HashMap<u64, tokio::task::AbortHandle>>>;

/// Says hello, then serves frames until the host closes the socket.
///
/// One loop on one thread does all the I/O: it reads what the host sent,
/// starts each call (a request hook is polled at once, right here: most
/// finish on that first poll, and their answers go into the next write),
/// and writes every answer ready in one `write`. A call that waits becomes
/// a task of this thread's runtime, whose answer comes back through the
/// outbox. No thread hands work to another on the way of a call that does
/// not wait.
async fn serve(
    plugin: &'static RawPlugin,
    name: String,
    socket: tokio::net::UnixStream,
    hello: Hello,
) -> std::io::Result<()> {
    let (reader, mut writer) = socket.into_split();
    let (outbox, mut answers) = mpsc::unbounded_channel();
    let running: Running = Arc::default();
    let name: Arc<str> = Arc::from(name);
    let mut frames = Frames::default();
    let mut out = Vec::with_capacity(64 * 1024);
    FromWorker::Hello(hello).encode(&mut out);
    loop {
        while let Some(body) = frames.next().map_err(std::io::Error::other)? {
            match ToWorker::decode(body).map_err(std::io::Error::other)? {
                ToWorker::Call { id, hook, args } => {
                    let call = Call { id, hook, args };
                    start(plugin, &name, &outbox, &running, &mut out, call);
                }
                ToWorker::Cancel { id } => {
                    let call = running
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(&id);
                    if let Some(call) = call {
                        call.abort();
                    }
                }
            }
        }
        frames.shrink();
        while let Ok(answer) = answers.try_recv() {
            answer.encode(&mut out);
        }
        if !out.is_empty() {
            writer.write_all(&out).await?;
            out.clear();
        }
        // Under load the host's next call is often there already: one look
        // before parking. One look pays (wrk, 32 connections, the weather
        // plugin in this tier: 87k to 95k requests per second); spinning
        // 50 µs on both ends, to spare the tens of microseconds a parked
        // thread takes to wake on a virtual machine, took it to 18k on two
        // cores: the spinning starves the threads that do the work.
        const CHUNK: usize = 64 * 1024;
        match read_now(&reader, &mut frames, CHUNK) {
            Some(Ok(0)) => return Ok(()),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e),
            None => {}
        }
        tokio::select! {
            readable = reader.readable() => {
                readable?;
                match read_now(&reader, &mut frames, CHUNK) {
                    Some(Ok(0)) => return Ok(()),
                    Some(Err(e)) => return Err(e),
                    Some(Ok(_)) | None => {}
                }
            }
            Some(answer) = answers.recv() => answer.encode(&mut out),
        }
    }
}

/// A call the host sent.
struct Call {
    id: u64,
    hook: Hook,
    args: Vec<Vec<u8>>,
}

/// Starts `call`. A request hook is polled once here: its answer, when
/// ready, is appended to `out`; a hook that waits goes on as a task. A
/// lifecycle hook runs on a blocking thread. Answers of both (or, once
/// cancelled, [`FromWorker::Cancelled`]) come back through `outbox`.
fn start(
    plugin: &'static RawPlugin,
    name: &Arc<str>,
    outbox: &Outbox,
    running: &Running,
    out: &mut Vec<u8>,
    Call { id, hook, args }: Call,
) {
    let reply = Reply {
        id,
        outbox: outbox.clone(),
        running: Arc::clone(running),
        sent: false,
    };
    if hook.request_index().is_none() {
        let name = Arc::clone(name);
        drop(tokio::task::spawn_blocking(move || {
            let answer = lifecycle(plugin, &name, hook, args);
            reply.send(answer);
        }));
        return;
    }
    let mut call = Box::pin(request(plugin, hook, args));
    // The first poll, here. Waiting, the plugin holds this poll's waker,
    // which wakes nothing: the task below polls the call again first thing,
    // which lends the plugin the task's own waker, so no wake is lost.
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    if let std::task::Poll::Ready(answer) = call.as_mut().poll(&mut context) {
        reply.answered();
        FromWorker::Done { id, answer }.encode(out);
        return;
    }
    // Registered before the task can finish and remove itself.
    let mut calls = running.lock().unwrap_or_else(PoisonError::into_inner);
    let task = tokio::spawn(async move {
        let answer = call.await;
        reply.send(answer);
    });
    calls.insert(id, task.abort_handle());
}

/// A call's way back to the host: [`Reply::send`] sends its answer; dropped
/// unsent (the task was aborted), it sends [`FromWorker::Cancelled`].
struct Reply {
    id: u64,
    outbox: Outbox,
    running: Running,
    sent: bool,
}

impl Reply {
    /// The answer went out another way (polled ready at once).
    fn answered(mut self) {
        self.sent = true;
    }

    fn send(mut self, answer: Answer) {
        self.sent = true;
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
        let _ = self.outbox.send(FromWorker::Done {
            id: self.id,
            answer,
        });
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if !self.sent {
            let _ = self.outbox.send(FromWorker::Cancelled { id: self.id });
        }
    }
}

/// A request hook, with the ABI's own strings in and out.
async fn request(plugin: &RawPlugin, hook: Hook, args: Vec<Vec<u8>>) -> Answer {
    let mut strings = match c_strings(args) {
        Ok(strings) => strings.into_iter(),
        Err(answer) => return answer,
    };
    let Some(first) = strings.next() else {
        return failed("a call came with no arguments (a host bug)");
    };
    let result = plugin
        .call(hook, first, strings.next(), strings.next())
        .await;
    match result {
        Ok(Some(out)) => Answer::Text(out.as_c_str().to_bytes().to_vec()),
        Ok(None) if !plugin.implements(hook) => Answer::NotImplemented,
        Ok(None) => Answer::Nothing,
        Err(error) => Answer::Failed {
            panicked: error.kind == FailureKind::Panic,
            message: error.message,
        },
    }
}

/// A lifecycle hook (blocking): `initialize` with the config's JSON (and
/// the host services of entry `name`), `health_check`, `shutdown`.
fn lifecycle(plugin: &RawPlugin, name: &str, hook: Hook, args: Vec<Vec<u8>>) -> Answer {
    let result = match hook {
        Hook::Initialize => {
            let config = match c_strings(args) {
                Ok(strings) => strings.into_iter().next(),
                Err(answer) => return answer,
            };
            let config = config.unwrap_or_else(|| c"null".to_owned());
            plugin.initialize_with_host(&config, crate::loader::host_services(name))
        }
        Hook::HealthCheck => plugin.health_check(),
        Hook::Shutdown => plugin.shutdown(),
        _ => return failed("a request hook was sent as a lifecycle hook (a host bug)"),
    };
    match result {
        Ok(()) => Answer::Nothing,
        Err(error) => Answer::Failed {
            panicked: error.kind == FailureKind::Panic,
            message: error.message,
        },
    }
}

fn c_strings(args: Vec<Vec<u8>>) -> Result<Vec<CString>, Answer> {
    args.into_iter()
        .map(|arg| {
            CString::new(arg).map_err(|e| {
                failed(&format!(
                    "an argument has a NUL byte at offset {}",
                    e.nul_position()
                ))
            })
        })
        .collect()
}

fn failed(message: &str) -> Answer {
    Answer::Failed {
        panicked: false,
        message: message.to_owned(),
    }
}

/// Reads what `reader` has now into `frames` (room for `chunk` bytes):
/// `None` when nothing is there (park then), else what the read gave
/// (`Ok(0)`: the other end closed).
fn read_now(
    reader: &tokio::net::unix::OwnedReadHalf,
    frames: &mut Frames,
    chunk: usize,
) -> Option<std::io::Result<usize>> {
    match reader.try_read(frames.buffer(chunk)) {
        Ok(read) => {
            frames.filled(chunk, read);
            Some(Ok(read))
        }
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            frames.filled(chunk, 0);
            None
        }
        Err(e) => {
            frames.filled(chunk, 0);
            Some(Err(e))
        }
    }
}
