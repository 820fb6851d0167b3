//! The stall of `a_claim_redis_runs_after_a_stall_longer_than_the_lease_does_not_publish_again`,
//! under load: six careful clients spread unique events (and now and then the duplicate a client
//! that lost its answer sends) over two `ackgate serve` processes; Kafka starts to acknowledge
//! late, then Redis is frozen (SIGSTOP) for longer than the lease, so that acknowledgements
//! arrive while nothing can be recorded and clients' retries queue up behind them. Then the
//! load goes on until every key a stalled claim held is free again. Every key must be in Kafka
//! once, every acknowledgement where it said, and `ackgate audit` clean.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::common::client::{BACKOFF_MAX, CarefulClient, Rng};
use super::common::faults::{metric_value, redis_now_ms};
use super::common::mock::{MockKafka, PARTITIONS};
use super::common::process::Gateway;
use super::common::*;

const TOPIC: &str = "redis-stall-load";
const GATEWAYS: usize = 2;
const CLIENTS: usize = 6;
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(3);
/// `Settings::lease`: the delivery timeout + 10 s.
const LEASE: Duration = Duration::from_secs(DELIVERY_TIMEOUT.as_secs() + 10);
/// `Settings::takeover_grace` with the default Redis timeout (1 s).
const GRACE: Duration = Duration::from_secs(3);
/// Below the slow acknowledgements, so that requests in flight get 202 and their clients
/// retry the key while Redis is frozen: claims that Redis runs only after the stall.
const WAIT_TIMEOUT: Duration = Duration::from_secs(2);
const SLOW_ACKS: Duration = Duration::from_millis(2_500);

// The schedule, from the start of the load.
const SLOW_AT: Duration = Duration::from_secs(4);
const STALL_AT: Duration = Duration::from_secs(5);
/// Longer than the lease of every key claimed before the stall.
const STALL_FOR: Duration = Duration::from_secs(LEASE.as_secs() + 3);
/// When nothing holds a client back any more: a claim Redis ran after the stall for a
/// client that had given up on it holds its key for a lease and a grace, then a client's
/// retry takes it over.
fn all_clear() -> Duration {
    STALL_AT + STALL_FOR + LEASE + GRACE + BACKOFF_MAX
}
const LOAD_AFTER_ALL_CLEAR: Duration = Duration::from_secs(6);

/// At least this many acknowledgements a second per client while nothing holds it back
/// (a fraction of what the 2-core development machine does, as in `tests/chaos.rs`).
const MIN_ACKS_PER_CLIENT_SECOND: f64 = 2.0;

#[derive(Default)]
struct Ledger {
    acks: HashMap<String, String>,
    ack_times: Vec<(usize, Duration)>,
    kept: Vec<(String, String)>,
    replay_mismatches: Vec<String>,
    unexpected: Vec<String>,
}

