//! Redis stalling or going away while a delivery holds its key, for longer than the key's lease,
//! against a Redis the test starts, freezes (SIGSTOP) and kills itself (never the shared one),
//! and librdkafka's mock cluster slowed down so that acknowledgements come late.
//!
//! What must hold: a key whose event Kafka took is never published again because Redis was
//! late to record it — neither by a claim that Redis ran after the stall, nor after a failed
//! delivery's settle could not reach Redis at first, nor a day later because the key of a
//! possibly-written event expired. The last test is the same stall under load, through two
//! gateway processes, checked by `ackgate audit`; it is `#[ignore]`d (about a minute).

mod common;

use std::time::{Duration, Instant};

use ackgate::Backend;
use ackgate::settings::Settings;
use common::faults::*;
use common::mock::MockKafka;
use common::*;

const TOPIC: &str = "redis-stall";
const EVENT: &str = r#"{"order":7}"#;

struct Setup {
    kafka: MockKafka,
    redis: OwnRedis,
    app: TestApp,
}

async fn setup(redis: OwnRedis, settings: Settings) -> Setup {
    let kafka = MockKafka::start(TOPIC);
    let app = TestApp::spawn(settings, &kafka.brokers(), Backend::redis(redis.url())).await;
    kafka.warm_up(&app).await;
    Setup { kafka, redis, app }
}

impl Setup {
    /// The idempotency record of `key` in the test's Redis.
    async fn record(&self, key: &str) -> std::collections::HashMap<String, String> {
        let prefix = &self.app.settings.redis_key_prefix;
        idempotency_record(&self.redis.url(), prefix, TOPIC, key).await
    }

