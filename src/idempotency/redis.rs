//! Idempotency records in Redis: one hash per key, each transition one Lua script.
//!
//! Every script touches a single key (so it works on Redis Cluster too) and reads the clock
//! with `TIME` inside Redis, so gateways with skewed clocks still agree on lease expiry.

use async_trait::async_trait;
use redis::Script;
use redis::aio::ConnectionManager;

use super::durability::OnDisk;
use super::{
    Claim, Claimant, IdempotencyStore, KeyStatus, Lifetimes, Position, Renewal, Settlement,
    StoreError, StoreHealth, StoredAnswer,
};
use crate::event::{IdempotencyKey, KeyScope};

/// KEYS[1] record; ARGV: owner, fingerprint, lease_ms, ttl_ms, operator ('1' or '0'), grace_ms.
/// Returns {'claimed', attempt, took_over} | {'replay', state, status, body, position}
/// | {'in_flight', ms_left, accepted} | {'mismatch'}.
pub const CLAIM: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[3])
local r = redis.call('HMGET', KEYS[1], 'state', 'fp', 'lease_until', 'attempt', 'status', 'body',
                    'accepted', 'pos', 'suspect_since')
if not r[1] then
  redis.call('HSET', KEYS[1], 'state', 'in_flight', 'fp', ARGV[2], 'owner', ARGV[1],
             'lease_until', now + lease, 'attempt', 1, 'created_ms', now)
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return {'claimed', '1', '0'}
end
-- The fingerprint is checked first, in any state: a reused key never sees another event's answer.
if r[2] ~= ARGV[2] then
  return {'mismatch'}
end
local function reclaim(maybe_duplicate, took_over)
  local attempt = tonumber(r[4]) + 1
  redis.call('HSET', KEYS[1], 'state', 'in_flight', 'owner', ARGV[1], 'lease_until', now + lease,
             'attempt', attempt)
  redis.call('HDEL', KEYS[1], 'status', 'body', 'accepted', 'pos', 'suspect_since')
  if maybe_duplicate then redis.call('HSET', KEYS[1], 'maybe_duplicate', 1) end
  -- Refresh the TTL so the record cannot expire under the new owner.
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return {'claimed', tostring(attempt), took_over and '1' or '0'}
end
-- Nothing was written last time: publish again.
if r[1] == 'released' then return reclaim(false, false) end
-- An operator retries an event that may or may not be in Kafka: their call.
if r[1] == 'failed' and ARGV[5] == '1' then return reclaim(true, false) end
if r[1] ~= 'in_flight' then
  return {'replay', r[1], r[5], r[6], r[8] or ''}
end
local lease_until = tonumber(r[3])
if lease_until > now then
  return {'in_flight', tostring(lease_until - now), r[7] or '0'}
end
-- The lease ran out on Redis's clock, which also runs while Redis is stalled: a live owner's
-- renewal or settle may be queued right behind this claim. Suspect the owner first; take over
-- only a grace later (Redis answering all along) if it has not renewed since.
local grace = tonumber(ARGV[6])
local suspect_since = tonumber(r[9])
if not suspect_since then
  redis.call('HSET', KEYS[1], 'suspect_since', now)
  return {'in_flight', tostring(grace), r[7] or '0'}
end
if now - suspect_since < grace then
  return {'in_flight', tostring(grace - (now - suspect_since)), r[7] or '0'}
end
-- The owner is gone (it crashed before settling). Take over, and note that the event may be in
-- Kafka already.
return reclaim(true, true)
"#;

/// KEYS[1] record; ARGV: owner, state, status, body, ttl_ms, position ('partition:offset' or '').
/// Returns 1 if the key is settled as `state` by this owner (now, or by an earlier try whose
/// reply was lost). A `failed` key is pinned: no expiry until an operator acts (UNPIN, or a
/// claim by an operator).
pub const SETTLE: &str = r#"
local r = redis.call('HMGET', KEYS[1], 'state', 'owner')
if r[2] ~= ARGV[1] then
  return 0
end
if r[1] ~= 'in_flight' then
  if r[1] == ARGV[2] then return 1 end
  return 0
end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'status', ARGV[3], 'body', ARGV[4])
if ARGV[6] and ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'pos', ARGV[6]) end
redis.call('HDEL', KEYS[1], 'lease_until', 'suspect_since')
if ARGV[2] == 'failed' then
  redis.call('PERSIST', KEYS[1])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
end
return 1
"#;

/// KEYS[1] record; ARGV: owner, lease_ms, ttl_ms. Returns 'renewed' | 'settled' | 'lost'.
const RENEW: &str = r#"
local r = redis.call('HMGET', KEYS[1], 'state', 'owner')
if r[2] ~= ARGV[1] then
  return 'lost'
