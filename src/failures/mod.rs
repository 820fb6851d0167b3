//! Failure records: every event Kafka did not acknowledge, kept whole for an operator.
//!
//! When a delivery fails for a reason that is not the client's fault, the event is not dropped:
//! it is written here with the error and librdkafka's persistence verdict, returned to the
//! client by id, and logged as one structured line. Records never expire on their own.
//!
//! This module knows nothing of HTTP, Kafka clients or idempotency records.

#[cfg(test)]
mod contract_tests;
mod memory;
mod redis;
mod retrying;
mod spool;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub(crate) use self::memory::MemoryFailureStore;
pub(crate) use self::redis::RedisFailureStore;
pub(crate) use self::spool::Spool;
use crate::event::{Event, IdempotencyKey, TopicName};

/// Bytes as JSON: UTF-8 text where it is, base64 otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "encoding", content = "data", rename_all = "lowercase")]
pub(crate) enum Payload {
    // Titles give generated clients named types (`Utf8Payload`) instead of `PayloadOneOf1`.
    /// The bytes are UTF-8: `data` is the text.
    #[schema(title = "Utf8Payload")]
    Utf8(String),
    /// The bytes are not UTF-8: `data` is their standard base64.
    #[schema(title = "Base64Payload")]
    Base64(String),
}

impl Payload {
    pub(crate) fn new(bytes: &[u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(text) => Payload::Utf8(text.to_owned()),
            Err(_) => Payload::Base64(BASE64.encode(bytes)),
        }
    }
}

impl Payload {
    pub(crate) fn to_bytes(&self) -> Result<bytes::Bytes, String> {
        match self {
            Payload::Utf8(text) => Ok(bytes::Bytes::copy_from_slice(text.as_bytes())),
            Payload::Base64(data) => BASE64
                .decode(data)
                .map(bytes::Bytes::from)
                .map_err(|e| format!("bad base64: {e}")),
        }
    }
}

/// A record header as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub(crate) struct StoredHeader {
    pub name: String,
    pub value: Payload,
}

/// The event exactly as it was to be published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub(crate) struct StoredEvent {
    /// The principal that sent it: its idempotency key is scoped by it, and it may read this
    /// record. Records kept before access control belong to `anonymous`.
    #[serde(default = "anonymous")]
    pub principal: String,
    pub topic: String,
    pub idempotency_key: String,
    /// The record key (`Kafka-Key`), if any.
    pub key: Option<Payload>,
    /// The client's record headers (the gateway adds `content-type` and `idempotency-key`).
    pub headers: Vec<StoredHeader>,
    pub content_type: Option<String>,
    pub value: Payload,
}

impl From<&Event> for StoredEvent {
    fn from(event: &Event) -> Self {
        StoredEvent {
            principal: event.principal.to_string(),
            topic: event.topic.to_string(),
            idempotency_key: event.idempotency_key.to_string(),
            key: event.key.as_deref().map(Payload::new),
            headers: event
                .headers
                .iter()
                .map(|(name, value)| StoredHeader {
                    name: name.clone(),
                    value: Payload::new(value),
                })
                .collect(),
            content_type: event.content_type.clone(),
            value: Payload::new(&event.value),
        }
    }
}

fn anonymous() -> String {
    crate::auth::ANONYMOUS.to_owned()
}

impl StoredEvent {
    /// The event again, exactly as it was first to be published.
    pub(crate) fn to_event(&self) -> Result<Event, String> {
        Ok(Event {
            principal: self.principal.as_str().into(),
            topic: TopicName::parse(&self.topic)?,
            idempotency_key: IdempotencyKey::parse(self.idempotency_key.as_bytes())?,
            key: self.key.as_ref().map(Payload::to_bytes).transpose()?,
            headers: self
                .headers
                .iter()
                .map(|h| Ok((h.name.clone(), h.value.to_bytes()?)))
                .collect::<Result<_, String>>()?,
            content_type: self.content_type.clone(),
            value: self.value.to_bytes()?,
        })
    }
}

/// Where a failure record stands in the operator's loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FailureState {
    /// Waiting for an operator.
    Open,
    /// An operator's retry is publishing it right now.
    Retrying,
    /// The event is in Kafka (retried, or found already persisted).
    Resolved,
    /// An operator decided not to publish it.
    Discarded,
}

impl FailureState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            FailureState::Open => "open",
            FailureState::Retrying => "retrying",
            FailureState::Resolved => "resolved",
            FailureState::Discarded => "discarded",
        }
    }
}

impl std::str::FromStr for FailureState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "open" => Ok(FailureState::Open),
            "retrying" => Ok(FailureState::Retrying),
            "resolved" => Ok(FailureState::Resolved),
            "discarded" => Ok(FailureState::Discarded),
            other => Err(format!(
                "'{other}' is not a state (open, retrying, resolved, discarded)"
            )),
        }
    }
}

