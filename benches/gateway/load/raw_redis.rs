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
    /// The gateway's key layout: `<prefix>:i:<principal>:<topic>:<key>`.
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
                let record = format!("{}:i:anonymous:{}:{}", load.prefix, load.topic, key);
                // The script arguments as the gateway passes them: 8 bytes of owner, 16 of
                // fingerprint, and a settled record's partition, offset and 6-byte timestamp.
                let owner = (worker as u64).to_be_bytes();
                let mut fingerprint = [0_u8; 16];
                fingerprint[..8].copy_from_slice(&seq.to_be_bytes());
                fingerprint[8..].copy_from_slice(&(worker as u64).to_be_bytes());
                let mut done_rest = Vec::with_capacity(18);
                done_rest.extend_from_slice(&((worker % 3) as i32).to_be_bytes());
                done_rest.extend_from_slice(&(seq as i64).to_be_bytes());
                done_rest.extend_from_slice(&1_796_000_000_123_i64.to_be_bytes()[2..]);
                let sent = Instant::now();
                let result: redis::RedisResult<(Vec<redis::Value>, Vec<i64>)> = async {
                    let claimed: Vec<redis::Value> = claim
                        .key(&record)
                        .arg(lease_ms)
                        .arg(ttl_ms)
                        .arg("0")
                        .arg(grace_ms)
                        .arg(&owner[..])
                        .arg(&fingerprint[..])
                        .invoke_async(&mut conn)
                        .await?;
                    let settled: Vec<i64> = settle
                        .key(&record)
                        .arg(ttl_ms)
                        .arg(&owner[..])
                        .arg("D")
                        .arg(&done_rest)
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
                    Ok((claimed, settled))
                        if settled == &[1] && claimed.first() == Some(&redis::Value::Int(1)) =>
                    {
                        (Outcome::Ok, "claimed+settled".to_owned())
                    }
                    Ok((claimed, settled)) => (
                        Outcome::Other,
                        format!("unexpected: {claimed:?} / {settled:?}"),
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
