//! Kafka and Redis reached over TLS, as production runs them: a broker behind a TLS terminator
//! whose certificate is checked against a test CA, with and without a client certificate (mTLS);
//! a Redis that speaks only TLS, with an ACL user; and the wrong CA, which must stop traffic and
//! say why without printing a secret.

mod common;

use std::time::Duration;

use ackgate::Backend;
use ackgate::audit::{AuditConfig, audit};
use ackgate::redis_link::RedisTls;
use ackgate::settings::Settings;
use common::faults::OwnTansu;
use common::tls::{REDIS_PASSWORD, SASL_PASSWORD, SaslKafka, Stunnel, TestCa, TlsRedis, tls_port};
use common::*;
use rdkafka::ClientConfig;

/// A broker reachable only through TLS on `port`: it advertises that port, so every client,
/// the test's own reads included, goes through the terminator.
struct TlsKafka {
    _tansu: OwnTansu,
    _stunnel: Stunnel,
    port: u16,
    /// What the test's own clients present: the CA, and a client certificate under mTLS.
    properties: Vec<(String, String)>,
}

impl TlsKafka {
    fn start(ca: &TestCa, require_client_cert: bool) -> TlsKafka {
        let port = tls_port();
        let tansu = OwnTansu::start(port);
        let stunnel = Stunnel::start(ca, port, tansu.listen, require_client_cert);
        let mut properties = vec![("ssl.ca.location", ca.path("ca.pem"))];
        if require_client_cert {
            properties.push(("ssl.certificate.location", ca.path("client.pem")));
            properties.push(("ssl.key.location", ca.path("client.key")));
        }
        TlsKafka {
            _tansu: tansu,
            _stunnel: stunnel,
            port,
            properties: ssl_properties(&properties),
        }
    }

    fn tls_brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A client for the test's own reads and topic creation.
    fn client(&self) -> ClientConfig {
        let mut client = kafka_client(&self.tls_brokers());
        for (key, value) in &self.properties {
            client.set(key, value);
        }
        client
    }

    async fn create_topic(&self, topic: &str) {
        create_topic_via(self.client(), topic, 1).await;
    }

    fn records(&self, topic: &str) -> Vec<Record> {
        consume_to_end_via(self.client(), topic, 1, Duration::from_secs(20))
    }
}

fn ssl_properties(pairs: &[(&str, String)]) -> Vec<(String, String)> {
    std::iter::once(("security.protocol".to_owned(), "SSL".to_owned()))
        .chain(pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())))
        .collect()
}

fn settings_with(properties: Vec<(String, String)>) -> Settings {
    Settings {
        kafka_properties: properties.into(),
        delivery_timeout_ms: 5_000,
        wait_timeout_ms: 8_000,
        ..test_settings()
    }
}

