//! The broker restarts and loses its state, under load: a real Kafka-protocol broker (Tansu,
//! memory storage) is SIGKILLed while the clients send, stays down longer than a delivery
//! timeout, and comes back empty, its topic created again. Its producer states are gone, so
//! each gateway's producer is wedged (librdkafka loops on "unknown producer id") until the
//! gateway rebuilds it by itself — nothing restarts the gateways.
//!
//! Checked: no rebuild while the broker is down; each gateway answers a fresh event 201 within
//! twice the delivery timeout after the broker is back; every 201 answered since then is in
//! Kafka where it said (what was acknowledged before the restart went with the broker's
//! memory); no key is in Kafka twice; an operator's retry of each event kept meanwhile publishes
//! it once; and `ackgate audit` agrees.

use super::*;
use common::faults::metric_value;
use common::tansu::{Broker, Storage};

const PARTITIONS: i32 = 3;
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);
const WAIT_TIMEOUT: Duration = Duration::from_secs(2);
const KILL_AT: Duration = Duration::from_secs(4);
/// Longer than the delivery timeout: deliveries time out while no broker is up.
const DOWN_FOR: Duration = Duration::from_secs(7);
const LOAD_FOR: Duration = Duration::from_secs(32);
const WEDGED: &str = "ackgate_producer_rebuilds_total{reason=\"wedged\"}";
const FATAL: &str = "ackgate_producer_rebuilds_total{reason=\"fatal\"}";

/// The contract: fresh events are answered 201 again this soon after the broker is back.
fn recovery_bound() -> Duration {
    DELIVERY_TIMEOUT * 2
}

async fn metric(http: &reqwest::Client, port: u16, sample: &str) -> f64 {
    let metrics = send(http.get(format!("http://127.0.0.1:{port}/metrics"))).await;
    metric_value(&metrics.body, sample)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "half a minute of load around a broker restart; scripts/test.sh runs it with --ignored"]
