//! Idempotency records in Redis: one compact string per key ([`record`]), each transition one
//! Lua script ([`scripts`]) that reads it with one `GET` and writes it with one `SET`.
//!
//! Keys are `<prefix>:i:<principal>:<topic>:<key>`. (Earlier releases kept hashes under
//! `<prefix>:idem:`, which this one neither reads nor writes; see the README's upgrade note.)
//!
//! On a Redis Cluster each key lives in its own hash slot, spread over the masters, and a
//! script may only touch keys of one slot: a call for many keys becomes one call per slot
//! ([`each_slot`]), sent together, and each key gets its own answer or its own slot's error,
//! so a master in failover fails only the keys it owns.

mod coalesce;
mod record;
pub(super) mod scripts;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use futures::future::join_all;
use redis::cluster_routing::Slot;
use redis::{Script, Value};

use self::coalesce::Lane;
use super::durability::OnDisk;
use super::{
    Claim, ClaimRequest, Claimant, IdempotencyStore, KeyStatus, Lifetimes, Renewal, SettleRequest,
    StoreError, StoreHealth, StoredAnswer,
};
use crate::event::{IdempotencyKey, KeyScope};
use crate::redis_link::RedisConn;

pub use self::scripts::{CLAIM, SETTLE};

/// The Redis-backed store, shared by every gateway replica.
///
/// Single requests' claims and settles go through a [`Lane`] each, so that the requests in
/// progress together share script calls; a batch's keys go in one call of their own.
#[derive(Clone)]
pub(crate) struct RedisStore {
    conn: RedisConn,
    prefix: String,
    lifetimes: Lifetimes,
    claim: Arc<Script>,
    settle: Arc<Script>,
    accept: Script,
    renew: Script,
    unpin: Script,
    claims: Lane<KeyClaim, Result<Claim, StoreError>>,
    settles: Lane<KeySettle, Result<bool, StoreError>>,
}

/// One key of a claim script call.
struct KeyClaim {
    record_key: String,
    owner: [u8; 8],
    fingerprint: [u8; 16],
}

/// One key of a settle script call.
struct KeySettle {
    record_key: String,
    owner: [u8; 8],
    state: &'static str,
    rest: Vec<u8>,
}

