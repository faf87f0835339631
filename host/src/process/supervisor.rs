//! The host's side of the `process` tier: a [`ProcessPlugin`] is a plugin
//! whose verified bytes run in a worker process (`backworks plugin-worker`,
//! [`super::worker`]), which this module starts, talks to and supervises.
//!
//! - **Start**: a socket pair; the worker is spawned (by the one spawner
//!   thread, see `spawn`) with the sealed memfd of the verified bytes and
//!   its end of the socket; its first frame must be a `Hello` naming the
//!   plugin, version and sha256 the host verified, within `hook_timeout`.
//! - **Calls**: each hook call is one frame out and one frame back, matched
//!   by id; a reader task hands each answer to its caller. A call dropped
//!   before its answer (its deadline passed, its client left) sends
//!   `CANCEL`; a worker that has not dropped it once it has run for
//!   `hook_timeout` and a grace is **killed** (it spins or blocks).
//! - **Supervision**: a task per plugin waits for its worker's end (the
//!   socket closes, or the process exits, or a kill). The calls in flight
//!   then fail with the cause (502), the crash is counted and logged, and a
//!   new worker is started (at once after the first crash, then with
//!   backoff from 10 ms, doubling) and initialized with the entry's
//!   `config`; meanwhile calls wait for it (bounded by their deadline).
//!   `max_crashes` crashes within `crash_window` mark the plugin **failed**:
//!   its calls are answered 503 with the reason until it is replaced or the
//!   server restarts.
//! - **Retirement**: dropping the last handle of a [`ProcessPlugin`] (after
//!   a swap, or at shutdown) kills and reaps its worker.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use backworks_plugin_sdk::abi::Hook;
use backworks_plugin_sdk::metadata::PluginMetadata;
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::sync::{oneshot, watch};

use super::wire::{Answer, Frames, FromWorker, Hello, PROTOCOL, ToWorker, WireError};
use crate::config::ProcessConfig;
use crate::loader::VerifiedFile;
use crate::metrics::Metrics;

/// How the workers of one server are started and bounded.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// The `backworks` binary, run as `backworks plugin-worker`.
    pub program: PathBuf,
    /// `server.process`.
    pub limits: ProcessConfig,
    /// `server.hook_timeout`: bounds the handshake too.
    pub hook_timeout: Duration,
    /// `max_plugin_size`.
    pub max_plugin_size: u64,
}

/// How long a worker that ended before its handshake is given to have its
/// last words (its reason) relayed into the log.
const RELAY_DRAIN: Duration = Duration::from_secs(2);

/// Why a call to a worker did not get the plugin's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallFailure {
    /// The worker ended (or was killed) while the call ran: the cause.
    Crashed(String),
    /// The plugin is marked failed (too many crashes), or its worker could
    /// not be started: the reason.
    Unavailable(String),
}

/// A plugin running in a worker process: see the module docs.
#[derive(Debug)]
pub struct ProcessPlugin {
    shared: Arc<Shared>,
}