fn gateway_args(kafka: &MockKafka, redis: &OwnRedis, prefix: &str, i: usize) -> Vec<String> {
    let spool = std::env::temp_dir().join(format!("{prefix}-{i}.spool"));
    [
        "--kafka-brokers",
        &kafka.brokers(),
        "--redis-url",
        &redis.url(),
        "--redis-key-prefix",
        prefix,
        "--delivery-timeout-ms",
        &DELIVERY_TIMEOUT.as_millis().to_string(),
        "--wait-timeout-ms",
        &WAIT_TIMEOUT.as_millis().to_string(),
        "--failure-spool-path",
        &spool.display().to_string(),
        "--log-filter",
        "warn",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect()
}

/// The sum of one sample over every gateway's `/metrics`.
async fn metric(gateways: &[Gateway], sample: &str) -> f64 {
    let mut sum = 0.0;
    for gateway in gateways {
        let text = reqwest::get(gateway.url("/metrics"))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body");
        sum += metric_value(&text, sample);
    }
    sum
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a minute of load through a Redis stall; run it with --ignored"]
async fn a_redis_stall_longer_than_the_lease_under_load_publishes_every_key_once() {
    let kafka = MockKafka::start(TOPIC);
    let redis = OwnRedis::start();
    let prefix = unique("stall");
    let mut gateways: Vec<Gateway> = (0..GATEWAYS)
        .map(|i| Gateway::new(&gateway_args(&kafka, &redis, &prefix, i)))
        .collect();
    for gateway in &mut gateways {
        gateway.start();
    }
    let ports: Arc<Vec<u16>> = Arc::new(gateways.iter().map(|g| g.port).collect());
    let load_for = all_clear() + LOAD_AFTER_ALL_CLEAR;

    let started = Instant::now();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let (sent, duplicates_sent) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let retries = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let mut client = CarefulClient {
            http: reqwest::Client::new(),
            ports: ports.clone(),
            topic: TOPIC,
            rng: Rng(0x9E37_79B9_7F4A_7C15 ^ (c as u64 + 1)),
            retries: retries.clone(),
        };
        let (ledger, sent, duplicates_sent, stop) = (
            ledger.clone(),
            sent.clone(),
            duplicates_sent.clone(),
            stop.clone(),
        );
        clients.push(tokio::spawn(async move {
            let give_up = Duration::from_secs(90);
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("c{c}-e{n}");
                let body = format!(r#"{{"client":{c},"n":{n}}}"#);
                n += 1;
                sent.fetch_add(1, Ordering::Relaxed);
                match client.deliver(&key, &body, give_up).await {
                    Ok(first) if first.status == 201 => {
                        {
                            let mut book = ledger.lock().unwrap();
                            book.acks.insert(key.clone(), first.body.clone());
                            book.ack_times.push((c, started.elapsed()));
                        }
                        // Now and then, the duplicate a client that lost its answer sends.
                        if client.rng.below(10) == 0 {
                            duplicates_sent.fetch_add(1, Ordering::Relaxed);
                            match client.deliver(&key, &body, give_up).await {
                                Ok(again)
                                    if again.status == 201
                                        && again.replayed
                                        && again.body == first.body => {}
                                other => ledger
                                    .lock()
                                    .unwrap()
                                    .replay_mismatches
                                    .push(format!("{key}: first {}, again {other:?}", first.body)),
                            }
                        }
                    }
                    Ok(answer) => {
                        let problem: serde_json::Value =
                            serde_json::from_str(&answer.body).unwrap_or_default();
                        let mut book = ledger.lock().unwrap();
                        match problem["failure_id"].as_str() {
                            Some(id) if answer.status >= 500 => {
                                book.kept.push((key, id.to_owned()))
                            }
                            _ => book.unexpected.push(format!("{key}: {answer:?}")),
                        }
                    }
                    Err(why) => ledger.lock().unwrap().unexpected.push(why),
                }
            }
        }));
    }

    let at = |offset: Duration| tokio::time::sleep_until((started + offset).into());
    at(SLOW_AT).await;
    eprintln!("stall: Kafka acknowledges after {SLOW_ACKS:?}");
    kafka.set_rtt(SLOW_ACKS);
    at(STALL_AT).await;
    let frozen_at_ms = redis_now_ms(&redis.url()).await;
    eprintln!("stall: SIGSTOP Redis for {STALL_FOR:?}");
    redis.pause();
    tokio::time::sleep(STALL_FOR).await;
    redis.resume();
    kafka.set_rtt(Duration::ZERO);
    let stalled_ms = redis_now_ms(&redis.url()).await - frozen_at_ms;
    eprintln!("stall: SIGCONT Redis after {stalled_ms} ms on its clock");
    tokio::time::sleep_until((started + load_for).into()).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let ledger = std::mem::take(&mut *ledger.lock().unwrap());

    // What the gateways did through the stall, from their own metrics and logs.
    let settle_retries = metric(&gateways, "ackgate_settle_retries_total").await;
    let renewals = |outcome: &'static str| {
        let gateways = &gateways;
        async move {
            let sample = format!("ackgate_lease_renewals_total{{outcome=\"{outcome}\"}}");
            metric(gateways, &sample).await
        }
    };
    let (renewed, renewal_errors, renewals_settled) = (
        renewals("renewed").await,
        renewals("error").await,
        renewals("settled").await,
    );
    let leases_lost = metric(&gateways, r#"ackgate_leases_lost_total{step="renew"}"#).await
        + metric(&gateways, r#"ackgate_leases_lost_total{step="settle"}"#).await;
    let takeovers: usize = gateways.iter().map(|g| g.takeovers().len()).sum();

    // What is in Kafka, against every acknowledgement, and what the audit says.
    let records = consume_to_end(&kafka.brokers(), TOPIC, PARTITIONS);
    let (by_key, without_header) = by_idempotency_key(&records);
    let without_header = without_header.len();
    let duplicated: Vec<(&String, &Vec<(i32, i64)>)> =
        by_key.iter().filter(|(_, at)| at.len() > 1).collect();
    let lost: Vec<&String> = ledger
        .acks
        .iter()
        .filter(|(key, body)| {
            let ack: serde_json::Value = serde_json::from_str(body).unwrap();
            let at = (
                ack["partition"].as_i64().unwrap() as i32,
                ack["offset"].as_i64().unwrap(),
            );
            !by_key.get(*key).is_some_and(|places| places.contains(&at))
        })
        .map(|(key, _)| key)
        .collect();
    let acks_file = std::env::temp_dir().join(format!("{prefix}-acks.jsonl"));
    let acks: Vec<&str> = ledger.acks.values().map(String::as_str).collect();
    std::fs::write(&acks_file, acks.join("\n")).unwrap();
    let (audit_exit, report) = process::audit(&kafka.brokers(), TOPIC, &acks_file);

    let acks_between = |from: Duration, to: Duration| {
        let times = ledger.ack_times.iter();
        times.filter(|(_, t)| *t >= from && *t < to).count()
    };
    let (before, after) = (
        acks_between(Duration::ZERO, SLOW_AT),
        acks_between(all_clear(), load_for),
    );
    let idle_after: Vec<usize> = (0..CLIENTS)
        .filter(|c| {
            let times = ledger.ack_times.iter();
            !times
                .clone()
                .any(|(client, t)| client == c && *t >= all_clear())
        })
        .collect();
    eprintln!(
        "redis stall figures: stall {stalled_ms} ms (lease {LEASE:?}); sent {} events, \
         acknowledged {}, kept as failure records {}, client retries {}, deliberate \
         duplicates {}, records in Kafka {}, keys in Kafka twice {}, lost {}; settle retries \
         {settle_retries}, lease renewals {renewed} (failed {renewal_errors}, found settled \
         {renewals_settled}), leases lost {leases_lost}, takeovers {takeovers}; acks before the stall {before}, after all \
         clear {after}; audit exit {:?}, problems {}",
        sent.load(Ordering::Relaxed),
        ledger.acks.len(),
        ledger.kept.len(),
        retries.load(Ordering::Relaxed),
        duplicates_sent.load(Ordering::Relaxed),
        records.len(),
        duplicated.len(),
        lost.len(),
        audit_exit,
        report["problems"],
    );

    let mut broken: Vec<String> = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            broken.push(what);
        }
    };
    check(
        stalled_ms > LEASE.as_millis() as i64,
        format!("the stall ({stalled_ms} ms) outlasted the lease"),
    );
    check(
        duplicated.is_empty(),
        format!(
            "keys in Kafka more than once (logs in {:?}): {duplicated:?}",
            gateways.iter().map(Gateway::log_dir).collect::<Vec<_>>()
        ),
    );
    check(
        lost.is_empty(),
        format!("acknowledged, not in Kafka: {lost:?}"),
    );
    check(
        without_header == 0,
        format!("{without_header} records without the header"),
    );
    check(
        audit_exit == Some(0) && report["records_read"] == records.len(),
        format!(
            "ackgate audit is clean: exit {:?}, read {}, {}",
            audit_exit, report["records_read"], report["problems"]
        ),
    );
    check(
        settle_retries > 0.0,
        "the stall caught settles after an acknowledgement".to_owned(),
    );
    check(
        renewal_errors > 0.0,
        "pending deliveries tried to renew their leases in the stall".to_owned(),
    );
    check(
        leases_lost == 0.0,
        format!("{leases_lost} leases lost to a takeover"),
    );
    check(
        ledger.replay_mismatches.is_empty(),
        format!(
            "replays unlike the first answer: {:?}",
            ledger.replay_mismatches
        ),
    );
    check(
        ledger.unexpected.is_empty(),
        format!("unexpected answers: {:?}", ledger.unexpected),
    );
    let floor = |phase: Duration| {
        (CLIENTS as f64 * MIN_ACKS_PER_CLIENT_SECOND * phase.as_secs_f64()) as usize
    };
    check(
        before >= floor(SLOW_AT),
        format!("the load was real before the stall: {before} acks"),
    );
    check(
        after >= floor(LOAD_AFTER_ALL_CLEAR) && idle_after.is_empty(),
        format!("the load was real after the stall: {after} acks, idle {idle_after:?}"),
    );
    assert!(broken.is_empty(), "broken promises:\n{}", broken.join("\n"));
}
