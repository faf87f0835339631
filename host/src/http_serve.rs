//! Accepts TCP connections and serves HTTP/1.1 on them with limits that a
//! slow or hostile client cannot get around: shared by `backworks serve`
//! and `backworks marketplace serve`.
//!
//! - **Header timeout**: a request head (request line and headers) must
//!   arrive completely within [`ConnectionLimits::header_timeout`], counted
//!   from the connection's accept for its first request and from the first
//!   byte of the head for the next ones. A connection that sends half a head
//!   and stalls ("slowloris") is closed then; so is one that sends half a
//!   head right behind a complete request (pipelined).
//! - **Idle timeout**: a keep-alive connection that sends nothing after a
//!   response for [`ConnectionLimits::idle_timeout`] is closed; so is one
//!   on which nothing moves for that long while the server waits on the
//!   client (a request body that stops arriving, a response the client
//!   stops reading).
//! - **Connection cap**: at most [`ConnectionLimits::max_connections`]
//!   connections are served at once, fewer if the open-file limit leaves
//!   no room for that many (see [`connection_cap`]). At the cap the server
//!   takes one more connection off the listen backlog and makes room for
//!   it by closing an idle keep-alive connection (no request in flight, no
//!   byte of the next head received), the one open longest, as nginx
//!   reuses keep-alive connections under pressure; with none idle, it waits
//!   for one to close or become idle, and further connections wait in the
//!   kernel's listen backlog (no file descriptor of ours). None is refused,
//!   so a legitimate client is served late rather than failed while the
//!   timeouts clear stalled connections out.
//!
//! The header and keep-alive timeouts are hyper's header read timer,
//! driven by a per-connection [`Timer`] that tells the idle wait from a head
//! being sent. A byte arriving tells it, and so does what hyper already
//! holds: the connection's I/O wrapper follows the requests' framing (it
//! hands hyper a head up to its blank line, then the body's
//! `content-length` bytes, holding back what follows), so when hyper starts
//! waiting for the next head, the wrapper knows whether hyper's buffer holds
//! the start of it. After a chunked body it loses track, and a wait counts
//! as idle again only once the bytes so far end with a blank line (as a
//! chunked body does). The per-request cost is hyper's own timer, one lock
//! per read, and a copy of the bytes that arrived behind a head (a small
//! body sent with its head, a pipelined request). The stall watch is one
//! sleep per connection, every quarter of the idle timeout, comparing the
//! I/O wrapper's byte counters; it counts only while hyper is blocked
//! writing to the client, or reading a request body the handler is waiting
//! for (a thin wrapper of the body records that), so a handler may work as
//! long as it needs.
//!
//! Shutdown: stop accepting, tell every connection to finish its request
//! in flight and close, wait up to a drain bound, then close the rest.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::rt::{Sleep, Timer};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};

/// The default [`ConnectionLimits::header_timeout`]: 10 s.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The default [`ConnectionLimits::idle_timeout`]: 60 s.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The default [`ConnectionLimits::max_connections`]: 4096.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// The fewest file descriptors [`connection_cap`] keeps free of
/// connections.
pub const MIN_RESERVED_FILES: u64 = 64;

/// How long a client may take and how many connections may be open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// How long a request head may take to arrive: from the accept for a
    /// connection's first request, from the head's first byte for a
    /// keep-alive connection's next ones.
    pub header_timeout: Duration,
    /// How long a keep-alive connection may wait, sending nothing, for its
    /// next request; and how long nothing may move while the server waits
    /// on the client mid-request (a stalled body or a client that stops
    /// reading the response).
    pub idle_timeout: Duration,
    /// The most connections open at once (at least 1); more wait in the
    /// listen backlog until one closes or an idle one makes room. Lowered
    /// to what the open-file limit leaves room for ([`connection_cap`]).
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Raises the process's soft limit on open files to its hard limit (as Go's
/// runtime does at start-up; on macOS also capped at
/// `kern.maxfilesperproc`), so that `max_connections` connections fit;
/// call it once at a server's start. Returns the soft limit now in force
/// (`None` where there is no such limit or it cannot be read); a failure to
/// raise it is logged and leaves it as it was.
pub fn raise_open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let before = rlimit::getrlimit(rlimit::Resource::NOFILE).ok()?.0;
        match rlimit::increase_nofile_limit(u64::MAX) {
            Ok(now) => {
                if now != before {
                    tracing::debug!(from = before, to = now, "raised the open-file limit");
                }
                Some(now)
            }
            Err(error) => {
                tracing::warn!(
                    limit = before,
                    "cannot raise the open-file limit: {error}; keeping {before}"
                );
                Some(before)
            }
        }
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The soft limit on open files in force, `None` if unlimited or unknown.
fn open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        rlimit::getrlimit(rlimit::Resource::NOFILE)
            .ok()
            .map(|(soft, _)| soft)
            .filter(|&soft| soft != rlimit::INFINITY)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The most connections served at once under an open-file limit of
/// `open_files`: `max_connections`, but never more than the limit less
/// the descriptors kept for everything else (the listener, plugins and
/// their files, log files, libraries, the one connection taken off the
/// backlog at the cap): an eighth of the limit, at least
/// [`MIN_RESERVED_FILES`]. At least 1.
pub fn connection_cap(max_connections: usize, open_files: u64) -> usize {
    let reserved = (open_files / 8).max(MIN_RESERVED_FILES);
    let room = open_files.saturating_sub(reserved).max(1);
    max_connections.min(usize::try_from(room).unwrap_or(usize::MAX))
}

