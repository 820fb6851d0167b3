//! Failure records in Redis: one JSON string per record, and a sorted set by time.

use async_trait::async_trait;
use redis::aio::ConnectionManager;

use super::{FailureRecord, FailureStore, FailureStoreError};

/// The Redis-backed failure store.
#[derive(Clone)]
pub struct RedisFailureStore {
    conn: ConnectionManager,
    prefix: String,
}

impl RedisFailureStore {
    pub fn new(conn: ConnectionManager, prefix: &str) -> Self {
        RedisFailureStore {
            conn,
            prefix: prefix.to_owned(),
        }
    }

    fn record_key(&self, id: &str) -> String {
        format!("{}:failure:{}", self.prefix, id)
    }

    fn time_index(&self) -> String {
        format!("{}:failures:by-time", self.prefix)
    }
}

#[async_trait]
impl FailureStore for RedisFailureStore {
    async fn insert(&self, record: &FailureRecord) -> Result<(), FailureStoreError> {
        let json = serde_json::to_string(record).map_err(FailureStoreError::Corrupt)?;
        // The id is a ULID: its first 48 bits are the creation time in milliseconds.
        let created_ms = ulid::Ulid::from_string(&record.id)
            .map(|id| id.timestamp_ms())
            .unwrap_or(0);
        // Record and index land together or not at all.
        redis::pipe()
            .atomic()
            .set(self.record_key(&record.id), json)
            .ignore()
            .zadd(self.time_index(), &record.id, created_ms)
            .ignore()
            .exec_async(&mut self.conn.clone())
            .await
            .map_err(FailureStoreError::Unavailable)
    }

    async fn get(&self, id: &str) -> Result<Option<FailureRecord>, FailureStoreError> {
        let json: Option<String> = redis::cmd("GET")
            .arg(self.record_key(id))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(FailureStoreError::Unavailable)?;
        json.map(|json| serde_json::from_str(&json).map_err(FailureStoreError::Corrupt))
            .transpose()
    }
}
