//! Redis losing what it held, against a Redis the test starts, kills and pauses itself (never
//! the shared one), and librdkafka's mock cluster slowed down so that a delivery is in flight
//! at the chosen moment.
//!
//! What the README promises: one key, one record *while Redis keeps the key*; every record
//! carries the header `idempotency-key`, so consumers can deduplicate what a lost key lets
//! through, and `ackgate audit` reports such keys.

mod common;

use std::time::{Duration, Instant};

use ackgate::Backend;
use ackgate::audit::{AuditConfig, AuditVerdict, Position, audit};
use common::faults::idempotency_record_key;
use common::mock::MockKafka;
use common::*;

const TOPIC: &str = "redis-loss";
/// How long the mock brokers hold each answer while a delivery is meant to be in flight.
const SLOW: Duration = Duration::from_millis(2_500);

struct Setup {
    kafka: MockKafka,
    redis: OwnRedis,
    app: TestApp,
}

async fn setup(redis: OwnRedis) -> Setup {
    let kafka = MockKafka::start(TOPIC);
    let app = TestApp::spawn(
        test_settings(),
        &kafka.brokers(),
        Backend::redis(redis.url()),
    )
    .await;
    kafka.warm_up(&app).await;
    Setup { kafka, redis, app }
}

impl Setup {
    /// Runs `command` on the test's Redis, retrying while it is still starting (loading its
    /// append-only file).
    async fn query<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> T {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let client = redis::Client::open(self.redis.url()).unwrap();
            let result = match client.get_multiplexed_async_connection().await {
                Ok(mut conn) => command.query_async(&mut conn).await,
                Err(error) => Err(error),
            };
            match result {
                Ok(value) => return value,
                Err(error) if Instant::now() >= deadline => panic!("own redis: {error}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// The state of `key`'s idempotency record in Redis, if there is one.
    async fn state(&self, key: &str) -> Option<String> {
        let record = idempotency_record_key(&self.app.settings.redis_key_prefix, TOPIC, key);
        let record: Option<Vec<u8>> = self.query(redis::cmd("GET").arg(record)).await;
        // The first byte of a record is its state (src/idempotency/redis/record.rs).
        record.map(|r| {
            match r[0].to_ascii_uppercase() {
                b'I' => "in_flight",
                b'D' => "done",
                b'F' => "failed",
                b'R' => "released",
                _ => "unknown",
            }
            .to_owned()
        })
    }

    /// Waits until Redis has written every change to its append-only file (with `appendfsync
    /// everysec` it may hold them back while an fsync is slow): what a SIGKILL cannot take.
    async fn wait_until_written_to_aof(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let info: String = self.query(redis::cmd("INFO").arg("persistence")).await;
            if info.lines().any(|l| l.trim() == "aof_buffer_length:0") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis did not write its AOF: {info}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends `key` with the brokers slowed down and returns once its claim is in Redis: the
    /// delivery is then in flight for about [`SLOW`].
    async fn send_in_flight(&self, key: &str) -> Pending {
        self.kafka.set_rtt(SLOW);
        // Spawned: a `Pending` sends nothing until it is polled.
        let task = tokio::spawn(self.app.post_event(TOPIC, key, r#"{"n":2}"#));
        let pending: Pending = Box::pin(async move { task.await.expect("the request task") });
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.state(key).await.as_deref() != Some("in_flight") {
            assert!(Instant::now() < deadline, "{key} was not claimed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        pending
    }

    /// Sends `key` again until it is no longer in progress (409), within `within`.
    async fn retry(&self, key: &str, body: &str, within: Duration) -> Reply {
        let deadline = Instant::now() + within;
        loop {
            let reply = self.app.post_event(TOPIC, key, body).await;
            if reply.status != 409 || Instant::now() >= deadline {
                return reply;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Where the records with this idempotency key are, read to the end of every partition.
    fn positions_of(&self, key: &str) -> Vec<Position> {
        self.kafka
            .records_with_key(key)
            .iter()
            .map(|r| Position {
                partition: r.partition,
                offset: r.offset,
            })
            .collect()
    }
}

fn position(reply: &Reply) -> Position {
    let json = reply.json();
    Position {
        partition: json["partition"].as_i64().unwrap() as i32,
        offset: json["offset"].as_i64().unwrap(),
    }
}

fn audit_config(kafka: &MockKafka) -> AuditConfig {
    AuditConfig {
        idle: Duration::from_millis(1500),
        ..AuditConfig::new(kafka.brokers(), TOPIC)
    }
}

/// Redis with an append-only file (`appendfsync always`, as the README advises and
/// docker-compose runs it) is SIGKILLed after one key was answered and while another is in
/// flight. A SIGKILL loses nothing Redis had written to its file (with `everysec` a slow fsync
/// can hold writes back in its buffer, so the test also waits until the buffer is empty), so
/// it comes back with both keys: the in-flight delivery settles, and the
/// retries of both keys replay their answers and publish nothing. (Where Redis loses keys, see
/// the next test.)
#[tokio::test]
async fn a_killed_redis_that_kept_its_keys_lets_no_retry_publish_again() {
    let mut s = setup(OwnRedis::start_with_aof()).await;
    let answered = unique("answered");
    let in_flight = unique("in-flight");
    let first = s.app.post_event(TOPIC, &answered, r#"{"n":1}"#).await;
    assert_eq!(first.status, 201, "{}", first.body);

    let pending = s.send_in_flight(&in_flight).await;
    s.wait_until_written_to_aof().await;
    s.redis.kill();
    s.redis.restart();
    assert_eq!(s.state(&answered).await.as_deref(), Some("done"), "kept");
    assert!(s.state(&in_flight).await.is_some(), "kept");
    let second = pending.await;
    s.kafka.set_rtt(Duration::ZERO);
    assert_eq!(second.status, 201, "Kafka took it: {}", second.body);

    let again = s
        .retry(&answered, r#"{"n":1}"#, Duration::from_secs(5))
        .await;
    assert_eq!(again.status, 201, "{}", again.body);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body, first.body);
    // The in-flight delivery settles once Redis is back (the settle retries): its retry
    // replays too, at most after a few 409s.
    let again = s
        .retry(&in_flight, r#"{"n":2}"#, Duration::from_secs(8))
        .await;
    assert_eq!(again.status, 201, "{}", again.body);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body, second.body);

    assert_eq!(s.positions_of(&answered), vec![position(&first)]);
    assert_eq!(s.positions_of(&in_flight), vec![position(&second)]);
    let report = audit(audit_config(&s.kafka)).await.unwrap();
    assert_eq!(report.verdict(), AuditVerdict::Clean, "{report:#?}");
    assert!(report.duplicate_keys.is_empty());
}

/// Redis without persistence is SIGKILLed after one key was answered and while another is in
/// flight, and comes back empty. What the gateway does, exactly:
///
/// - the in-flight delivery is acknowledged by Kafka: its client gets 201; its settle finds no
///   claim (its owner's record is gone) and gives up, so the key stays unknown;
/// - a retry of either key finds no record, claims it afresh and publishes again: a fresh 201
///   (no `Idempotent-Replayed`) at a new offset. From then on Redis has the key again, and
///   further retries replay.
///
/// So each key is in Kafka exactly twice, both records carry the `idempotency-key` header (the
/// README's promise for this case: consumers can deduplicate), and `ackgate audit` reports
/// exactly these two keys as duplicates.
#[tokio::test]
async fn a_redis_that_comes_back_empty_lets_one_retry_per_key_publish_again_and_the_audit_flags_it()
{
    let mut s = setup(OwnRedis::start()).await;
    let answered = unique("answered");
    let in_flight = unique("in-flight");
    let first = s.app.post_event(TOPIC, &answered, r#"{"n":1}"#).await;
    assert_eq!(first.status, 201, "{}", first.body);

    let pending = s.send_in_flight(&in_flight).await;
    s.redis.kill();
    s.redis.restart();
    let second = pending.await;
    s.kafka.set_rtt(Duration::ZERO);
    assert_eq!(second.status, 201, "Kafka took it: {}", second.body);
    assert_eq!(s.state(&answered).await, None, "Redis lost the key");

    let mut republished = Vec::new();
    for (key, body) in [(&answered, r#"{"n":1}"#), (&in_flight, r#"{"n":2}"#)] {
        let again = s.retry(key, body, Duration::from_secs(5)).await;
        assert_eq!(again.status, 201, "{key}: {}", again.body);
        assert_eq!(
            again.header("idempotent-replayed"),
            None,
            "{key}: the key was lost, the retry published again"
        );
        // Now Redis has it again: one more retry replays.
        let replay = s.retry(key, body, Duration::from_secs(5)).await;
        assert_eq!(replay.header("idempotent-replayed"), Some("true"), "{key}");
        assert_eq!(replay.body, again.body);
        republished.push(position(&again));
    }

    let sorted = |mut positions: Vec<Position>| {
        positions.sort();
        positions
    };
    assert_eq!(
        s.positions_of(&answered),
        sorted(vec![position(&first), republished[0]])
    );
    assert_eq!(
        s.positions_of(&in_flight),
        sorted(vec![position(&second), republished[1]])
    );
    let report = audit(audit_config(&s.kafka)).await.unwrap();
    assert_eq!(report.verdict(), AuditVerdict::ProblemsFound);
    let mut flagged: Vec<(String, Vec<Position>)> = report
        .duplicate_keys
        .iter()
        .map(|d| (d.idempotency_key.clone(), sorted(d.records.clone())))
        .collect();
    flagged.sort();
    let mut expected = vec![
        (
            answered.clone(),
            sorted(vec![position(&first), republished[0]]),
        ),
        (
            in_flight.clone(),
            sorted(vec![position(&second), republished[1]]),
        ),
    ];
    expected.sort();
    assert_eq!(flagged, expected, "{report:#?}");
    assert_eq!(report.duplicate_records, 2);
    assert_eq!(report.records_without_header, 0);
}

/// Redis freezes (SIGSTOP) while a delivery is in flight, so Kafka's acknowledgement arrives
/// while Redis does not answer; it is back (SIGCONT) well within the lease. The client still
/// gets its 201 at once, the settle retries until Redis answers, and a retry then replays the
/// answer and publishes nothing.
#[tokio::test]
async fn a_redis_blip_between_the_ack_and_the_settle_still_answers_201_and_the_retry_replays() {
    let s = setup(OwnRedis::start()).await;
    let key = unique("blip");
    let pending = s.send_in_flight(&key).await;
    s.redis.pause();
    let paused_at = Instant::now();
    let first = tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .expect("answered while Redis is paused");
    assert!(
        paused_at.elapsed() < Duration::from_secs(5),
        "the ack is not held back by the settle"
    );
    assert_eq!(first.status, 201, "{}", first.body);
    // Let at least one settle attempt time out against the frozen Redis.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    s.redis.resume();
    s.kafka.set_rtt(Duration::ZERO);
    let lease = Duration::from_millis(s.app.settings.delivery_timeout_ms + 10_000);
    assert!(
        paused_at.elapsed() < lease / 2,
        "the blip is well within the lease"
    );

    let again = s.retry(&key, r#"{"n":2}"#, Duration::from_secs(8)).await;
    assert_eq!(again.status, 201, "{}", again.body);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body, first.body);
    assert_eq!(s.state(&key).await.as_deref(), Some("done"));
    assert_eq!(
        s.positions_of(&key),
        vec![position(&first)],
        "published once"
    );
}