/// How [`serve`] treats its connections besides the limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServeSettings {
    /// The limits.
    pub(crate) limits: ConnectionLimits,
    /// Set `TCP_NODELAY` on each connection.
    pub(crate) nodelay: bool,
    /// How long shutdown waits for open connections to finish before it
    /// closes them.
    pub(crate) drain: Duration,
}

/// Serves `app` on the connections of `listener` until `shutdown`
/// resolves, then drains (see the module documentation). The connection
/// cap is lowered to what the open-file limit in force leaves room for
/// (logged as a warning naming both numbers). Errors of single connections
/// are logged, never returned; running out of file descriptors is logged
/// and retried after a second.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    mut settings: ServeSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let wanted = settings.limits.max_connections.max(1);
    settings.limits.max_connections = match open_file_limit() {
        Some(open_files) => {
            let cap = connection_cap(wanted, open_files);
            if cap < wanted {
                tracing::warn!(
                    max_connections = wanted,
                    open_file_limit = open_files,
                    connections = cap,
                    "max_connections {wanted} does not fit the open-file limit {open_files}: \
                     serving at most {cap} connections at once ({} descriptors kept for \
                     plugins, files and the listener); raise the hard limit (`ulimit -Hn`, \
                     systemd's LimitNOFILE=) or lower max_connections",
                    open_files - cap as u64
                );
            }
            cap
        }
        None => wanted,
    };
    let limits = settings.limits;
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.header_read_timeout(limits.header_timeout);
    let open = Arc::new(Open {
        ticks: crate::ticks::start(
            &tokio::runtime::Handle::current(),
            limits.header_timeout.min(limits.idle_timeout),
        ),
        ..Open::default()
    });
    let (stop, stopped) = watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    let mut shutdown = pin!(shutdown);
    let mut warned_full = false;
    loop {
        let free = Arc::clone(&slots).try_acquire_owned().ok();
        if free.is_none() && !warned_full {
            warned_full = true;
            tracing::warn!(
                max_connections = limits.max_connections,
                "connection limit reached; idle keep-alive connections make room for new \
                 ones, others wait until open ones close"
            );
        }
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    if !is_connection_error(&error) {
                        // Most likely EMFILE: wait for descriptors to free.
                        tracing::error!("cannot accept a connection: {error}; retrying in 1 s");
                        tokio::select! {
                            () = &mut shutdown => break,
                            () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                    continue;
                }
            },
        };
        // At the cap, this one connection is held (not served) until an
        // idle one makes room or another closes; the rest wait in the
        // backlog meanwhile.
        let slot = match free {
            Some(slot) => slot,
            None => match make_room(&slots, &open, &mut shutdown).await {
                Some(slot) => slot,
                None => break,
            },
        };
        if slots.available_permits() > 0 {
            warned_full = false;
        }
        // Finished connections' results, so the set stays as small as the
        // number of open connections.
        while connections.try_join_next().is_some() {}
        connections.spawn(connection(
            stream,
            peer,
            &http,
            &app,
            settings,
            slot,
            &open,
            stopped.clone(),
        ));
    }
    drop(listener);
    let _ = stop.send(true);
    let open = connections.len();
    if open > 0 {
        tracing::info!(open, "not accepting any more; waiting for open connections");
    }
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(settings.drain, drained).await.is_err() {
        tracing::warn!(
            open = connections.len(),
            drain_ms = settings.drain.as_millis() as u64,
            "connections still open after the drain time; closing them"
        );
    }
    connections.shutdown().await;
}

/// Waits, at the cap, for a connection slot: asks the idle keep-alive
/// connection open longest to close, and asks again when that one turns
/// out busy or none was idle and one becomes idle. `None` on shutdown.
async fn make_room(
    slots: &Arc<Semaphore>,
    open: &Open,
    shutdown: &mut Pin<&mut impl Future<Output = ()>>,
) -> Option<OwnedSemaphorePermit> {
    let mut asked: Option<Arc<Traffic>> = None;
    loop {
        if asked
            .as_ref()
            .is_none_or(|traffic| !traffic.reclaim_asked.load(Ordering::Relaxed))
        {
            asked = open.reclaim_one();
        }
        tokio::select! {
            () = shutdown.as_mut() => return None,
            slot = Arc::clone(slots).acquire_owned() => return slot.ok(),
            () = open.changed.notified() => {}
        }
    }
}

/// The open connections, for making room at the cap.
#[derive(Debug, Default)]
struct Open {
    /// The next connection's number (in accept order).
    next: AtomicU64,
    /// Each open connection's traffic, by number.
    connections: Mutex<BTreeMap<u64, Arc<Traffic>>>,
    /// Woken when a connection becomes idle or declines to close (it was
    /// no longer idle when asked).
    changed: Notify,
    /// The clock of every connection's head wait ([`HeadTimer`]).
    ticks: Arc<Notify>,
}

