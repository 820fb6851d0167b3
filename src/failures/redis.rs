//! Failure records in Redis.
//!
//! One hash per record (`<base>:failure:<id>`: `state`, `topic`, `record` as JSON) and four
//! lexicographically ordered sets per record, so that every filter of the list is one range
//! read in time order (ids are ULIDs, which sort by creation time):
//! `<base>:failures:idx:<topic|*>:<state|*>`. A state change moves the record between the
//! `<topic>:<state>` and `*:<state>` sets in the same script that changes it.
//!
//! `<base>` is the key prefix on one Redis server. On a Redis Cluster it is the prefix as a
//! hash tag, `{<prefix>}`: a script must touch keys of one hash slot only, and a record and its
//! indexes change together, so every failure record lives in that one slot (one master).
//! Failure records are few — each is an event an operator must look at — so one master holds
//! them easily; the idempotency records, one per event, spread over every slot.

use async_trait::async_trait;
use redis::Script;

use crate::redis_link::RedisConn;

use super::{
    FailureFilter, FailurePage, FailureRecord, FailureState, FailureStats, FailureStore,
    FailureStoreError, id_time_ms,
};

/// KEYS: the hash, then the indexes `<topic>:<state>`, `<topic>:*`, `*:<state>`, `*:*`.
/// ARGV: id, topic, state, record json. Returns 1, or 0 if it existed.
const INSERT: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[3], 'topic', ARGV[2], 'record', ARGV[4])
for i = 2, 5 do
  redis.call('ZADD', KEYS[i], 0, ARGV[1])
end
return 1
"#;

/// KEYS: the hash, then the indexes `<topic>:<old>`, `*:<old>`, `<topic>:<new>`, `*:<new>`.
/// ARGV: id, topic, expected (old) state, new state, record json.
/// Returns 1, or 0 if the state was not the expected one (or the record is of another topic).
const REPLACE: &str = r#"
local r = redis.call('HMGET', KEYS[1], 'state', 'topic')
if r[1] ~= ARGV[3] or r[2] ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[4], 'record', ARGV[5])
if ARGV[3] ~= ARGV[4] then
  for i = 2, 3 do
    redis.call('ZREM', KEYS[i], ARGV[1])
    redis.call('ZADD', KEYS[i + 2], 0, ARGV[1])
  end
end
return 1
"#;

/// The Redis-backed failure store.
#[derive(Clone)]
pub(crate) struct RedisFailureStore {
    conn: RedisConn,
    /// The prefix, as a hash tag on a cluster.
    base: String,
    insert: Script,
    replace: Script,
}

impl RedisFailureStore {
    pub(crate) fn new(conn: RedisConn, prefix: &str) -> Self {
        let base = if conn.is_cluster() {
            format!("{{{prefix}}}")
        } else {
            prefix.to_owned()
        };
        RedisFailureStore {
            conn,
            base,
            insert: Script::new(INSERT),
            replace: Script::new(REPLACE),
        }
    }

    fn record_key(&self, id: &str) -> String {
        format!("{}:failure:{}", self.base, id)
    }

    fn index(&self, topic: Option<&str>, state: Option<FailureState>) -> String {
        format!(
            "{}:failures:idx:{}:{}",
            self.base,
            topic.unwrap_or("*"),
            state.map_or("*", FailureState::as_str)
        )
    }
}

fn unavailable(error: redis::RedisError) -> FailureStoreError {
    FailureStoreError::Unavailable(error)
}

#[async_trait]
impl FailureStore for RedisFailureStore {
    async fn insert(&self, record: &FailureRecord) -> Result<(), FailureStoreError> {
        let json = serde_json::to_string(record).map_err(FailureStoreError::Corrupt)?;
        // Inserting the same record twice (a spool import after a timeout) is harmless.
        let (topic, state) = (Some(record.event.topic.as_str()), Some(record.state));
        let _: i64 = self
            .insert
            .key(self.record_key(&record.id))
            .key(self.index(topic, state))
            .key(self.index(topic, None))
            .key(self.index(None, state))
            .key(self.index(None, None))
            .arg(&record.id)
            .arg(&record.event.topic)
            .arg(record.state.as_str())
            .arg(json)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn get(&self, id: &str) -> Result<Option<FailureRecord>, FailureStoreError> {
        let json: Option<String> = redis::cmd("HGET")
            .arg(self.record_key(id))
            .arg("record")
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        json.map(|json| serde_json::from_str(&json).map_err(FailureStoreError::Corrupt))
            .transpose()
    }

    async fn replace(
        &self,
        expected: FailureState,
        record: &FailureRecord,
    ) -> Result<bool, FailureStoreError> {
        let json = serde_json::to_string(record).map_err(FailureStoreError::Corrupt)?;
        let topic = Some(record.event.topic.as_str());
        let replaced: i64 = self
            .replace
            .key(self.record_key(&record.id))
            .key(self.index(topic, Some(expected)))
            .key(self.index(None, Some(expected)))
            .key(self.index(topic, Some(record.state)))
            .key(self.index(None, Some(record.state)))
            .arg(&record.id)
            .arg(&record.event.topic)
            .arg(expected.as_str())
            .arg(record.state.as_str())
            .arg(json)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(replaced == 1)
    }

    async fn list(
        &self,
        filter: &FailureFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<FailurePage, FailureStoreError> {
        let start = cursor.map_or_else(|| "-".to_owned(), |c| format!("({c}"));
        let mut conn = self.conn.clone();
        // One more than asked, to know whether there is a next page.
        let ids: Vec<String> = redis::cmd("ZRANGEBYLEX")
            .arg(self.index(filter.topic.as_deref(), filter.state))
            .arg(start)
            .arg("+")
            .arg("LIMIT")
            .arg(0)
            .arg(limit + 1)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let more = ids.len() > limit;
        let ids = &ids[..ids.len().min(limit)];
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("HGET").arg(self.record_key(id)).arg("record");
        }
        let jsons: Vec<Option<String>> = if ids.is_empty() {
            Vec::new()
        } else {
            pipe.query_async(&mut conn).await.map_err(unavailable)?
        };
        let items = jsons
            .into_iter()
            .flatten()
            .map(|json| serde_json::from_str(&json).map_err(FailureStoreError::Corrupt))
            .collect::<Result<Vec<FailureRecord>, _>>()?;
        Ok(FailurePage {
            next_cursor: more.then(|| ids.last().cloned()).flatten(),
            items,
        })
    }

    async fn stats(&self) -> Result<FailureStats, FailureStoreError> {
        let open_index = self.index(None, Some(FailureState::Open));
        let (open, oldest): (u64, Vec<String>) = redis::pipe()
            .zcard(&open_index)
            .cmd("ZRANGEBYLEX")
            .arg(&open_index)
            .arg("-")
            .arg("+")
            .arg("LIMIT")
            .arg(0)
            .arg(1)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(FailureStats {
            open,
            oldest_open_ms: oldest.first().and_then(|id| id_time_ms(id)),
        })
    }
}
