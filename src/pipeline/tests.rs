//! The pipeline on its own: the in-memory stores and librdkafka's in-process mock cluster, no
//! HTTP, no Redis, no broker process. What reached Kafka is read back from the mock cluster.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::task::TaskTracker;

use super::{OperatorError, Outcome, Parts, Pipeline, Refusal, RetryOutcome, stored_body};
use crate::event::{Event, IdempotencyKey, KeyScope, TopicName};
use crate::failures::{FailureFilter, FailureState, FailureStore, MemoryFailureStore, Spool};
use crate::idempotency::{
    Claim, Claimant, IdempotencyStore, KeyStatus, Lifetimes, MemoryStore, Renewal, Settlement,
    StoreError, StoreHealth, StoredAnswer, StoredProblem,
};
use crate::publisher::{FailureKind, Persistence, Publisher, PublisherConfig};

mod batch;
mod lease;

const TOPIC: &str = "orders";
const PARTITIONS: i32 = 2;

struct Harness {
    cluster: MockCluster<'static, DefaultProducerContext>,
    pipeline: Pipeline,
    store: Arc<MemoryStore>,
    failures: Arc<MemoryFailureStore>,
}

struct Options {
    delivery_timeout: Duration,
    wait_timeout: Duration,
    /// The lease of the harness's own store (default: the delivery timeout + 5 s).
    lease: Option<Duration>,
    store: Option<Arc<dyn IdempotencyStore>>,
}

/// Lifetimes for the stores a test builds itself.
const LIFETIMES: Lifetimes = Lifetimes {
    lease: Duration::from_secs(10),
    grace: Duration::from_secs(3),
    ttl: Duration::from_secs(60),
};

impl Default for Options {
    fn default() -> Self {
        Options {
            delivery_timeout: Duration::from_secs(5),
            wait_timeout: Duration::from_secs(10),
            lease: None,
            store: None,
        }
    }
}

impl Harness {
    fn start() -> Harness {
        Self::with(Options::default())
    }

    fn with(options: Options) -> Harness {
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster
            .create_topic(TOPIC, PARTITIONS, 1)
            .expect("mock topic");
        let publisher = Publisher::new(PublisherConfig {
            brokers: cluster.bootstrap_servers(),
            delivery_timeout: options.delivery_timeout,
            auto_create_topics: false,
            metadata_refresh: Duration::from_secs(30),
            properties: vec![],
            max_message_bytes: 1024 * 1024,
        })
        .expect("publisher");
        let lifetimes = Lifetimes {
            lease: options
                .lease
                .unwrap_or(options.delivery_timeout + Duration::from_secs(5)),
            grace: Duration::from_millis(200),
            ttl: Duration::from_secs(600),
        };
        let store = Arc::new(MemoryStore::new(lifetimes));
        let failures = Arc::new(MemoryFailureStore::default());
        let spool = std::env::temp_dir().join(format!("ackgate-{}.spool", ulid::Ulid::new()));
        let pipeline = Pipeline::new(Parts {
            store: options.store.unwrap_or_else(|| store.clone()),
            failures: failures.clone(),
            spool: Spool::open(spool).expect("a spool of its own"),
            publisher: Arc::new(publisher),
            tasks: TaskTracker::new(),
            wait_timeout: options.wait_timeout,
            dead_letters: None,
            unfinished: Default::default(),
        });
        Harness {
            cluster,
            pipeline,
            store,
            failures,
        }
    }

    /// Every record of the topic, read to the end of each partition.
    fn records(&self) -> Vec<(i32, i64, String, Vec<u8>)> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.cluster.bootstrap_servers())
            .set("group.id", ulid::Ulid::new().to_string())
            .set("enable.partition.eof", "true")
            .create()
            .expect("consumer");
        let mut assignment = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            assignment
                .add_partition_offset(TOPIC, p, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&assignment).expect("assign");
        let mut ended = std::collections::HashSet::new();
        let mut records = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while ended.len() < PARTITIONS as usize {
            assert!(
                Instant::now() < deadline,
                "the topic was not read to its end"
            );
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    let key = (0..m.headers().map_or(0, |h| h.count()))
                        .map(|i| m.headers().unwrap().get(i))
                        .find(|h| h.key == "idempotency-key")
                        .and_then(|h| h.value)
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                        .unwrap_or_default();
                    records.push((
                        m.partition(),
                        m.offset(),
                        key,
                        m.payload().unwrap_or_default().to_vec(),
                    ));
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    ended.insert(p);
                }
                Some(Err(error)) => panic!("consuming failed: {error}"),
                None => {}
            }
        }
        records
    }

    fn fail_produce(&self, errors: &[RDKafkaRespErr]) {
        self.cluster.request_errors(RDKafkaApiKey::Produce, errors);
    }
}