impl Open {
    /// Registers a connection until the returned guard is dropped.
    fn register(self: &Arc<Self>, traffic: &Arc<Traffic>) -> Registered {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, Arc::clone(traffic));
        Registered {
            open: Arc::clone(self),
            id,
        }
    }

    /// Asks the idle connection open longest, not asked yet, to close;
    /// returns it, `None` if none is idle.
    fn reclaim_one(&self) -> Option<Arc<Traffic>> {
        let connections = self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let idle = connections
            .values()
            .find(|traffic| traffic.is_idle() && !traffic.reclaim_asked.load(Ordering::Relaxed))?;
        idle.reclaim_asked.store(true, Ordering::Relaxed);
        idle.reclaim.notify_one();
        Some(Arc::clone(idle))
    }
}

/// A connection's entry in [`Open`], removed on drop.
#[derive(Debug)]
struct Registered {
    open: Arc<Open>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.open
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

/// One connection, served until it closes; holds `slot` until then.
#[allow(clippy::too_many_arguments)]
fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    http: &hyper::server::conn::http1::Builder,
    app: &Router,
    settings: ServeSettings,
    slot: OwnedSemaphorePermit,
    open: &Arc<Open>,
    mut stopped: watch::Receiver<bool>,
) -> impl Future<Output = ()> + Send + 'static {
    if settings.nodelay
        && let Err(error) = stream.set_nodelay(true)
    {
        tracing::debug!("cannot set TCP_NODELAY: {error}");
    }
    let traffic = Arc::new(Traffic::default());
    let mut http = http.clone();
    http.timer(HeadTimer {
        traffic: Arc::clone(&traffic),
        open: Arc::clone(open),
        header: settings.limits.header_timeout,
        idle: settings.limits.idle_timeout,
    });
    let io = TokioIo::new(Counted {
        stream,
        traffic: Arc::clone(&traffic),
        held: Vec::new(),
    });
    let service = Watched {
        app: app.clone(),
        traffic: Arc::clone(&traffic),
    };
    let served = http.serve_connection(io, service);
    let stall_limit = settings.limits.idle_timeout;
    let open = Arc::clone(open);
    async move {
        // The connection (its socket) is dropped at the end of this block,
        // before its slot is free.
        {
            let _registered = open.register(&traffic);
            let mut served = pin!(served);
            let mut stall = pin!(stalled(&traffic, stall_limit));
            let mut closing = false;
            loop {
                tokio::select! {
                    result = served.as_mut() => {
                        if let Err(error) = result {
                            if error.is_timeout() {
                                tracing::debug!(%peer, "connection closed: no complete request head in time");
                            } else {
                                tracing::debug!(%peer, "connection ended: {error}");
                            }
                        }
                        break;
                    }
                    () = stall.as_mut() => {
                        tracing::debug!(%peer, "connection closed: nothing moved while waiting on the client");
                        break;
                    }
                    _ = stopped.wait_for(|stop| *stop), if !closing => {
                        // Finishes the request in flight, if any, then closes.
                        served.as_mut().graceful_shutdown();
                        closing = true;
                    }
                    () = traffic.reclaim.notified(), if !closing => {
                        if traffic.is_idle() {
                            tracing::debug!(%peer, "closing an idle keep-alive connection to make room for a new one");
                            // hyper closes an idle connection at once.
                            served.as_mut().graceful_shutdown();
                            closing = true;
                        } else {
                            traffic.reclaim_asked.store(false, Ordering::Relaxed);
                            open.changed.notify_one();
                        }
                    }
                }
            }
        }
        drop(slot);
    }
}