    /// Sends `key` in a task and returns once its claim is in Redis, with the claim's record.
    async fn send_claimed(
        &self,
        key: &str,
    ) -> (Pending, std::collections::HashMap<String, String>) {
        let task = tokio::spawn(self.app.post_event(TOPIC, key, EVENT));
        let pending: Pending = Box::pin(async move { task.await.expect("the request task") });
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let record = self.record(key).await;
            if record.get("state").map(String::as_str) == Some("in_flight") {
                return (pending, record);
            }
            assert!(Instant::now() < deadline, "{key} was not claimed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Sends `key` again until it is no longer in progress (409) and Redis answers (the gateway
    /// reconnects after a restart), within `within`.
    async fn retry(&self, key: &str, within: Duration) -> Reply {
        let deadline = Instant::now() + within;
        loop {
            let reply = self.app.post_event(TOPIC, key, EVENT).await;
            let store_down =
                reply.status == 503 && reply.json()["code"] == "idempotency-store-unavailable";
            if !(reply.status == 409 || store_down) || Instant::now() >= deadline {
                return reply;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Where the records with this idempotency key are, read to the end of every partition.
    fn positions_of(&self, key: &str) -> Vec<(i32, i64)> {
        self.kafka
            .records_with_key(key)
            .iter()
            .map(|r| (r.partition, r.offset))
            .collect()
    }
}

fn position(reply: &Reply) -> (i32, i64) {
    let json = reply.json();
    (
        json["partition"].as_i64().unwrap() as i32,
        json["offset"].as_i64().unwrap(),
    )
}

/// A retry sent while Redis is frozen waits in the gateway's connection to Redis, and Redis runs
/// it when it is back — after the lease, on its clock, even though the owner is alive and its
/// settle is queued right behind. That claim must not take the key over: the owner settles,
/// and every later retry replays the one record.
#[tokio::test]
async fn a_claim_redis_runs_after_a_stall_longer_than_the_lease_does_not_publish_again() {
    let settings = Settings {
        delivery_timeout_ms: 3_000,
        ..test_settings()
    };
    let lease = settings.lease();
    let s = setup(OwnRedis::start(), settings.clone()).await;
    let key = unique("stalled");
    // The broker writes at once and acknowledges late, while Redis is frozen.
    s.kafka.set_rtt(Duration::from_millis(2_500));
    let (pending, claim) = s.send_claimed(&key).await;
    let claimed_at = Instant::now();
    let lease_until: i64 = claim["lease_until"].parse().unwrap();
    s.redis.pause();

    let queued = s.app.post_event(TOPIC, &key, EVENT).await;
    queued.assert_problem(503, "idempotency-store-unavailable");
    let first = pending.await;
    assert_eq!(first.status, 201, "Kafka took it: {}", first.body);
    // Frozen until Redis's clock is past the lease of the claim.
    tokio::time::sleep_until((claimed_at + lease + Duration::from_secs(1)).into()).await;
    s.redis.resume();
    s.kafka.set_rtt(Duration::ZERO);
    let resumed_at_ms = redis_now_ms(&s.redis.url()).await;
    assert!(
        resumed_at_ms > lease_until,
        "Redis ran the queued claim after the lease: {resumed_at_ms} > {lease_until}"
    );

    let again = s.retry(&key, settings.lease() * 2).await;
    assert_eq!(
        s.positions_of(&key),
        vec![position(&first)],
        "published once; the retry answered {} {}",
        again.status,
        again.body
    );
    assert_eq!(again.status, 201, "{}", again.body);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body, first.body);
    let record = s.record(&key).await;
    assert_eq!(record["state"], "done", "{record:?}");
    assert_eq!(
        record.get("maybe_duplicate"),
        None,
        "never taken over: {record:?}"
    );
}

/// Kafka may have written the event (its answer came after the delivery timeout), and Redis is
/// down when the gateway settles the failure. The settle is retried until Redis is back, so the
/// key is pinned to its failure instead of staying in flight until a retry takes it over.
#[tokio::test]
async fn a_failed_delivery_settles_once_redis_is_back_and_its_retry_replays() {
    let settings = Settings {
        delivery_timeout_ms: 2_000,
        ..test_settings()
    };
    let spool = settings.failure_spool_path.clone();
    let mut s = setup(OwnRedis::start_with_aof(), settings.clone()).await;
    let key = unique("ambiguous");
    // The broker writes the record but answers after the delivery timeout: possibly persisted.
    s.kafka.set_rtt(Duration::from_millis(4_000));
    let (pending, _) = s.send_claimed(&key).await;
    s.redis.kill();
    // The failure record goes to the spool when Redis is down; the settle comes right after.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(&spool).map_or(0, |m| m.len()) == 0 {
        assert!(Instant::now() < deadline, "the failure was not spooled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Long enough for a settle that is tried once to have failed for good.
    tokio::time::sleep(Duration::from_secs(3)).await;
    s.redis.restart();
    let first = pending.await;
    s.kafka.set_rtt(Duration::ZERO);
    first.assert_problem(504, "delivery-timed-out");
    assert_eq!(first.json()["persistence"], "possibly_persisted");

    let again = s.retry(&key, settings.lease() * 2).await;
    assert_eq!(
        s.positions_of(&key).len(),
        1,
        "written once; the retry answered {} {}",
        again.status,
        again.body
    );
    assert_eq!(again.status, 504, "{}", again.body);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body, first.body);
    assert_eq!(s.record(&key).await["state"], "failed");
}

/// A key pinned to a possibly-written failure replays it for as long as nobody acts — past the
/// TTL, which would otherwise let a client's retry a day later publish the event again. Once an
/// operator discards the failure record, the key lives for the normal TTL.
#[tokio::test]
async fn a_possibly_written_event_stays_pinned_past_the_ttl_until_an_operator_acts() {
    let settings = Settings {
        delivery_timeout_ms: 1_000,
        // Just above the lease (11 s), the shortest the settings allow.
        idempotency_ttl_secs: 12,
        ..test_settings()
    };
    let ttl = settings.idempotency_ttl();
    let s = setup(OwnRedis::start(), settings).await;
    let key = unique("pinned");
    s.kafka.set_rtt(Duration::from_millis(2_500));
    let first = s.app.post_event(TOPIC, &key, EVENT).await;
    s.kafka.set_rtt(Duration::ZERO);
    first.assert_problem(504, "delivery-timed-out");
    assert_eq!(first.json()["persistence"], "possibly_persisted");
    let record_key = idempotency_record_key(&s.app.settings.redis_key_prefix, TOPIC, &key);
    let pttl = || async {
        let mut conn = redis_connection(&s.redis.url()).await;
        let pttl: i64 = redis::cmd("PTTL")
            .arg(&record_key)
            .query_async(&mut conn)
            .await
            .unwrap();
        pttl
    };

    // A day later (the TTL here): a retry still replays the failure, and publishes nothing.
    tokio::time::sleep(ttl + Duration::from_secs(1)).await;
    let later = s.app.post_event(TOPIC, &key, EVENT).await;
    assert_eq!(
        s.positions_of(&key).len(),
        1,
        "written once; the retry after the TTL answered {} {}",
        later.status,
        later.body
    );
    assert_eq!(later.status, 504, "{}", later.body);
    assert_eq!(later.body, first.body);
    assert_eq!(later.header("idempotent-replayed"), Some("true"));
    assert_eq!(pttl().await, -1, "pinned: no expiry");

    // The operator discards the event: from now on the key lives for the normal TTL.
    let failure_id = first.json()["failure_id"].as_str().unwrap().to_owned();
    let discarded = s
        .app
        .discard_failure(&failure_id, "checked the topic")
        .await;
    assert_eq!(discarded.status, 200, "{}", discarded.body);
    let left = pttl().await;
    assert!(
        left > 0 && left <= ttl.as_millis() as i64,
        "unpinned: expires within the TTL, {left} ms left"
    );
}

// ---------------------------------------------------------------------------------------------
// The same stall under load.

#[path = "redis_stall/under_load.rs"]
mod under_load;