/// Posts one event and returns the reply.
async fn post_one(app: &TestApp, topic: &str, key: &str) -> Reply {
    app.post_event(topic, key, format!(r#"{{"key":"{key}"}}"#))
        .await
}

#[tokio::test]
async fn events_reach_kafka_over_tls_with_the_server_certificate_checked() {
    let ca = TestCa::new();
    let kafka = TlsKafka::start(&ca, false);
    let topic = unique("tls");
    kafka.create_topic(&topic).await;

    let properties = ssl_properties(&[("ssl.ca.location", ca.path("ca.pem"))]);
    let app = TestApp::spawn(
        settings_with(properties.clone()),
        &kafka.tls_brokers(),
        Backend::redis(redis_url()),
    )
    .await;
    let ready = app.readyz().await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    let reply = post_one(&app, &topic, "over-tls").await;
    assert_eq!(reply.status, 201, "{}", reply.body);

    let records = kafka.records(&topic);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].header("idempotency-key"), Some(&b"over-tls"[..]));

    // `ackgate audit` reads the topic back through the same TLS listener.
    let report = audit(AuditConfig {
        kafka_properties: properties.into(),
        idle: Duration::from_millis(1500),
        ..AuditConfig::new(kafka.tls_brokers(), &topic)
    })
    .await
    .expect("the audit connects over TLS");
    assert_eq!(report.records_read, 1);
    assert!(report.clean);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_broker_certificate_from_another_ca_is_refused() {
    let ca = TestCa::new();
    let other = TestCa::new();
    let kafka = TlsKafka::start(&ca, false);
    let topic = unique("tls-wrong-ca");
    kafka.create_topic(&topic).await;

    let app = TestApp::spawn(
        settings_with(ssl_properties(&[("ssl.ca.location", other.path("ca.pem"))])),
        &kafka.tls_brokers(),
        Backend::redis(redis_url()),
    )
    .await;
    let ready = app.readyz().await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert_eq!(ready.json()["checks"]["kafka"]["status"], "error");
    let detail = ready.json()["checks"]["kafka"]["detail"].to_string();
    assert!(detail.contains("certificate verify failed"), "{detail}");
    let reply = post_one(&app, &topic, "untrusted").await;
    reply.assert_problem(503, "kafka-unavailable");
    assert!(
        kafka.records(&topic).is_empty(),
        "nothing may reach a broker whose certificate did not verify"
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn mutual_tls_needs_the_client_certificate() {
    let ca = TestCa::new();
    let kafka = TlsKafka::start(&ca, true);
    let topic = unique("mtls");
    kafka.create_topic(&topic).await;

    let with_cert = TestApp::spawn(
        settings_with(ssl_properties(&[
            ("ssl.ca.location", ca.path("ca.pem")),
            ("ssl.certificate.location", ca.path("client.pem")),
            ("ssl.key.location", ca.path("client.key")),
        ])),
        &kafka.tls_brokers(),
        Backend::redis(redis_url()),
    )
    .await;
    let reply = post_one(&with_cert, &topic, "with-cert").await;
    assert_eq!(reply.status, 201, "{}", reply.body);

    let without_cert = TestApp::spawn(
        settings_with(ssl_properties(&[("ssl.ca.location", ca.path("ca.pem"))])),
        &kafka.tls_brokers(),
        Backend::redis(redis_url()),
    )
    .await;
    let ready = without_cert.readyz().await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    post_one(&without_cert, &topic, "without-cert")
        .await
        .assert_problem(503, "kafka-unavailable");

    let records = kafka.records(&topic);
    let keys: Vec<_> = records
        .iter()
        .map(|r| r.header("idempotency-key").unwrap().to_vec())
        .collect();
    assert_eq!(keys, vec![b"with-cert".to_vec()]);
    with_cert.stop().await.unwrap();
    without_cert.stop().await.unwrap();
}

fn redis_tls(ca: &TestCa, client_cert: bool) -> RedisTls {
    RedisTls {
        redis_tls_ca_file: Some(ca.path("ca.pem").into()),
        redis_tls_cert_file: client_cert.then(|| ca.path("client.pem").into()),
        redis_tls_key_file: client_cert.then(|| ca.path("client.key").into()),
    }
}

/// Publishes through a gateway on `redis`, then proves the key is deduplicated there: the
/// retry replays the stored answer and Kafka holds the event once.
async fn round_trip_through(redis: &TlsRedis, tls: RedisTls) {
    let topic = unique("redis-tls");
    create_topic(&kafka_brokers(), &topic, 1).await;
    let app = TestApp::spawn(
        test_settings(),
        &kafka_brokers(),
        Backend::Redis {
            url: redis.url(),
            tls,
            cluster: false,
        },
    )
    .await;
    let ready = app.readyz().await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    let first = post_one(&app, &topic, "k").await;
    assert_eq!(first.status, 201, "{}", first.body);
    // The answer goes out before the key is settled: a retry may find it in flight (409).
    let mut replay = post_one(&app, &topic, "k").await;
    for _ in 0..50 {
        if replay.status != 409 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        replay = post_one(&app, &topic, "k").await;
    }
    assert_eq!(
        replay.header("idempotent-replayed"),
        Some("true"),
        "{}",
        replay.body
    );
    assert_eq!(replay.body, first.body, "the retry is replayed from Redis");
    assert_eq!(consume_to_end(&kafka_brokers(), &topic, 1).len(), 1);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn redis_over_tls_with_an_acl_user() {
    let ca = TestCa::new();
    let redis = TlsRedis::start(&ca, false);
    round_trip_through(&redis, redis_tls(&ca, false)).await;
}

#[tokio::test]
async fn redis_over_mutual_tls() {
    let ca = TestCa::new();
    let redis = TlsRedis::start(&ca, true);
    round_trip_through(&redis, redis_tls(&ca, true)).await;
}

#[tokio::test]
async fn redis_with_the_wrong_ca_or_password_is_not_ready_and_says_why() {
    let ca = TestCa::new();
    let other = TestCa::new();
    let redis = TlsRedis::start(&ca, false);
    let topic = unique("redis-tls-refused");
    create_topic(&kafka_brokers(), &topic, 1).await;

    let wrong_ca = TestApp::spawn(
        test_settings(),
        &kafka_brokers(),
        Backend::Redis {
            url: redis.url(),
            tls: redis_tls(&other, false),
            cluster: false,
        },
    )
    .await;
    let ready = wrong_ca.readyz().await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    let detail = ready.json()["checks"]["redis"]["detail"].to_string();
    assert!(detail.contains("certificate verify failed"), "{detail}");
    assert!(!ready.body.contains(REDIS_PASSWORD), "{}", ready.body);
    post_one(&wrong_ca, &topic, "k")
        .await
        .assert_problem(503, "idempotency-store-unavailable");
    wrong_ca.stop().await.unwrap();

    let wrong_password = TestApp::spawn(
        test_settings(),
        &kafka_brokers(),
        Backend::Redis {
            url: redis.url().replace(REDIS_PASSWORD, "not-the-password"),
            tls: redis_tls(&ca, false),
            cluster: false,
        },
    )
    .await;
    let ready = wrong_password.readyz().await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    let detail = ready.json()["checks"]["redis"]["detail"].to_string();
    assert!(detail.contains("authentication failed"), "{detail}");
    assert!(!ready.body.contains("not-the-password"), "{}", ready.body);
    wrong_password.stop().await.unwrap();
    assert!(consume_to_end(&kafka_brokers(), &topic, 1).is_empty());
}

#[tokio::test]
async fn sasl_scram_over_tls_authenticates_and_a_wrong_password_is_refused() {
    let ca = TestCa::new();
    let topic = unique("sasl");
    let Some(kafka) = SaslKafka::start(&ca, &[&topic]) else {
        return; // No Tansu with SQLite storage here; the harness said so loudly.
    };
    let app = TestApp::spawn(
        settings_with(kafka.properties(&ca, SASL_PASSWORD)),
        &kafka.brokers(),
        Backend::redis(redis_url()),
    )
    .await;
    let reply = post_one(&app, &topic, "authenticated").await;
    assert_eq!(reply.status, 201, "{}", reply.body);

    let refused = TestApp::spawn(
        settings_with(kafka.properties(&ca, "not-the-password")),
        &kafka.brokers(),
        Backend::redis(redis_url()),
    )
    .await;
    let ready = refused.readyz().await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    let detail = ready.json()["checks"]["kafka"]["detail"].to_string();
    assert!(detail.contains("SASL"), "{detail}");
    assert!(!ready.body.contains("not-the-password"), "{}", ready.body);
    post_one(&refused, &topic, "refused")
        .await
        .assert_problem(503, "kafka-unavailable");

    // Read back as the authenticated user, through the same TLS listener.
    let mut client = kafka_client(&kafka.brokers());
    for (key, value) in kafka.properties(&ca, SASL_PASSWORD) {
        client.set(key, value);
    }
    let records = consume_to_end_via(client, &topic, 1, Duration::from_secs(20));
    let keys: Vec<_> = records
        .iter()
        .map(|r| r.header("idempotency-key").unwrap().to_vec())
        .collect();
    assert_eq!(keys, vec![b"authenticated".to_vec()]);
    app.stop().await.unwrap();
    refused.stop().await.unwrap();
}