/// Errors of one connection that `accept` reports: the next accept is
/// fine.
fn is_connection_error(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// What moved on a connection, shared by its I/O, its timer, its stall
/// watch and the accept loop (which reads [`Traffic::is_idle`]). Only the
/// connection's own task writes it, except the reclaim request.
#[derive(Debug, Default)]
struct Traffic {
    /// Bytes handed to hyper so far.
    read: AtomicU64,
    /// Bytes written to the connection so far.
    written: AtomicU64,
    /// Whether the last read of the socket found nothing to read.
    read_blocked: AtomicBool,
    /// Whether the last write found the client's window full.
    write_blocked: AtomicBool,
    /// Whether the handler is waiting for more of the request body (hyper
    /// also reads, to notice a closed connection, while a handler works:
    /// that read alone is no stall).
    awaiting_body: AtomicBool,
    /// Whether hyper has waited for a head on this connection before.
    waited: AtomicBool,
    /// While hyper waits idle for the next head: 1 + the bytes handed to it
    /// when the wait began; 0 otherwise.
    idle_at: AtomicU64,
    /// Where the stream handed to hyper is, request by request.
    framing: Mutex<Framing>,
    /// The accept loop asks this connection to close if idle.
    reclaim: Notify,
    /// Whether it has asked and had no answer yet.
    reclaim_asked: AtomicBool,
}

impl Traffic {
    /// Records the outcome of one read or write (one writer, this
    /// connection's task: relaxed operations are enough).
    fn record<T>(
        polled: &Poll<std::io::Result<T>>,
        counter: &AtomicU64,
        blocked: &AtomicBool,
        moved: usize,
    ) {
        if moved > 0 {
            counter.fetch_add(moved as u64, Ordering::Relaxed);
        }
        blocked.store(polled.is_pending(), Ordering::Relaxed);
    }

    /// Whether the server is waiting on the client: for request body bytes
    /// the handler wants, or to write a response the client does not read.
    fn waiting_on_client(&self) -> bool {
        (self.read_blocked.load(Ordering::Relaxed) && self.awaiting_body.load(Ordering::Relaxed))
            || self.write_blocked.load(Ordering::Relaxed)
    }

    /// Whether hyper waits for the next head of a keep-alive connection
    /// and has no byte of it: no request in flight, nothing received.
    fn is_idle(&self) -> bool {
        let at = self.idle_at.load(Ordering::Relaxed);
        at != 0 && self.read.load(Ordering::Relaxed) == at - 1
    }

    fn framing(&self) -> std::sync::MutexGuard<'_, Framing> {
        self.framing.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many of `bytes`, just read, to hand to hyper now (at least one
    /// if any): a head up to its blank line, a body up to its length; the
    /// rest is held for the next read.
    fn deliver(&self, bytes: &[u8]) -> usize {
        if bytes.is_empty() {
            return 0;
        }
        let at = self.read.load(Ordering::Relaxed);
        let mut framing = self.framing();
        loop {
            match &mut *framing {
                Framing::Body { end } if at >= *end => {
                    *framing = Framing::Head {
                        start: *end,
                        scan: Scan::Leading,
                    };
                }
                Framing::Body { end } => {
                    return bytes
                        .len()
                        .min(usize::try_from(*end - at).unwrap_or(usize::MAX));
                }
                Framing::Head { scan, .. } => {
                    for (i, &byte) in bytes.iter().enumerate() {
                        *scan = scan.step(byte);
                        if *scan == Scan::Blank {
                            *framing = Framing::Parsed {
                                end: at + i as u64 + 1,
                            };
                            return i + 1;
                        }
                    }
                    return bytes.len();
                }
                // hyper reads before it handed over the request it parsed:
                // not the order followed here.
                Framing::Parsed { .. } => *framing = Framing::Lost { scan: Scan::Text },
                Framing::Lost { scan } => {
                    // The state after three bytes or more depends on those
                    // three only: a whole chunked upload is not scanned.
                    let tail = &bytes[bytes.len().saturating_sub(3)..];
                    if bytes.len() >= 3 {
                        *scan = Scan::Text;
                    }
                    for &byte in tail {
                        *scan = scan.step(byte);
                    }
                    return bytes.len();
                }
            }
        }
    }

    /// hyper handed over a request whose body is `length` bytes (`None`:
    /// chunked). A request whose head was not seen to end stops the
    /// following.
    fn request(&self, length: Option<u64>) {
        let mut framing = self.framing();
        *framing = match (*framing, length) {
            (Framing::Parsed { end }, Some(length)) => Framing::Body {
                end: end.saturating_add(length),
            },
            (Framing::Lost { scan }, _) => Framing::Lost { scan },
            _ => Framing::Lost { scan: Scan::Text },
        };
    }

    /// Whether hyper, starting to wait for a head, holds no byte of it.
    fn nothing_buffered(&self) -> bool {
        let at = self.read.load(Ordering::Relaxed);
        let mut framing = self.framing();
        match &*framing {
            Framing::Body { end } => at == *end,
            // Empty lines before a head are skipped, by hyper too.
            Framing::Head { scan, .. } => *scan == Scan::Leading,
            Framing::Parsed { .. } => false,
            // The bytes end with a blank line (the end of a head or of a
            // chunked body): whatever came before is complete; follow the
            // framing again from here.
            Framing::Lost { scan } => {
                let found = matches!(scan, Scan::Blank);
                if found {
                    *framing = Framing::Head {
                        start: at,
                        scan: Scan::Leading,
                    };
                }
                found
            }
        }
    }
}

/// Where the stream handed to hyper is, request by request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// A head that starts at byte `start` of the stream, up to its blank
    /// line.
    Head { start: u64, scan: Scan },
    /// A head that ended at byte `end`, not handed over by hyper yet.
    Parsed { end: u64 },
    /// A body that ends at byte `end`.
    Body { end: u64 },
    /// Not followed (after a chunked body): everything is handed over.
    Lost { scan: Scan },
}

impl Default for Framing {
    fn default() -> Self {
        Self::Head {
            start: 0,
            scan: Scan::Leading,
        }
    }
}

/// Where a scan for the blank line ending a head is: line endings are
/// `\r\n` or `\n`, as hyper's parser accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// Only empty lines so far (skipped before a head).
    Leading,
    /// Inside a line.
    Text,
    /// Right after a line's `\n`.
    LineEnd,
    /// After a line's `\n` and a `\r`.
    LineEndCr,
    /// Right after an empty line that follows a line: the end of a head.
    Blank,
}

impl Scan {
    fn step(self, byte: u8) -> Self {
        match (self, byte) {
            (Self::Leading, b'\r' | b'\n') => Self::Leading,
            (Self::LineEnd | Self::LineEndCr | Self::Blank, b'\n') => Self::Blank,
            (Self::LineEnd | Self::Blank, b'\r') => Self::LineEndCr,
            (Self::Text, b'\n') => Self::LineEnd,
            _ => Self::Text,
        }
    }
}

