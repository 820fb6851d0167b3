//! A client that behaves like a careful real one under faults: it sends one event to gateways
//! picked at random until it has a final answer, retrying the same idempotency key on 409, 202,
//! 503 and connection errors, with a backoff.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A tiny deterministic generator, so a failing run can be reasoned about.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A final answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub replayed: bool,
}

/// The longest wait between two tries of one event.
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// One client: where it sends, its dice, and a count of its retries (shared by the test).
pub struct CarefulClient {
    pub http: reqwest::Client,
    pub ports: Arc<Vec<u16>>,
    pub topic: &'static str,
    pub rng: Rng,
    pub retries: Arc<AtomicU64>,
}

impl CarefulClient {
    /// Sends one event (JSON) until it has a final answer: a 201, a failure that may have been
    /// written (`possibly_persisted`: the key is pinned to it), or any other status that a
    /// retry cannot change.
    pub async fn deliver(
        &mut self,
        key: &str,
        body: &str,
        give_up_after: Duration,
    ) -> Result<Answer, String> {
        let mut backoff = Duration::from_millis(100);
        let deadline = Instant::now() + give_up_after;
        loop {
            let port = self.ports[self.rng.below(self.ports.len() as u64) as usize];
            let sent = self
                .http
                .post(format!(
                    "http://127.0.0.1:{port}/v1/topics/{}/events",
                    self.topic
                ))
                .header("Idempotency-Key", key)
                .header("Content-Type", "application/json")
                .body(body.to_owned())
                .timeout(Duration::from_secs(20))
                .send()
                .await;
            if let Ok(response) = sent {
                let status = response.status().as_u16();
                let replayed = response.headers().contains_key("idempotent-replayed");
                let body = response.text().await.unwrap_or_default();
                let answer = Answer {
                    status,
                    body,
                    replayed,
                };
                let final_answer = match status {
                    202 | 409 => false,
                    503 | 504 => {
                        let problem: serde_json::Value =
                            serde_json::from_str(&answer.body).unwrap_or_default();
                        problem["persistence"] == "possibly_persisted"
                    }
                    _ => true,
                };
                if final_answer {
                    return Ok(answer);
                }
            }
            // Anything else (or a refused connection: a gateway restarting) is worth another try.
            self.retries.fetch_add(1, Ordering::Relaxed);
            if Instant::now() > deadline {
                return Err(format!("{key}: no final answer in {give_up_after:?}"));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }
}