impl RedisStore {
    /// Needs a Tokio runtime: the lanes' tasks start here. `timeout` is `--redis-timeout-ms`:
    /// a request that waits for a shared call fails after it, as it would alone.
    pub(crate) fn new(
        conn: RedisConn,
        prefix: &str,
        lifetimes: Lifetimes,
        timeout: Duration,
    ) -> Self {
        let claim = Arc::new(Script::new(scripts::CLAIM));
        let settle = Arc::new(Script::new(scripts::SETTLE));
        let claims = {
            let (conn, script) = (conn.clone(), Arc::clone(&claim));
            Lane::new(
                Arc::new(move |keys: Vec<KeyClaim>| {
                    let (conn, script) = (conn.clone(), Arc::clone(&script));
                    async move {
                        Ok(claim_keys(conn, &script, lifetimes, Claimant::Client, &keys).await)
                    }
                    .boxed()
                }),
                timeout,
            )
        };
        let settles = {
            let (conn, script) = (conn.clone(), Arc::clone(&settle));
            Lane::new(
                Arc::new(move |keys: Vec<KeySettle>| {
                    let (conn, script) = (conn.clone(), Arc::clone(&script));
                    async move { Ok(settle_keys(conn, &script, lifetimes, &keys).await) }.boxed()
                }),
                timeout,
            )
        };
        RedisStore {
            conn,
            prefix: prefix.to_owned(),
            lifetimes,
            claim,
            settle,
            accept: Script::new(scripts::ACCEPT),
            renew: Script::new(scripts::RENEW),
            unpin: Script::new(scripts::UNPIN),
            claims,
            settles,
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

    fn key_claim(&self, request: &ClaimRequest<'_>) -> KeyClaim {
        KeyClaim {
            record_key: self.record_key(request.scope, request.key),
            owner: record::owner(request.owner),
            fingerprint: record::fingerprint(request.fingerprint),
        }
    }

    fn key_settle(&self, request: &SettleRequest<'_>) -> KeySettle {
        let (state, rest) = record::settled(request.answer);
        KeySettle {
            record_key: self.record_key(request.scope, request.key),
            owner: record::owner(request.owner),
            state,
            rest,
        }
    }
}

fn ms(duration: Duration) -> u64 {
    duration.as_millis() as u64
}

/// The claim script for `keys`: one answer per key, in order.
async fn claim_keys(
    conn: RedisConn,
    script: &Script,
    lifetimes: Lifetimes,
    claimant: Claimant,
    keys: &[KeyClaim],
) -> Vec<Result<Claim, StoreError>> {
    let operator = if claimant == Claimant::Operator {
        "1"
    } else {
        "0"
    };
    each_slot(
        &conn,
        keys,
        |key| &key.record_key,
        |mut conn, keys| async move {
            let mut invocation = script.prepare_invoke();
            invocation
                .arg(ms(lifetimes.lease))
                .arg(ms(lifetimes.ttl))
                .arg(operator)
                .arg(ms(lifetimes.grace));
            for key in &keys {
                invocation
                    .key(&key.record_key)
                    .arg(&key.owner[..])
                    .arg(&key.fingerprint[..]);
            }
            let replies: Vec<Value> = per_key(&invocation, &mut conn, "claim", keys.len()).await?;
            replies.iter().map(parse_claim).collect()
        },
    )
    .await
}

/// The settle script for `keys`: one answer per key, in order.
async fn settle_keys(
    conn: RedisConn,
    script: &Script,
    lifetimes: Lifetimes,
    keys: &[KeySettle],
) -> Vec<Result<bool, StoreError>> {
    each_slot(
        &conn,
        keys,
        |key| &key.record_key,
        |mut conn, keys| async move {
            let mut invocation = script.prepare_invoke();
            invocation.arg(ms(lifetimes.ttl));
            for key in &keys {
                invocation
                    .key(&key.record_key)
                    .arg(&key.owner[..])
                    .arg(key.state)
                    .arg(&key.rest[..]);
            }
            let settled: Vec<i64> = per_key(&invocation, &mut conn, "settle", keys.len()).await?;
            Ok(settled.into_iter().map(|one| one == 1).collect())
        },
    )
    .await
}

/// Runs `call` for `keys` — once on one server; on a cluster once per hash slot, all at once —
/// and answers each key in order: with its own answer, or the error of its slot's call.
async fn each_slot<'k, K, T, F, Fut>(
    conn: &RedisConn,
    keys: &'k [K],
    record_key: impl Fn(&K) -> &str,
    call: F,
) -> Vec<Result<T, StoreError>>
where
    F: Fn(RedisConn, Vec<&'k K>) -> Fut,
    Fut: Future<Output = Result<Vec<T>, StoreError>>,
{
    if keys.is_empty() {
        return Vec::new();
    }
    // One server: one call for every key, answered in order.
    if !conn.is_cluster() {
        return match call(conn.clone(), keys.iter().collect()).await {
            Ok(answers) => answers.into_iter().map(Ok).collect(),
            Err(error) => keys.iter().map(|_| Err(error.clone())).collect(),
        };
    }
    let mut slots: Vec<(Slot, Vec<usize>)> = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let slot = Slot::for_key(record_key(key));
        match slots.iter_mut().find(|(s, _)| *s == slot) {
            Some((_, group)) => group.push(i),
            None => slots.push((slot, vec![i])),
        }
    }
    let groups: Vec<Vec<usize>> = slots.into_iter().map(|(_, group)| group).collect();
    let answers = join_all(
        groups
            .iter()
            .map(|group| call(conn.clone(), group.iter().map(|&i| &keys[i]).collect())),
    )
    .await;
    let mut each: Vec<Option<Result<T, StoreError>>> = keys.iter().map(|_| None).collect();
    for (group, answer) in groups.iter().zip(answers) {
        match answer {
            Ok(answers) => {
                for (&i, answer) in group.iter().zip(answers) {
                    each[i] = Some(Ok(answer));
                }
            }
            Err(error) => {
                for &i in group {
                    each[i] = Some(Err(error.clone()));
                }
            }
        }
    }
    each.into_iter()
        .map(|answer| {
            answer.unwrap_or_else(|| Err(StoreError::Protocol("a key was left unanswered".into())))
        })
        .collect()
}

/// Runs a script call of `keys` keys, which answers one reply per key.
async fn per_key<T: redis::FromRedisValue>(
    invocation: &redis::ScriptInvocation<'_>,
    conn: &mut RedisConn,
    script: &str,
    keys: usize,
) -> Result<Vec<T>, StoreError> {
    let replies: Vec<T> = invocation
        .invoke_async(conn)
        .await
        .map_err(StoreError::Unavailable)?;
    if replies.len() != keys {
        return Err(StoreError::Protocol(format!(
            "{script} script replied {} answers to {keys} keys",
            replies.len()
        )));
    }
    Ok(replies)
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
        let request = self.key_claim(&ClaimRequest {
            scope,
            key,
            fingerprint,
            owner,
        });
        match claimant {
            Claimant::Client => self.claims.call(request).await?,
            Claimant::Operator => claim_keys(
                self.conn.clone(),
                &self.claim,
                self.lifetimes,
                claimant,
                &[request],
            )
            .await
            .pop()
            .unwrap_or_else(|| Err(StoreError::Protocol("claim script replied nothing".into()))),
        }
    }