/// Resolves once the connection has been waiting on its client, with no
/// byte read or written, for about `limit` (checked every quarter of it):
/// a request body that stops arriving, a response the client stops
/// reading. Time a handler spends working is not counted.
async fn stalled(traffic: &Traffic, limit: Duration) {
    let tick = (limit / 4).max(Duration::from_millis(10));
    let moved = || {
        (
            traffic.read.load(Ordering::Relaxed),
            traffic.written.load(Ordering::Relaxed),
        )
    };
    let mut last = moved();
    let mut still = Duration::ZERO;
    loop {
        tokio::time::sleep(tick).await;
        let now = moved();
        if now == last && traffic.waiting_on_client() {
            still += tick;
            if still >= limit {
                return;
            }
        } else {
            still = Duration::ZERO;
        }
        last = now;
    }
}

/// A connection's stream, counting the bytes read and written, and handing
/// hyper the bytes read request by request (see [`Traffic::deliver`]).
#[derive(Debug)]
struct Counted {
    stream: TcpStream,
    traffic: Arc<Traffic>,
    /// Bytes read from the socket, not yet handed to hyper.
    held: Vec<u8>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        if this.held.is_empty() {
            let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
            this.traffic
                .read_blocked
                .store(polled.is_pending(), Ordering::Relaxed);
            if !matches!(polled, Poll::Ready(Ok(()))) {
                return polled;
            }
        } else {
            let n = this.held.len().min(buf.remaining());
            buf.put_slice(&this.held[..n]);
            this.held.drain(..n);
        }
        let read = &buf.filled()[before..];
        let handed = this.traffic.deliver(read);
        if handed < read.len() {
            let rest = read[handed..].to_vec();
            this.held.splice(0..0, rest);
            buf.set_filled(before + handed);
        }
        this.traffic
            .read
            .fetch_add(handed as u64, Ordering::Relaxed);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        let written = match &polled {
            Poll::Ready(Ok(n)) => *n,
            _ => 0,
        };
        Traffic::record(
            &polled,
            &self.traffic.written,
            &self.traffic.write_blocked,
            written,
        );
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        let written = match &polled {
            Poll::Ready(Ok(n)) => *n,
            _ => 0,
        };
        Traffic::record(
            &polled,
            &self.traffic.written,
            &self.traffic.write_blocked,
            written,
        );
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The connection's service: `app`, with each request body watched for
/// whether the handler waits on it.
#[derive(Debug, Clone)]
struct Watched {
    app: Router,
    traffic: Arc<Traffic>,
}

impl hyper::service::Service<axum::http::Request<hyper::body::Incoming>> for Watched {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = axum::routing::future::RouteFuture<std::convert::Infallible>;

    fn call(&self, request: axum::http::Request<hyper::body::Incoming>) -> Self::Future {
        // hyper hands over each request as soon as it parsed the head,
        // before it reads any of the body.
        self.traffic
            .request(hyper::body::Body::size_hint(request.body()).exact());
        let traffic = Arc::clone(&self.traffic);
        let request = request.map(|body| WatchedBody { body, traffic });
        // A router is always ready: no `poll_ready` needed (axum's own
        // `serve` clones it per request the same way).
        tower_service::Service::call(&mut self.app.clone(), request)
    }
}

pin_project_lite::pin_project! {
    /// A request body that records whether the handler waits on it.
    #[derive(Debug)]
    struct WatchedBody {
        #[pin]
        body: hyper::body::Incoming,
        traffic: Arc<Traffic>,
    }

    impl PinnedDrop for WatchedBody {
        fn drop(this: Pin<&mut Self>) {
            this.traffic.awaiting_body.store(false, Ordering::Relaxed);
        }
    }
}

impl hyper::body::Body for WatchedBody {
    type Data = axum::body::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.body.poll_frame(cx);
        this.traffic
            .awaiting_body
            .store(polled.is_pending(), Ordering::Relaxed);
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// hyper's timer for one connection. hyper uses it only for the header
/// read timeout, which it arms whenever it starts waiting for a request
/// head, with the deadline `now + header_timeout`: the first time (right
/// after the accept) that deadline stands; later (after a response, the
/// connection idle, and hyper holding no byte of the next head) the wait
/// may last `idle` until a byte arrives, and `header` from then; while it
/// is idle, the connection may be closed to make room for a new one. The
/// waits run on the server's coarse clock ([`crate::ticks`]): a deadline
/// is seen at most 1/16 of the shorter timeout late.
#[derive(Debug)]
struct HeadTimer {
    traffic: Arc<Traffic>,
    open: Arc<Open>,
    header: Duration,
    idle: Duration,
}

impl Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        let first = !self.traffic.waited.swap(true, Ordering::Relaxed);
        // A head hyper already holds part of (sent right behind the last
        // request) is arriving: the header deadline stands.
        let (deadline, phase) = if first || !self.traffic.nothing_buffered() {
            (deadline, Phase::Head)
        } else {
            let armed = deadline
                .checked_sub(self.header)
                .unwrap_or_else(Instant::now);
            let bytes = self.traffic.read.load(Ordering::Relaxed);
            self.traffic.idle_at.store(bytes + 1, Ordering::Relaxed);
            // The accept loop may be waiting for room.
            self.open.changed.notify_one();
            (armed + self.idle, Phase::Idle { bytes })
        };
        Box::pin(HeadSleep {
            sleep: crate::ticks::CoarseSleep::until(&self.open.ticks, deadline),
            traffic: Arc::clone(&self.traffic),
            header: self.header,
            phase,
        })
    }

