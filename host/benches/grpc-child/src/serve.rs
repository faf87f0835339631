//! `grpc-child serve`: the plugin child. A tonic server on a Unix socket
//! whose `backworks.Plugin` service is written by hand the way
//! tonic-build's generated code is: a `tower::Service` over HTTP requests
//! that routes the method path to `tonic::server::Grpc::unary`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::{self, Future};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::FileTypeExt as _;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use anyhow::{Context as _, bail};
use tokio::net::UnixListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::oneshot;
use tokio_stream::wrappers::UnixListenerStream;

use crate::proto::{self, Action, Continue, HttpRequest, HttpResponse, RequestAction};

/// What the echo fixture's `before_request` does
/// (`sdk/tests/fixtures/echo-core/src/lib.rs`) for the paths that neither
/// fail nor wait: `/deny` answers 401, `/continue` passes the request on,
/// anything else is rewritten with `x-echo: 1`.
fn before_request(request: HttpRequest) -> RequestAction {
    let action = match request.path.as_str() {
        "/deny" => Action::Respond(HttpResponse {
            status: 401,
            headers: BTreeMap::from([("content-type".into(), "application/json".into())]),
            body: r#"{"error":"denied"}"#.into(),
        }),
        "/continue" => Action::Continue(Continue {}),
        _ => {
            let mut rewritten = request;
            rewritten.headers.insert("x-echo".into(), "1".into());
            Action::Rewrite(rewritten)
        }
    };
    RequestAction {
        action: Some(action),
    }
}

/// The `backworks.Plugin` service.
#[derive(Debug, Clone, Copy, Default)]
struct PluginServer;

impl tonic::server::NamedService for PluginServer {
    const NAME: &'static str = proto::SERVICE;
}

/// The `BeforeRequest` method, as `Grpc::unary` calls it.
#[derive(Debug)]
struct BeforeRequestSvc;

impl tonic::server::UnaryService<HttpRequest> for BeforeRequestSvc {
    type Response = RequestAction;
    type Future = future::Ready<Result<tonic::Response<RequestAction>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<HttpRequest>) -> Self::Future {
        future::ready(Ok(tonic::Response::new(before_request(
            request.into_inner(),
        ))))
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, Infallible>> + Send>>;

impl<B> tower::Service<http::Request<B>> for PluginServer
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() == proto::BEFORE_REQUEST_PATH {
            Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
                Ok(grpc.unary(BeforeRequestSvc, request).await)
            })
        } else {
            // What generated code answers for an unknown method.
            Box::pin(async move {
                Ok(tonic::Status::unimplemented(format!(
                    "no method {} in {}",
                    request.uri().path(),
                    proto::SERVICE
                ))
                .into_http())
            })
        }
    }
}

/// Binds `socket` (replacing a stale socket file), prints `ready`, and
/// serves until stdin reaches its end or SIGTERM arrives; then removes the
/// socket file.
pub(crate) async fn serve(socket: &Path) -> anyhow::Result<()> {
    match std::fs::symlink_metadata(socket) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(socket)
            .with_context(|| format!("removing the stale socket {}", socket.display()))?,
        Ok(_) => bail!("{} exists and is not a socket", socket.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("inspecting {}", socket.display())),
    }
    let listener =
        UnixListener::bind(socket).with_context(|| format!("binding {}", socket.display()))?;
    let mut terminate = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    let stdin_end = watch_stdin().context("starting the thread that watches stdin")?;

    // The parent reads this one line; it may close our stdout after it, so
    // nothing else is ever printed there.
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "ready")
        .and_then(|()| stdout.flush())
        .context("writing `ready` to stdout")?;
    drop(stdout);

    let server = tonic::transport::Server::builder()
        .serve_with_incoming(PluginServer, UnixListenerStream::new(listener));
    let result = tokio::select! {
        served = server => served.context("serving gRPC"),
        _ = stdin_end => Ok(()),
        _ = terminate.recv() => Ok(()),
    };
    // Best effort: the next `serve` replaces a leftover file anyway.
    let _ = std::fs::remove_file(socket);
    result
}

/// A receiver that completes when stdin reaches its end (or fails): the
/// parent has let go. The read blocks in a thread of its own, not in
/// tokio's blocking pool, whose shutdown would wait for it (a SIGTERM would
/// then never end the process).
fn watch_stdin() -> std::io::Result<oneshot::Receiver<()>> {
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut buffer = [0u8; 256];
            let mut stdin = std::io::stdin().lock();
            loop {
                match stdin.read(&mut buffer) {
                    Ok(0) => break,
                    Err(e) if e.kind() != std::io::ErrorKind::Interrupted => break,
                    _ => {}
                }
            }
            let _ = tx.send(());
        })?;
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &str) -> HttpRequest {
        HttpRequest {
            method: "GET".into(),
            path: path.into(),
            ..HttpRequest::default()
        }
    }

    #[test]
    fn answers_as_the_echo_fixture_does() {
        let mut echoed = request("/weather");
        echoed.headers.insert("x-echo".into(), "1".into());
        assert_eq!(
            before_request(request("/weather")).action,
            Some(Action::Rewrite(echoed))
        );
        assert_eq!(
            before_request(request("/continue")).action,
            Some(Action::Continue(Continue {}))
        );
        assert!(matches!(
            before_request(request("/deny")).action,
            Some(Action::Respond(HttpResponse { status: 401, .. }))
        ));
    }
}
