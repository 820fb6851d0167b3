//! Idempotency records in Redis: one compact string per key ([`record`]), each transition one
//! Lua script ([`scripts`]) that reads it with one `GET` and writes it with one `SET`.
//!
//! Keys are `<prefix>:i:<principal>:<topic>:<key>`. (Earlier releases kept hashes under
//! `<prefix>:idem:`, which this one neither reads nor writes; see the README's upgrade note.)

mod record;
pub(super) mod scripts;

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::{Script, Value};

use super::durability::OnDisk;
use super::{
    Claim, ClaimRequest, Claimant, IdempotencyStore, KeyStatus, Lifetimes, Renewal, SettleRequest,
    StoreError, StoreHealth, StoredAnswer,
};
use crate::event::{IdempotencyKey, KeyScope};

pub use self::scripts::{CLAIM, SETTLE};

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
            claim: Script::new(scripts::CLAIM),
            settle: Script::new(scripts::SETTLE),
            accept: Script::new(scripts::ACCEPT),
            renew: Script::new(scripts::RENEW),
            unpin: Script::new(scripts::UNPIN),
        }
    }

    /// `<prefix>:i:<principal>:<topic>:<key>`. The principal is percent-encoded beyond
    /// `[A-Za-z0-9._@-]` (a JWT subject may hold anything, `:` and `%` included) and a topic
    /// name cannot contain `:`, so no two scopes share a key.
    fn record_key(&self, scope: KeyScope<'_>, key: &IdempotencyKey) -> String {
        use std::fmt::Write;
        let mut record_key = String::with_capacity(
            self.prefix.len() + scope.principal.len() + scope.topic.as_str().len() + 64,
        );
        record_key.push_str(&self.prefix);
        record_key.push_str(":i:");
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

    fn ms(duration: std::time::Duration) -> u64 {
        duration.as_millis() as u64
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
        let request = ClaimRequest {
            scope,
            key,
            fingerprint,
            owner,
        };
        let mut claims = self.claim_many(&[request], claimant).await?;
        claims
            .pop()
            .ok_or_else(|| StoreError::Protocol("claim script replied nothing".into()))
    }

    async fn claim_many(
        &self,
        requests: &[ClaimRequest<'_>],
        claimant: Claimant,
    ) -> Result<Vec<Claim>, StoreError> {
        let mut invocation = self.claim.prepare_invoke();
        invocation
            .arg(Self::ms(self.lifetimes.lease))
            .arg(Self::ms(self.lifetimes.ttl))
            .arg(if claimant == Claimant::Operator {
                "1"
            } else {
                "0"
            })
            .arg(Self::ms(self.lifetimes.grace));
        for request in requests {
            invocation
                .key(self.record_key(request.scope, request.key))
                .arg(&record::owner(request.owner)[..])
                .arg(&record::fingerprint(request.fingerprint)[..]);
        }
        let replies: Vec<Value> = invocation
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(StoreError::Unavailable)?;
        if replies.len() != requests.len() {
            return Err(StoreError::Protocol(format!(
                "claim script replied {} answers to {} keys",
                replies.len(),
                requests.len()
            )));
        }
        replies.iter().map(parse_claim).collect()
    }

    async fn settle(
        &self,
        scope: KeyScope<'_>,
        key: &IdempotencyKey,
        owner: &str,
        answer: &StoredAnswer,
    ) -> Result<bool, StoreError> {
        let request = SettleRequest {
            scope,
            key,
            owner,
            answer,
        };
        let settled = self.settle_many(&[request]).await?;
        Ok(settled.first() == Some(&true))
    }

    async fn settle_many(&self, requests: &[SettleRequest<'_>]) -> Result<Vec<bool>, StoreError> {
        let mut invocation = self.settle.prepare_invoke();
        invocation.arg(Self::ms(self.lifetimes.ttl));
        for request in requests {
            let (state, rest) = record::settled(request.answer);
            invocation
                .key(self.record_key(request.scope, request.key))
                .arg(&record::owner(request.owner)[..])
                .arg(state)
                .arg(rest);
        }
        let settled: Vec<i64> = invocation
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(StoreError::Unavailable)?;
        if settled.len() != requests.len() {
            return Err(StoreError::Protocol(format!(
                "settle script replied {} answers to {} keys",
                settled.len(),
                requests.len()
            )));
        }
        Ok(settled.into_iter().map(|one| one == 1).collect())
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
            .arg(&record::owner(owner)[..])
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
        let stored: Option<Vec<u8>> = redis::cmd("GET")
            .arg(self.record_key(scope, key))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(StoreError::Unavailable)?;
        stored.as_deref().map(record::decode).transpose()
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
            .arg(&record::owner(owner)[..])
            .arg(Self::ms(self.lifetimes.lease))
            .arg(Self::ms(self.lifetimes.ttl))
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
            .arg(&record::fingerprint(fingerprint)[..])
            .arg(Self::ms(self.lifetimes.ttl))
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
        // The claim script's `SET … NX GET` needs Redis 7.0: an older one would refuse every
        // claim, so it is refused here, by name, rather than as a store that does not answer.
        let server: Result<String, _> = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut conn)
            .await;
        if let Some(version) = server.ok().as_deref().and_then(redis_version)
            && version < (7, 0)
        {
            return Err(StoreError::Protocol(format!(
                "Redis {}.{} is too old: ackgate needs Redis 7.0 or later",
                version.0, version.1
            )));
        }
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

/// `(major, minor)` of `redis_version` in an `INFO server` answer.
fn redis_version(info: &str) -> Option<(u32, u32)> {
    let version = info
        .lines()
        .find_map(|line| line.strip_prefix("redis_version:"))?;
    let mut parts = version.trim().split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// One key's reply from the claim script.
fn parse_claim(reply: &Value) -> Result<Claim, StoreError> {
    let bad = || StoreError::Protocol(format!("claim script replied {reply:?}"));
    let Value::Array(parts) = reply else {
        return Err(bad());
    };
    let text = |i: usize| -> Option<String> { redis::from_redis_value_ref(parts.get(i)?).ok() };
    let number = |i: usize| -> Option<u64> { redis::from_redis_value_ref(parts.get(i)?).ok() };
    match text(0).as_deref() {
        Some("claimed") => Ok(Claim::Claimed {
            attempt: number(1)
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(bad)?,
            took_over: number(2).ok_or_else(bad)? == 1,
        }),
        Some("replay") => {
            let stored: Vec<u8> = parts
                .get(1)
                .and_then(|v| redis::from_redis_value_ref(v).ok())
                .ok_or_else(bad)?;
            match record::decode(&stored)? {
                KeyStatus::Settled(answer) => Ok(Claim::Replay(answer)),
                KeyStatus::InFlight => Err(bad()),
            }
        }
        Some("in_flight") => Ok(Claim::InFlight {
            retry_after: std::time::Duration::from_millis(number(1).ok_or_else(bad)?),
            accepted: text(2).ok_or_else(bad)? == "1",
        }),
        Some("mismatch") => Ok(Claim::Mismatch),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_redis_version_is_read_from_info() {
        let info = "# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\n";
        assert_eq!(super::redis_version(info), Some((7, 0)));
        assert_eq!(super::redis_version("redis_version:6.2.14\n"), Some((6, 2)));
        assert_eq!(super::redis_version("# Server\n"), None);
    }
}
