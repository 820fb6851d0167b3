//! Test harness: the whole application in-process on port 0, against a real Redis and a real
//! Kafka-protocol broker, plus helpers that read back what actually reached Kafka.
//!
//! `scripts/test.sh` starts the broker and exports where to find it:
//! `ACKGATE_TEST_KAFKA_BROKERS`, `ACKGATE_TEST_REDIS_URL`, `ACKGATE_TEST_REDIS_SERVER`.
#![allow(dead_code, unreachable_pub)]

mod auth_file;
pub mod client;
pub mod cluster;
pub mod faults;
pub mod haproxy;
pub mod jwt;
pub mod mock;
pub mod process;
mod routes;
pub mod tansu;
pub mod tls;

// Not every test target names them.
#[allow(unused_imports)]
pub use auth_file::AuthFile;
#[allow(unused_imports)]
pub use routes::{Pending, path_segment};

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, TcpListener as StdListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ackgate::settings::Settings;
use ackgate::{Application, Backend, Config};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub fn kafka_brokers() -> String {
    std::env::var("ACKGATE_TEST_KAFKA_BROKERS").expect(
        "ACKGATE_TEST_KAFKA_BROKERS is not set: run the tests with scripts/test.sh, which starts \
         a Kafka-protocol broker",
    )
}

pub fn redis_url() -> String {
    std::env::var("ACKGATE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A name no other test uses, so tests can run in parallel against one broker and one Redis.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", ulid::Ulid::new().to_string().to_lowercase())
}

/// Settings for a test app: port 0 on loopback, its own Redis key prefix, short timeouts.
pub fn test_settings() -> Settings {
    Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        redis_key_prefix: unique("t"),
        delivery_timeout_ms: 10_000,
        // Above the delivery timeout: these tests want final answers. The 202 path has its own.
        wait_timeout_ms: 15_000,
        failure_spool_path: std::env::temp_dir().join(format!("{}.spool", unique("ackgate"))),
        ..Settings::defaults()
    }
}

pub async fn create_topic(brokers: &str, name: &str, partitions: i32) {
    create_topic_via(kafka_client(brokers), name, partitions).await;
}

/// A client configuration for `brokers`, to which a test may add properties (TLS).
pub fn kafka_client(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    config
}

/// [`create_topic`] through a client configured by the caller.
pub async fn create_topic_via(client: ClientConfig, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = client.create().expect("admin client");
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let results = admin
        .create_topics([&topic], &AdminOptions::new())
        .await
        .expect("create_topics request");
    for result in results {
        if let Err((name, code)) = result {
            assert_eq!(
                code,
                RDKafkaErrorCode::TopicAlreadyExists,
                "creating topic {name} failed: {code:?}"
            );
        }
    }
}

/// A running application and an HTTP client for it.
pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub settings: Settings,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    pub async fn spawn(settings: Settings, brokers: &str, backend: Backend) -> TestApp {
        Self::spawn_with_publisher(settings, brokers, backend)
            .await
            .0
    }

    /// Like [`TestApp::spawn`], also handing out the app's publisher (to inject faults).
    pub async fn spawn_with_publisher(
        settings: Settings,
        brokers: &str,
        backend: Backend,
    ) -> (TestApp, ackgate::publisher::FaultInjector) {
        let app = Application::build(Config {
            settings: settings.clone(),
            kafka_brokers: brokers.to_owned(),
            backend,
        })
        .await
        .expect("the application builds");
        let addr = app.local_addr();
        let publisher = app.fault_injector();
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(app.run_until(async move {
            let _ = rx.await;
        }));
        let app = TestApp {
            addr,
            client: reqwest::Client::new(),
            settings,
            shutdown: Some(tx),
            handle: Some(handle),
        };
        (app, publisher)
    }

    /// An app against the test broker and the shared test Redis.
    pub async fn spawn_default(settings: Settings) -> TestApp {
        Self::spawn(settings, &kafka_brokers(), Backend::redis(redis_url())).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The same gateway as seen by a client that sends `Authorization: Bearer <secret>` with
    /// every request. The view does not own the gateway: dropping it stops nothing.
    pub fn as_client(&self, secret: &str) -> TestApp {
        let mut headers = reqwest::header::HeaderMap::new();
        let value = format!("Bearer {secret}");
        headers.insert(reqwest::header::AUTHORIZATION, value.parse().unwrap());
        TestApp {
            addr: self.addr,
            client: reqwest::Client::builder()
                .default_headers(headers)
                .build()
                .unwrap(),
            settings: self.settings.clone(),
            shutdown: None,
            handle: None,
        }
    }

    /// Triggers graceful shutdown and waits for it.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.handle
            .take()
            .unwrap()
            .await
            .expect("run_until panicked")
    }

    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    pub async fn join(mut self) -> anyhow::Result<()> {
        self.handle
            .take()
            .unwrap()
            .await
            .expect("run_until panicked")
    }
}