    async fn claim_many(
        &self,
        requests: &[ClaimRequest<'_>],
        claimant: Claimant,
    ) -> Vec<Result<Claim, StoreError>> {
        let keys: Vec<KeyClaim> = requests.iter().map(|r| self.key_claim(r)).collect();
        claim_keys(
            self.conn.clone(),
            &self.claim,
            self.lifetimes,
            claimant,
            &keys,
        )
        .await
    }

    async fn settle(
        &self,
        scope: KeyScope<'_>,
        key: &IdempotencyKey,
        owner: &str,
        answer: &StoredAnswer,
    ) -> Result<bool, StoreError> {
        let request = self.key_settle(&SettleRequest {
            scope,
            key,
            owner,
            answer,
        });
        self.settles.call(request).await?
    }

    async fn settle_many(&self, requests: &[SettleRequest<'_>]) -> Vec<Result<bool, StoreError>> {
        let keys: Vec<KeySettle> = requests.iter().map(|r| self.key_settle(r)).collect();
        settle_keys(self.conn.clone(), &self.settle, self.lifetimes, &keys).await
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
            .arg(ms(self.lifetimes.lease))
            .arg(ms(self.lifetimes.ttl))
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
            .arg(ms(self.lifetimes.ttl))
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
        if conn.is_cluster() {
            // A cluster that has lost a slot's master (and has not promoted a replica yet)
            // refuses the keys of that slot.
            let info: String = conn
                .ask_a_server(redis::cmd("CLUSTER").arg("INFO"))
                .await
                .map_err(StoreError::Unavailable)?;
            if let Some(state) = cluster_state(&info)
                && state != "ok"
            {
                return Err(StoreError::Protocol(format!(
                    "the Redis Cluster's state is '{state}': some hash slots have no master"
                )));
            }
        }
        let server: Result<String, _> = conn.ask_a_server(redis::cmd("INFO").arg("server")).await;
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
        let policy: Result<Vec<String>, _> = conn
            .ask_a_server(redis::cmd("CONFIG").arg("GET").arg("maxmemory-policy"))
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

/// `cluster_state` in a `CLUSTER INFO` answer.
fn cluster_state(info: &str) -> Option<&str> {
    info.lines()
        .find_map(|line| line.strip_prefix("cluster_state:"))
        .map(str::trim)
}

/// One key's reply from the claim script.
fn parse_claim(reply: &Value) -> Result<Claim, StoreError> {
    let bad = || StoreError::Protocol(format!("claim script replied {reply:?}"));
    if let Value::Int(1) = reply {
        return Ok(Claim::Claimed {
            attempt: 1,
            took_over: false,
        });
    }
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

    #[test]
    fn the_cluster_state_is_read_from_cluster_info() {
        let info = "cluster_enabled:1\r\ncluster_state:fail\r\ncluster_slots_assigned:16384\r\n";
        assert_eq!(super::cluster_state(info), Some("fail"));
        assert_eq!(super::cluster_state("cluster_state:ok\n"), Some("ok"));
        assert_eq!(super::cluster_state(""), None);
    }
}
