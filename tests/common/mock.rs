//! librdkafka's in-process mock cluster as a test broker that faults can be injected into.

use std::time::{Duration, Instant};

use ackgate::Backend;
use ackgate::settings::Settings;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

use super::{Record, TestApp, consume_to_end, redis_url, unique};

pub const BROKERS: i32 = 3;
pub const PARTITIONS: i32 = 3;

/// A three-broker mock cluster with one topic (and its `.dlt`).
pub struct MockKafka {
    pub cluster: MockCluster<'static, DefaultProducerContext>,
    pub topic: &'static str,
}

impl MockKafka {
    pub fn start(topic: &'static str) -> MockKafka {
        let cluster = MockCluster::new(BROKERS).expect("mock cluster");
        cluster
            .create_topic(topic, PARTITIONS, BROKERS)
            .expect("mock topic");
        cluster
            .create_topic(&format!("{topic}.dlt"), 1, BROKERS)
            .expect("mock dead-letter topic");
        MockKafka { cluster, topic }
    }

    pub fn brokers(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    pub fn set_rtt(&self, rtt: Duration) {
        for id in 1..=BROKERS {
            self.cluster.broker_round_trip_time(id, rtt).unwrap();
        }
    }

    pub fn all_down(&self) {
        for id in 1..=BROKERS {
            self.cluster.broker_down(id).unwrap();
        }
    }

    pub fn all_up(&self) {
        for id in 1..=BROKERS {
            self.cluster.broker_up(id).unwrap();
        }
    }

    /// Every record of the topic, read to the end of every partition (panics otherwise), so
    /// that an empty or short answer means the records are not there.
    pub fn records(&self) -> Vec<Record> {
        consume_to_end(&self.brokers(), self.topic, PARTITIONS)
    }

    /// The records published under one idempotency key, read to the end of every partition.
    pub fn records_with_key(&self, key: &str) -> Vec<Record> {
        self.records()
            .into_iter()
            .filter(|r| r.header("idempotency-key") == Some(key.as_bytes()))
            .collect()
    }

    /// An app against this cluster and the shared test Redis.
    pub async fn spawn(&self, settings: Settings) -> TestApp {
        TestApp::spawn(settings, &self.brokers(), Backend::redis(redis_url())).await
    }

    /// Publishes events with many record keys, so that metadata is cached, the producer has
    /// its id and a connection to every partition leader: later timings then measure only the
    /// produce. (A message routed to a leader not yet connected under injected latency times
    /// out unsent.) Returns whether every one was acknowledged.
    pub async fn try_publish_everywhere(&self, app: &TestApp) -> bool {
        // One at a time, so that a test's small --max-in-flight does not shed them.
        let mut all_acknowledged = true;
        for i in 0..30 {
            let reply = app
                .post_event_with(
                    self.topic,
                    &unique("warm-up"),
                    "{}",
                    &[("Kafka-Key", &format!("warm-{i}"))],
                )
                .await;
            all_acknowledged &= reply.status == 201;
        }
        all_acknowledged
    }

    pub async fn warm_up(&self, app: &TestApp) {
        assert!(self.try_publish_everywhere(app).await, "warm-up publishes");
    }

    /// Waits until the producer has reconnected to every partition leader after brokers came
    /// back (librdkafka backs off between reconnects, up to `reconnect.backoff.max.ms`).
    pub async fn wait_until_publishing(&self, app: &TestApp) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.try_publish_everywhere(app).await {
            assert!(Instant::now() < deadline, "the producer reconnects");
        }
    }
}
