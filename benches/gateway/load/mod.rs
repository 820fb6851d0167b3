//! The load generators, each keeping a window of events outstanding against one target: the
//! gateway over hand-written HTTP/1.1 ([`conn`]), one event per request ([`http`]) or many
//! ([`batch`]), the raw idempotent producer ([`raw_producer`]) and the gateway's Redis scripts
//! ([`raw_redis`]); [`pacing`] decides when they send, [`Events`] what.

pub(crate) mod batch;
pub(crate) mod conn;
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
    /// Keys shaped like UUIDs ([`Events::uuid_key`]) instead of `<run>-<worker>-<seq>`.
    pub(crate) uuid_keys: bool,
}

impl Events {
    /// The key of event `seq` of `worker`, unique within the phase.
    pub(crate) fn key(&self, worker: usize, seq: u64) -> String {
        if self.uuid_keys {
            self.uuid_key(worker, seq)
        } else {
            format!("{}-{worker}-{seq}", self.run)
        }
    }

    /// A key shaped like a UUID (8-4-4-4-12 hex digits, 36 characters), unique within the
    /// phase: what clients typically send, so that Redis records have realistic key lengths.
    fn uuid_key(&self, worker: usize, seq: u64) -> String {
        // A bijection of (worker, seq): distinct pairs give distinct keys.
        let seed = self.run.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        let hi = mix(seed ^ worker as u64);
        let lo = mix(seq);
        format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            hi >> 32,
            (hi >> 16) & 0xffff,
            hi & 0xffff,
            lo >> 48,
            lo & 0xffff_ffff_ffff
        )
    }

    pub(crate) fn body(&self, key: &str) -> Bytes {
        let mut body = Vec::with_capacity(self.bytes.max(key.len() + 16));
        self.write_body(key, &mut body);
        Bytes::from(body)
    }

    /// Appends the JSON body of the event with `key` to `out`: exactly `bytes` bytes (or the
    /// smallest body that holds the key).
    pub(crate) fn write_body(&self, key: &str, out: &mut Vec<u8>) {
        let (head, tail) = (br#"{"key":""#, br#"","pad":""#);
        let end = br#""}"#;
        let fixed = head.len() + key.len() + tail.len() + end.len();
        out.extend_from_slice(head);
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(tail);
        out.resize(out.len() + self.bytes.saturating_sub(fixed), b'x');
        out.extend_from_slice(end);
    }
}

/// SplitMix64's finaliser: a bijection of `u64` that looks random.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Whether request number `n` of a worker is a retry, spreading `percent` evenly.
pub(crate) fn is_duplicate(n: u64, percent: u32) -> bool {
    let p = u64::from(percent.min(100));
    p > 0 && (n + 1) * p / 100 != n * p / 100
}
