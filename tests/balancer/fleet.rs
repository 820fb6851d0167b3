//! Three `ackgate serve` processes behind one HAProxy, sharing one Redis side and one topic.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::common::haproxy::{Haproxy, Server};
use crate::common::process::Gateway;
use crate::common::*;

pub(crate) const REPLICAS: usize = 3;
pub(crate) const PARTITIONS: i32 = 3;
/// Short, so that a key a killed replica held is taken over within the test: its lease is the
/// delivery timeout + 10 s (`Settings::lease`), and the grace after it 2 × the Redis timeout
/// (1 s, the default) + 1 s (`Settings::takeover_grace`).
pub(crate) const DELIVERY_TIMEOUT: Duration = Duration::from_secs(3);
pub(crate) const LEASE_AND_GRACE: Duration = Duration::from_secs(3 + 10 + 3);
/// Above the delivery timeout: every request gets a final answer, never a 202.
const WAIT_TIMEOUT_MS: &str = "5000";
/// The least the gateway accepts: the delivery timeout + 5 s.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);

/// Where the replicas keep idempotency and failure records: the `ackgate serve` flags that say
/// so, for one Redis server or a Redis Cluster.
#[derive(Debug, Clone)]
pub(crate) struct RedisSide {
    pub(crate) name: &'static str,
    pub(crate) flags: Vec<String>,
}

impl RedisSide {
    /// One Redis server at `url`.
    pub(crate) fn single(url: String) -> RedisSide {
        RedisSide {
            name: "one Redis",
            flags: vec!["--redis-url".to_owned(), url],
        }
    }

    /// The test Redis Cluster whose seed nodes `urls` lists (`scripts/test.sh` starts one).
    pub(crate) fn cluster(urls: String) -> RedisSide {
        RedisSide {
            name: "a Redis Cluster",
            flags: vec!["--redis-cluster".to_owned(), "--redis-url".to_owned(), urls],
        }
    }
}

/// What the suite needs from the machine.
pub(crate) struct Env {
    pub(crate) haproxy: String,
    pub(crate) brokers: String,
}

impl Env {
    /// HAProxy and the test broker, or `None` after a loud message that says what is missing
    /// (`scripts/test.sh` provides both).
    pub(crate) fn get() -> Option<Env> {
        let brokers = std::env::var("ACKGATE_TEST_KAFKA_BROKERS").ok();
        let haproxy = Haproxy::binary();
        match (haproxy, brokers) {
            (Some(haproxy), Some(brokers)) => Some(Env { haproxy, brokers }),
            (haproxy, brokers) => {
                let mut missing = Vec::new();
                if haproxy.is_none() {
                    missing.push("haproxy (apt-get install haproxy, or ACKGATE_TEST_HAPROXY)");
                }
                if brokers.is_none() {
                    missing.push("ACKGATE_TEST_KAFKA_BROKERS (a test broker: scripts/test.sh)");
                }
                eprintln!(
                    "\n!!! SKIPPED: the load-balancer suite needs {}; nothing was tested !!!\n",
                    missing.join(" and ")
                );
                None
            }
        }
    }
}

/// One gateway process and the name HAProxy knows it by.
pub(crate) struct Replica {
    pub(crate) name: String,
    pub(crate) gateway: Gateway,
    pub(crate) admin_port: u16,
}

impl Replica {
    fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    /// Waits until `/readyz` on the admin port answers 200 (Redis and Kafka reachable).
    async fn wait_until_ready(&self, http: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = http.get(self.admin_url("/readyz")).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} never became ready",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The sum of the samples of `metric` whose labels include every one of `labels`
    /// (`route="…"`), from this process's `/metrics`.
    pub(crate) async fn metric(
        &self,
        http: &reqwest::Client,
        metric: &str,
        labels: &[&str],
    ) -> f64 {
        let text = http
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .unwrap_or_else(|e| panic!("/metrics of {}: {e}", self.name))
            .text()
            .await
            .expect("the metrics text");
        text.lines()
            .filter(|line| line.starts_with(&format!("{metric}{{")))
            .filter(|line| labels.iter().all(|label| line.contains(label)))
            .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    }

