//! The HTTPS listener and the admin listener, through real sockets against real Redis and the
//! test broker: events over HTTPS reach Kafka, the configured certificate is the one served and
//! a renewed one is picked up without a restart, client certificates from the configured CA are
//! taken and others refused, and the probes move to the admin address when there is one.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ackgate::settings::Settings;
use ackgate::tls::{ListenerTls, ServerTls};
use ackgate::{Application, Backend, Config};
use common::process::{ackgate, serve_refused};
use common::tls::TestCa;
use common::*;
use tokio::sync::oneshot;

/// The names of the test CA's server certificate.
const SERVER_NAMES: &str = "subjectAltName=DNS:localhost,IP:127.0.0.1";
/// A client certificate's usual extension (v3, without names beyond the subject's CN).
const CLIENT_USAGE: &str = "extendedKeyUsage=clientAuth";

/// A gateway started by the test itself, to reach its TLS handle and admin address.
struct Gateway {
    addr: SocketAddr,
    admin: Option<SocketAddr>,
    tls: Option<Arc<ServerTls>>,
    stop: oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Gateway {
    async fn start(settings: Settings, poll: Duration) -> Gateway {
        let mut app = Application::build(Config {
            settings,
            kafka_brokers: kafka_brokers(),
            backend: Backend::redis(redis_url()),
        })
        .await
        .expect("the application builds");
        app.set_tls_poll_interval(poll);
        let (addr, admin, tls) = (app.local_addr(), app.admin_addr(), app.tls());
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(app.run_until(async move {
            let _ = stopped.await;
        }));
        Gateway {
            addr,
            admin,
            tls,
            stop,
            handle,
        }
    }

    /// `https://localhost:PORT/path` (the test certificates name `localhost`).
    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.handle.await.unwrap().unwrap();
    }
}

fn https_settings(ca: &TestCa, client_ca: Option<&str>) -> Settings {
    Settings {
        tls: ListenerTls {
            tls_cert_file: Some(ca.path("server.pem").into()),
            tls_key_file: Some(ca.path("server.key").into()),
            tls_client_ca_file: client_ca.map(Into::into),
        },
        ..test_settings()
    }
}

/// A client that trusts `ca` and resolves `localhost` to the gateway; with `identity`
/// (`NAME` of a `NAME.pem`/`NAME.key` pair of `identity_ca`), it presents that certificate.
fn client(ca: &TestCa, gateway: &Gateway, identity: Option<(&TestCa, &str)>) -> reqwest::Client {
    let root = std::fs::read(ca.path("ca.pem")).unwrap();
    let mut builder = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&root).unwrap())
        .resolve("localhost", gateway.addr)
        .tls_info(true)
        .timeout(Duration::from_secs(10));
    if let Some((issuer, name)) = identity {
        let cert = std::fs::read(issuer.path(&format!("{name}.pem"))).unwrap();
        let key = std::fs::read(issuer.path(&format!("{name}.key"))).unwrap();
        builder = builder.identity(reqwest::Identity::from_pkcs8_pem(&cert, &key).unwrap());
    }
    builder.build().unwrap()
}

/// The DER certificate the server presented on the connection that carried `response`.
fn served_certificate(response: &reqwest::Response) -> Vec<u8> {
    response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .expect("the response says which certificate the server presented")
        .to_vec()
}

