//! Several gateways behind a real load balancer: three `ackgate serve` processes, each with its
//! own producer, spool and admin port, sharing one Redis, behind HAProxy (Debian's package)
//! that health-checks `/readyz` on each admin port and spreads requests round-robin. Every
//! scenario reads the topic back; what the clients were told is only half of it.
//!
//! - Concurrent identical requests (one Idempotency-Key, one body, 30 at once) spread over the
//!   replicas give exactly one record; every answer is the 201 or its replay, or a 409 with
//!   `Retry-After` that the client retries.
//! - SIGKILL of a replica under load: no acknowledged event is missing from Kafka; HAProxy
//!   marks the replica down and requests keep succeeding; a key in Kafka twice has a takeover
//!   warning (the documented edge), and `ackgate audit` agrees; the restarted replica is taken
//!   back.
//! - SIGTERM of a replica under load: it drains and exits 0 while the clients see not one
//!   failed request — behind HAProxy that redispatches refused connections, and, with
//!   `--drain-delay-ms`, behind one that never does (with no delay, that one failed 6 requests).
//!
//! How the balancer retries, and why that is safe, is in its config (`common/haproxy.rs`).
//! Each scenario runs twice, on one Redis server and on the test Redis Cluster
//! ([`fleet::RedisSide`]). They take about two minutes together and load the machine, so they
//! are `#[ignore]`d and run one at a time; `scripts/test.sh` runs them with `--ignored`.

mod common;

#[path = "balancer/fleet.rs"]
mod fleet;
#[path = "balancer/load.rs"]
mod load;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::haproxy::{CHECK_INTERVAL, FALL};
use common::redis_url;
use fleet::{Env, Fleet, LEASE_AND_GRACE, RedisSide, SHUTDOWN_GRACE};
use load::{Ledger, Load};

/// Each scenario loads the machine fully: they run one after the other.
static ONE_SCENARIO_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Clients of the load in the kill and drain scenarios.
const CLIENTS: usize = 6;
/// The replica the kill and drain scenarios stop.
const VICTIM: usize = 1;
/// When the replica is stopped, from the start of the load.
const STOP_AT: Duration = Duration::from_secs(3);

/// How soon HAProxy must take a stopped replica out of the rotation: `FALL` failed checks,
/// `CHECK_INTERVAL` apart, and a second for a loaded machine.
fn marked_down_within() -> Duration {
    CHECK_INTERVAL * (FALL + 1) + Duration::from_secs(1)
}

/// The longest the stream of acknowledgements may pause while the balancer routes around a
/// dead replica. Without the balancer's retries, every request sent to the dead replica before
/// it is marked down would fail; with them none should, so this is mostly the machine.
const LONGEST_ACK_GAP: Duration = Duration::from_secs(3);

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