struct Shared {
    /// The entry's name in `backworks.yaml`.
    entry: String,
    /// The verified bytes (their sealed memfd), kept for every restart.
    file: VerifiedFile,
    settings: WorkerSettings,
    /// The entry's `config`, which every new worker's `initialize` gets.
    config: Arc<Value>,
    state: watch::Sender<State>,
    /// Request hooks the plugin said it does not implement, by
    /// [`Hook::request_index`].
    not_implemented: [AtomicBool; Hook::REQUEST.len()],
    metrics: OnceLock<Arc<Metrics>>,
    /// The supervisor is running (started by the first lifecycle call).
    supervised: AtomicBool,
    /// Set when the last handle is dropped: the supervisor kills the worker.
    retired: tokio::sync::Notify,
    /// What the last worker's handshake said of its sandbox.
    confinement: Mutex<Option<super::sandbox::Confinement>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("entry", &self.entry)
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

/// Where a plugin's worker is.
#[derive(Clone)]
enum State {
    /// No worker yet (before the first lifecycle call), or one is being
    /// started.
    Starting,
    /// A worker serves.
    Ready(Arc<Connection>),
    /// Failed for good: the reason.
    Failed(Arc<str>),
}

impl ProcessPlugin {
    /// The plugin of entry `entry` whose verified bytes are `file`; no
    /// worker runs until its first lifecycle call ([`ProcessPlugin::call`]
    /// with `initialize`), which starts one.
    pub fn new(
        entry: &str,
        file: VerifiedFile,
        config: Arc<Value>,
        settings: WorkerSettings,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                entry: entry.to_owned(),
                file,
                settings,
                config,
                state: watch::Sender::new(State::Starting),
                not_implemented: Default::default(),
                metrics: OnceLock::new(),
                supervised: AtomicBool::new(false),
                retired: tokio::sync::Notify::new(),
                confinement: Mutex::new(None),
            }),
        }
    }

    /// The verified file's record.
    pub fn metadata(&self) -> &PluginMetadata {
        self.shared.file.metadata()
    }

    /// The verified file.
    pub fn file(&self) -> &VerifiedFile {
        &self.shared.file
    }

    /// The deadline of each hook call (`server.hook_timeout`).
    pub fn hook_timeout(&self) -> Duration {
        self.shared.settings.hook_timeout
    }

    /// Where worker crashes, kills and restarts are counted (set once, by
    /// the pipeline that runs this plugin).
    pub fn count_into(&self, metrics: &Arc<Metrics>) {
        let _ = self.shared.metrics.set(Arc::clone(metrics));
    }

    /// Whether the plugin may implement request hook `hook` (false once it
    /// answered "not implemented").
    pub fn implements(&self, hook: Hook) -> bool {
        hook.request_index()
            .is_none_or(|i| !self.shared.not_implemented[i].load(Ordering::Relaxed))
    }

    /// Why the plugin serves no requests, once it is marked failed.
    pub fn failed(&self) -> Option<String> {
        match &*self.shared.state.borrow() {
            State::Failed(reason) => Some(reason.to_string()),
            _ => None,
        }
    }

    /// How far the last worker's sandbox held (from its handshake).
    pub fn confinement(&self) -> Option<super::sandbox::Confinement> {
        self.shared
            .confinement
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The worker's process id, while one serves.
    pub fn worker_pid(&self) -> Option<u32> {
        match &*self.shared.state.borrow() {
            State::Ready(connection) => Some(connection.pid),
            _ => None,
        }
    }

    /// Calls `hook` in the worker with the ABI's strings `args` and waits
    /// for its answer. The first lifecycle call starts the worker and its
    /// supervisor. A call waits for a worker being (re)started; dropping
    /// the future cancels the call (see the module docs).
    pub async fn call(&self, hook: Hook, args: Vec<Vec<u8>>) -> Result<Answer, CallFailure> {
        let shared = &self.shared;
        if !shared.supervised.swap(true, Ordering::AcqRel) {
            match start(shared).await {
                Ok(worker) => {
                    shared
                        .state
                        .send_replace(State::Ready(Arc::clone(&worker.connection)));
                    tokio::spawn(supervise(Arc::clone(shared), worker));
                }
                Err(error) => {
                    let reason: Arc<str> = Arc::from(error.as_str());
                    shared
                        .state
                        .send_replace(State::Failed(Arc::clone(&reason)));
                    return Err(CallFailure::Unavailable(error));
                }
            }
        }
        let mut args = args;
        let answer = loop {
            let connection = shared.ready().await?;
            match connection
                .call(hook, args, shared.settings.hook_timeout)
                .await
            {
                Ok(answer) => break answer,
                Err(Unsent::Failed(failure)) => return Err(failure),
                // Sent nowhere: the next worker gets it.
                Err(Unsent::Retry(unsent)) => {
                    args = unsent;
                    tokio::task::yield_now().await;
                }
            }
        };
        if answer == Answer::NotImplemented
            && let Some(i) = hook.request_index()
        {
            shared.not_implemented[i].store(true, Ordering::Relaxed);
        }
        Ok(answer)
    }
}

impl Drop for ProcessPlugin {
    fn drop(&mut self) {
        self.shared.retired.notify_one();
    }
}

impl Shared {
    /// The serving worker's connection: waits while one is started.
    async fn ready(&self) -> Result<Arc<Connection>, CallFailure> {
        let mut state = self.state.subscribe();
        loop {
            match &*state.borrow_and_update() {
                State::Ready(connection) => return Ok(Arc::clone(connection)),
                State::Failed(reason) => return Err(CallFailure::Unavailable(reason.to_string())),
                State::Starting => {}
            }
            if state.changed().await.is_err() {
                return Err(CallFailure::Unavailable(String::from(
                    "the plugin was retired",
                )));
            }
        }
    }

