//! `grpc-child bench`: the timing client. One tonic channel over the Unix
//! socket, one `BeforeRequest` call after another; each call's wall time is
//! taken with `Instant` around building the request message, the call and
//! the check of its answer (as `host/benches/process.rs` times the process
//! tier: serialise, call, deserialise).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::proto::{self, Action, HttpRequest, RequestAction};

/// The benchmark's request, the one `host/benches/process.rs` sends: 150
/// bytes as the SDK's JSON, 110 as protobuf.
fn request() -> HttpRequest {
    HttpRequest {
        method: "GET".into(),
        path: "/weather".into(),
        query: Some("city=Paris".into()),
        headers: BTreeMap::from([
            ("accept".into(), "application/json".into()),
            ("user-agent".into(), "bench".into()),
            ("x-request-id".into(), "5f3c9a0d1e2b4c6f".into()),
        ]),
        body: None,
    }
}

/// A channel to the server at `socket`, over one connection.
async fn connect(socket: &Path) -> anyhow::Result<Channel> {
    let socket = socket.to_owned();
    // The URI is required but unused: the connector ignores it.
    Endpoint::from_static("http://[::1]:50051")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { UnixStream::connect(socket).await.map(TokioIo::new) }
        }))
        .await
        .map_err(Into::into)
}

/// Makes `warmup`, then `calls` timed calls, checking that each answer is
/// the request rewritten with `x-echo: 1`; returns the timed calls'
/// durations.
async fn run(socket: &Path, calls: usize, warmup: usize) -> anyhow::Result<Vec<Duration>> {
    let channel = connect(socket)
        .await
        .with_context(|| format!("connecting to {}", socket.display()))?;
    let mut client = tonic::client::Grpc::new(channel);
    let request = request();
    let mut expected = request.clone();
    expected.headers.insert("x-echo".into(), "1".into());
    let expected = RequestAction {
        action: Some(Action::Rewrite(expected)),
    };
    let path = http::uri::PathAndQuery::from_static(proto::BEFORE_REQUEST_PATH);

    let mut samples = Vec::with_capacity(calls);
    for i in 0..warmup + calls {
        let started = Instant::now();
        let mut call = tonic::Request::new(request.clone());
        call.extensions_mut().insert(tonic::GrpcMethod::new(
            proto::SERVICE,
            proto::BEFORE_REQUEST,
        ));
        client
            .ready()
            .await
            .with_context(|| format!("call {i}: the channel is not ready"))?;
        let answer: RequestAction = client
            .unary(call, path.clone(), tonic_prost::ProstCodec::default())
            .await
            .with_context(|| format!("call {i}: BeforeRequest failed"))?
            .into_inner();
        let elapsed = started.elapsed();
        ensure!(
            answer == expected,
            "call {i}: expected a `rewrite` with `x-echo: 1`, got {answer:?}"
        );
        if i >= warmup {
            samples.push(elapsed);
        }
    }
    Ok(samples)
}

/// Runs the benchmark and prints its one JSON line:
/// `{"calls":N,"median_ns":…,"p90_ns":…,"p99_ns":…,"mean_ns":…}`.
/// Percentiles are read as `host/benches/process.rs` reads them: the
/// sorted samples at index `⌊(n − 1)·q⌋`.
pub(crate) async fn bench(socket: &Path, calls: usize, warmup: usize) -> anyhow::Result<()> {
    if calls == 0 {
        bail!("--calls must be at least 1");
    }
    let mut samples = run(socket, calls, warmup).await?;
    samples.sort_unstable();
    let ns = |d: Duration| d.as_nanos();
    let at = |q: f64| ns(samples[((samples.len() - 1) as f64 * q) as usize]);
    let mean = samples.iter().map(|&d| ns(d)).sum::<u128>() / samples.len() as u128;
    println!(
        r#"{{"calls":{calls},"median_ns":{},"p90_ns":{},"p99_ns":{},"mean_ns":{mean}}}"#,
        at(0.5),
        at(0.9),
        at(0.99),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_is_110_bytes_of_protobuf() {
        assert_eq!(prost::Message::encoded_len(&request()), 110);
    }
}
