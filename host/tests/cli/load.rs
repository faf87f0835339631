//! A load on `GET /weather` for the tests that change a running server's
//! plugin under traffic (`swap`, `marketplace_flow`): keep-alive clients,
//! one request after another, each recording what it got.
//!
//! The load runs until the test stops it, and a test waits for counts of
//! answers (say, 250 from every client after the switch), never for a
//! time: on a busy machine it takes longer and still counts the same.
//! Only [`HANG`] bounds a wait, to fail a test that would otherwise hang.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{self, Server};

/// How long a wait for answers may take before the test fails as hung:
/// minutes, whatever else the machine is doing.
pub(crate) const HANG: Duration = Duration::from_secs(300);

/// What one request of the load got.
#[derive(Debug, Clone)]
pub(crate) enum Answer {
    /// 200 with this JSON body.
    Body(Value),
    /// Anything else: status or transport error, and the text.
    Failed(String),
}

/// One request of the load: when it started, and its answer.
pub(crate) type Sample = (Instant, Answer);

/// `clients` threads, each with its own keep-alive client, sending
/// `GET /weather` one request after another until [`Load::finish`] (or
/// until the `Load` is dropped, as when the test fails).
pub(crate) struct Load {
    stop: Arc<AtomicBool>,
    /// Requests answered (a failure counts as an answer), per client.
    answered: Arc<Vec<AtomicUsize>>,
    clients: Vec<JoinHandle<Vec<Sample>>>,
}

impl Load {
    pub(crate) fn start(server: &Server, clients: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let answered: Arc<Vec<AtomicUsize>> =
            Arc::new((0..clients).map(|_| AtomicUsize::new(0)).collect());
        let url = format!("{}/weather", server.base);
        let clients = (0..clients)
            .map(|index| {
                let (stop, answered, url) = (Arc::clone(&stop), Arc::clone(&answered), url.clone());
                std::thread::spawn(move || {
                    let client = harness::http_client();
                    let mut samples = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let started = Instant::now();
                        let answer = match client.get(&url).send() {
                            Ok(response) => {
                                let status = response.status().as_u16();
                                match response.text() {
                                    Ok(text) if status == 200 => serde_json::from_str(&text)
                                        .map_or_else(|_| Answer::Failed(text), Answer::Body),
                                    Ok(text) => Answer::Failed(format!("{status}: {text}")),
                                    Err(error) => Answer::Failed(error.to_string()),
                                }
                            }
                            Err(error) => Answer::Failed(error.to_string()),
                        };
                        samples.push((started, answer));
                        // After the push: the first `answered()[index]`
                        // samples are the ones answered by then.
                        answered[index].fetch_add(1, Ordering::SeqCst);
                    }
                    samples
                })
            })
            .collect();
        Self {
            stop,
            answered,
            clients,
        }
    }

    /// Requests answered so far, per client.
    pub(crate) fn answered(&self) -> Vec<usize> {
        self.answered
            .iter()
            .map(|count| count.load(Ordering::SeqCst))
            .collect()
    }

    /// Waits until every client has answered `more` requests beyond
    /// `since` (an earlier [`Load::answered`]); fails the test only if
    /// that takes [`HANG`].
    pub(crate) fn wait_for_each(&self, since: &[usize], more: usize) {
        let deadline = Instant::now() + HANG;
        loop {
            let now = self.answered();
            if now
                .iter()
                .zip(since)
                .all(|(now, since)| *now >= since + more)
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the load hung: answered per client {now:?}, waiting for {more} more than {since:?} within {HANG:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the clients; each one's samples, in order.
    pub(crate) fn finish(mut self) -> Vec<Vec<Sample>> {
        self.stop.store(true, Ordering::Relaxed);
        std::mem::take(&mut self.clients)
            .into_iter()
            .map(|client| client.join().unwrap())
            .collect()
    }
}

impl Drop for Load {
    /// A test that fails midway stops its load too.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Every sample's answer, failures listed first in the panic message.
pub(crate) fn assert_no_failure(samples: &[Vec<Sample>]) {
    let failed: Vec<&String> = samples
        .iter()
        .flatten()
        .filter_map(|(_, answer)| match answer {
            Answer::Failed(why) => Some(why),
            Answer::Body(_) => None,
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} failed requests, the first ones: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
}