    fn metrics(&self) -> Option<&Metrics> {
        self.metrics.get().map(Arc::as_ref)
    }
}

/// Writes `frame` whole to `socket` while `turn` (the connection's one
/// sending turn) is held: at once when the socket takes it, else the rest
/// from a task that holds the turn until it is written, so that no caller,
/// even one whose future is dropped, leaves half a frame on the socket. A
/// write error is left to the reading side, which sees the socket's end.
fn write_whole(
    turn: tokio::sync::OwnedMutexGuard<()>,
    socket: &Arc<tokio::net::UnixStream>,
    mut frame: Vec<u8>,
) {
    match socket.try_write(&frame) {
        Ok(written) if written == frame.len() => return,
        Ok(written) => drop(frame.drain(..written)),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Err(_) => return,
    }
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let socket = Arc::clone(socket);
    drop(handle.spawn(async move {
        let _turn = turn;
        let mut rest = &frame[..];
        while !rest.is_empty() {
            if socket.writable().await.is_err() {
                return;
            }
            match socket.try_write(rest) {
                Ok(written) => rest = &rest[written..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    }));
}

/// Why [`Connection::call`] gave no answer.
enum Unsent {
    /// The worker had ended before the call was sent: its arguments, for
    /// the next worker.
    Retry(Vec<Vec<u8>>),
    /// The call was sent and the worker ended.
    Failed(CallFailure),
}

/// One worker's socket, as its callers see it.
struct Connection {
    pid: u32,
    /// The socket, both ways: each caller writes its own frame (no hand-off
    /// to another task on the way out) in its turn (`sending`); the reader
    /// task reads the answers into `incoming`.
    socket: Arc<tokio::net::UnixStream>,
    sending: Arc<tokio::sync::Mutex<()>>,
    incoming: Mutex<Frames>,
    /// Why the socket can no longer be read, once it cannot.
    broken: OnceLock<ReadEnd>,
    /// Wakes the reader task when the socket was found broken elsewhere.
    broken_found: tokio::sync::Notify,
    /// Calls waiting for their answer, by id.
    pending: Mutex<HashMap<u64, oneshot::Sender<Answer>>>,
    /// Calls cancelled whose worker has not confirmed yet.
    cancelling: Mutex<HashSet<u64>>,
    next: AtomicU64,
    /// Why the worker ended, set before the pending calls are failed.
    ended: OnceLock<String>,
    /// A cancelled call did not stop in time: what, for the kill's log.
    hung: Mutex<Option<String>>,
    kill: tokio::sync::Notify,
}

impl Connection {
    async fn call(
        self: &Arc<Self>,
        hook: Hook,
        args: Vec<Vec<u8>>,
        hook_timeout: Duration,
    ) -> Result<Answer, Unsent> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, sender);
        // A worker that ended before the call was registered has already
        // failed the pending calls, and this one was never sent.
        if self.ended.get().is_some() {
            self.pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&id);
            return Err(Unsent::Retry(args));
        }
        let mut frame = Vec::new();
        ToWorker::Call { id, hook, args }.encode(&mut frame);
        let started = Instant::now();
        // Dropped while it waits for its turn, the call was never sent: it
        // is forgotten, nothing is cancelled in the worker.
        let unsent = Unregister {
            connection: self,
            id,
        };
        let turn = Arc::clone(&self.sending).lock_owned().await;
        std::mem::forget(unsent);
        // The frame, once begun, is always finished (see `write_whole`). A
        // socket that broke is a worker that is ending: the answer then
        // never comes, and the reader's end fails this call.
        write_whole(turn, &self.socket, frame);
        let mut in_flight = InFlight {
            connection: Arc::clone(self),
            id,
            hook,
            started,
            hook_timeout,
            answered: false,
        };
        let answer = receiver.await.map_err(drop);
        in_flight.answered = true;
        answer.map_err(|_| {
            Unsent::Failed(CallFailure::Crashed(
                self.ended
                    .get()
                    .cloned()
                    .unwrap_or_else(|| String::from("the worker ended")),
            ))
        })
    }

    /// Writes a frame from outside an async context (a cancel, from a
    /// `Drop`): at once when the socket is free, else from a task.
    fn send_later(self: &Arc<Self>, frame: Vec<u8>) {
        if let Ok(turn) = Arc::clone(&self.sending).try_lock_owned() {
            write_whole(turn, &self.socket, frame);
            return;
        }
        let (sending, socket) = (Arc::clone(&self.sending), Arc::clone(&self.socket));
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            drop(handle.spawn(async move {
                write_whole(sending.lock_owned().await, &socket, frame);
            }));
        }
    }

    /// Fails every pending call with `cause`.
    fn end(&self, cause: String) {
        let _ = self.ended.set(cause);
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

/// A call registered and not sent yet: dropped, it is unregistered.
struct Unregister<'a> {
    connection: &'a Connection,
    id: u64,
}