    fn now(&self) -> Instant {
        tokio::time::Instant::now().into()
    }
}

/// Where a wait for a request head is.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Nothing received since the wait began (`bytes` read before it).
    Idle { bytes: u64 },
    /// The head is arriving: the header deadline runs.
    Head,
}

pin_project_lite::pin_project! {
    /// The wait for one request head (see [`HeadTimer`]).
    #[derive(Debug)]
    struct HeadSleep {
        #[pin]
        sleep: crate::ticks::CoarseSleep,
        traffic: Arc<Traffic>,
        header: Duration,
        phase: Phase,
    }

    impl PinnedDrop for HeadSleep {
        fn drop(this: Pin<&mut Self>) {
            if let Phase::Idle { bytes } = this.phase {
                let _ = this.traffic.idle_at.compare_exchange(
                    bytes + 1,
                    0,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
        }
    }
}

impl Future for HeadSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        // hyper polls this after each read that left the head incomplete,
        // so the first byte is seen here when it arrives.
        if let Phase::Idle { bytes } = *this.phase
            && this.traffic.read.load(Ordering::Relaxed) != bytes
        {
            *this.phase = Phase::Head;
            this.traffic.idle_at.store(0, Ordering::Relaxed);
            this.sleep.as_mut().reset(Instant::now() + *this.header);
        }
        this.sleep.poll(cx)
    }
}

impl Sleep for HeadSleep {}

#[cfg(test)]
mod tests {
    use super::*;

    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The body of `GET /big`: more than loopback's socket buffers hold,
    /// streamed in chunks of [`CHUNK`].
    const BIG: usize = 64 * 1024 * 1024;
    static CHUNK: [u8; 64 * 1024] = [b'x'; 64 * 1024];
    /// Set when the server drops the body of `GET /big` (sent or not).
    static BIG_DROPPED: AtomicBool = AtomicBool::new(false);

    /// The body of `GET /big`; sets [`BIG_DROPPED`] when dropped.
    fn big_body() -> axum::body::Body {
        struct Dropped;
        impl Drop for Dropped {
            fn drop(&mut self) {
                BIG_DROPPED.store(true, Ordering::SeqCst);
            }
        }
        let dropped = Dropped;
        axum::body::Body::from_stream(futures_util::stream::iter((0..BIG / CHUNK.len()).map(
            move |_| {
                let _owned = &dropped;
                Ok::<_, std::convert::Infallible>(axum::body::Bytes::from_static(&CHUNK))
            },
        )))
    }

