//! `POST /v1/topics/{topic}/events:batch` through the real listener, against the test Redis and
//! broker: every result is checked against what is (or is not) in Kafka.
//!
//! - `batch/events.rs`: what a valid batch publishes, byte for byte and in order; a bad event
//!   fails alone;
//! - `batch/replays.rs`: replays, within batches and across batches and single events;
//! - `batch/envelope.rs`: requests refused whole, which claim nothing;
//! - `batch/access.rs`: authentication, topic grants and rates counted in events;
//! - `batch/slow.rs`: 202 past the wait timeout, and the batch metrics.

mod common;

use common::*;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

const PARTITIONS: i32 = 3;

async fn topic(prefix: &str) -> String {
    let name = unique(prefix);
    create_topic(&kafka_brokers(), &name, PARTITIONS).await;
    name
}

/// Every record of the topic, read to the end of every partition: counts of it are also
/// checks that nothing else was published.
fn records(topic: &str) -> Vec<Record> {
    consume_to_end(&kafka_brokers(), topic, PARTITIONS)
}

/// `{"events": [...]}`.
fn batch(events: &[Value]) -> String {
    json!({ "events": events }).to_string()
}

/// An event with a JSON value and nothing else.
fn event(key: &str, value: Value) -> Value {
    json!({ "idempotency_key": key, "value": value })
}

/// One result of a 207, with its body as the gateway wrote it (to compare byte for byte).
#[derive(Debug)]
struct Item {
    idempotency_key: Value,
    status: u16,
    replayed: Option<bool>,
    retry_after: Option<u64>,
    raw: String,
}

impl Item {
    fn body(&self) -> Value {
        serde_json::from_str(&self.raw).expect("a result's body is JSON")
    }

    /// Asserts a fresh 201 for `key` on `topic`; returns the place it names.
    fn assert_created(&self, topic: &str, key: &str) -> (i32, i64) {
        assert_eq!(self.status, 201, "{key}: {self:?}");
        assert_eq!(self.idempotency_key, key, "{self:?}");
        assert_eq!(self.replayed, Some(false), "{key}: a first answer");
        let body = self.body();
        assert_eq!(body["status"], "persisted", "{key}: {body}");
        assert_eq!(body["topic"], topic, "{key}: {body}");
        assert_eq!(body["idempotency_key"], key, "{key}: {body}");
        assert!(
            body["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{key}: {body}"
        );
        self.place()
    }

    /// Asserts the replay of `first`: the same status and the same body, byte for byte.
    fn assert_replays(&self, first: &str, status: u16) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.replayed, Some(true), "{self:?}");
        assert_eq!(
            self.raw, first,
            "a replay is the first answer byte for byte"
        );
    }

    /// Asserts an RFC 9457 problem with this status and code, as the single route would answer.
    fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        let body = self.assert_some_problem(status);
        assert_eq!(body["code"], code, "{self:?}");
        assert_eq!(body["type"], format!("urn:ackgate:problem:{code}"));
    }

    /// Asserts a problem with this status, whatever its code; returns it.
    fn assert_some_problem(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "{self:?}");
        let body = self.body();
        assert_eq!(body["status"], status, "{self:?}");
        assert!(body["code"].is_string(), "{self:?}");
        assert!(
            body["title"].is_string() && body["detail"].is_string(),
            "{self:?}"
        );
        body
    }

    /// The (partition, offset) a 201 names.
    fn place(&self) -> (i32, i64) {
        let body = self.body();
        let partition = body["partition"].as_i64().expect("a partition") as i32;
        (partition, body["offset"].as_i64().expect("an offset"))
    }
}

/// The results of a 207, in request order. Panics unless the answer is a 207 with `events`
/// results.
fn results(reply: &Reply, events: usize) -> Vec<Item> {
    #[derive(Deserialize)]
    struct Answer {
        results: Vec<Result>,
    }
    #[derive(Deserialize)]
    struct Result {
        idempotency_key: Value,
        status: u16,
        replayed: Option<bool>,
        retry_after: Option<u64>,
        body: Box<RawValue>,
    }
    assert_eq!(reply.status, 207, "{}", reply.body);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let answer: Answer = serde_json::from_str(&reply.body)
        .unwrap_or_else(|e| panic!("a 207 is {{\"results\": [...]}} ({e}): {}", reply.body));
    assert_eq!(answer.results.len(), events, "one result per event");
    answer
        .results
        .into_iter()
        .map(|r| Item {
            idempotency_key: r.idempotency_key,
            status: r.status,
            replayed: r.replayed,
            retry_after: r.retry_after,
            raw: r.body.get().to_owned(),
        })
        .collect()
}

/// The record at the place a 201 names.
fn record_at<'a>(records: &'a [Record], item: &Item) -> &'a Record {
    let (partition, offset) = item.place();
    records
        .iter()
        .find(|r| r.partition == partition && r.offset == offset)
        .unwrap_or_else(|| panic!("no record at {partition}/{offset}: {records:?}"))
}

/// The idempotency keys of these records, sorted.
fn keys_in(records: &[Record]) -> Vec<String> {
    let mut keys: Vec<String> = records
        .iter()
        .map(|r| {
            String::from_utf8_lossy(r.header("idempotency-key").expect("the key header"))
                .into_owned()
        })
        .collect();
    keys.sort();
    keys
}

/// Asserts that no idempotency key (nor anything else) is stored under the app's prefix.
async fn assert_nothing_claimed(prefix: &str) {
    let keys = redis_keys(&redis_url(), &format!("{prefix}:*")).await;
    assert!(keys.is_empty(), "nothing claimed: {keys:?}");
}

#[path = "batch/access.rs"]
mod access;
#[path = "batch/envelope.rs"]
mod envelope;
#[path = "batch/events.rs"]
mod events;
#[path = "batch/replays.rs"]
mod replays;
#[path = "batch/slow.rs"]
mod slow;