    /// Single-event POSTs this process has answered since it started.
    pub(crate) async fn events_served(&self, http: &reqwest::Client) -> u64 {
        let route = r#"route="/v1/topics/{topic}/events""#;
        self.metric(
            http,
            "ackgate_http_requests_total",
            &[route, r#"method="POST""#],
        )
        .await as u64
    }
}

/// The replicas, the balancer in front of them, and the scenario's topic.
pub(crate) struct Fleet {
    pub(crate) replicas: Vec<Replica>,
    pub(crate) haproxy: Haproxy,
    pub(crate) topic: String,
    pub(crate) brokers: String,
    pub(crate) http: reqwest::Client,
}

impl Fleet {
    /// A topic of its own, [`REPLICAS`] gateways on `redis` with a key prefix of their own, and
    /// HAProxy in front of them; returns once every gateway is ready and HAProxy has them all
    /// up.
    pub(crate) async fn start(env: &Env, redis: &RedisSide, scenario: &str) -> Fleet {
        Fleet::start_with(env, redis, scenario, &[], true).await
    }

    /// [`start`](Fleet::start) with extra `ackgate serve` flags, and HAProxy with or without
    /// redispatch ([`Haproxy::start_with`]).
    pub(crate) async fn start_with(
        env: &Env,
        redis: &RedisSide,
        scenario: &str,
        extra: &[&str],
        redispatch: bool,
    ) -> Fleet {
        let topic = unique(&format!("balancer-{scenario}"));
        create_topic(&env.brokers, &topic, PARTITIONS).await;
        let prefix = unique("balancer");
        let delivery = DELIVERY_TIMEOUT.as_millis().to_string();
        let grace = SHUTDOWN_GRACE.as_millis().to_string();
        let mut replicas = Vec::new();
        for i in 0..REPLICAS {
            let admin_port = free_port();
            let admin = format!("127.0.0.1:{admin_port}");
            let spool = std::env::temp_dir().join(format!("{prefix}-{i}.spool"));
            let spool = spool.display().to_string();
            let mut args: Vec<&str> = vec![
                "--kafka-brokers",
                &env.brokers,
                "--redis-key-prefix",
                &prefix,
                "--admin-listen",
                &admin,
                "--failure-spool-path",
                &spool,
                "--delivery-timeout-ms",
                &delivery,
                "--wait-timeout-ms",
                WAIT_TIMEOUT_MS,
                "--shutdown-grace-ms",
                &grace,
                // The shared test Redis keeps these keys only as long as a run needs them.
                "--idempotency-ttl-secs",
                "3600",
                // The takeover warnings are what the scenarios read from the logs.
                "--log-filter",
                "warn",
            ];
            args.extend(redis.flags.iter().map(String::as_str));
            args.extend(extra);
            let mut gateway = Gateway::new(&args);
            gateway.start();
            replicas.push(Replica {
                name: format!("g{i}"),
                gateway,
                admin_port,
            });
        }
        let http = reqwest::Client::new();
        for replica in &replicas {
            replica.wait_until_ready(&http).await;
        }
        let servers: Vec<Server> = replicas
            .iter()
            .map(|r| Server {
                name: r.name.clone(),
                port: r.gateway.port,
                admin_port: r.admin_port,
            })
            .collect();
        let haproxy = Haproxy::start_with(&env.haproxy, &servers, redispatch);
        let fleet = Fleet {
            replicas,
            haproxy,
            topic,
            brokers: env.brokers.clone(),
            http,
        };
        for replica in &fleet.replicas {
            fleet.wait_until_up(replica, Duration::from_secs(10)).await;
        }
        eprintln!(
            "fleet ({}): {} gateways behind HAProxy at {} (config and logs in {})",
            redis.name,
            REPLICAS,
            fleet.haproxy.url(""),
            fleet.haproxy.dir().display()
        );
        fleet
    }