async fn the_promise_holds_when_the_broker_restarts_empty_under_load() {
    let _alone = ONE_SCENARIO_AT_A_TIME.lock().await;
    let binary = Broker::binary(Storage::Memory).expect("memory storage is always there");
    let mut broker = Broker::start(Storage::Memory, binary);
    create_topic(&broker.brokers(), TOPIC, PARTITIONS).await;
    let redis = OwnRedis::start();
    let prefix = unique("chaos-restart");
    let brokers = broker.brokers();
    let fleet = Fleet {
        brokers: &brokers,
        redis: &redis.url(),
        prefix: &prefix,
        delivery_timeout: DELIVERY_TIMEOUT,
        wait_timeout: WAIT_TIMEOUT,
    };
    let mut gateways = gateways(fleet, &[]);
    for gateway in &mut gateways {
        gateway.start();
    }
    let ports: Arc<Vec<u16>> = Arc::new(gateways.iter().map(|g| g.port).collect());
    let http = reqwest::Client::new();

    let started = Instant::now();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let figures = Arc::new(Figures::default());
    let stop = Arc::new(AtomicBool::new(false));
    let clients = spawn_clients(&ports, started, &ledger, &figures, &stop);

    tokio::time::sleep_until((started + KILL_AT).into()).await;
    eprintln!("chaos: SIGKILL the broker, down for {DOWN_FOR:?}");
    broker.kill();
    tokio::time::sleep(DOWN_FOR).await;
    let mut rebuilt_while_down = 0.0;
    for &port in ports.iter() {
        rebuilt_while_down += metric(&http, port, WEDGED).await + metric(&http, port, FATAL).await;
    }
    eprintln!("chaos: the broker starts again, empty; its topic is created again");
    broker.restart();
    create_topic(&broker.brokers(), TOPIC, PARTITIONS).await;
    let back = started.elapsed();
    let recoveries = futures::future::join_all(
        ports
            .iter()
            .enumerate()
            .map(|(g, &port)| first_201(&http, port, g, recovery_bound() * 2)),
    )
    .await;
    for (key, body) in recoveries.iter().flatten().map(|(_, k, b)| (k, b)) {
        let mut book = ledger.lock().unwrap();
        book.acks.insert(key.clone(), body.clone());
        book.acked_at.insert(key.clone(), started.elapsed());
    }
    tokio::time::sleep_until((started + LOAD_FOR).into()).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let ledger = std::mem::take(&mut *ledger.lock().unwrap());

    // An operator retries each event kept meanwhile that is not in Kafka (the runbook: check
    // the topic first); each must then be there once.
    let in_kafka = |records: &[Record], key: &str| {
        records
            .iter()
            .filter(|r| r.header("idempotency-key") == Some(key.as_bytes()))
            .count()
    };
    let before = consume_to_end(&broker.brokers(), TOPIC, PARTITIONS);
    let mut retries_refused = Vec::new();
    let mut retried = Vec::new();
    for (key, id) in ledger
        .kept
        .iter()
        .filter(|(k, _)| in_kafka(&before, k) == 0)
    {
        let url = format!("http://127.0.0.1:{}/v1/failures/{id}/retry", ports[0]);
        let reply = send(http.post(url)).await;
        if reply.status == 200 {
            retried.push(key.clone());
        } else {
            retries_refused.push(format!("{key}: {} {}", reply.status, reply.body));
        }
    }

    let records = consume_to_end(&broker.brokers(), TOPIC, PARTITIONS);
    let (by_key, without_header) = by_idempotency_key(&records);
    // What the broker can still hold: the answers given once it was back.
    let since_back: Vec<(&String, &String)> = ledger
        .acks
        .iter()
        .filter(|(key, _)| ledger.acked_at.get(*key).is_some_and(|t| *t >= back))
        .collect();
    let mut lost = Vec::new();
    for (key, body) in &since_back {
        let ack: serde_json::Value = serde_json::from_str(body).unwrap();
        let at = (
            ack["partition"].as_i64().unwrap() as i32,
            ack["offset"].as_i64().unwrap(),
        );
        if !by_key.get(*key).is_some_and(|places| places.contains(&at)) {
            lost.push(format!(
                "{key} acknowledged at {at:?}, in Kafka at {:?}",
                by_key.get(*key)
            ));
        }
    }
    let twice: Vec<&String> = by_key
        .iter()
        .filter(|(_, p)| p.len() > 1)
        .map(|(k, _)| k)
        .collect();
    let retried_not_once: Vec<&String> = retried
        .iter()
        .filter(|key| by_key.get(*key).map_or(0, Vec::len) != 1)
        .collect();
    let mut wedged_rebuilds = Vec::new();
    for &port in ports.iter() {
        wedged_rebuilds.push(metric(&http, port, WEDGED).await);
    }
    let acks_after = |from: Duration| ledger.ack_times.iter().filter(|(_, t)| *t >= from).count();
    let all_clear = back + recovery_bound() + CLIENT_BACKOFF_MAX;
    let idle_at_the_end: Vec<usize> = (0..CLIENTS)
        .filter(|c| {
            !ledger
                .ack_times
                .iter()
                .any(|(client, t)| client == c && *t >= all_clear)
        })
        .collect();

    let acks_file = std::env::temp_dir().join(format!("{prefix}-acks.jsonl"));
    let lines: Vec<&str> = since_back.iter().map(|(_, body)| body.as_str()).collect();
    std::fs::write(&acks_file, lines.join("\n")).unwrap();
    let (audit_exit, report) = process::audit(&broker.brokers(), TOPIC, &acks_file);

    eprintln!(
        "chaos (broker restart) figures: sent {} events, acknowledged {} ({} before the \
         restart, lost with the broker's memory; {} since it was back), kept as failure records \
         {} (retried by an operator {}), client retries {}, records in Kafka {}, keys in Kafka \
         twice {}, lost {}; rebuilds for a wedge per gateway {wedged_rebuilds:?}; first 201 after \
         the broker was back {:?} (bound {:?})",
        figures.sent.load(Ordering::Relaxed),
        ledger.acks.len(),
        ledger.acks.len() - since_back.len(),
        since_back.len(),
        ledger.kept.len(),
        retried.len(),
        figures.retries.load(Ordering::Relaxed),
        records.len(),
        twice.len(),
        lost.len(),
        recoveries
            .iter()
            .map(|r| r.as_ref().map(|(t, _, _)| *t))
            .collect::<Vec<_>>(),
        recovery_bound(),
    );
    eprintln!("ackgate audit: {}", report["problems"]);

    let mut broken: Vec<String> = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            broken.push(what);
        }
    };
    check(
        rebuilt_while_down == 0.0,
        format!("{rebuilt_while_down} rebuilds while the broker was down"),
    );
    for (g, recovery) in recoveries.iter().enumerate() {
        check(
            recovery
                .as_ref()
                .is_ok_and(|(took, _, _)| *took <= recovery_bound()),
            format!(
                "gateway {g} must answer 201 within {:?} after the broker was back: {:?} (logs \
                 in {:?})",
                recovery_bound(),
                recovery.as_ref().map(|(took, _, _)| took),
                gateways[g].log_dir()
            ),
        );
    }
    check(
        wedged_rebuilds.iter().all(|n| *n >= 1.0),
        format!("each gateway rebuilt its wedged producer: {wedged_rebuilds:?}"),
    );
    check(
        lost.is_empty(),
        format!("acknowledged since the broker was back, missing: {lost:?}"),
    );
    check(twice.is_empty(), format!("keys in Kafka twice: {twice:?}"));
    check(
        without_header.is_empty(),
        format!("records without the idempotency-key header: {without_header:?}"),
    );
    check(
        retries_refused.is_empty() && retried_not_once.is_empty(),
        format!(
            "operator retries refused {retries_refused:?}, not in Kafka exactly once {retried_not_once:?}"
        ),
    );
    check(
        ledger.unexpected.is_empty() && ledger.replay_mismatches.is_empty(),
        format!(
            "unexpected answers {:?}, replays unlike the first {:?}",
            ledger.unexpected, ledger.replay_mismatches
        ),
    );
    check(
        audit_exit == Some(0) && report["records_read"] == records.len(),
        format!(
            "ackgate audit: exit {audit_exit:?}, read {} records (this test {}): {}",
            report["records_read"],
            records.len(),
            report["problems"]
        ),
    );
    check(
        acks_after(all_clear) >= acks_floor(LOAD_FOR - all_clear),
        format!(
            "the load was real once the broker was back: {} acks, want {}",
            acks_after(all_clear),
            acks_floor(LOAD_FOR - all_clear)
        ),
    );
    check(
        idle_at_the_end.is_empty(),
        format!("clients without an acknowledgement at the end: {idle_at_the_end:?}"),
    );
    assert!(broken.is_empty(), "broken promises:\n{}", broken.join("\n"));
}