/// The principal every event of these tests belongs to.
const PRINCIPAL: &str = "tests";

fn scoped(topic: &TopicName) -> KeyScope<'_> {
    KeyScope {
        principal: PRINCIPAL,
        topic,
    }
}

fn event(key: &str, value: &'static str) -> Event {
    Event {
        principal: PRINCIPAL.into(),
        topic: TopicName::parse(TOPIC).unwrap(),
        idempotency_key: IdempotencyKey::parse(key.as_bytes()).unwrap(),
        key: None,
        headers: vec![],
        content_type: Some("application/json".into()),
        value: Bytes::from_static(value.as_bytes()),
    }
}

#[tokio::test]
async fn persists_once_and_replays_the_first_answer() {
    let h = Harness::start();
    let Outcome::Persisted(receipt) = h.pipeline.submit(event("k1", "{}")).await else {
        panic!("expected the event to be persisted");
    };
    let records = h.records();
    assert_eq!(
        records,
        vec![(
            receipt.position().partition,
            receipt.position().offset,
            "k1".into(),
            b"{}".to_vec()
        )],
        "exactly one record, at the answered place, carrying the key"
    );

    let Outcome::Replayed(answer) = h.pipeline.submit(event("k1", "{}")).await else {
        panic!("expected a replay");
    };
    assert_eq!(answer, receipt.stored_answer());
    let (topic, key) = (
        TopicName::parse(TOPIC).unwrap(),
        IdempotencyKey::parse(b"k1").unwrap(),
    );
    assert_eq!(
        stored_body(&answer, &topic, &key),
        (201, receipt.body.clone()),
        "the replay is the first answer, byte for byte"
    );
    assert_eq!(h.records().len(), 1, "a replay publishes nothing");
}

