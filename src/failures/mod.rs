//! Failure records: every event Kafka did not acknowledge, kept whole for an operator.
//!
//! When a delivery fails for a reason that is not the client's fault, the event is not dropped:
//! it is written here with the error and librdkafka's persistence verdict, returned to the
//! client by id, and logged as one structured line. Records never expire on their own.
//!
//! This module knows nothing of HTTP, Kafka clients or idempotency records.

mod memory;
mod redis;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use self::memory::MemoryFailureStore;
pub use self::redis::RedisFailureStore;
use crate::event::Event;

/// Bytes as JSON: UTF-8 text where it is, base64 otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "encoding", content = "data", rename_all = "lowercase")]
pub enum Payload {
    Utf8(String),
    Base64(String),
}

impl Payload {
    pub fn new(bytes: &[u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(text) => Payload::Utf8(text.to_owned()),
            Err(_) => Payload::Base64(BASE64.encode(bytes)),
        }
    }
}

/// A record header as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StoredHeader {
    pub name: String,
    pub value: Payload,
}

/// The event exactly as it was to be published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StoredEvent {
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

/// Where a failure record stands in the operator's loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailureState {
    /// Waiting for an operator.
    Open,
}

/// The error that ended the delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FailureError {
    /// librdkafka's error code name, e.g. `MessageTimedOut`.
    pub code: String,
    /// The gateway's class of the error, e.g. `timed_out`, `unavailable`.
    pub kind: String,
    /// librdkafka's description of the error.
    pub reason: String,
}

/// One event that Kafka did not acknowledge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FailureRecord {
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
    /// Delivery attempts made under this idempotency key so far.
    pub attempts: u32,
}

/// The failure store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum FailureStoreError {
    #[error("the failure store is unreachable")]
    Unavailable(#[source] ::redis::RedisError),
    #[error("a stored failure record could not be read")]
    Corrupt(#[source] serde_json::Error),
}

/// Where failure records live: Redis in production, memory under `ackgate dev`.
#[async_trait]
pub trait FailureStore: Send + Sync + 'static {
    /// Stores a new record durably.
    async fn insert(&self, record: &FailureRecord) -> Result<(), FailureStoreError>;
    /// Reads one record.
    async fn get(&self, id: &str) -> Result<Option<FailureRecord>, FailureStoreError>;
}
