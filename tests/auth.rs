//! Identity and access through the real listener, against the test Redis and broker: who may
//! call, what each principal may publish or read, per-client rates, and the scoping of
//! idempotency keys. Every refusal is checked against what reached Kafka.

mod common;

use std::time::Duration;

use ackgate::auth::AuthArgs;
use ackgate::settings::Settings;
use common::jwt;
use common::*;

async fn topic(prefix: &str) -> String {
    let topic = unique(prefix);
    create_topic(&kafka_brokers(), &topic, 1).await;
    topic
}

fn records(topic: &str) -> Vec<Record> {
    consume_to_end(&kafka_brokers(), topic, 1)
}

#[tokio::test]
async fn requests_without_valid_credentials_get_401_and_leave_no_trace() {
    let file = AuthFile::new(&[("orders", "k-orders", "produce = [\"*\"]\noperator = true")]);
    let app = TestApp::spawn_default(file.settings()).await;
    let topic = topic("auth401").await;

    let anonymous = app.post_event(&topic, "k-1", "{}").await;
    anonymous.assert_problem(401, "unauthenticated");
    assert_eq!(
        anonymous.header("www-authenticate"),
        Some(r#"Bearer realm="ackgate""#)
    );
    let wrong = app
        .as_client("k-wrong")
        .post_event(&topic, "k-1", "{}")
        .await;
    wrong.assert_problem(401, "unauthenticated");
    assert!(
        wrong
            .header("www-authenticate")
            .unwrap()
            .contains("invalid_token")
    );
    let basic = app
        .post_event_with(
            &topic,
            "k-1",
            "{}",
            &[("Authorization", "Basic b3JkZXJzOms=")],
        )
        .await;
    basic.assert_problem(401, "unauthenticated");
    for path in [
        format!("/v1/topics/{topic}/events/k-1"),
        "/v1/failures".to_owned(),
        "/v1/failures/01JAAAAAAAAAAAAAAAAAAAAAAA".to_owned(),
    ] {
        app.get(&path).await.assert_problem(401, "unauthenticated");
    }
    app.post_json(
        "/v1/failures/01JAAAAAAAAAAAAAAAAAAAAAAA/discard",
        r#"{"reason":"x"}"#,
    )
    .await
    .assert_problem(401, "unauthenticated");
    // Probes and the API description stay open.
    assert_eq!(app.healthz().await.status, 200);
    assert_eq!(app.openapi().await.status, 200);

    // The key was never claimed: the right client now gets a fresh 201 for it.
    let first = app
        .as_client("k-orders")
        .post_event(&topic, "k-1", "{}")
        .await;
    assert_eq!(first.status, 201, "{}", first.body);
    assert_eq!(first.header("idempotent-replayed"), None);
    assert_eq!(records(&topic).len(), 1);
}

#[tokio::test]
async fn topics_outside_a_clients_patterns_get_403() {
    let (allowed, other) = (topic("auth-ok").await, topic("auth-other").await);
    let dlt = format!("{allowed}.dlt");
    create_topic(&kafka_brokers(), &dlt, 1).await;
    let file = AuthFile::new(&[
        ("narrow", "k-narrow", &format!("produce = [\"{allowed}\"]")),
        ("wide", "k-wide", "produce = [\"*\", \"_*\", \"*.dlt\"]"),
        ("dlt-writer", "k-dlt", &format!("produce = [\"{dlt}\"]")),
    ]);
    let app = TestApp::spawn_default(file.settings()).await;
    let narrow = app.as_client("k-narrow");

    assert_eq!(narrow.post_event(&allowed, "k", "{}").await.status, 201);
    narrow
        .post_event(&other, "k", "{}")
        .await
        .assert_problem(403, "topic-forbidden");
    // A forbidden topic is refused before anything else is looked at.
    narrow
        .post_event_raw(&other, &[], "{}")
        .await
        .assert_problem(403, "topic-forbidden");

    let wide = app.as_client("k-wide");
    assert_eq!(wide.post_event(&other, "k", "{}").await.status, 201);
    for internal in ["__consumer_offsets", "_schemas", dlt.as_str()] {
        wide.post_event(internal, "k", "{}")
            .await
            .assert_problem(403, "topic-forbidden");
    }
    // Only a pattern that names an internal topic literally opens it.
    let literal = app.as_client("k-dlt").post_event(&dlt, "k", "{}").await;
    assert_eq!(literal.status, 201, "{}", literal.body);

    assert_eq!(records(&allowed).len(), 1);
    assert_eq!(records(&other).len(), 1);
    assert_eq!(records(&dlt).len(), 1);
}

#[tokio::test]
async fn the_same_key_from_two_clients_names_two_events() {
    let topic = topic("auth-scope").await;
    let file = AuthFile::new(&[
        ("alpha", "k-alpha", "produce = [\"*\"]"),
        ("beta", "k-beta", "produce = [\"*\"]"),
        ("gamma", "k-gamma", "produce = [\"*\"]"),
    ]);
    let app = TestApp::spawn_default(file.settings()).await;
    let (alpha, beta) = (app.as_client("k-alpha"), app.as_client("k-beta"));

    let a = alpha
        .post_event(&topic, "order-1", r#"{"from":"alpha"}"#)
        .await;
    let b = beta
        .post_event(&topic, "order-1", r#"{"from":"beta"}"#)
        .await;
    assert_eq!((a.status, b.status), (201, 201), "{} {}", a.body, b.body);
    assert_ne!(a.json()["offset"], b.json()["offset"]);
    // Each replays its own answer, not the other's, and a different body is still its own key's
    // mismatch.
    let again = alpha
        .post_event(&topic, "order-1", r#"{"from":"alpha"}"#)
        .await;
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.json()["offset"], a.json()["offset"]);
    alpha
        .post_event(&topic, "order-1", r#"{"from":"beta"}"#)
        .await
        .assert_problem(422, "idempotency-key-reused");

    let values: Vec<String> = records(&topic)
        .iter()
        .map(|r| String::from_utf8_lossy(&r.value).into_owned())
        .collect();
    assert_eq!(values, [r#"{"from":"alpha"}"#, r#"{"from":"beta"}"#]);

    // The status resource answers each owner with its own event, and nobody else.
    let status = alpha.event_status(&topic, "order-1").await;
    assert_eq!(status.json()["answer"]["offset"], a.json()["offset"]);
    let status = beta.event_status(&topic, "order-1").await;
    assert_eq!(status.json()["answer"]["offset"], b.json()["offset"]);
    app.as_client("k-gamma")
        .event_status(&topic, "order-1")
        .await
        .assert_problem(404, "event-not-found");
}

#[tokio::test]
async fn rate_limits_answer_429_and_publish_nothing_past_the_rate() {
    let topic = topic("auth-rate").await;
    let file = AuthFile::new(&[
        ("slow", "k-slow", "produce = [\"*\"]\nrate = 3"),
        ("free", "k-free", "produce = [\"*\"]"),
    ]);
    let app = TestApp::spawn_default(file.settings()).await;
    let slow = app.as_client("k-slow");

    let mut created = 0;
    let mut limited = Vec::new();
    for n in 0..12 {
        let reply = slow.post_event(&topic, &format!("k-{n}"), "{}").await;
        match reply.status {
            201 => {
                created += 1;
                assert_eq!(
                    reply.header("ratelimit-policy"),
                    Some(r#""client";q=3;w=1"#)
                );
                assert!(
                    reply
                        .header("ratelimit")
                        .unwrap()
                        .starts_with(r#""client";r="#)
                );
            }
            429 => limited.push(reply),
            other => panic!("{other}: {}", reply.body),
        }
    }
    assert!(created >= 3, "a burst of the rate gets through: {created}");
    assert!(!limited.is_empty(), "past the rate: 429");
    let reply = &limited[0];
    reply.assert_problem(429, "rate-limited");
    assert!(reply.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(
        reply.header("ratelimit-policy"),
        Some(r#""client";q=3;w=1"#)
    );
    assert!(reply.header("ratelimit").unwrap().contains(";r=0;"));
    // Other clients are not held back by one client's rate.
    let free = app.as_client("k-free");
    for n in 0..5 {
        let reply = free.post_event(&topic, &format!("free-{n}"), "{}").await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        assert_eq!(reply.header("ratelimit"), None);
    }
    // Only the admitted events are in Kafka; a refused key is free for its retry.
    assert_eq!(records(&topic).len(), created + 5);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let index = 12 - limited.len();
    let retried = slow.post_event(&topic, &format!("k-{index}"), "{}").await;
    assert_eq!(retried.status, 201, "{}", retried.body);
    assert_eq!(retried.header("idempotent-replayed"), None);
}

#[tokio::test]
async fn operator_routes_need_the_operator_grant() {
    let file = AuthFile::new(&[
        ("client", "k-client", "produce = [\"*\"]"),
        ("ops", "k-ops", "operator = true"),
    ]);
    let app = TestApp::spawn_default(file.settings()).await;
    let client = app.as_client("k-client");
    let id = "01JAAAAAAAAAAAAAAAAAAAAAAA";
    client
        .list_failures("")
        .await
        .assert_problem(403, "forbidden");
    client
        .get_failure(id)
        .await
        .assert_problem(403, "forbidden");
    client
        .retry_failure(id)
        .await
        .assert_problem(403, "forbidden");
    client
        .discard_failure(id, "no")
        .await
        .assert_problem(403, "forbidden");

    let ops = app.as_client("k-ops");
    assert_eq!(ops.list_failures("").await.status, 200);
    ops.get_failure(id)
        .await
        .assert_problem(404, "failure-not-found");
    // An operator may not publish unless granted topics too.
    ops.post_event("orders", "k", "{}")
        .await
        .assert_problem(403, "topic-forbidden");
}

#[tokio::test]
async fn serve_refuses_to_start_without_auth_unless_told() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ackgate"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_remove("ACKGATE_NO_AUTH")
        .env_remove("ACKGATE_AUTH_FILE")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("--auth-file") && stderr.contains("--no-auth"),
        "{stderr}"
    );

    let file = AuthFile(std::env::temp_dir().join(format!("{}.toml", unique("bad-auth"))));
    std::fs::write(&file.0, "[[clients]]\nname = \"a\"\nkey_sha256 = \"zz\"\n").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ackgate"))
        .args(["serve", "--listen", "127.0.0.1:0", "--auth-file"])
        .arg(&file.0)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&file.0.display().to_string()), "{stderr}");
    assert!(stderr.contains("64 hex digits"), "{stderr}");
}

#[tokio::test]
async fn an_open_gateway_says_so_in_readyz() {
    let app = TestApp::spawn_default(test_settings()).await;
    let ready = app.readyz().await;
    let warnings = ready.json()["warnings"].to_string();
    assert!(warnings.contains("authentication is off"), "{warnings}");
}

fn jwt_settings(issuer: &jwt::JwtIssuer, file: Option<&AuthFile>) -> Settings {
    Settings {
        auth: AuthArgs {
            auth_file: file.map(|f| f.0.clone()),
            jwt: ackgate::auth::JwtArgs {
                jwt_jwks_file: Some(issuer.jwks_path.clone()),
                jwt_issuer: Some(issuer.issuer.clone()),
                jwt_audience: Some(issuer.audience.clone()),
            },
            ..AuthArgs::default()
        },
        ..test_settings()
    }
}

#[tokio::test]
async fn jwts_authenticate_with_their_scopes_and_invalid_ones_get_401() {
    let topic = topic("auth-jwt").await;
    let issuer = jwt::JwtIssuer::new();
    let file = AuthFile::new(&[("keyed", "k-keyed", "produce = [\"*\"]")]);
    let app = TestApp::spawn_default(jwt_settings(&issuer, Some(&file))).await;
    let scope = format!("produce:{topic} operator");

    let rs256 = issuer.token(issuer.claims("svc-a", &scope));
    let es256 = issuer.token_es256(issuer.claims("svc-b", &format!("produce:{topic}")));
    let a = app.as_client(&rs256).post_event(&topic, "k-1", "{}").await;
    let b = app.as_client(&es256).post_event(&topic, "k-1", "{}").await;
    assert_eq!((a.status, b.status), (201, 201), "{} {}", a.body, b.body);
    // API keys still work beside JWTs, in their own key scope.
    let keyed = app
        .as_client("k-keyed")
        .post_event(&topic, "k-1", "{}")
        .await;
    assert_eq!(keyed.status, 201, "{}", keyed.body);
    // Scopes: svc-a is an operator, svc-b is not, and neither may publish elsewhere.
    assert_eq!(app.as_client(&rs256).list_failures("").await.status, 200);
    app.as_client(&es256)
        .list_failures("")
        .await
        .assert_problem(403, "forbidden");
    app.as_client(&es256)
        .post_event("other-topic", "k-1", "{}")
        .await
        .assert_problem(403, "topic-forbidden");

    let now = jwt::now();
    let with = |changes: serde_json::Value| {
        let mut claims = issuer.claims("svc-a", &scope);
        for (name, value) in changes.as_object().unwrap() {
            claims[name] = value.clone();
        }
        claims
    };
    let invalid = [
        (
            "expired",
            issuer.token(with(serde_json::json!({"exp": now - 120}))),
        ),
        (
            "not yet valid",
            issuer.token(with(serde_json::json!({"nbf": now + 120}))),
        ),
        (
            "wrong issuer",
            issuer.token(with(serde_json::json!({"iss": "https://evil.example"}))),
        ),
        (
            "wrong audience",
            issuer.token(with(serde_json::json!({"aud": "someone-else"}))),
        ),
        (
            "bad signature",
            issuer.foreign_token(with(serde_json::json!({}))),
        ),
        (
            "no subject",
            issuer.token(with(serde_json::json!({"sub": ""}))),
        ),
    ];
    for (why, token) in invalid {
        let reply = app.as_client(&token).post_event(&topic, "k-2", "{}").await;
        assert_eq!(reply.status, 401, "{why}: {}", reply.body);
        reply.assert_problem(401, "unauthenticated");
        assert!(
            reply
                .header("www-authenticate")
                .unwrap()
                .contains("invalid_token"),
            "{why}"
        );
    }
    let metrics = app.metrics().await.body;
    assert!(
        metrics.contains("ackgate_auth_failures_total{reason=\"expired\"}"),
        "{metrics}"
    );

    // Three principals, one key: three records.
    assert_eq!(records(&topic).len(), 3);
}

#[path = "auth/failures.rs"]
mod failures;
#[path = "auth/reload.rs"]
mod reload;