#[tokio::test]
async fn refuses_before_claiming() {
    let h = Harness::start();
    let missing = Event {
        topic: TopicName::parse("no-such-topic").unwrap(),
        ..event("k1", "{}")
    };
    assert_eq!(
        h.pipeline.submit(missing.clone()).await,
        Outcome::Refused(Refusal::TopicNotFound)
    );
    let status = h.pipeline.status(missing.scope(), &missing.idempotency_key);
    assert!(
        status.await.unwrap().is_none(),
        "a refused event leaves no record"
    );

    assert!(matches!(
        h.pipeline.submit(event("k2", "{}")).await,
        Outcome::Persisted(_)
    ));
    assert_eq!(
        h.pipeline.submit(event("k2", r#"{"other":1}"#)).await,
        Outcome::Refused(Refusal::Mismatch),
        "a key reused for another event is refused"
    );
    assert_eq!(h.records().len(), 1);
}

#[tokio::test]
async fn a_rejected_record_releases_the_key_without_a_failure_record() {
    let h = Harness::start();
    h.fail_produce(&[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE]);
    let Outcome::Failed(failure) = h.pipeline.submit(event("k1", "{}")).await else {
        panic!("expected a failure");
    };
    assert_eq!(failure.verdict.kind, FailureKind::MessageTooLarge);
    assert_eq!(failure.verdict.persistence, Persistence::NotPersisted);
    assert_eq!(failure.status(), 413);
    assert_eq!(
        failure.record_id, None,
        "the client's mistake needs no operator"
    );
    let status = h
        .store
        .status(scoped(&failure.topic), &failure.idempotency_key)
        .await;
    assert!(matches!(
        status.unwrap(),
        Some(KeyStatus::Settled(StoredAnswer::Released(StoredProblem {
            status: 413,
            ..
        })))
    ));
    assert!(h.records().is_empty());

    // Released: the same key publishes when Kafka takes it.
    assert!(matches!(
        h.pipeline.submit(event("k1", "{}")).await,
        Outcome::Persisted(_)
    ));
    assert_eq!(h.records().len(), 1);
}

#[tokio::test]
async fn an_operator_failure_keeps_the_event_and_a_retry_publishes_it_once() {
    let h = Harness::start();
    h.fail_produce(&[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED]);
    let Outcome::Failed(failure) = h.pipeline.submit(event("k1", r#"{"a":1}"#)).await else {
        panic!("expected a failure");
    };
    assert_eq!(failure.verdict.kind, FailureKind::NotAuthorized);
    let id = failure
        .record_id
        .clone()
        .expect("a failure record keeps the event");
    let problem = failure.problem();
    assert_eq!(problem.failure_id.as_deref(), Some(id.as_str()));
    assert_eq!(
        problem.links.map(|l| l.failure),
        Some(format!("/v1/failures/{id}"))
    );
    let record = h.failures.get(&id).await.unwrap().expect("stored");
    assert_eq!(record.state, FailureState::Open);
    assert_eq!(
        record.event.value.to_bytes().unwrap().as_ref(),
        br#"{"a":1}"#
    );
    assert!(h.records().is_empty());

    let Ok(RetryOutcome::Resolved(resolved)) = h.pipeline.retry_failure(&id, "ops").await else {
        panic!("expected the retry to publish");
    };
    let resolution = resolved.resolution.expect("a resolution");
    assert_eq!(resolution.action, "retried");
    let records = h.records();
    assert_eq!(records.len(), 1, "published once");
    assert_eq!(
        (Some(records[0].0), Some(records[0].1)),
        (resolution.partition, resolution.offset),
        "the resolution names where the event is"
    );
    assert!(
        matches!(h.pipeline.submit(event("k1", r#"{"a":1}"#)).await, Outcome::Replayed(a) if a.settlement() == Settlement::Done),
        "a client's retry now replays the success"
    );
    assert!(matches!(
        h.pipeline.retry_failure(&id, "ops").await,
        Err(OperatorError::NotOpen(FailureState::Resolved))
    ));
}

#[tokio::test]
async fn a_retry_that_fails_again_reopens_the_same_record() {
    let h = Harness::start();
    h.fail_produce(&[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED]);
    let Outcome::Failed(failure) = h.pipeline.submit(event("k1", "{}")).await else {
        panic!("expected a failure");
    };
    let id = failure.record_id.unwrap();
    h.fail_produce(&[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED]);
    let Ok(RetryOutcome::Failed(again)) = h.pipeline.retry_failure(&id, "ops").await else {
        panic!("expected the retry to fail");
    };
    assert_eq!(
        again.record_id.as_deref(),
        Some(id.as_str()),
        "no second record"
    );
    let record = h.failures.get(&id).await.unwrap().unwrap();
    assert_eq!((record.state, record.attempts), (FailureState::Open, 2));
    let all = h.failures.list(&FailureFilter::default(), None, 10).await;
    assert_eq!(all.unwrap().items.len(), 1);
    assert!(h.records().is_empty());
}

#[tokio::test]
async fn a_slow_ack_is_accepted_then_settles() {
    let h = Harness::with(Options {
        wait_timeout: Duration::from_millis(200),
        ..Options::default()
    });
    // Warm up metadata and the producer id, so the delay below is the produce's alone. On a
    // busy machine even this one may outlast the short wait: either way, let it settle.
    let warm = h.pipeline.submit(event("warm", "{}")).await;
    assert!(
        matches!(warm, Outcome::Persisted(_) | Outcome::Accepted),
        "{warm:?}"
    );
    h.settled("warm").await;
    h.cluster
        .broker_round_trip_time(1, Duration::from_millis(1000))
        .unwrap();
    assert_eq!(
        h.pipeline.submit(event("k1", "{}")).await,
        Outcome::Accepted
    );
    assert_eq!(
        h.pipeline.submit(event("k1", "{}")).await,
        Outcome::Accepted,
        "a retry while the delivery goes on gets the same 202, not 409"
    );
    let answer = h.settled("k1").await;
    assert_eq!(
        (answer.settlement(), answer.status()),
        (Settlement::Done, 201)
    );
    h.cluster
        .broker_round_trip_time(1, Duration::from_millis(0))
        .unwrap();
    let keys: Vec<String> = h.records().into_iter().map(|r| r.2).collect();
    assert_eq!(keys.iter().filter(|k| *k == "k1").count(), 1);
}

impl Harness {
    /// Waits until the key has settled, and returns its answer.
    async fn settled(&self, key: &str) -> StoredAnswer {
        let (topic, key) = (
            TopicName::parse(TOPIC).unwrap(),
            IdempotencyKey::parse(key.as_bytes()).unwrap(),
        );
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match self.pipeline.status(scoped(&topic), &key).await.unwrap() {
                Some(KeyStatus::Settled(answer)) => return answer,
                _ if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                other => panic!("{key} never settled: {other:?}"),
            }
        }
    }
}

/// A store that cannot answer.
struct DownStore;

#[async_trait]
impl IdempotencyStore for DownStore {
    async fn claim(
        &self,
        _: KeyScope<'_>,
        _: &IdempotencyKey,
        _: &str,
        _: &str,
        _: Claimant,
    ) -> Result<Claim, StoreError> {
        Err(StoreError::Protocol("down".into()))
    }
    async fn mark_accepted(
        &self,
        _: KeyScope<'_>,
        _: &IdempotencyKey,
        _: &str,
    ) -> Result<(), StoreError> {
        Err(StoreError::Protocol("down".into()))
    }
    async fn status(
        &self,
        _: KeyScope<'_>,
        _: &IdempotencyKey,
    ) -> Result<Option<KeyStatus>, StoreError> {
        Err(StoreError::Protocol("down".into()))
    }
    async fn settle(
        &self,
        _: KeyScope<'_>,
        _: &IdempotencyKey,
        _: &str,
        _: &StoredAnswer,
    ) -> Result<bool, StoreError> {
        Err(StoreError::Protocol("down".into()))
    }
    async fn renew(
        &self,
        _: KeyScope<'_>,
        _: &IdempotencyKey,
        _: &str,
    ) -> Result<Renewal, StoreError> {
        Err(StoreError::Protocol("down".into()))
    }
    async fn unpin(
        &self,
        _: KeyScope<'_>,
        _: &IdempotencyKey,
        _: &str,
    ) -> Result<bool, StoreError> {
        Err(StoreError::Protocol("down".into()))
    }
    fn lifetimes(&self) -> Lifetimes {
        LIFETIMES
    }
    async fn health(&self) -> Result<StoreHealth, StoreError> {
        Err(StoreError::Protocol("down".into()))
    }
}

#[tokio::test]
async fn fails_closed_when_the_store_is_down() {
    let h = Harness::with(Options {
        store: Some(Arc::new(DownStore)),
        ..Options::default()
    });
    assert_eq!(
        h.pipeline.submit(event("k1", "{}")).await,
        Outcome::Refused(Refusal::StoreUnavailable)
    );
    assert!(h.records().is_empty(), "nothing published without a claim");
}

/// A store whose settling panics, as a bug in a delivery task would.
struct PanickingSettle(MemoryStore);

#[async_trait]
impl IdempotencyStore for PanickingSettle {
    async fn claim(
        &self,
        scope: KeyScope<'_>,
        key: &IdempotencyKey,
        fingerprint: &str,
        owner: &str,
        claimant: Claimant,
    ) -> Result<Claim, StoreError> {
        self.0.claim(scope, key, fingerprint, owner, claimant).await
    }
    async fn mark_accepted(
        &self,
        scope: KeyScope<'_>,
        key: &IdempotencyKey,
        owner: &str,
    ) -> Result<(), StoreError> {
        self.0.mark_accepted(scope, key, owner).await
    }
    async fn status(
        &self,
        scope: KeyScope<'_>,
        key: &IdempotencyKey,
    ) -> Result<Option<KeyStatus>, StoreError> {
        self.0.status(scope, key).await
    }
    async fn settle(
        &self,
        _: KeyScope<'_>,
        _: &IdempotencyKey,
        _: &str,
        _: &StoredAnswer,
    ) -> Result<bool, StoreError> {
        panic!("settle failed in a way nobody planned for")
    }
    async fn renew(
        &self,
        scope: KeyScope<'_>,
        key: &IdempotencyKey,
        owner: &str,
    ) -> Result<Renewal, StoreError> {
        self.0.renew(scope, key, owner).await
    }
    async fn unpin(
        &self,
        scope: KeyScope<'_>,
        key: &IdempotencyKey,
        fingerprint: &str,
    ) -> Result<bool, StoreError> {
        self.0.unpin(scope, key, fingerprint).await
    }
    fn lifetimes(&self) -> Lifetimes {
        self.0.lifetimes()
    }
    async fn health(&self) -> Result<StoreHealth, StoreError> {
        self.0.health().await
    }
}

#[tokio::test]
async fn a_delivery_task_that_dies_is_reported_as_lost_not_as_a_store_outage() {
    let h = Harness::with(Options {
        store: Some(Arc::new(PanickingSettle(MemoryStore::new(LIFETIMES)))),
        ..Options::default()
    });
    // A failure settles before it answers, so the panic comes before the answer.
    h.fail_produce(&[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE]);
    assert_eq!(h.pipeline.submit(event("k1", "{}")).await, Outcome::Lost);
}