/// The DER form of a PEM certificate file of `ca`.
fn der_of(ca: &TestCa, name: &str) -> Vec<u8> {
    let pem = std::fs::read_to_string(ca.path(name)).unwrap();
    let body: String = pem
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    base64_decode(&body)
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

async fn healthz_certificate(client: &reqwest::Client, gateway: &Gateway) -> Vec<u8> {
    let response = client.get(gateway.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    served_certificate(&response)
}

#[tokio::test]
async fn an_event_posted_over_https_reaches_kafka_with_the_configured_certificate() {
    let ca = TestCa::new();
    let topic = unique("https");
    create_topic(&kafka_brokers(), &topic, 1).await;
    let gateway = Gateway::start(https_settings(&ca, None), Duration::from_secs(10)).await;

    let response = client(&ca, &gateway, None)
        .post(gateway.url(&format!("/v1/topics/{topic}/events")))
        .header("Idempotency-Key", "over-https")
        .header("Content-Type", "application/json")
        .body(r#"{"order":1}"#)
        .send()
        .await
        .expect("the HTTPS request is answered");
    assert_eq!(served_certificate(&response), der_of(&ca, "server.pem"));
    let reply = Reply::from(response).await;
    assert_eq!(reply.status, 201, "{}", reply.body);

    let records = consume_to_end(&kafka_brokers(), &topic, 1);
    assert_eq!(records.len(), 1);
    assert_eq!(
        records[0].header("idempotency-key"),
        Some(&b"over-https"[..])
    );
    assert_eq!(records[0].value, br#"{"order":1}"#);

    // Plain HTTP to the HTTPS port gets nothing usable back.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/healthz", gateway.addr))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");
    let metrics = client(&ca, &gateway, None)
        .get(gateway.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("ackgate_tls_handshake_failures_total "),
        "the failed handshake is counted: {metrics}"
    );
    assert!(metrics.contains("ackgate_tls_certificate_expiry_seconds "));
    gateway.stop().await;
}

#[tokio::test]
async fn a_renewed_certificate_is_served_to_new_connections_without_a_restart() {
    let ca = TestCa::new();
    let gateway = Gateway::start(https_settings(&ca, None), Duration::from_secs(3600)).await;
    let tls = gateway.tls.clone().expect("HTTPS is on");
    let old = der_of(&ca, "server.pem");
    let before = client(&ca, &gateway, None);
    assert_eq!(healthz_certificate(&before, &gateway).await, old);

    // A broken file keeps the certificate in use.
    std::fs::write(ca.path("server.pem"), "-----BEGIN CERTIFICATE-----\ntrunc").unwrap();
    let error = tls.reload().unwrap_err();
    assert!(error.starts_with("--tls-cert-file:"), "{error}");
    let fresh = client(&ca, &gateway, None);
    assert_eq!(healthz_certificate(&fresh, &gateway).await, old);

    // The renewal: new key, new certificate, same names.
    ca.issue_v3("server", "/CN=localhost/O=renewed", SERVER_NAMES);
    let renewed = der_of(&ca, "server.pem");
    assert_ne!(renewed, old);
    tls.reload().expect("the renewed files load");
    let after = client(&ca, &gateway, None);
    assert_eq!(healthz_certificate(&after, &gateway).await, renewed);
    // The connection opened before the reload goes on, with the certificate it began with.
    assert_eq!(healthz_certificate(&before, &gateway).await, old);
    gateway.stop().await;
}

#[tokio::test]
async fn changed_files_are_picked_up_by_the_poll() {
    let ca = TestCa::new();
    let gateway = Gateway::start(https_settings(&ca, None), Duration::from_millis(100)).await;
    let old = der_of(&ca, "server.pem");
    assert_eq!(
        healthz_certificate(&client(&ca, &gateway, None), &gateway).await,
        old
    );

    ca.issue_v3("server", "/CN=localhost/O=polled", SERVER_NAMES);
    let renewed = der_of(&ca, "server.pem");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let served = healthz_certificate(&client(&ca, &gateway, None), &gateway).await;
        if served == renewed {
            break;
        }
        assert_eq!(served, old, "neither the old nor the new certificate");
        assert!(
            Instant::now() < deadline,
            "the poll did not reload the files"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gateway.stop().await;
}

#[tokio::test]
async fn client_certificates_from_the_configured_ca_are_taken_and_others_refused() {
    let ca = TestCa::new();
    let other = TestCa::new();
    ca.issue_v3(
        "orders",
        "/CN=orders-service",
        "subjectAltName=DNS:orders.internal,URI:spiffe://example.org/orders",
    );
    ca.issue_v3("cn-only", "/CN=billing", CLIENT_USAGE);
    other.issue_v3("orders", "/CN=orders-service", CLIENT_USAGE);
    let settings = https_settings(&ca, Some(&ca.path("ca.pem")));
    let gateway = Gateway::start(settings, Duration::from_secs(10)).await;

    for (identity, what) in [
        (Some((&ca, "orders")), "a certificate with SANs from the CA"),
        (
            Some((&ca, "cn-only")),
            "a certificate from the CA with a CN only",
        ),
        (None, "no certificate"),
    ] {
        let response = client(&ca, &gateway, identity)
            .get(gateway.url("/healthz"))
            .send()
            .await
            .unwrap_or_else(|error| panic!("{what}: {error:?}"));
        assert_eq!(response.status(), 200, "{what}");
    }

    let refused = client(&ca, &gateway, Some((&other, "orders")))
        .get(gateway.url("/healthz"))
        .send()
        .await;
    let error = format!(
        "{:?}",
        refused.expect_err("a certificate from another CA was served")
    );
    // Both test CAs are named alike: the name is found among the trusted roots and the
    // signature does not verify ("decrypt error"); a CA of another name is an "unknown ca".
    assert!(
        error.contains("alert decrypt error") || error.contains("alert unknown ca"),
        "refused for another reason: {error}"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn with_an_admin_listener_the_probes_are_served_only_there() {
    let settings = Settings {
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..test_settings()
    };
    let gateway = Gateway::start(settings, Duration::from_secs(10)).await;
    let admin = gateway.admin.expect("the admin listener is bound");
    assert_ne!(admin, gateway.addr);
    let http = reqwest::Client::new();
    let get = |addr: SocketAddr, path: &str| send(http.get(format!("http://{addr}{path}")));

    for path in ["/healthz", "/readyz", "/metrics"] {
        let reply = get(admin, path).await;
        assert_eq!(
            reply.status, 200,
            "{path} on the admin listener: {}",
            reply.body
        );
        get(gateway.addr, path)
            .await
            .assert_problem(404, "not-found");
    }
    let metrics = get(admin, "/metrics").await.body;
    assert!(metrics.contains("ackgate_http_requests_total"), "{metrics}");
    for path in ["/docs/", "/openapi.json"] {
        assert_eq!(get(gateway.addr, path).await.status, 200, "{path}");
        get(admin, path).await.assert_problem(404, "not-found");
    }
    gateway.stop().await;
}

#[tokio::test]
async fn without_an_admin_listener_the_probes_stay_on_the_main_one() {
    let gateway = Gateway::start(test_settings(), Duration::from_secs(10)).await;
    assert_eq!(gateway.admin, None);
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let reply =
            send(reqwest::Client::new().get(format!("http://{}{path}", gateway.addr))).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
    }
    gateway.stop().await;
}

#[test]
fn bad_https_and_admin_settings_stop_the_binary_with_one_line_naming_the_flag() {
    let ca = TestCa::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let cases: &[(&[&str], &str)] = &[
        (
            &["--tls-cert-file", &ca.path("server.pem")],
            "--tls-cert-file needs --tls-key-file",
        ),
        (
            &["--tls-client-ca-file", &ca.path("ca.pem")],
            "--tls-client-ca-file needs --tls-cert-file",
        ),
        (
            &[
                "--tls-cert-file",
                &ca.path("server.pem"),
                "--tls-key-file",
                &ca.path("client.key"),
            ],
            "does not match the certificate",
        ),
        (
            &[
                "--tls-cert-file",
                "/nonexistent.pem",
                "--tls-key-file",
                &ca.path("server.key"),
            ],
            "--tls-cert-file: cannot read /nonexistent.pem",
        ),
        (
            &["--admin-listen", &taken],
            "--admin-listen: could not listen on",
        ),
    ];
    for (args, expected) in cases {
        let stderr = serve_refused(args, &[]);
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{expected}: {stderr}");
    }
}

#[test]
fn serve_and_dev_document_the_https_and_admin_flags() {
    for command in ["serve", "dev"] {
        let output = ackgate().args([command, "--help"]).output().unwrap();
        let help = String::from_utf8(output.stdout).unwrap();
        for (flag, env) in [
            ("--tls-cert-file", "ACKGATE_TLS_CERT_FILE"),
            ("--tls-key-file", "ACKGATE_TLS_KEY_FILE"),
            ("--tls-client-ca-file", "ACKGATE_TLS_CLIENT_CA_FILE"),
            ("--admin-listen", "ACKGATE_ADMIN_LISTEN"),
        ] {
            assert!(help.contains(flag), "{command}: {flag}");
            assert!(help.contains(env), "{command}: {env}");
        }
    }
}

#[tokio::test]
async fn a_client_certificate_mapped_in_the_auth_file_is_its_principal() {
    let ca = TestCa::new();
    ca.issue_v3(
        "orders",
        "/CN=orders-service",
        "subjectAltName=DNS:orders.internal,URI:spiffe://example.org/orders",
    );
    ca.issue_v3("stranger", "/CN=stranger", CLIENT_USAGE);
    let topic = unique("mtls");
    create_topic(&kafka_brokers(), &topic, 1).await;
    let auth_file = std::env::temp_dir().join(format!("{}.toml", unique("mtls-auth")));
    std::fs::write(
        &auth_file,
        format!(
            "[[clients]]\nname = \"orders\"\ncert_names = [\"spiffe://example.org/orders\"]\n\
             produce = [\"{topic}\"]\n"
        ),
    )
    .unwrap();
    let mut settings = https_settings(&ca, Some(&ca.path("ca.pem")));
    settings.auth.auth_file = Some(auth_file.clone());
    let gateway = Gateway::start(settings, Duration::from_secs(10)).await;

    let post = |identity, key: &'static str| {
        let request = client(&ca, &gateway, identity)
            .post(gateway.url(&format!("/v1/topics/{topic}/events")))
            .header("Idempotency-Key", key)
            .header("Content-Type", "application/json")
            .body("{}");
        async move { request.send().await.unwrap() }
    };
    let mapped = post(Some((&ca, "orders")), "k-1").await;
    assert_eq!(mapped.status(), 201);
    // Its key is the principal's: the same certificate replays it.
    let again = post(Some((&ca, "orders")), "k-1").await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    for (identity, what) in [
        (Some((&ca, "stranger")), "a certificate mapped to no client"),
        (None, "no certificate and no key"),
    ] {
        let refused = post(identity, "k-2").await;
        assert_eq!(refused.status(), 401, "{what}");
        assert_eq!(
            refused.headers()["www-authenticate"],
            r#"Bearer realm="ackgate""#
        );
    }
    let records = consume_to_end(&kafka_brokers(), &topic, 1);
    assert_eq!(records.len(), 1);
    gateway.stop().await;
    let _ = std::fs::remove_file(auth_file);
}