    async fn start(limits: ConnectionLimits) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/", get(|| async { "hello" }))
            .route(
                "/upload",
                axum::routing::post(|body: String| async move { body }),
            )
            .route("/big", get(|| async { big_body() }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                    "hello"
                })
                .post(|body: String| async move {
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                    body
                }),
            );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(
            listener,
            app,
            ServeSettings {
                limits,
                nodelay: true,
                drain: Duration::from_secs(5),
            },
            async move {
                let _ = stopped.await;
            },
        ));
        (addr, stop)
    }

    const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nhost: test\r\n\r\n";

    /// Reads one response of a keep-alive connection (`hello`, 5 bytes).
    async fn response(stream: &mut TcpStream) -> String {
        let mut text = Vec::new();
        let mut buf = [0; 1024];
        while !text.ends_with(b"hello") {
            let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf))
                .await
                .expect("no response within 30 s")
                .unwrap();
            assert!(n > 0, "closed before the response");
            text.extend_from_slice(&buf[..n]);
        }
        String::from_utf8(text).unwrap()
    }

    /// Whether the server closed `stream` (EOF or reset); panics on a hang.
    async fn closed(stream: &mut TcpStream) -> bool {
        let mut buf = [0; 1024];
        loop {
            match tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf))
                .await
                .expect("the server did not close the connection within 30 s")
            {
                Ok(0) | Err(_) => return true,
                // hyper may answer 408 before closing.
                Ok(_) => {}
            }
        }
    }

    #[tokio::test]
    async fn a_keep_alive_connection_may_idle_longer_than_the_header_timeout() {
        let (addr, _stop) = start(ConnectionLimits {
            header_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4,
        })
        .await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(REQUEST).await.unwrap();
        assert!(response(&mut stream).await.starts_with("HTTP/1.1 200"));
        // Well past the header timeout, well within the idle one.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        stream.write_all(REQUEST).await.unwrap();
        assert!(response(&mut stream).await.starts_with("HTTP/1.1 200"));
    }

    #[tokio::test]
    async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
        let (addr, _stop) = start(ConnectionLimits {
            header_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_millis(300),
            max_connections: 4,
        })
        .await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(REQUEST).await.unwrap();
        assert!(response(&mut stream).await.starts_with("HTTP/1.1 200"));
        assert!(closed(&mut stream).await);
    }

    #[tokio::test]
    async fn a_head_started_after_an_idle_wait_gets_the_header_timeout() {
        let (addr, _stop) = start(ConnectionLimits {
            header_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4,
        })
        .await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(REQUEST).await.unwrap();
        assert!(response(&mut stream).await.starts_with("HTTP/1.1 200"));
        stream.write_all(b"GET / HTTP/1.1\r\nhost:").await.unwrap();
        assert!(closed(&mut stream).await);
    }

    /// A complete request, then on the same connection (in the same write)
    /// the start of a second head: the header timeout runs for that head,
    /// not the idle one (before: hyper's buffer held the partial head, the
    /// timer saw no byte arrive after the response and gave it the idle
    /// timeout). Also after a request with a body.
    #[tokio::test]
    async fn a_pipelined_partial_head_gets_the_header_timeout() {
        let (addr, _stop) = start(ConnectionLimits {
            header_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(600),
            max_connections: 4,
        })
        .await;
        let requests: [&[u8]; 2] = [
            b"GET / HTTP/1.1\r\nhost: test\r\n\r\nGET / HTTP/1.1\r\nhost:",
            b"POST /upload HTTP/1.1\r\nhost: test\r\ncontent-length: 5\r\n\r\nhelloGET / HTTP/1.1\r\nhost:",
        ];
        for request in requests {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream.write_all(request).await.unwrap();
            assert!(response(&mut stream).await.starts_with("HTTP/1.1 200"));
            // Closed after about 1 s; `closed` catches a hang at 30 s, far
            // below the idle timeout.
            assert!(closed(&mut stream).await);
        }
    }

    /// After a request with a body, the connection may idle as long as
    /// after one without (the framing of the body is followed, so the wait
    /// is known to be idle).
    #[tokio::test]
    async fn a_keep_alive_connection_may_idle_after_a_request_with_a_body() {
        let (addr, _stop) = start(ConnectionLimits {
            header_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4,
        })
        .await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"POST /upload HTTP/1.1\r\nhost: test\r\ncontent-length: 5\r\n\r\nhello")
            .await
            .unwrap();
        assert!(response(&mut stream).await.starts_with("HTTP/1.1 200"));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        stream
            .write_all(b"POST /upload HTTP/1.1\r\nhost: test\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
            .await
            .unwrap();
        assert!(response(&mut stream).await.starts_with("HTTP/1.1 200"));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        stream.write_all(REQUEST).await.unwrap();
        assert!(response(&mut stream).await.starts_with("HTTP/1.1 200"));
    }

    #[test]
    fn the_connection_cap_keeps_room_for_other_files() {
        // An eighth of the limit is kept, at least 64 descriptors.
        assert_eq!(connection_cap(4096, 1024), 896);
        assert_eq!(connection_cap(4096, 512), 448);
        assert_eq!(connection_cap(4096, 256), 192);
        assert_eq!(connection_cap(4096, 100), 36);
        assert_eq!(connection_cap(4096, 64), 1);
        assert_eq!(connection_cap(4096, 0), 1);
        assert_eq!(connection_cap(1_000_000, 1_048_576), 917_504);
        // Below what the limit leaves room for: unchanged.
        assert_eq!(connection_cap(4096, 1_048_576), 4096);
        assert_eq!(connection_cap(896, 1024), 896);
        assert_eq!(connection_cap(4096, u64::MAX), 4096);
    }

    /// What the I/O wrapper hands hyper per read: a head up to its blank
    /// line, a body up to its length, everything after a chunked body.
    #[test]
    fn the_framing_hands_over_a_head_then_its_body() {
        let traffic = Traffic::default();
        let deliver = |bytes: &[u8]| {
            let handed = traffic.deliver(bytes);
            traffic.read.fetch_add(handed as u64, Ordering::Relaxed);
            handed
        };
        // Empty lines before a head are skipped; bare `\n` line ends count.
        assert!(traffic.nothing_buffered());
        assert_eq!(deliver(b"\r\nGET / HTTP/1.1\nhost: a\n\nGET"), 26);
        assert!(!traffic.nothing_buffered());
        traffic.request(Some(0));
        assert!(traffic.nothing_buffered());
        assert_eq!(deliver(b"GET / HTTP/1.1\r\n"), 16);
        assert!(!traffic.nothing_buffered());
        assert_eq!(deliver(b"content-length: 3\r\n\r\nabcGET"), 21);
        traffic.request(Some(3));
        assert_eq!(deliver(b"abcGET"), 3);
        assert!(traffic.nothing_buffered());
        assert_eq!(deliver(b"GET / HTTP/1.1\r\n\r\n"), 18);
        // A chunked body: not followed; the wait counts as idle again once
        // the bytes end with a blank line.
        traffic.request(None);
        assert_eq!(deliver(b"5\r\nhello\r\n0\r\n\r\nGET /"), 20);
        assert!(!traffic.nothing_buffered());
        assert_eq!(deliver(b" HTTP/1.1\r\n\r\n"), 13);
        assert!(traffic.nothing_buffered());
        assert_eq!(deliver(b"GET / HTTP/1.1\r\n\r\nx"), 18);
        // A head hyper parsed but the scan did not see end: not followed.
        traffic.request(Some(0));
        assert_eq!(deliver(b"x"), 1);
        traffic.request(Some(0));
        assert!(!traffic.nothing_buffered());
        assert_eq!(deliver(b"\n"), 1);
        assert!(!traffic.nothing_buffered());
        assert_eq!(deliver(b"\r"), 1);
        assert_eq!(deliver(b"\n"), 1);
        assert!(traffic.nothing_buffered());
    }

    /// Requests sent back to back on one connection, with and without
    /// bodies (one chunked), are all answered, in order.
    #[tokio::test]
    async fn pipelined_requests_are_all_answered() {
        let (addr, _stop) = start(ConnectionLimits::default()).await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(
                b"POST /upload HTTP/1.1\r\nhost: test\r\ncontent-length: 5\r\n\r\nhello\
                  GET / HTTP/1.1\r\nhost: test\r\n\r\n\
                  POST /upload HTTP/1.1\r\nhost: test\r\ntransfer-encoding: chunked\r\n\r\n\
                  3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n\
                  GET / HTTP/1.1\r\nhost: test\r\n\r\n",
            )
            .await
            .unwrap();
        let mut text = String::new();
        while text.matches("HTTP/1.1 200").count() < 4 || !text.ends_with("hello") {
            text.push_str(&response(&mut stream).await);
        }
        assert_eq!(text.matches("hello").count(), 4, "{text}");
    }

    /// At the cap, idle keep-alive connections make room for a new client
    /// (before: it waited in the backlog for the idle timeout).
    #[tokio::test]
    async fn idle_keep_alive_connections_make_room_at_the_cap() {
        let (addr, _stop) = start(ConnectionLimits {
            header_timeout: Duration::from_secs(600),
            idle_timeout: Duration::from_secs(600),
            max_connections: 4,
        })
        .await;
        let mut idle = Vec::new();
        for _ in 0..4 {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream.write_all(REQUEST).await.unwrap();
            assert!(response(&mut stream).await.starts_with("HTTP/1.1 200"));
            idle.push(stream);
        }
        // `response` catches a hang at 30 s, far below the idle timeout.
        let mut fifth = TcpStream::connect(addr).await.unwrap();
        fifth.write_all(REQUEST).await.unwrap();
        assert!(response(&mut fifth).await.starts_with("HTTP/1.1 200"));
        // The idle ones: each is either still served or was closed to make
        // room; at least one was.
        let (mut answered, mut reclaimed) = (0, 0);
        for stream in &mut idle {
            let sent = stream.write_all(REQUEST).await;
            let mut text = Vec::new();
            let mut buf = [0; 1024];
            let served = sent.is_ok()
                && loop {
                    match tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf))
                        .await
                        .expect("neither answered nor closed within 30 s")
                    {
                        Ok(0) | Err(_) => break false,
                        Ok(n) => text.extend_from_slice(&buf[..n]),
                    }
                    if text.ends_with(b"hello") {
                        break true;
                    }
                };
            if served {
                answered += 1;
            } else {
                reclaimed += 1;
            }
        }
        assert!(reclaimed >= 1, "no idle connection was closed");
        assert_eq!(answered + reclaimed, 4);
    }

    /// A request body that stops arriving, and a response the client stops
    /// reading, cost the connection after the idle timeout; a handler that
    /// works longer than that does not (hyper is not waiting on the
    /// client meanwhile).
    #[tokio::test]
    async fn a_connection_on_which_nothing_moves_is_closed_after_the_idle_timeout() {
        let (addr, _stop) = start(ConnectionLimits {
            header_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_millis(300),
            max_connections: 4,
        })
        .await;
        let mut body = TcpStream::connect(addr).await.unwrap();
        body.write_all(b"POST /upload HTTP/1.1\r\nhost: test\r\ncontent-length: 100\r\n\r\nhalf")
            .await
            .unwrap();
        assert!(closed(&mut body).await);

        let mut reader = TcpStream::connect(addr).await.unwrap();
        reader
            .write_all(b"GET /big HTTP/1.1\r\nhost: test\r\n\r\n")
            .await
            .unwrap();
        // Not reading until the server gave up on this client and dropped
        // the response (a hang is caught after 60 s).
        let waited = Instant::now();
        while !BIG_DROPPED.load(Ordering::SeqCst) {
            assert!(
                waited.elapsed() < Duration::from_secs(60),
                "the server kept writing to a client that does not read"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut received = 0;
        let mut buf = vec![0; 1 << 16];
        loop {
            match tokio::time::timeout(Duration::from_secs(30), reader.read(&mut buf))
                .await
                .expect("the server did not close the connection within 30 s")
            {
                Ok(0) | Err(_) => break,
                Ok(n) => received += n,
            }
        }
        assert!(
            received < BIG,
            "the whole response arrived: nothing was cut"
        );

        // Working past the limit, with or without a body read first.
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET /slow HTTP/1.1\r\nhost: test\r\n\r\n")
            .await
            .unwrap();
        assert!(response(&mut slow).await.starts_with("HTTP/1.1 200"));
        slow.write_all(b"POST /slow HTTP/1.1\r\nhost: test\r\ncontent-length: 5\r\n\r\nhello")
            .await
            .unwrap();
        assert!(response(&mut slow).await.starts_with("HTTP/1.1 200"));
    }

    #[tokio::test]
    async fn shutdown_closes_stalled_connections_within_the_drain_time() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            Router::new(),
            ServeSettings {
                limits: ConnectionLimits {
                    header_timeout: Duration::from_secs(3600),
                    ..ConnectionLimits::default()
                },
                nodelay: false,
                drain: Duration::from_millis(200),
            },
            async move {
                let _ = stopped.await;
            },
        ));
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        // Accepted before the stop (the request line is read).
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(30), server)
            .await
            .expect("serve did not return")
            .unwrap();
        assert!(closed(&mut stream).await);
    }
}