// ---------------------------------------------------------------------------------------------
// The scenarios on one Redis server (the shared test Redis, under a key prefix of their own).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "several gateway processes behind HAProxy; scripts/test.sh runs it with --ignored"]
async fn one_redis_identical_requests_through_the_balancer_give_one_record() {
    let Some(env) = Env::get() else { return };
    let _alone = ONE_SCENARIO_AT_A_TIME.lock().await;
    identical_requests_give_one_record(&env, &RedisSide::single(redis_url())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "several gateway processes behind HAProxy; scripts/test.sh runs it with --ignored"]
async fn one_redis_a_killed_replica_loses_nothing_and_is_routed_around() {
    let Some(env) = Env::get() else { return };
    let _alone = ONE_SCENARIO_AT_A_TIME.lock().await;
    a_killed_replica_loses_nothing(&env, &RedisSide::single(redis_url())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "several gateway processes behind HAProxy; scripts/test.sh runs it with --ignored"]
async fn one_redis_a_terminated_replica_drains_without_a_failed_request() {
    let Some(env) = Env::get() else { return };
    let _alone = ONE_SCENARIO_AT_A_TIME.lock().await;
    a_terminated_replica_drains(&env, &RedisSide::single(redis_url()), Drain::Redispatched).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "several gateway processes behind HAProxy; scripts/test.sh runs it with --ignored"]
async fn one_redis_with_a_drain_delay_a_balancer_that_never_redispatches_loses_no_request() {
    let Some(env) = Env::get() else { return };
    let _alone = ONE_SCENARIO_AT_A_TIME.lock().await;
    a_terminated_replica_drains(&env, &RedisSide::single(redis_url()), Drain::Delayed).await;
}

// ---------------------------------------------------------------------------------------------
// The same on the test Redis Cluster (`ACKGATE_TEST_REDIS_CLUSTER_URL`, 3 masters and 3
// replicas), whose nodes stay up here: `tests/redis_cluster.rs` kills them.

fn cluster_side() -> RedisSide {
    RedisSide::cluster(std::env::var("ACKGATE_TEST_REDIS_CLUSTER_URL").expect(
        "ACKGATE_TEST_REDIS_CLUSTER_URL is not set: run scripts/test.sh, or start a cluster \
         with scripts/redis-cluster.sh and export its seed URLs",
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "several gateway processes behind HAProxy; scripts/test.sh runs it with --ignored"]
async fn cluster_identical_requests_through_the_balancer_give_one_record() {
    let Some(env) = Env::get() else { return };
    let _alone = ONE_SCENARIO_AT_A_TIME.lock().await;
    identical_requests_give_one_record(&env, &cluster_side()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "several gateway processes behind HAProxy; scripts/test.sh runs it with --ignored"]
async fn cluster_a_killed_replica_loses_nothing_and_is_routed_around() {
    let Some(env) = Env::get() else { return };
    let _alone = ONE_SCENARIO_AT_A_TIME.lock().await;
    a_killed_replica_loses_nothing(&env, &cluster_side()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "several gateway processes behind HAProxy; scripts/test.sh runs it with --ignored"]
async fn cluster_a_terminated_replica_drains_without_a_failed_request() {
    let Some(env) = Env::get() else { return };
    let _alone = ONE_SCENARIO_AT_A_TIME.lock().await;
    a_terminated_replica_drains(&env, &cluster_side(), Drain::Redispatched).await;
}

// ---------------------------------------------------------------------------------------------
// Concurrent identical requests.

/// Keys, each sent by this many requests at once.
const KEYS: usize = 5;
const AT_ONCE: usize = 30;

/// One client's answer for the key, after it retried every 409.
struct Final {
    status: u16,
    replayed: bool,
    body: String,
    conflicts: u32,
}

/// Sends the event until the answer is not a 409; each 409 must carry `Retry-After`, and is
/// retried after it.
async fn send_until_final(http: &reqwest::Client, url: &str, key: &str, body: &str) -> Final {
    let mut conflicts = 0;
    loop {
        let response = http
            .post(url)
            .header("Idempotency-Key", key)
            .header("Content-Type", "application/json")
            .body(body.to_owned())
            .timeout(Duration::from_secs(20))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{key}: the balancer answers: {e}"));
        let status = response.status().as_u16();
        let replayed = response.headers().get("idempotent-replayed").is_some();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let body_text = response.text().await.unwrap_or_default();
        if status != 409 {
            return Final {
                status,
                replayed,
                body: body_text,
                conflicts,
            };
        }
        let retry_after =
            retry_after.unwrap_or_else(|| panic!("{key}: a 409 without Retry-After: {body_text}"));
        conflicts += 1;
        assert!(conflicts < 30, "{key}: still in progress after 30 tries");
        tokio::time::sleep(Duration::from_secs(retry_after)).await;
    }
}

async fn identical_requests_give_one_record(env: &Env, redis: &RedisSide) {
    let fleet = Fleet::start(env, redis, "identical").await;
    let http = reqwest::Client::new();
    let url = fleet.events_url();
    let mut first_answers: BTreeMap<String, String> = BTreeMap::new();
    let mut conflicts = 0;
    for k in 0..KEYS {
        let key = format!("same-{k}");
        let body = format!(r#"{{"order":{k}}}"#);
        let start = Arc::new(tokio::sync::Barrier::new(AT_ONCE));
        let answers = futures::future::join_all((0..AT_ONCE).map(|_| {
            let (http, url, key, body, start) = (
                http.clone(),
                url.clone(),
                key.clone(),
                body.clone(),
                start.clone(),
            );
            tokio::spawn(async move {
                start.wait().await;
                send_until_final(&http, &url, &key, &body).await
            })
        }))
        .await;
        let answers: Vec<Final> = answers.into_iter().map(|a| a.expect("a client")).collect();
        for answer in &answers {
            assert_eq!(answer.status, 201, "{key}: {}", answer.body);
        }
        let fresh: Vec<&Final> = answers.iter().filter(|a| !a.replayed).collect();
        assert_eq!(
            fresh.len(),
            1,
            "{key}: exactly one answer is the first 201, every other one its replay"
        );
        for answer in &answers {
            assert_eq!(
                answer.body, fresh[0].body,
                "{key}: a replay is the first answer"
            );
        }
        conflicts += answers.iter().map(|a| a.conflicts).sum::<u32>();
        first_answers.insert(key, fresh[0].body.clone());
    }

    // The replicas that answered, by their own count.
    let mut served = Vec::new();
    for replica in &fleet.replicas {
        let mut outcomes = Vec::new();
        for outcome in ["claimed", "replayed", "conflict"] {
            let label = format!(r#"outcome="{outcome}""#);
            let n = replica
                .metric(&http, "ackgate_dedupe_outcomes_total", &[&label])
                .await;
            outcomes.push(format!("{outcome} {}", n as u64));
        }
        served.push((
            replica.name.clone(),
            replica.events_served(&http).await,
            outcomes,
        ));
    }
    let replicas_that_served = served.iter().filter(|(_, n, _)| *n > 0).count();

    // What is in Kafka: one record per key, where its 201 said.
    let kafka = fleet.check_kafka(&first_answers);
    eprintln!(
        "identical requests ({}): {KEYS} keys × {AT_ONCE} requests at once through HAProxy; \
         409s retried {conflicts}; served per replica {served:?}; records in Kafka {}",
        redis.name, kafka.records
    );
    assert!(
        replicas_that_served >= 2,
        "the balancer spread the requests over at least two replicas: {served:?}"
    );
    assert!(
        kafka.lost.is_empty(),
        "every 201 is in Kafka where it said: {:?}",
        kafka.lost
    );
    assert_eq!(
        kafka.without_header, 0,
        "every record has its idempotency-key header"
    );
    assert_eq!(
        kafka.records, KEYS,
        "one record per key: {:?}",
        kafka.by_key
    );
}

// ---------------------------------------------------------------------------------------------
// What both stop scenarios report.

/// The answers the clients got that made them try again, counted by kind.
fn hiccup_counts(ledger: &Ledger) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for hiccup in &ledger.hiccups {
        let kind: String = hiccup.what.chars().take(40).collect();
        *counts.entry(kind).or_default() += 1;
    }
    counts
}

/// HAProxy's own count of connections it tried again and requests it sent to another server.
fn balancer_retries(fleet: &Fleet) -> (String, String) {
    let backend = fleet.haproxy.row("BACKEND");
    (backend["wretr"].clone(), backend["wredis"].clone())
}

// ---------------------------------------------------------------------------------------------
// SIGKILL of a replica under load.

async fn a_killed_replica_loses_nothing(env: &Env, redis: &RedisSide) {
    let mut fleet = Fleet::start(env, redis, "kill").await;
    let load = Load::start(fleet.events_url(), CLIENTS);
    // A key the dead replica held is free again by `all_clear`: its lease runs out at most a
    // lease after the kill, the next request suspects the owner and one a grace later takes
    // the key over; the clients ask again every second. The load goes on a while after that.
    let all_clear = STOP_AT + LEASE_AND_GRACE + Duration::from_secs(3);
    let load_for = all_clear + Duration::from_secs(5);

    load.until(STOP_AT).await;
    let victim = fleet.replicas[VICTIM].name.clone();
    eprintln!("kill: SIGKILL {victim} under load");
    let killed_at = load.started.elapsed();
    fleet.replicas[VICTIM].gateway.kill();
    let marked_down = fleet
        .haproxy
        .wait_for_status(&victim, "DOWN", marked_down_within() * 3)
        .await;
    let down_at = killed_at + marked_down.unwrap_or(marked_down_within() * 3);
    // Back again: the balancer takes it back once `RISE` checks pass.
    fleet.replicas[VICTIM].gateway.start();
    let restarted_at = load.started.elapsed();
    let back_up = fleet
        .haproxy
        .wait_for_status(&victim, "UP", Duration::from_secs(20))
        .await;
    load.until(load_for).await;
    let ledger = load.stop().await;

    let kafka = fleet.check_kafka(&ledger.acks);
    let duplicated = kafka.duplicated();
    let takeovers = fleet.takeovers();
    let unexplained: Vec<String> = duplicated
        .iter()
        .filter(|(key, places)| places.len() > 1 + takeovers.get(*key).copied().unwrap_or(0))
        .map(|(key, places)| format!("{key}: at {places:?}, {:?} takeovers", takeovers.get(key)))
        .collect();
    let acks: Vec<&String> = ledger.acks.values().collect();
    let (audit_exit, report) = fleet.audit(&acks);
    let audited: BTreeSet<String> = report["duplicate_keys"]
        .as_array()
        .expect("duplicate_keys")
        .iter()
        .map(|d| d["idempotency_key"].as_str().unwrap().to_owned())
        .collect();
    // Requests sent once the balancer knew the replica was dead, that did not get through
    // (a 409 is a key the dead replica still held: the client's own retry, not the balancer's).
    let failed_after_down: Vec<&load::Hiccup> = ledger
        .hiccups
        .iter()
        .filter(|h| h.sent >= down_at && !h.is_conflict())
        .collect();
    let longest_gap = ledger.longest_ack_gap(killed_at, load_for);
    let idle = ledger.idle_clients(CLIENTS, all_clear, load_for);
    let served_again = fleet.replicas[VICTIM].events_served(&fleet.http).await;
    let (retried, redispatched) = balancer_retries(&fleet);

    eprintln!(
        "kill figures ({}): {} requests, {} events acknowledged, client retries {:?}; \
         {victim} killed at {killed_at:?}, marked down after {marked_down:?} (bound {:?}), \
         restarted at {restarted_at:?}, up again after {back_up:?}, then served {served_again}; \
         longest pause between acknowledgements {longest_gap:?}; HAProxy retried {retried} \
         connections, redispatched {redispatched} requests; records in Kafka {}, keys in Kafka \
         twice {}, takeovers {}, lost {}",
        redis.name,
        ledger.requests,
        ledger.acks.len(),
        hiccup_counts(&ledger),
        marked_down_within(),
        kafka.records,
        duplicated.len(),
        takeovers.values().sum::<usize>(),
        kafka.lost.len(),
    );
    eprintln!("ackgate audit: {}", report["problems"]);

    let mut broken: Vec<String> = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            broken.push(what);
        }
    };
    check(
        kafka.lost.is_empty(),
        format!("acknowledged events missing from Kafka: {:?}", kafka.lost),
    );
    check(
        kafka.without_header == 0,
        format!("{} records without the header", kafka.without_header),
    );
    check(
        unexplained.is_empty(),
        format!(
            "keys in Kafka more often than takeovers explain (logs in {:?}): {unexplained:?}",
            fleet.log_dirs()
        ),
    );
    check(
        marked_down.is_some_and(|took| took <= marked_down_within()),
        format!(
            "HAProxy marks the dead replica down within {:?}: {marked_down:?}",
            marked_down_within()
        ),
    );
    check(
        failed_after_down.is_empty(),
        format!(
            "requests sent after the replica was marked down that failed: {}",
            failed_after_down
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        ),
    );
    check(
        longest_gap <= LONGEST_ACK_GAP,
        format!(
            "acknowledgements paused for {longest_gap:?} after the kill \
             (at most {LONGEST_ACK_GAP:?})"
        ),
    );
    check(
        idle.is_empty(),
        format!(
            "clients without an acknowledgement once the dead replica's keys were free: {idle:?}"
        ),
    );
    check(
        back_up.is_some() && served_again > 0,
        format!(
            "the restarted replica is back in the rotation: up after {back_up:?}, \
             served {served_again}"
        ),
    );
    check(
        ledger.unexpected.is_empty(),
        format!("unexpected answers: {:?}", ledger.unexpected),
    );
    let problems = &report["problems"];
    check(
        problems["missing"] == 0 && problems["offset_mismatches"] == 0,
        format!("the audit finds acknowledged events missing or misplaced: {problems}"),
    );
    check(
        report["records_read"] == kafka.records,
        format!(
            "the audit read {} records, this test {}",
            report["records_read"], kafka.records
        ),
    );
    check(
        audited == duplicated.keys().cloned().collect::<BTreeSet<_>>(),
        format!(
            "the audit's duplicate keys {audited:?} are not this test's {:?}",
            duplicated.keys()
        ),
    );
    check(
        audit_exit == Some(if duplicated.is_empty() { 0 } else { 1 }),
        format!("ackgate audit fails exactly when a key is in Kafka twice: exit {audit_exit:?}"),
    );
    assert!(broken.is_empty(), "broken promises:\n{}", broken.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// SIGTERM of a replica under load.

/// How a replica is stopped in the drain scenario, and the balancer in front of it.
enum Drain {
    /// No drain delay; HAProxy sends refused connections to another replica.
    Redispatched,
    /// `--drain-delay-ms` of a few check intervals; HAProxy never redispatches.
    Delayed,
}

async fn a_terminated_replica_drains(env: &Env, redis: &RedisSide, drain: Drain) {
    let delay = (CHECK_INTERVAL * (FALL + 3)).as_millis().to_string();
    let mut fleet = match drain {
        Drain::Redispatched => Fleet::start(env, redis, "drain").await,
        Drain::Delayed => {
            let flags = ["--drain-delay-ms", delay.as_str()];
            Fleet::start_with(env, redis, "drain-delay", &flags, false).await
        }
    };
    let load = Load::start(fleet.events_url(), CLIENTS);

    load.until(STOP_AT).await;
    let victim = fleet.replicas[VICTIM].name.clone();
    eprintln!("drain: SIGTERM {victim} under load");
    let signalled_ms = unix_ms();
    let signalled_at = load.started.elapsed();
    fleet.replicas[VICTIM].gateway.signal_nowait("-TERM");
    let marked_down = fleet
        .haproxy
        .wait_for_status(&victim, "DOWN", SHUTDOWN_GRACE + Duration::from_secs(5))
        .await;
    let limit = SHUTDOWN_GRACE + Duration::from_secs(10);
    let mut exit = None;
    while exit.is_none() && load.started.elapsed() < signalled_at + limit {
        exit = fleet.replicas[VICTIM].gateway.wait(Duration::ZERO);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let exited_at = load.started.elapsed();
    // The two left carry the load for a while.
    load.until(exited_at + Duration::from_secs(3)).await;
    let ledger = load.stop().await;

    let kafka = fleet.check_kafka(&ledger.acks);
    let acks: Vec<&String> = ledger.acks.values().collect();
    let (audit_exit, report) = fleet.audit(&acks);
    // From HAProxy's log: what the stopping replica still answered.
    let logged = fleet.haproxy.requests();
    let answered_after_signal = logged
        .iter()
        .filter(|r| r.server == victim && r.finished_ms() >= signalled_ms)
        .count();
    let in_flight_at_signal = logged
        .iter()
        .filter(|r| r.server == victim && r.accepted_ms < signalled_ms)
        .filter(|r| r.finished_ms() >= signalled_ms)
        .count();
    let (retried, redispatched) = balancer_retries(&fleet);

    eprintln!(
        "drain figures ({}): {} requests, {} events acknowledged, client retries {:?}; \
         {victim} signalled at {signalled_at:?}, marked down after {marked_down:?}, exited \
         {exit:?} at {exited_at:?}; it answered {answered_after_signal} requests after the \
         signal ({in_flight_at_signal} in flight at the signal); HAProxy retried {retried} \
         connections, redispatched {redispatched} requests; records in Kafka {}, keys in \
         Kafka twice {}, lost {}",
        redis.name,
        ledger.requests,
        ledger.acks.len(),
        hiccup_counts(&ledger),
        kafka.records,
        kafka.duplicated().len(),
        kafka.lost.len(),
    );

    let mut broken: Vec<String> = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            broken.push(what);
        }
    };
    check(
        exit.is_some_and(|status| status.code() == Some(0)),
        format!("SIGTERM drains and exits 0 within {limit:?}: {exit:?}"),
    );
    check(
        marked_down.is_some(),
        "HAProxy marks the stopping replica down".to_owned(),
    );
    check(
        ledger.hiccups.is_empty(),
        format!(
            "the clients saw failed requests while {victim} drained (HAProxy log in {}): {}",
            fleet.haproxy.dir().display(),
            ledger
                .hiccups
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        ),
    );
    check(
        ledger.unexpected.is_empty(),
        format!("unexpected answers: {:?}", ledger.unexpected),
    );
    check(
        kafka.lost.is_empty(),
        format!("acknowledged events missing from Kafka: {:?}", kafka.lost),
    );
    check(
        kafka.duplicated().is_empty() && kafka.without_header == 0,
        format!(
            "a drain publishes every event once, with its header: duplicated {:?}, {} without",
            kafka.duplicated(),
            kafka.without_header
        ),
    );
    check(
        audit_exit == Some(0),
        format!(
            "ackgate audit finds the topic clean: exit {audit_exit:?}, {}",
            report["problems"]
        ),
    );
    check(
        kafka.records == ledger.acks.len(),
        format!(
            "{} records in Kafka for {} acknowledged events",
            kafka.records,
            ledger.acks.len()
        ),
    );
    assert!(broken.is_empty(), "broken promises:\n{}", broken.join("\n"));
}