/// A response read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Reply {
    pub async fn from(response: reqwest::Response) -> Reply {
        Reply {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.text().await.expect("response body"),
        }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts an RFC 9457 problem with this status and code.
    pub fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.body
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "errors are problem+json"
        );
        let body = self.json();
        assert_eq!(body["code"], code, "problem code; body: {}", self.body);
        assert_eq!(body["status"], status);
        assert_eq!(body["type"], format!("urn:ackgate:problem:{code}"));
        assert!(body["title"].is_string() && body["detail"].is_string());
    }
}

pub async fn send(request: reqwest::RequestBuilder) -> Reply {
    Reply::from(request.send().await.expect("request sent")).await
}

/// One record as it is in Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub value: Vec<u8>,
}

impl Record {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }
}

/// A record's place in a topic: (partition, offset).
pub type Place = (i32, i64);

/// Where each idempotency key is in `records`, and where the records that carry no
/// `idempotency-key` header are.
pub fn by_idempotency_key(records: &[Record]) -> (BTreeMap<String, Vec<Place>>, Vec<Place>) {
    let mut by_key: BTreeMap<String, Vec<Place>> = BTreeMap::new();
    let mut without_header = Vec::new();
    for record in records {
        match record.header("idempotency-key") {
            Some(key) => by_key
                .entry(String::from_utf8_lossy(key).into_owned())
                .or_default()
                .push((record.partition, record.offset)),
            None => without_header.push((record.partition, record.offset)),
        }
    }
    (by_key, without_header)
}

/// Every record of `topic`, read to the end of every partition: what every count of records
/// stands on, and above all a check that something is *not* in Kafka (nothing published, no
/// second record).
///
/// Panics unless the topic has exactly `partitions` partitions and every one of them reported
/// its end (partition EOF) after its last record, followed by a quiet period: some test brokers
/// (Tansu) report a lagging high watermark right after an acknowledgement, so the end of a
/// partition alone is not proof that everything was read. A reader that saw nothing because it never got to read
/// (a wrong broker, a missing partition, a broker that did not answer in time) must not pass
/// for an empty topic.
pub fn consume_to_end(brokers: &str, topic: &str, partitions: i32) -> Vec<Record> {
    consume_to_end_within(brokers, topic, partitions, Duration::from_secs(20))
}

/// [`consume_to_end`] with its own deadline.
pub fn consume_to_end_within(
    brokers: &str,
    topic: &str,
    partitions: i32,
    deadline: Duration,
) -> Vec<Record> {
    consume_to_end_via(kafka_client(brokers), topic, partitions, deadline)
}

/// [`consume_to_end_within`] through a client configured by the caller.
pub fn consume_to_end_via(
    client: ClientConfig,
    topic: &str,
    partitions: i32,
    deadline: Duration,
) -> Vec<Record> {
    let brokers = client
        .get("bootstrap.servers")
        .unwrap_or_default()
        .to_owned();
    let reading = read_topic(client.clone(), topic, partitions, usize::MAX, deadline);
    let not_at_end: Vec<i32> = (0..partitions)
        .filter(|p| reading.at_end.get(p) != Some(&true))
        .collect();
    assert!(
        not_at_end.is_empty(),
        "reading {topic} at {brokers} did not reach the end of partition(s) {not_at_end:?} \
         within {deadline:?} (read {} records): a check that something is absent cannot stand \
         on a read that did not finish",
        reading.records.len()
    );
    let described = topic_partitions(&client, topic);
    assert_eq!(
        described, partitions,
        "{topic} has {described} partitions, the test reads {partitions}: records in the others \
         would go unseen"
    );
    reading.records
}

/// How many partitions the broker says `topic` has.
fn topic_partitions(client: &ClientConfig, topic: &str) -> i32 {
    let consumer: BaseConsumer = client.create().expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("metadata of {topic}: {e}"));
    let found = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .unwrap_or_else(|| panic!("the broker did not describe {topic}"));
    assert!(
        found.error().is_none(),
        "describing {topic}: {:?}",
        found.error()
    );
    found.partitions().len() as i32
}

/// What one read of a topic got: its records, and which partitions were at their end (EOF
/// reported after their last record) when it stopped.
struct Reading {
    records: Vec<Record>,
    at_end: HashMap<i32, bool>,
}

