//! `backworks plugin-worker`: a plugin of the `process` tier in a process
//! of its own, started and supervised by `backworks serve`
//! ([`super::supervisor`]).
//!
//! Before any byte of the plugin is loaded the worker checks that its
//! parent is still the host, sets `no_new_privs` and its resource limits.
//! Then it loads the verified bytes it inherited (the host's sealed memfd,
//! never a path: [`crate::loader::load_inherited`]), says who it is
//! ([`Hello`]: name, version, sha256 of the bytes loaded) and serves calls:
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
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
    if !confine::parent_is(options.parent) {
        return Err(WorkerError::Orphaned(options.parent));
    }
    confine::no_new_privs().map_err(|e| WorkerError::Confine("set no_new_privs", e))?;
    // The worker's own runtime first: its threads' reservations are not the
    // plugin's share of address space.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
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
    let loaded = crate::loader::load_inherited(staged, &options.label, options.max_plugin_size)?;
    let hello = Hello {
        protocol: PROTOCOL,
        name: loaded.raw.metadata().name.clone(),
        version: loaded.raw.metadata().version.clone(),
        sha256: loaded.sha256.clone(),
        abi: loaded.raw.abi_revision().to_string(),
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

/// Sends `frame` to the host through the writer task.
type Outbox = mpsc::UnboundedSender<FromWorker>;

/// The calls running now, by id, to drop on [`ToWorker::Cancel`].
type Running = Arc<Mutex<HashMap<u64, tokio::task::AbortHandle>>>;

/// Says hello, then serves frames until the host closes the socket.
async fn serve(
    plugin: &'static RawPlugin,
    name: String,
    socket: tokio::net::UnixStream,
    hello: Hello,
) -> std::io::Result<()> {
    let (mut reader, writer) = socket.into_split();
    let (outbox, frames) = mpsc::unbounded_channel();
    let writing = tokio::spawn(write_frames(writer, frames));
    let _ = outbox.send(FromWorker::Hello(hello));
    let running: Running = Arc::default();
    let name: Arc<str> = Arc::from(name);
    let mut frames = Frames::default();
    loop {
        while let Some(body) = frames.next().map_err(std::io::Error::other)? {
            match ToWorker::decode(body).map_err(std::io::Error::other)? {
                ToWorker::Call { id, hook, args } => {
                    start(plugin, &name, &outbox, &running, id, hook, args);
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
        const CHUNK: usize = 64 * 1024;
        let read = reader.read(frames.buffer(CHUNK)).await;
        let read = read.inspect_err(|_| frames.filled(CHUNK, 0))?;
        frames.filled(CHUNK, read);
        if read == 0 {
            break;
        }
    }
    drop(outbox);
    let _ = writing.await;
    Ok(())
}

/// Writes the frames sent to `frames`, as many as are waiting in one write.
async fn write_frames(
    mut writer: tokio::net::unix::OwnedWriteHalf,
    mut frames: mpsc::UnboundedReceiver<FromWorker>,
) {
    let mut buffer = Vec::with_capacity(64 * 1024);
    while let Some(frame) = frames.recv().await {
        buffer.clear();
        frame.encode(&mut buffer);
        while let Ok(frame) = frames.try_recv() {
            frame.encode(&mut buffer);
            if buffer.len() > 1 << 20 {
                break;
            }
        }
        if writer.write_all(&buffer).await.is_err() {
            return;
        }
    }
}

/// Starts call `id`: a request hook as a task polling the plugin's future,
/// a lifecycle hook on a blocking thread. Its answer (or, once cancelled,
/// [`FromWorker::Cancelled`]) goes to `outbox`.
fn start(
    plugin: &'static RawPlugin,
    name: &Arc<str>,
    outbox: &Outbox,
    running: &Running,
    id: u64,
    hook: Hook,
    args: Vec<Vec<u8>>,
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
    // Registered before the task can finish and remove itself.
    let mut calls = running.lock().unwrap_or_else(PoisonError::into_inner);
    let task = tokio::spawn(async move {
        let answer = request(plugin, hook, args).await;
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
