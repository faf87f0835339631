//! Accepts TCP connections and serves HTTP/1.1 on them with limits that a
//! slow or hostile client cannot get around: shared by `backworks serve`
//! and `backworks marketplace serve`.
//!
//! - **Header timeout**: a request head (request line and headers) must
//!   arrive completely within [`ConnectionLimits::header_timeout`], counted
//!   from the connection's accept for its first request and from the first
//!   byte of the head for the next ones. A connection that sends half a head
//!   and stalls ("slowloris") is closed then.
//! - **Idle timeout**: a keep-alive connection that sends nothing after a
//!   response for [`ConnectionLimits::idle_timeout`] is closed; so is one
//!   on which nothing moves for that long while the server waits on the
//!   client (a request body that stops arriving, a response the client
//!   stops reading).
//! - **Connection cap**: at most [`ConnectionLimits::max_connections`]
//!   connections are open at once. At the cap the server stops accepting:
//!   further connections wait in the kernel's listen backlog (no file
//!   descriptor of ours) and are accepted, in order, as open ones close;
//!   none is refused, so a legitimate client is served late rather than
//!   failed while the timeouts clear stalled connections out.
//!
//! The header and keep-alive timeouts are hyper's header read timer,
//! driven by a per-connection [`Timer`] that tells the idle wait from a head
//! being sent by whether any byte arrived since hyper started waiting
//! (counted by the connection's I/O wrapper). The per-request cost is
//! hyper's own: one timer per head wait. The stall watch is one sleep per
//! connection, every quarter of the idle timeout, comparing the I/O
//! wrapper's byte counters; it counts only while hyper is blocked writing
//! to the client, or reading a request body the handler is waiting for (a
//! thin wrapper of the body records that), so a handler may work as long
//! as it needs. Per request that is one reference count and a flag per
//! body poll; per read or write, a counter and a flag.
//!
//! Shutdown: stop accepting, tell every connection to finish its request
//! in flight and close, wait up to a drain bound, then close the rest.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::rt::{Sleep, Timer};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// The default [`ConnectionLimits::header_timeout`]: 10 s.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The default [`ConnectionLimits::idle_timeout`]: 60 s.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The default [`ConnectionLimits::max_connections`]: 4096.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

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
    /// listen backlog until one closes.
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
/// resolves, then drains (see the module documentation). Errors of single
/// connections are logged, never returned; running out of file descriptors
/// is logged and retried after a second.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    settings: ServeSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let limits = settings.limits;
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.header_read_timeout(limits.header_timeout);
    let graceful = GracefulShutdown::new();
    let mut connections = tokio::task::JoinSet::new();
    let mut shutdown = pin!(shutdown);
    let mut warned_full = false;
    loop {
        // A slot first: at the cap, nothing is accepted and new connections
        // wait in the backlog.
        let slot = match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if !warned_full {
                    warned_full = true;
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "connection limit reached; new connections wait until open ones close"
                    );
                }
                tokio::select! {
                    () = &mut shutdown => break,
                    slot = Arc::clone(&slots).acquire_owned() => match slot {
                        Ok(slot) => slot,
                        // The semaphore is never closed.
                        Err(_) => break,
                    },
                }
            }
        };
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
        if slots.available_permits() > 0 {
            warned_full = false;
        }
        // Finished connections' results, so the set stays as small as the
        // number of open connections.
        while connections.try_join_next().is_some() {}
        connections.spawn(connection(
            stream, peer, &http, &app, &graceful, settings, slot,
        ));
    }
    drop(listener);
    let open = graceful.count();
    if open > 0 {
        tracing::info!(open, "not accepting any more; waiting for open connections");
    }
    if tokio::time::timeout(settings.drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            open = connections.len(),
            drain_ms = settings.drain.as_millis() as u64,
            "connections still open after the drain time; closing them"
        );
    }
    connections.shutdown().await;
}

/// One connection, served until it closes; holds `slot` until then.
fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    http: &hyper::server::conn::http1::Builder,
    app: &Router,
    graceful: &GracefulShutdown,
    settings: ServeSettings,
    slot: tokio::sync::OwnedSemaphorePermit,
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
        header: settings.limits.header_timeout,
        idle: settings.limits.idle_timeout,
    });
    let io = TokioIo::new(Counted {
        stream,
        traffic: Arc::clone(&traffic),
    });
    let service = Watched {
        app: app.clone(),
        traffic: Arc::clone(&traffic),
    };
    let served = graceful.watch(http.serve_connection(io, service));
    let stall_limit = settings.limits.idle_timeout;
    async move {
        tokio::select! {
            served = served => if let Err(error) = served {
                if error.is_timeout() {
                    tracing::debug!(%peer, "connection closed: no complete request head in time");
                } else {
                    tracing::debug!(%peer, "connection ended: {error}");
                }
            },
            () = stalled(&traffic, stall_limit) => {
                tracing::debug!(%peer, "connection closed: nothing moved while waiting on the client");
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

/// What moved on a connection, shared by its I/O, its timer and its stall
/// watch. Only the connection's own task writes it.
#[derive(Debug, Default)]
struct Traffic {
    /// Bytes read from the connection so far.
    read: AtomicU64,
    /// Bytes written to it so far.
    written: AtomicU64,
    /// Whether the last read found nothing to read.
    read_blocked: AtomicBool,
    /// Whether the last write found the client's window full.
    write_blocked: AtomicBool,
    /// Whether the handler is waiting for more of the request body (hyper
    /// also reads, to notice a closed connection, while a handler works:
    /// that read alone is no stall).
    awaiting_body: AtomicBool,
    /// Whether hyper has waited for a head on this connection before.
    waited: AtomicBool,
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

/// A connection's stream, counting the bytes read and written.
#[derive(Debug)]
struct Counted {
    stream: TcpStream,
    traffic: Arc<Traffic>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        Traffic::record(
            &polled,
            &self.traffic.read,
            &self.traffic.read_blocked,
            read,
        );
        polled
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
/// connection idle) the wait may last `idle` until a byte arrives, and
/// `header` from then.
#[derive(Debug)]
struct HeadTimer {
    traffic: Arc<Traffic>,
    header: Duration,
    idle: Duration,
}

impl Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        let first = !self.traffic.waited.swap(true, Ordering::Relaxed);
        let (deadline, phase) = if first {
            (deadline, Phase::Head)
        } else {
            let armed = deadline
                .checked_sub(self.header)
                .unwrap_or_else(Instant::now);
            (
                armed + self.idle,
                Phase::Idle {
                    bytes: self.traffic.read.load(Ordering::Relaxed),
                },
            )
        };
        Box::pin(HeadSleep {
            sleep: tokio::time::sleep_until(deadline.into()),
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
        sleep: tokio::time::Sleep,
        traffic: Arc<Traffic>,
        header: Duration,
        phase: Phase,
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
            this.sleep
                .as_mut()
                .reset(tokio::time::Instant::now() + *this.header);
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
        stream.write_all(REQUEST).await.unwrap();
        assert!(response(&mut stream).await.starts_with("HTTP/1.1 200"));
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