impl Drop for Unregister<'_> {
    fn drop(&mut self) {
        self.connection
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

/// A call sent and not answered yet: dropped unanswered, it is cancelled
/// in the worker, and the worker is killed if the call is still running
/// once it has run for its hook timeout and a grace.
struct InFlight {
    connection: Arc<Connection>,
    id: u64,
    hook: Hook,
    started: Instant,
    hook_timeout: Duration,
    answered: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let connection = &self.connection;
        {
            // Moved from `pending` to `cancelling` under the `pending` lock:
            // the reader, which looks at `pending` first, always finds the id
            // in one of them.
            let mut pending = connection
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if pending.remove(&self.id).is_none() || connection.ended.get().is_some() {
                return;
            }
            connection
                .cancelling
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(self.id);
        }
        let mut frame = Vec::new();
        ToWorker::Cancel { id: self.id }.encode(&mut frame);
        connection.send_later(frame);
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let grace = (self.hook_timeout / 4).max(Duration::from_millis(50));
        let kill_at = self.started + self.hook_timeout + grace;
        let (connection, id, hook) = (Arc::clone(connection), self.id, self.hook);
        let hook_timeout = self.hook_timeout;
        drop(handle.spawn(async move {
            tokio::time::sleep_until(kill_at.into()).await;
            let still = connection
                .cancelling
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(&id);
            if still && connection.ended.get().is_none() {
                *connection
                    .hung
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(format!(
                    "`{hook}` ran past {} ms and did not stop when cancelled",
                    hook_timeout.as_millis()
                ));
                connection.kill.notify_one();
            }
        }));
    }
}

/// A started worker: its process, its connection, and the task reading its
/// frames (which ends when the socket closes or the worker breaks the
/// protocol).
struct Worker {
    child: tokio::process::Child,
    connection: Arc<Connection>,
    reader: tokio::task::JoinHandle<ReadEnd>,
}

/// Why a worker's socket can no longer be read.
#[derive(Debug, Clone)]
enum ReadEnd {
    /// The socket closed or failed.
    Closed,
    /// The worker sent a frame that breaks the protocol.
    Protocol(WireError),
}