end
if r[1] ~= 'in_flight' then
  return 'settled'
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'lease_until', now + tonumber(ARGV[2]))
redis.call('HDEL', KEYS[1], 'suspect_since')
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 'renewed'
"#;

/// KEYS[1] record; ARGV: fingerprint, ttl_ms. Returns 1 if a pinned `failed` key now expires.
const UNPIN: &str = r#"
local r = redis.call('HMGET', KEYS[1], 'state', 'fp')
if r[1] == 'failed' and r[2] == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"#;

/// KEYS[1] record; ARGV: owner. Marks the in-flight request as answered 202.
const ACCEPT: &str = r#"
local r = redis.call('HMGET', KEYS[1], 'state', 'owner')
if r[1] == 'in_flight' and r[2] == ARGV[1] then
  redis.call('HSET', KEYS[1], 'accepted', 1)
end
return 1
"#;

/// The Redis-backed store, shared by every gateway replica.
#[derive(Clone)]
pub(crate) struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
    lifetimes: Lifetimes,
    claim: Script,
    settle: Script,
    accept: Script,
    renew: Script,
    unpin: Script,
}

impl RedisStore {
    pub(crate) fn new(conn: ConnectionManager, prefix: &str, lifetimes: Lifetimes) -> Self {
        RedisStore {
            conn,
            prefix: prefix.to_owned(),
            lifetimes,
            claim: Script::new(CLAIM),
            settle: Script::new(SETTLE),
            accept: Script::new(ACCEPT),
            renew: Script::new(RENEW),
            unpin: Script::new(UNPIN),
        }
    }

    /// `<prefix>:idem:<principal>:<topic>:<key>`. The principal is percent-encoded beyond
    /// `[A-Za-z0-9._@-]` (a JWT subject may hold anything, `:` and `%` included) and a topic
    /// name cannot contain `:`, so no two scopes share a key.
    fn record_key(&self, scope: KeyScope<'_>, key: &IdempotencyKey) -> String {
        use std::fmt::Write;
        let mut record_key = String::with_capacity(
            self.prefix.len() + scope.principal.len() + scope.topic.as_str().len() + 64,
        );
        record_key.push_str(&self.prefix);
        record_key.push_str(":idem:");
        for byte in scope.principal.bytes() {
            if byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'@' | b'-') {
                record_key.push(char::from(byte));
            } else {
                let _ = write!(record_key, "%{byte:02X}");
            }
        }
        record_key.push(':');
        record_key.push_str(scope.topic.as_str());
        record_key.push(':');
        record_key.push_str(key.as_str());
        record_key
    }
}

#[async_trait]
impl IdempotencyStore for RedisStore {
    async fn claim(
        &self,
        scope: KeyScope<'_>,
        key: &IdempotencyKey,
        fingerprint: &str,
        owner: &str,
        claimant: Claimant,
    ) -> Result<Claim, StoreError> {
        let reply: Vec<String> = self
            .claim
            .key(self.record_key(scope, key))
            .arg(owner)
            .arg(fingerprint)
            .arg(self.lifetimes.lease.as_millis() as u64)
            .arg(self.lifetimes.ttl.as_millis() as u64)
            .arg(if claimant == Claimant::Operator {
                "1"
            } else {
                "0"
            })
            .arg(self.lifetimes.grace.as_millis() as u64)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(StoreError::Unavailable)?;
        parse_claim(&reply)
    }

    async fn settle(
        &self,
        scope: KeyScope<'_>,
        key: &IdempotencyKey,
        owner: &str,
        answer: &StoredAnswer,
    ) -> Result<bool, StoreError> {
        let position = answer
            .position
            .map(|p| format!("{}:{}", p.partition, p.offset))
            .unwrap_or_default();
        let settled: i64 = self
            .settle
            .key(self.record_key(scope, key))
            .arg(owner)
            .arg(answer.settlement.as_str())
            .arg(answer.status)
            .arg(&answer.body)
            .arg(self.lifetimes.ttl.as_millis() as u64)
            .arg(position)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(StoreError::Unavailable)?;
        Ok(settled == 1)
    }

    async fn mark_accepted(
        &self,
        scope: KeyScope<'_>,
        key: &IdempotencyKey,
        owner: &str,
    ) -> Result<(), StoreError> {
        let _: i64 = self
            .accept
            .key(self.record_key(scope, key))
            .arg(owner)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(StoreError::Unavailable)?;
        Ok(())
    }