/// Reads `topic` from the beginning until every partition is at its end and the topic was
/// quiet for a moment, or `at_least` records were read and it was quiet, or the deadline.
fn read_topic(
    mut client: ClientConfig,
    topic: &str,
    partitions: i32,
    at_least: usize,
    deadline: Duration,
) -> Reading {
    let consumer: BaseConsumer = client
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).expect("assign");
    let idle = Duration::from_millis(1500);
    let started = Instant::now();
    let mut last_activity = Instant::now();
    let mut at_end: HashMap<i32, bool> = HashMap::new();
    let mut records = Vec::new();
    while started.elapsed() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                last_activity = Instant::now();
                at_end.insert(message.partition(), false);
                records.push(Record {
                    partition: message.partition(),
                    offset: message.offset(),
                    key: message.key().map(<[u8]>::to_vec),
                    headers: message
                        .headers()
                        .map(|hs| {
                            hs.iter()
                                .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                                .collect()
                        })
                        .unwrap_or_default(),
                    value: message.payload().unwrap_or_default().to_vec(),
                });
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p, true);
            }
            Some(Err(error)) => panic!("consuming {topic} failed: {error}"),
            None => {}
        }
        let all_at_end = at_end.len() == partitions as usize && at_end.values().all(|e| *e);
        let quiet = last_activity.elapsed() >= idle;
        if (all_at_end || records.len() >= at_least) && quiet {
            break;
        }
    }
    records.sort_by_key(|r| (r.partition, r.offset));
    Reading { records, at_end }
}

/// A Redis server of the test's own, on a free port, that the test may stop and restart.
/// (Never the shared one on 6379.)
pub struct OwnRedis {
    pub port: u16,
    child: Option<Child>,
    /// With append-only persistence in this directory (as docker-compose runs Redis).
    aof_dir: Option<std::path::PathBuf>,
}

impl OwnRedis {
    pub fn start() -> OwnRedis {
        let port = free_redis_port();
        let mut redis = OwnRedis {
            port,
            child: None,
            aof_dir: None,
        };
        redis.restart();
        redis
    }

    /// A Redis that keeps its data in an append-only file across restarts, even across a
    /// SIGKILL: `appendfsync always` writes and syncs every write before Redis answers it. That
    /// is the setting a deployment that wants no duplicates runs (README, "Idempotency
    /// semantics"): a settled record lost in a crash lets a retry of its key publish again
    /// without any takeover to explain the duplicate.
    ///
    /// The file lives on tmpfs (`/dev/shm`) where there is one: on a disk shared with parallel
    /// builds a sync can take seconds, and Redis, which syncs on its main thread with `always`,
    /// then stops answering for longer than the gateways' Redis timeout. A killed process loses
    /// only what Redis had not yet written, and `always` writes before it answers, so tmpfs
    /// keeps what this test is about; a machine crash, which the sync guards against, is beyond
    /// a test anyway.
    pub fn start_with_aof() -> OwnRedis {
        let port = free_redis_port();
        let shm = std::path::Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(unique("redis-aof"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut redis = OwnRedis {
            port,
            child: None,
            aof_dir: Some(dir),
        };
        redis.restart();
        redis
    }

    /// Stops Redis the way an orchestrator does (SIGTERM: it finishes writing its AOF).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn restart(&mut self) {
        let server = std::env::var("ACKGATE_TEST_REDIS_SERVER")
            .unwrap_or_else(|_| "redis-server".to_owned());
        let child = Command::new(server)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(match &self.aof_dir {
                Some(dir) => vec![
                    "--appendonly".to_owned(),
                    "yes".to_owned(),
                    "--appendfsync".to_owned(),
                    "always".to_owned(),
                    "--dir".to_owned(),
                    dir.display().to_string(),
                ],
                None => vec!["--appendonly".to_owned(), "no".to_owned()],
            })
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts (install it, or run scripts/test.sh)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "own redis did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Freezes Redis (SIGSTOP): connections stay open, nothing is answered until [`resume`].
    ///
    /// [`resume`]: OwnRedis::resume
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused Redis run again (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("own redis is running");
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} own redis");
    }

    /// SIGKILL: whatever Redis had not written to its append-only file is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
        if let Some(dir) = &self.aof_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A free port for a Redis of a test's own: at most 55535, so that a cluster bus port (+10000)
/// would fit too. `ACKGATE_TEST_REDIS_PORTS=first-last` keeps it in a range (a machine shared by
/// several test runs gives each its own).
pub fn free_redis_port() -> u16 {
    if let Ok(range) = std::env::var("ACKGATE_TEST_REDIS_PORTS") {
        let (first, last) = range
            .split_once('-')
            .and_then(|(a, b)| Some((a.parse::<u16>().ok()?, b.parse::<u16>().ok()?)))
            .expect("ACKGATE_TEST_REDIS_PORTS is first-last");
        // Start at a different place each time, so that parallel tests rarely race for one.
        let span = u32::from(last - first) + 1;
        let offset = (std::process::id() ^ ulid::Ulid::new().random() as u32) % span;
        return (0..span)
            .map(|i| first + ((offset + i) % span) as u16)
            .find(|port| StdListener::bind(("127.0.0.1", *port)).is_ok())
            .expect("a free port in ACKGATE_TEST_REDIS_PORTS");
    }
    loop {
        let port = free_port();
        if port <= 55_535 {
            return port;
        }
    }
}

pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether a key exists in Redis (to prove a refused request left nothing behind).
pub async fn redis_keys(url: &str, pattern: &str) -> Vec<String> {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("KEYS")
        .arg(pattern)
        .query_async(&mut conn)
        .await
        .unwrap()
}