    /// Waits until HAProxy has `replica` up; how long that took.
    pub(crate) async fn wait_until_up(&self, replica: &Replica, limit: Duration) -> Duration {
        self.haproxy
            .wait_for_status(&replica.name, "UP", limit)
            .await
            .unwrap_or_else(|| {
                panic!(
                    "HAProxy did not mark {} up within {limit:?}: {}",
                    replica.name,
                    self.haproxy.status(&replica.name)
                )
            })
    }

    /// `POST /v1/topics/{topic}/events` through the balancer.
    pub(crate) fn events_url(&self) -> String {
        self.haproxy
            .url(&format!("/v1/topics/{}/events", self.topic))
    }

    /// Every record of the topic.
    pub(crate) fn records(&self) -> Vec<Record> {
        consume_to_end(&self.brokers, &self.topic, PARTITIONS)
    }

    /// The takeover warnings of every replica on this topic, counted per key.
    pub(crate) fn takeovers(&self) -> BTreeMap<String, usize> {
        let mut takeovers = BTreeMap::new();
        for replica in &self.replicas {
            for takeover in replica.gateway.takeovers() {
                if takeover.topic == self.topic {
                    *takeovers.entry(takeover.idempotency_key).or_default() += 1;
                }
            }
        }
        takeovers
    }

    /// Where the replicas' logs are (for failure messages).
    pub(crate) fn log_dirs(&self) -> Vec<std::path::PathBuf> {
        self.replicas
            .iter()
            .map(|r| r.gateway.log_dir().to_path_buf())
            .collect()
    }

    /// `ackgate audit` of the topic against these 201 bodies: its exit status and JSON report.
    pub(crate) fn audit(&self, acks: &[&String]) -> (Option<i32>, serde_json::Value) {
        let acks_file = std::env::temp_dir().join(format!("{}-acks.jsonl", self.topic));
        let lines: Vec<&str> = acks.iter().map(|a| a.as_str()).collect();
        std::fs::write(&acks_file, lines.join("\n")).expect("the acks file");
        let audited = process::audit(&self.brokers, &self.topic, &acks_file);
        let _ = std::fs::remove_file(&acks_file);
        audited
    }
}

/// The topic read back against the 201s the clients got.
pub(crate) struct KafkaCheck {
    /// Where each idempotency key is in Kafka.
    pub(crate) by_key: BTreeMap<String, Vec<(i32, i64)>>,
    /// Acknowledged events missing from Kafka, or not where their 201 said.
    pub(crate) lost: Vec<String>,
    pub(crate) without_header: usize,
    pub(crate) records: usize,
}

impl KafkaCheck {
    /// The keys in Kafka more than once, with where each copy is.
    pub(crate) fn duplicated(&self) -> BTreeMap<String, Vec<(i32, i64)>> {
        self.by_key
            .iter()
            .filter(|(_, places)| places.len() > 1)
            .map(|(key, places)| (key.clone(), places.clone()))
            .collect()
    }
}

impl Fleet {
    /// Reads the topic to its end and checks each acknowledgement (key → 201 body) against it.
    pub(crate) fn check_kafka<'a>(
        &self,
        acks: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) -> KafkaCheck {
        let records = self.records();
        let (by_key, without_header) = by_idempotency_key(&records);
        let without_header = without_header.len();
        let mut lost = Vec::new();
        for (key, body) in acks {
            let ack: serde_json::Value = serde_json::from_str(body).expect("a 201 body");
            let at = (
                ack["partition"].as_i64().expect("partition") as i32,
                ack["offset"].as_i64().expect("offset"),
            );
            if !by_key.get(key).is_some_and(|places| places.contains(&at)) {
                lost.push(format!(
                    "{key} acknowledged at {at:?}, in Kafka at {:?}",
                    by_key.get(key)
                ));
            }
        }
        KafkaCheck {
            by_key,
            lost,
            without_header,
            records: records.len(),
        }
    }
}
