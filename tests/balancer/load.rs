//! Clients that behave like real ones, sending a steady stream of fresh events through the
//! balancer: each retries its own key, with the same body, on a connection error, a 5xx that
//! says nothing may have been written, a 409 (after its `Retry-After`) or a 202, until it has a
//! final answer. Everything that was not final is written down with when it happened.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// An answer that made a client try again.
#[derive(Debug, Clone)]
pub(crate) struct Hiccup {
    pub(crate) key: String,
    /// When the request was sent, from the start of the load.
    pub(crate) sent: Duration,
    /// `409`, `502 <body>`, `connection error: …`.
    pub(crate) what: String,
}

impl Hiccup {
    pub(crate) fn is_conflict(&self) -> bool {
        self.what == "409"
    }
}

impl std::fmt::Display for Hiccup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} sent at {:?}: {}", self.key, self.sent, self.what)
    }
}

/// What the clients saw.
#[derive(Default)]
pub(crate) struct Ledger {
    /// The 201 body of each key.
    pub(crate) acks: HashMap<String, String>,
    /// When each client got each 201, from the start of the load.
    pub(crate) ack_times: Vec<(usize, Duration)>,
    pub(crate) hiccups: Vec<Hiccup>,
    /// Final answers other than 201, and keys without a final answer.
    pub(crate) unexpected: Vec<String>,
    /// Requests sent, retries included.
    pub(crate) requests: u64,
}

impl Ledger {
    /// The longest time between two acknowledgements (of any client) from `from` on, counting
    /// from `from` itself.
    pub(crate) fn longest_ack_gap(&self, from: Duration, to: Duration) -> Duration {
        let mut times: Vec<Duration> = self
            .ack_times
            .iter()
            .map(|(_, t)| *t)
            .filter(|t| *t >= from && *t <= to)
            .collect();
        times.sort();
        let mut previous = from;
        let mut longest = Duration::ZERO;
        for t in times.into_iter().chain([to]) {
            longest = longest.max(t - previous);
            previous = t;
        }
        longest
    }

    /// The clients without an acknowledgement between `from` and `to`.
    pub(crate) fn idle_clients(&self, clients: usize, from: Duration, to: Duration) -> Vec<usize> {
        (0..clients)
            .filter(|c| {
                !self
                    .ack_times
                    .iter()
                    .any(|(client, t)| client == c && *t >= from && *t < to)
            })
            .collect()
    }
}

/// Clients running until [`Load::stop`].
pub(crate) struct Load {
    pub(crate) started: Instant,
    stop: Arc<AtomicBool>,
    ledger: Arc<Mutex<Ledger>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// `clients` clients posting fresh events to `url` (the balancer's events route).
    pub(crate) fn start(url: String, clients: usize) -> Load {
        let started = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let tasks = (0..clients)
            .map(|c| {
                let client = Client {
                    id: c,
                    url: url.clone(),
                    http: reqwest::Client::new(),
                    started,
                    ledger: ledger.clone(),
                };
                let stop = stop.clone();
                tokio::spawn(async move {
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        client.deliver(&format!("c{c}-e{n}"), n).await;
                        n += 1;
                    }
                })
            })
            .collect();
        Load {
            started,
            stop,
            ledger,
            tasks,
        }
    }

    /// Sleeps until `offset` after the start of the load.
    pub(crate) async fn until(&self, offset: Duration) {
        tokio::time::sleep_until((self.started + offset).into()).await;
    }

    /// Lets every client finish the event it is sending, and returns what they saw.
    pub(crate) async fn stop(self) -> Ledger {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("a client task");
        }
        std::mem::take(&mut *self.ledger.lock().unwrap())
    }
}

struct Client {
    id: usize,
    url: String,
    http: reqwest::Client,
    started: Instant,
    ledger: Arc<Mutex<Ledger>>,
}

impl Client {
    /// Sends one event until it has a final answer, and writes down what happened.
    async fn deliver(&self, key: &str, n: u64) {
        let body = format!(r#"{{"client":{},"n":{n}}}"#, self.id);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut backoff = Duration::from_millis(100);
        loop {
            let sent = self.started.elapsed();
            let answer = self
                .http
                .post(&self.url)
                .header("Idempotency-Key", key)
                .header("Content-Type", "application/json")
                .body(body.clone())
                .timeout(Duration::from_secs(20))
                .send()
                .await;
            let mut wait = backoff;
            let what = match answer {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                    let text = response.text().await.unwrap_or_default();
                    let mut ledger = self.ledger.lock().unwrap();
                    ledger.requests += 1;
                    match status {
                        201 => {
                            ledger.acks.insert(key.to_owned(), text);
                            ledger.ack_times.push((self.id, self.started.elapsed()));
                            return;
                        }
                        409 => {
                            wait = Duration::from_secs(retry_after.unwrap_or(1));
                            "409".to_owned()
                        }
                        202 => "202".to_owned(),
                        500..=599 if !possibly_written(&text) => format!("{status} {text}"),
                        _ => {
                            ledger.unexpected.push(format!("{key}: {status} {text}"));
                            return;
                        }
                    }
                }
                Err(error) => {
                    self.ledger.lock().unwrap().requests += 1;
                    format!("connection error: {error}")
                }
            };
            {
                let mut ledger = self.ledger.lock().unwrap();
                ledger.hiccups.push(Hiccup {
                    key: key.to_owned(),
                    sent,
                    what,
                });
                if Instant::now() > deadline {
                    ledger
                        .unexpected
                        .push(format!("{key}: no final answer in 60 s"));
                    return;
                }
            }
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }
}

/// A failure answer that says the event may be in Kafka: its key is pinned to that answer, so
/// sending it again changes nothing. Final.
fn possibly_written(text: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(text)
        .is_ok_and(|problem| problem["persistence"] == "possibly_persisted")
}
