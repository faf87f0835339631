//! A bounded load on `GET /weather` for the tests that change a running
//! server's plugin under traffic (`swap`, `marketplace_flow`): keep-alive
//! clients, one request after another, each recording what it got.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{self, Server};

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
/// `GET /weather` one request after another until stopped, at most
/// `per_client` requests or `for_at_most` each.
pub(crate) struct Load {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    clients: Vec<JoinHandle<Vec<Sample>>>,
}

impl Load {
    pub(crate) fn start(
        server: &Server,
        clients: usize,
        per_client: usize,
        for_at_most: Duration,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicUsize::new(0));
        let url = format!("{}/weather", server.base);
        let clients = (0..clients)
            .map(|_| {
                let (stop, done, url) = (Arc::clone(&stop), Arc::clone(&done), url.clone());
                std::thread::spawn(move || {
                    let client = harness::http_client();
                    let deadline = Instant::now() + for_at_most;
                    let mut samples = Vec::with_capacity(per_client);
                    while samples.len() < per_client
                        && !stop.load(Ordering::Relaxed)
                        && Instant::now() < deadline
                    {
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
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    samples
                })
            })
            .collect();
        Self {
            stop,
            done,
            clients,
        }
    }

    /// Requests answered so far.
    pub(crate) fn done(&self) -> usize {
        self.done.load(Ordering::Relaxed)
    }

    /// Waits (at most `wait`) until `count` requests are answered.
    pub(crate) fn wait_for(&self, count: usize, wait: Duration) {
        let deadline = Instant::now() + wait;
        while self.done() < count {
            assert!(
                Instant::now() < deadline,
                "only {} of {count} requests answered within {wait:?}",
                self.done()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the clients; each one's samples, in order.
    pub(crate) fn finish(self) -> Vec<Vec<Sample>> {
        self.stop.store(true, Ordering::Relaxed);
        self.clients
            .into_iter()
            .map(|client| client.join().unwrap())
            .collect()
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
