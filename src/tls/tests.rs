use std::process::Command;

use super::*;

/// A directory of certificates made with `openssl` (self-signed, so each is its own CA).
struct Files(PathBuf);

impl Files {
    fn new() -> Files {
        let dir = std::env::temp_dir().join(format!("ackgate-tls-unit-{}", ulid::Ulid::new()));
        std::fs::create_dir_all(&dir).unwrap();
        Files(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// `NAME.pem` and `NAME.key`, self-signed for `subject`, with `-addext` extensions.
    fn self_signed(&self, name: &str, subject: &str, extensions: &[&str]) {
        let (cert, key) = (format!("{name}.pem"), format!("{name}.key"));
        let mut args = vec![
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            subject,
            "-keyout",
            &key,
            "-out",
            &cert,
        ];
        for extension in extensions {
            args.extend(["-addext", extension]);
        }
        let output = Command::new("openssl")
            .args(&args)
            .current_dir(&self.0)
            .output()
            .expect("openssl runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn listener(&self, cert: &str, key: &str, ca: Option<&str>) -> ListenerTls {
        ListenerTls {
            tls_cert_file: Some(self.path(cert)),
            tls_key_file: Some(self.path(key)),
            tls_client_ca_file: ca.map(|ca| self.path(ca)),
        }
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn der(path: &Path) -> Vec<u8> {
    CertificateDer::from_pem_file(path).unwrap().to_vec()
}

#[test]
fn a_client_certificate_names_its_common_name_then_its_dns_and_uri_names() {
    let files = Files::new();
    files.self_signed(
        "client",
        "/O=ackgate/CN=orders-service",
        &[
            "subjectAltName=DNS:orders.internal,URI:spiffe://example.org/ns/prod/sa/orders,\
           IP:10.0.0.1,email:ops@example.org,DNS:orders.example.org",
        ],
    );
    let names = ClientCertificate::from_der(&der(&files.path("client.pem")))
        .unwrap()
        .names;
    assert_eq!(
        names,
        [
            "orders-service",
            "orders.internal",
            "spiffe://example.org/ns/prod/sa/orders",
            "orders.example.org"
        ]
    );
    assert_eq!(ClientCertificate::from_der(b"not a certificate"), None);
}

#[test]
fn flags_that_need_each_other_are_refused_in_one_line() {
    let listener = |cert: bool, key: bool, ca: bool| ListenerTls {
        tls_cert_file: cert.then(|| "c.pem".into()),
        tls_key_file: key.then(|| "k.pem".into()),
        tls_client_ca_file: ca.then(|| "ca.pem".into()),
    };
    for (cert, key, ca, named) in [
        (true, false, false, "--tls-cert-file needs --tls-key-file"),
        (false, true, false, "--tls-key-file needs --tls-cert-file"),
        (
            false,
            false,
            true,
            "--tls-client-ca-file needs --tls-cert-file",
        ),
        (true, false, true, "--tls-cert-file needs --tls-key-file"),
    ] {
        let error = listener(cert, key, ca).validate().unwrap_err();
        assert!(error.starts_with(named), "{error}");
        assert!(!error.contains('\n'), "{error}");
    }
    assert!(listener(true, true, true).validate().is_ok());
    assert!(
        listener(false, false, false)
            .server_config()
            .unwrap()
            .is_none()
    );
}

#[test]
fn files_that_cannot_be_used_are_named_with_their_flag() {
    let files = Files::new();
    files.self_signed("server", "/CN=localhost", &[]);
    files.self_signed("other", "/CN=other", &[]);
    std::fs::write(files.path("garbage.pem"), "hello, not PEM").unwrap();
    let private_key = std::fs::read_to_string(files.path("server.key")).unwrap();
    let cases = [
        (
            files.listener("missing.pem", "server.key", None),
            "--tls-cert-file: cannot read",
        ),
        (
            files.listener("garbage.pem", "server.key", None),
            "--tls-cert-file:",
        ),
        (
            files.listener("server.key", "server.key", None),
            "holds no PEM certificate",
        ),
        (
            files.listener("server.pem", "missing.key", None),
            "--tls-key-file: cannot read",
        ),
        (
            files.listener("server.pem", "server.pem", None),
            "holds no PEM private key",
        ),
        (
            files.listener("server.pem", "other.key", None),
            "does not match the certificate",
        ),
        (
            files.listener("server.pem", "server.key", Some("garbage.pem")),
            "--tls-client-ca-file:",
        ),
    ];
    for (listener, expected) in cases {
        let error = listener.server_config().err().expect("refused");
        assert!(error.contains(expected), "{expected}: {error}");
        assert!(!error.contains('\n'), "{error}");
        assert!(
            !error.contains(private_key.lines().nth(1).unwrap()),
            "{error}"
        );
    }
}

#[test]
fn a_usable_configuration_offers_h2_and_http1_and_knows_its_expiry() {
    let files = Files::new();
    files.self_signed("server", "/CN=localhost", &[]);
    files.self_signed(
        "ca",
        "/CN=client CA",
        &["basicConstraints=critical,CA:TRUE"],
    );
    let loaded = files
        .listener("server.pem", "server.key", Some("ca.pem"))
        .server_config()
        .unwrap()
        .unwrap();
    assert_eq!(
        loaded.config.alpn_protocols,
        [b"h2".to_vec(), b"http/1.1".to_vec()]
    );
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!(
        (now..now + 2 * 86_400).contains(&loaded.not_after),
        "{}",
        loaded.not_after
    );
}

#[test]
fn a_broken_new_file_keeps_the_old_configuration() {
    let files = Files::new();
    files.self_signed("server", "/CN=localhost", &[]);
    let server = ServerTls::load(&files.listener("server.pem", "server.key", None))
        .unwrap()
        .unwrap();
    let before = server.acceptor().config().clone();
    std::fs::write(files.path("server.pem"), "truncated").unwrap();
    let error = server.reload().unwrap_err();
    assert!(error.contains("--tls-cert-file"), "{error}");
    assert!(Arc::ptr_eq(&before, server.acceptor().config()));

    files.self_signed("server", "/CN=localhost", &[]);
    server.reload().unwrap();
    assert!(!Arc::ptr_eq(&before, server.acceptor().config()));
}
