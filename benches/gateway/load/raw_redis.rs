//! The raw Redis load: the gateway's own CLAIM and SETTLE scripts on unique keys, by a window of
//! tasks on one multiplexed connection manager; latency is claim + settle. The gateway's
//! physical limit on the Redis side.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context as _;
use redis::Script;
use redis::aio::ConnectionManager;

use crate::cli::gateway_settings;
use crate::load::Events;
use crate::load::pacing::{Pace, Tickets, Window};
use crate::tally::{Outcome, Tally, lock, take_tally};

pub(crate) struct RawRedisLoad {
    pub(crate) conn: ConnectionManager,
    /// The gateway's key layout: `<prefix>:idem:<topic>:<key>`.
    pub(crate) prefix: String,
    pub(crate) topic: String,
    pub(crate) events: Events,
    pub(crate) window_size: usize,
    pub(crate) window: Window,
}

pub(crate) async fn run_raw_redis(load: RawRedisLoad) -> anyhow::Result<Tally> {
    let tally = Arc::new(Mutex::new(Tally::new()));
    let load = Arc::new(load);
    let tickets = Arc::new(Tickets::new(Pace::Closed, load.window));
    let scripts = Arc::new((
        Script::new(ackgate::idempotency::CLAIM_SCRIPT),
        Script::new(ackgate::idempotency::SETTLE_SCRIPT),
    ));
    let settings = gateway_settings();
    let lease_ms = settings.lease().as_millis() as u64;
    let ttl_ms = settings.idempotency_ttl().as_millis() as u64;
    let grace_ms = settings.takeover_grace().as_millis() as u64;
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..load.window_size {
        let (load, tickets, scripts, tally) = (
            load.clone(),
            tickets.clone(),
            scripts.clone(),
            tally.clone(),
        );
        workers.spawn(async move {
            let mut conn = load.conn.clone();
            let (claim, settle) = &*scripts;
            let mut seq = 0u64;
            while tickets.take().is_some() {
                seq += 1;
                let key = load.events.key(worker, seq);
                let record = format!("{}:idem:{}:{}", load.prefix, load.topic, key);
                let owner = ulid::Ulid::new().to_string();
                let fingerprint = format!("{:032x}{:032x}", seq, worker);
                // The answer the gateway stores for a persisted event.
                let answer = format!(
                    "{{\"status\":\"persisted\",\"topic\":\"{}\",\"partition\":{},\"offset\":{seq},\
                     \"timestamp\":\"2026-11-23T14:00:00.123Z\",\"idempotency_key\":\"{key}\"}}",
                    load.topic,
                    worker % 3
                );
                let sent = Instant::now();
                let result: redis::RedisResult<(Vec<String>, i64)> = async {
                    let claimed: Vec<String> = claim
                        .key(&record)
                        .arg(&owner)
                        .arg(&fingerprint)
                        .arg(lease_ms)
                        .arg(ttl_ms)
                        .arg("0")
                        .arg(grace_ms)
                        .invoke_async(&mut conn)
                        .await?;
                    let settled: i64 = settle
                        .key(&record)
                        .arg(&owner)
                        .arg("done")
                        .arg(201)
                        .arg(&answer)
                        .arg(ttl_ms)
                        .invoke_async(&mut conn)
                        .await?;
                    Ok((claimed, settled))
                }
                .await;
                let done = Instant::now();
                if !load.window.counts(done) {
                    continue;
                }
                let (outcome, answer) = match &result {
                    Ok((claimed, 1)) if claimed.first().map(String::as_str) == Some("claimed") => {
                        (Outcome::Ok, "claimed+settled".to_owned())
                    }
                    Ok((claimed, settled)) => (
                        Outcome::Other,
                        format!("unexpected: {claimed:?} / {settled}"),
                    ),
                    Err(error) => (Outcome::Other, format!("error: {:?}", error.kind())),
                };
                lock(&tally).record(outcome, &answer, done - sent);
            }
        });
    }
    while let Some(joined) = workers.join_next().await {
        joined.context("a raw Redis worker panicked")?;
    }
    Ok(take_tally(tally))
}