    async fn status(
        &self,
        scope: KeyScope<'_>,
        key: &IdempotencyKey,
    ) -> Result<Option<KeyStatus>, StoreError> {
        type Fields = (Option<String>, Option<u16>, Option<String>, Option<String>);
        let (state, status, body, position): Fields = redis::cmd("HMGET")
            .arg(self.record_key(scope, key))
            .arg(&["state", "status", "body", "pos"])
            .query_async(&mut self.conn.clone())
            .await
            .map_err(StoreError::Unavailable)?;
        match (state.as_deref(), status, body) {
            (None, ..) => Ok(None),
            (Some("in_flight"), ..) => Ok(Some(KeyStatus::InFlight)),
            (Some(state), Some(status), Some(body)) => Ok(Some(KeyStatus::Settled(answer(
                state,
                status,
                body,
                position.as_deref().unwrap_or_default(),
            )?))),
            _ => Err(StoreError::Protocol(
                "settled record without an answer".into(),
            )),
        }
    }

    async fn renew(
        &self,
        scope: KeyScope<'_>,
        key: &IdempotencyKey,
        owner: &str,
    ) -> Result<Renewal, StoreError> {
        let reply: String = self
            .renew
            .key(self.record_key(scope, key))
            .arg(owner)
            .arg(self.lifetimes.lease.as_millis() as u64)
            .arg(self.lifetimes.ttl.as_millis() as u64)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(StoreError::Unavailable)?;
        match reply.as_str() {
            "renewed" => Ok(Renewal::Renewed),
            "settled" => Ok(Renewal::Settled),
            "lost" => Ok(Renewal::Lost),
            other => Err(StoreError::Protocol(format!(
                "renew script replied {other}"
            ))),
        }
    }

    async fn unpin(
        &self,
        scope: KeyScope<'_>,
        key: &IdempotencyKey,
        fingerprint: &str,
    ) -> Result<bool, StoreError> {
        let unpinned: i64 = self
            .unpin
            .key(self.record_key(scope, key))
            .arg(fingerprint)
            .arg(self.lifetimes.ttl.as_millis() as u64)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(StoreError::Unavailable)?;
        Ok(unpinned == 1)
    }

    fn lifetimes(&self) -> Lifetimes {
        self.lifetimes
    }

    async fn health(&self) -> Result<StoreHealth, StoreError> {
        let mut conn = self.conn.clone();
        let _: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(StoreError::Unavailable)?;
        let mut health = StoreHealth::default();
        // Managed Redis services often disable CONFIG; then the policy is unknown, not wrong.
        let policy: Result<Vec<String>, _> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory-policy")
            .query_async(&mut conn)
            .await;
        match policy.as_deref() {
            Ok([_, policy]) if policy == "noeviction" => {}
            Ok([_, policy]) => health.warnings.push(format!(
                "Redis maxmemory-policy is '{policy}': Redis may evict idempotency records, \
                 and an evicted record lets a retry publish a duplicate; set it to 'noeviction'"
            )),
            _ => health.warnings.push(
                "could not read Redis maxmemory-policy (CONFIG GET refused); make sure it is \
                 'noeviction'"
                    .to_owned(),
            ),
        }
        let on_disk = OnDisk::of(&mut conn).await;
        on_disk.report();
        health.warnings.extend(on_disk.warning());
        Ok(health)
    }
}

fn parse_claim(reply: &[String]) -> Result<Claim, StoreError> {
    let bad = || StoreError::Protocol(format!("claim script replied {reply:?}"));
    match reply {
        [tag, attempt, took_over] if tag == "claimed" => Ok(Claim::Claimed {
            attempt: attempt.parse().map_err(|_| bad())?,
            took_over: took_over == "1",
        }),
        [tag, state, status, body, position] if tag == "replay" => Ok(Claim::Replay(answer(
            state,
            status.parse().map_err(|_| bad())?,
            body.clone(),
            position,
        )?)),
        [tag, ms_left, accepted] if tag == "in_flight" => Ok(Claim::InFlight {
            retry_after: std::time::Duration::from_millis(ms_left.parse().map_err(|_| bad())?),
            accepted: accepted == "1",
        }),
        [tag] if tag == "mismatch" => Ok(Claim::Mismatch),
        _ => Err(bad()),
    }
}

/// A settled record's fields as a typed answer.
fn answer(
    state: &str,
    status: u16,
    body: String,
    position: &str,
) -> Result<StoredAnswer, StoreError> {
    let settlement = match state {
        "done" => Settlement::Done,
        "failed" => Settlement::Failed,
        "released" => Settlement::Released,
        other => return Err(StoreError::Protocol(format!("unknown state {other}"))),
    };
    // Records settled before positions were kept have none; that is not an error.
    let position = position.split_once(':').and_then(|(partition, offset)| {
        Some(Position {
            partition: partition.parse().ok()?,
            offset: offset.parse().ok()?,
        })
    });
    Ok(StoredAnswer {
        settlement,
        status,
        body,
        position,
    })
}