/// How an operator closed a failure record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub(crate) struct Resolution {
    /// `retried` (published by an operator's retry), `already_persisted` (a client's retry
    /// published it first) or `discarded`.
    pub action: String,
    /// Who acted (the `by` of the request, else `operator`).
    pub by: String,
    /// Why, in the operator's words.
    pub reason: Option<String>,
    /// When (RFC 3339).
    pub at: String,
    /// Where the event is in Kafka, when it is.
    pub partition: Option<i32>,
    pub offset: Option<i64>,
}

/// The error that ended the delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub(crate) struct FailureError {
    /// librdkafka's error code name, e.g. `MessageTimedOut`.
    pub code: String,
    /// The gateway's class of the error, e.g. `timed_out`, `unavailable`.
    pub kind: String,
    /// librdkafka's description of the error.
    pub reason: String,
}

/// One event that Kafka did not acknowledge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub(crate) struct FailureRecord {
    /// Sortable unique id (ULID).
    pub id: String,
    pub state: FailureState,
    /// When the failure was recorded (RFC 3339).
    pub created_at: String,
    pub event: StoredEvent,
    pub error: FailureError,
    /// Whether the event may be in Kafka anyway:
    /// `not_persisted` or `possibly_persisted`.
    pub persistence: String,
    /// The HTTP status the client was answered with.
    pub http_status: u16,
    /// Delivery attempts made for this event so far (the client's and operators' retries).
    pub attempts: u32,
    /// When the record last changed (RFC 3339).
    pub updated_at: String,
    /// Set once the record is resolved or discarded.
    pub resolution: Option<Resolution>,
    /// Where the copy in the dead-letter topic is, once mirrored (`--dead-letter-topics`).
    #[serde(default)]
    pub dead_letter: Option<DeadLetter>,
}

/// The copy of a failed event in its dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub(crate) struct DeadLetter {
    /// `<topic>.dlt`.
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// Which records to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FailureFilter {
    pub topic: Option<String>,
    pub state: Option<FailureState>,
}

/// One page of records, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub(crate) struct FailurePage {
    pub items: Vec<FailureRecord>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Figures for the metrics and alerts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FailureStats {
    pub open: u64,
    /// Creation time of the oldest open record, in milliseconds since the epoch.
    pub oldest_open_ms: Option<u64>,
}

/// The failure store could not answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FailureStoreError {
    #[error("the failure store is unreachable")]
    Unavailable(#[source] ::redis::RedisError),
    #[error("a stored failure record could not be read")]
    Corrupt(#[source] serde_json::Error),
}

/// Where failure records live: Redis in production, memory under `ackgate dev`.
#[async_trait]
pub(crate) trait FailureStore: Send + Sync + 'static {
    /// Stores a new record durably.
    async fn insert(&self, record: &FailureRecord) -> Result<(), FailureStoreError>;
    /// Reads one record.
    async fn get(&self, id: &str) -> Result<Option<FailureRecord>, FailureStoreError>;

    /// Replaces a record, but only if its state is still `expected` (compare-and-set): two
    /// operators acting at once cannot both win. Returns whether it was replaced.
    async fn replace(
        &self,
        expected: FailureState,
        record: &FailureRecord,
    ) -> Result<bool, FailureStoreError>;

    /// Records matching `filter`, oldest first, after `cursor` (an id).
    async fn list(
        &self,
        filter: &FailureFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<FailurePage, FailureStoreError>;

    /// Open records, for metrics.
    async fn stats(&self) -> Result<FailureStats, FailureStoreError>;
}

/// Milliseconds since the epoch encoded in a ULID id.
pub(crate) fn id_time_ms(id: &str) -> Option<u64> {
    ulid::Ulid::from_string(id).ok().map(|id| id.timestamp_ms())
}

/// How often the spool is imported and the gauges refreshed.
const MAINTENANCE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs forever: imports spooled records once the store answers, reopens records left
/// `retrying` for longer than `retrying_timeout`, and keeps the gauges
/// `ackgate_failure_records_open`, `ackgate_failure_records_oldest_open_age_seconds` and
/// `ackgate_failure_spool_records` current. Every replica reports the same store-wide figures.
pub(crate) async fn maintain(
    store: std::sync::Arc<dyn FailureStore>,
    spool: Spool,
    retrying_timeout: std::time::Duration,
) {
    let mut tick = tokio::time::interval(MAINTENANCE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match spool.import_into(store.as_ref()).await {
            Ok(0) => {}
            Ok(imported) => tracing::info!(imported, "imported spooled failure records"),
            Err(error) => tracing::error!(%error, "could not read the failure spool"),
        }
        retrying::reopen_stale_now(store.as_ref(), retrying_timeout).await;
        if let Ok(waiting) = spool.len().await {
            metrics::gauge!("ackgate_failure_spool_records").set(waiting as f64);
        }
        if let Ok(stats) = store.stats().await {
            metrics::gauge!("ackgate_failure_records_open").set(stats.open as f64);
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            let age = stats
                .oldest_open_ms
                .map_or(0.0, |ms| now_ms.saturating_sub(ms) as f64 / 1000.0);
            metrics::gauge!("ackgate_failure_records_oldest_open_age_seconds").set(age);
        }
    }
}
