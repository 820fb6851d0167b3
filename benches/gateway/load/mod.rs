//! The load generators, each keeping a window of events outstanding against one target: the
//! gateway over hand-written HTTP/1.1 ([`http`]), the raw idempotent producer
//! ([`raw_producer`]) and the gateway's Redis scripts ([`raw_redis`]); [`pacing`] decides when
//! they send, [`Events`] what.

pub(crate) mod http;
pub(crate) mod pacing;
pub(crate) mod raw_producer;
pub(crate) mod raw_redis;

use std::time::Duration;

use bytes::Bytes;

/// A request or delivery that takes longer than this is counted as a timeout.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(45);

/// Makes the unique events of one phase: a JSON body of exactly `bytes` bytes, and its key.
#[derive(Clone)]
pub(crate) struct Events {
    pub(crate) run: String,
    pub(crate) bytes: usize,
}

impl Events {
    pub(crate) fn key(&self, worker: usize, seq: u64) -> String {
        format!("{}-{worker}-{seq}", self.run)
    }

    pub(crate) fn body(&self, key: &str) -> Bytes {
        let head = format!("{{\"key\":\"{key}\",\"pad\":\"");
        let tail = "\"}";
        let pad = self.bytes.saturating_sub(head.len() + tail.len());
        let mut body = String::with_capacity(self.bytes.max(head.len() + tail.len()));
        body.push_str(&head);
        body.extend(std::iter::repeat_n('x', pad));
        body.push_str(tail);
        Bytes::from(body)
    }
}

/// Whether request number `n` of a worker is a retry, spreading `percent` evenly.
pub(crate) fn is_duplicate(n: u64, percent: u32) -> bool {
    let p = u64::from(percent.min(100));
    p > 0 && (n + 1) * p / 100 != n * p / 100
}