/// Starts a worker for `shared` and completes its handshake: the error
/// says why not (for the log and the 503).
async fn start(shared: &Arc<Shared>) -> Result<Worker, String> {
    let settings = &shared.settings;
    let file = &shared.file;
    let Some(staged) = file.staged_fd() else {
        return Err(String::from(
            "the verified bytes are not in a memfd, which the process tier passes to its worker",
        ));
    };
    let (host_end, worker_end) = std::os::unix::net::UnixStream::pair()
        .map_err(|e| format!("cannot make a socket pair: {e}"))?;
    let mut command = std::process::Command::new(&settings.program);
    {
        // `ps` shows `backworks plugin-worker --name <entry> ...`.
        use std::os::unix::process::CommandExt;
        command.arg0("backworks");
    }
    command
        // JSON, which the relay reads back (`output`): the server logs it
        // again in its own format.
        .arg("--log-format")
        .arg("json")
        .arg("plugin-worker")
        .arg("--name")
        .arg(&shared.entry)
        .arg("--label")
        .arg(file.path())
        .arg("--parent")
        .arg(std::process::id().to_string())
        .arg("--memory")
        .arg(settings.limits.memory.to_string())
        .arg("--open-files")
        .arg(settings.limits.open_files.to_string())
        .arg("--max-size")
        .arg(settings.max_plugin_size.to_string())
        .env_clear()
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    // The log's level: the worker filters its plugin's events as the host
    // would.
    if let Some(filter) = std::env::var_os("RUST_LOG") {
        command.env("RUST_LOG", filter);
    }
    // The variables the plugin declares, from the host's environment; no
    // other (a plugin that declares nothing gets none either).
    if let Some(declared) = &file.metadata().capabilities {
        for name in &declared.env {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
    }
    {
        use std::os::fd::AsFd;
        super::confine::pass_descriptors(&mut command, staged, worker_end.as_fd());
    }
    let mut child = spawn(command)
        .await
        .map_err(|e| format!("cannot start {}: {e}", settings.program.display()))?;
    // Ends when the worker (the pipe's only writer) does.
    let relay = child
        .stderr
        .take()
        .map(|stderr| tokio::spawn(super::output::relay(shared.entry.clone(), stderr)));
    // The worker holds its own copy now.
    drop(worker_end);
    let pid = child.id().unwrap_or(0);
    host_end
        .set_nonblocking(true)
        .map_err(|e| format!("cannot set up the worker's socket: {e}"))?;
    let socket = tokio::net::UnixStream::from_std(host_end)
        .map_err(|e| format!("cannot set up the worker's socket: {e}"))?;
    let mut socket = socket;
    let mut frames = Frames::default();
    let hello =
        tokio::time::timeout(settings.hook_timeout, read_frame(&mut socket, &mut frames)).await;
    let refused = |why: String| why;
    let hello = match hello {
        Err(_) => {
            let _ = child.start_kill();
            return Err(refused(format!(
                "the worker did not complete its handshake within {} ms (killed)",
                settings.hook_timeout.as_millis()
            )));
        }
        Ok(Ok(Some(FromWorker::Hello(hello)))) => hello,
        Ok(Ok(Some(_))) => {
            let _ = child.start_kill();
            return Err(String::from(
                "the worker answered before its handshake (a protocol error; killed)",
            ));
        }
        Ok(Err(error)) => {
            let _ = child.start_kill();
            return Err(format!("the worker's handshake is not valid: {error}"));
        }
        Ok(Ok(None)) => {
            let status = tokio::time::timeout(settings.hook_timeout, child.wait()).await;
            // Its reason, logged before the error that points at it.
            if let Some(relay) = relay {
                let _ = tokio::time::timeout(RELAY_DRAIN, relay).await;
            }
            let how = match status {
                Ok(Ok(status)) => describe(status).1,
                _ => {
                    let _ = child.start_kill();
                    String::from("closed its socket")
                }
            };
            return Err(format!(
                "the worker ended before its handshake ({how}; its reason is in the log above)"
            ));
        }
    };
    check_hello(&hello, file).inspect_err(|_| {
        let _ = child.start_kill();
    })?;
    tracing::info!(
        plugin = %shared.entry,
        pid,
        landlock = hello.confinement.landlock,
        seccomp = hello.confinement.seccomp,
        capabilities = hello.confinement.capabilities,
        "worker started"
    );
    *shared
        .confinement
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = Some(hello.confinement.clone());
    let connection = Arc::new(Connection {
        pid,
        socket: Arc::new(socket),
        sending: Arc::new(tokio::sync::Mutex::new(())),
        incoming: Mutex::new(frames),
        broken: OnceLock::new(),
        broken_found: tokio::sync::Notify::new(),
        pending: Mutex::default(),
        cancelling: Mutex::default(),
        next: AtomicU64::new(1),
        ended: OnceLock::new(),
        hung: Mutex::new(None),
        kill: tokio::sync::Notify::new(),
    });
    let reader = tokio::spawn(read_answers(Arc::clone(&connection)));
    Ok(Worker {
        child,
        connection,
        reader,
    })
}

/// The handshake must name exactly the verified plugin and bytes.
fn check_hello(hello: &Hello, file: &VerifiedFile) -> Result<(), String> {
    let metadata = file.metadata();
    if hello.protocol != PROTOCOL {
        return Err(format!(
            "the worker speaks protocol {}, this host {PROTOCOL}",
            hello.protocol
        ));
    }
    if hello.name != metadata.name || hello.version != metadata.version {
        return Err(format!(
            "the worker loaded {} {}, not the verified {} {}",
            crate::report::escape(&hello.name),
            crate::report::escape(&hello.version),
            metadata.name,
            metadata.version
        ));
    }
    if hello.sha256 != file.sha256() {
        return Err(format!(
            "the worker loaded bytes with sha256 {}, not the verified {}",
            crate::report::escape(&hello.sha256),
            file.sha256()
        ));
    }
    Ok(())
}

/// Reads one frame: `None` at the end of the stream.
async fn read_frame(
    reader: &mut tokio::net::UnixStream,
    frames: &mut Frames,
) -> Result<Option<FromWorker>, String> {
    loop {
        if let Some(body) = frames.next().map_err(|e| e.to_string())? {
            return FromWorker::decode(body)
                .map(Some)
                .map_err(|e| e.to_string());
        }
        const CHUNK: usize = 64 * 1024;
        let read = reader.read(frames.buffer(CHUNK)).await;
        let read = read.inspect_err(|_| frames.filled(CHUNK, 0));
        let read = read.map_err(|e| e.to_string())?;
        frames.filled(CHUNK, read);
        if read == 0 {
            return Ok(None);
        }
    }
}

impl Connection {
    /// Reads what the socket has now and hands each answer to its caller;
    /// a closed socket or a frame that breaks the protocol is recorded in
    /// `broken` (and the reader task woken).
    ///
    /// Returns whether it stopped at its budget (1 MiB) with more to read:
    /// the caller then yields before it reads on.
    fn read_available(&self, frames: &mut Frames) -> bool {
        if self.broken.get().is_some() {
            return false;
        }
        const CHUNK: usize = 64 * 1024;
        // At most this much per turn: a worker that floods its socket gets
        // its share of this thread, not all of it (the reader task yields
        // between turns).
        let mut budget: usize = 1 << 20;
        let end = loop {
            if budget == 0 {
                return true;
            }
            match self.socket.try_read(frames.buffer(CHUNK)) {
                Ok(0) => {
                    frames.filled(CHUNK, 0);
                    break Some(ReadEnd::Closed);
                }
                Ok(read) => {
                    frames.filled(CHUNK, read);
                    budget = budget.saturating_sub(read);
                    if let Err(error) = self.dispatch(frames) {
                        break Some(ReadEnd::Protocol(error));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    frames.filled(CHUNK, 0);
                    break None;
                }
                Err(_) => {
                    frames.filled(CHUNK, 0);
                    break Some(ReadEnd::Closed);
                }
            }
        };
        if let Some(end) = end {
            let _ = self.broken.set(end);
            self.broken_found.notify_one();
        }
        false
    }

    /// A cancelled call `id` ended in the worker; an id that is neither
    /// waited for nor cancelled is a protocol error (a worker answering
    /// calls nobody made).
    fn cancelled(&self, id: u64) -> Result<(), WireError> {
        let known = self
            .cancelling
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        if known {
            Ok(())
        } else {
            Err(WireError::Unknown(id))
        }
    }

    /// Hands every whole frame in `frames` to its caller.
    fn dispatch(&self, frames: &mut Frames) -> Result<(), WireError> {
        while let Some(body) = frames.next()? {
            match FromWorker::decode(body)? {
                FromWorker::Done { id, answer } => {
                    let waiting = self
                        .pending
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(&id);
                    match waiting {
                        Some(sender) => {
                            let _ = sender.send(answer);
                        }
                        None => self.cancelled(id)?,
                    }
                }
                FromWorker::Cancelled { id } => self.cancelled(id)?,
                FromWorker::Hello(_) => {
                    return Err(WireError::Hello(String::from("a second handshake")));
                }
            }
        }
        Ok(())
    }
}

/// Reads answers whenever the socket is readable (and no caller is reading
/// it), until it closes or breaks the protocol.
async fn read_answers(connection: Arc<Connection>) -> ReadEnd {
    loop {
        if let Some(end) = connection.broken.get() {
            return end.clone();
        }
        tokio::select! {
            readable = connection.socket.readable() => {
                if readable.is_err() {
                    return ReadEnd::Closed;
                }
                let more = {
                    let mut incoming = connection
                        .incoming
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    let more = connection.read_available(&mut incoming);
                    incoming.shrink();
                    more
                };
                if more {
                    tokio::task::yield_now().await;
                }
            }
            () = connection.broken_found.notified() => {}
        }
    }
}

/// How a worker ended: the metric's cause (`signal-11`, `exit-3`) and the
/// sentence for the log and the 502.
fn describe(status: std::process::ExitStatus) -> (String, String) {
    use std::os::unix::process::ExitStatusExt;
    if let Some(signal) = status.signal() {
        let name = match signal {
            libc::SIGSEGV => " (SIGSEGV: segmentation fault)",
            libc::SIGABRT => " (SIGABRT: abort)",
            libc::SIGBUS => " (SIGBUS)",
            libc::SIGILL => " (SIGILL)",
            libc::SIGFPE => " (SIGFPE)",
            libc::SIGKILL => " (SIGKILL: killed, e.g. out of memory)",
            libc::SIGTERM => " (SIGTERM)",
            _ => "",
        };
        return (
            format!("signal-{signal}"),
            format!("the worker was ended by signal {signal}{name}"),
        );
    }
    match status.code() {
        Some(code) => (
            format!("exit-{code}"),
            format!("the worker exited with code {code}"),
        ),
        None => (
            String::from("unknown"),
            format!("the worker ended: {status}"),
        ),
    }
}

/// Watches `worker` until it ends, then restarts it (see the module docs);
/// returns when the plugin is retired or marked failed.
async fn supervise(shared: Arc<Shared>, mut worker: Worker) {
    let limits = shared.settings.limits;
    let mut crashes: VecDeque<Instant> = VecDeque::new();
    loop {
        let ended = watch_worker(&shared, &mut worker).await;
        // Whatever still holds the socket's other end, this side stops
        // reading it.
        worker.reader.abort();
        let Some(ended) = ended else {
            // Retired: the worker is killed and reaped.
            return;
        };
        let (cause, message) = ended;
        let name = &shared.entry;
        // New calls wait for the next worker from now on; then the calls
        // sent to this one fail.
        shared.state.send_replace(State::Starting);
        worker.connection.end(message.clone());
        let now = Instant::now();
        crashes.push_back(now);
        while crashes
            .front()
            .is_some_and(|at| now.duration_since(*at) > limits.crash_window)
        {
            crashes.pop_front();
        }
        if crashes.len() >= limits.max_crashes as usize {
            let reason = format!(
                "its worker ended {} times within {} s (last: {message}); it serves no requests until it is replaced or the server restarts",
                crashes.len(),
                limits.crash_window.as_secs()
            );
            tracing::error!(plugin = %name, cause, "plugin failed: {reason}");
            shared.state.send_replace(State::Failed(Arc::from(reason)));
            return;
        }
        tracing::error!(plugin = %name, cause, "{message}; restarting it");
        shared.state.send_replace(State::Starting);
        // At once after a first crash, then 10 ms, 20 ms, ... (at most 2 s).
        let mut delay = match crashes.len() {
            0 | 1 => Duration::ZERO,
            n => Duration::from_millis(10 << (n - 2).min(8)).min(Duration::from_secs(2)),
        };
        worker = loop {
            let retired = shared.retired.notified();
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = retired => return,
            }
            match restart(&shared).await {
                Ok(worker) => {
                    if let Some(metrics) = shared.metrics() {
                        metrics.observe_worker_restart(name, "ok");
                    }
                    tracing::info!(plugin = %name, pid = worker.connection.pid, "worker restarted");
                    shared
                        .state
                        .send_replace(State::Ready(Arc::clone(&worker.connection)));
                    break worker;
                }
                Err(error) => {
                    if let Some(metrics) = shared.metrics() {
                        metrics.observe_worker_restart(name, "failed");
                    }
                    crashes.push_back(Instant::now());
                    if crashes.len() >= limits.max_crashes as usize {
                        let reason = format!(
                            "its worker could not be restarted ({error}); it serves no requests until it is replaced or the server restarts"
                        );
                        tracing::error!(plugin = %name, "plugin failed: {reason}");
                        shared.state.send_replace(State::Failed(Arc::from(reason)));
                        return;
                    }
                    tracing::error!(plugin = %name, "cannot restart the worker: {error}");
                    delay = (delay * 2)
                        .max(Duration::from_millis(10))
                        .min(Duration::from_secs(2));
                }
            }
        };
    }
}

/// A new worker, initialized with the entry's config and health-checked.
async fn restart(shared: &Arc<Shared>) -> Result<Worker, String> {
    let mut worker = start(shared).await?;
    let timeout = shared.settings.hook_timeout;
    let config = serde_json::to_vec(&*shared.config).unwrap_or_else(|_| b"null".to_vec());
    for (hook, args) in [
        (Hook::Initialize, vec![config]),
        (Hook::HealthCheck, Vec::new()),
    ] {
        let call = worker.connection.call(hook, args, timeout);
        let failure = match tokio::time::timeout(timeout, call).await {
            Ok(Ok(Answer::Nothing | Answer::NotImplemented | Answer::Text(_))) => continue,
            Ok(Ok(Answer::Failed { message, .. })) => format!("`{hook}` failed: {message}"),
            Ok(Err(Unsent::Failed(
                CallFailure::Crashed(cause) | CallFailure::Unavailable(cause),
            ))) => cause,
            Ok(Err(Unsent::Retry(_))) => String::from("the worker ended at once"),
            Err(_) => format!("`{hook}` did not finish within {} ms", timeout.as_millis()),
        };
        let _ = worker.child.start_kill();
        let _ = worker.child.wait().await;
        return Err(failure);
    }
    Ok(worker)
}

/// Waits until `worker` ends (its socket closes, it exits, it breaks the
/// protocol, or a hung call has it killed) and reaps it: the metric cause
/// and the sentence. `None` when the plugin was retired meanwhile (the
/// worker is then killed and reaped).
async fn watch_worker(shared: &Shared, worker: &mut Worker) -> Option<(String, String)> {
    let name = &shared.entry;
    let connection = Arc::clone(&worker.connection);
    let retired = shared.retired.notified();
    tokio::pin!(retired);
    let killed_for = tokio::select! {
        end = &mut worker.reader => match end {
            Ok(ReadEnd::Protocol(error)) => Some(("protocol", format!("it broke the protocol ({error})"))),
            _ => None,
        },
        _ = worker.child.wait() => None,
        () = connection.kill.notified() => {
            let what = connection
                .hung
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
                .unwrap_or_default();
            Some(("hung", what))
        }
        () = &mut retired => {
            let _ = worker.child.start_kill();
            let _ = worker.child.wait().await;
            worker.connection.end(format!("plugin `{name}` was retired"));
            return None;
        }
    };
    if let Some((cause, why)) = killed_for {
        let _ = worker.child.start_kill();
        let _ = worker.child.wait().await;
        if let Some(metrics) = shared.metrics() {
            metrics.observe_worker_kill(name, cause);
        }
        return Some((cause.to_owned(), format!("the worker was killed: {why}")));
    }
    // The socket closed or the process exited: the exit status says how
    // (a worker that closed its socket but lives on is killed).
    let status = match tokio::time::timeout(Duration::from_secs(1), worker.child.wait()).await {
        Ok(Ok(status)) => status,
        _ => {
            let _ = worker.child.start_kill();
            match worker.child.wait().await {
                Ok(status) => status,
                Err(e) => {
                    return Some((String::from("unknown"), format!("the worker was lost: {e}")));
                }
            }
        }
    };
    let (cause, message) = describe(status);
    if let Some(metrics) = shared.metrics() {
        metrics.observe_worker_crash(name, &cause);
    }
    Some((cause, message))
}

/// Spawns `command` on the one spawner thread, which lives as long as the
/// process: `PR_SET_PDEATHSIG` fires when the thread that forked a worker
/// ends, not the process, so workers must not be forked by pool threads
/// that come and go.
async fn spawn(command: std::process::Command) -> std::io::Result<tokio::process::Child> {
    type Job = (
        std::process::Command,
        tokio::runtime::Handle,
        oneshot::Sender<std::io::Result<tokio::process::Child>>,
    );
    static SPAWNER: OnceLock<Mutex<std::sync::mpsc::Sender<Job>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (sender, jobs) = std::sync::mpsc::channel::<Job>();
        let started = std::thread::Builder::new()
            .name(String::from("backworks-spawner"))
            .spawn(move || {
                for (command, handle, reply) in jobs {
                    let _runtime = handle.enter();
                    let mut command = tokio::process::Command::from(command);
                    command.kill_on_drop(true);
                    let _ = reply.send(command.spawn());
                }
            });
        if let Err(error) = started {
            tracing::error!("cannot start the worker spawner thread: {error}");
        }
        Mutex::new(sender)
    });
    let (reply, child) = oneshot::channel();
    spawner
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .send((command, tokio::runtime::Handle::current(), reply))
        .map_err(|_| std::io::Error::other("the spawner thread is gone"))?;
    child
        .await
        .map_err(|_| std::io::Error::other("the spawner thread is gone"))?
}
