//! TLS peers for the tests: a test CA made with `openssl`, a TLS terminator (`stunnel`) in
//! front of a Kafka broker, and a Redis server that speaks only TLS.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, free_redis_port, unique};

/// A CA of the test's own, with a server certificate for `localhost`/`127.0.0.1` and a client
/// certificate, all signed by it; files live until the value is dropped.
pub struct TestCa {
    dir: PathBuf,
}

impl TestCa {
    pub fn new() -> TestCa {
        let dir = std::env::temp_dir().join(unique("ackgate-ca"));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = TestCa { dir };
        ca.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=ackgate test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        std::fs::write(
            ca.dir.join("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .unwrap();
        ca.issue("server", "/CN=localhost", Some("server.ext"));
        ca.issue("client", "/CN=ackgate", None);
        ca
    }

    /// A file of this CA: `ca.pem`, `server.pem`, `server.key`, `client.pem`, `client.key`.
    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_owned()
    }

    /// Issues `NAME.pem` and `NAME.key` for `subject`, an X.509 v3 certificate with
    /// `extensions` in `openssl x509 -extfile` syntax, e.g.
    /// `subjectAltName=DNS:localhost,IP:127.0.0.1` (rustls takes only v3 certificates; the ones
    /// [`TestCa::new`] issues without extensions are v1).
    pub fn issue_v3(&self, name: &str, subject: &str, extensions: &str) {
        let file = format!("{name}.ext");
        std::fs::write(self.dir.join(&file), format!("{extensions}\n")).unwrap();
        self.issue(name, subject, Some(&file));
    }

    fn issue(&self, name: &str, subject: &str, extensions: Option<&str>) {
        let (key, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        self.openssl(&[
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", subject, "-keyout", &key, "-out", &csr,
        ]);
        let mut sign = vec![
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
        ];
        if let Some(extensions) = extensions {
            sign.extend(["-extfile", extensions]);
        }
        self.openssl(&sign);
    }

    fn openssl(&self, args: &[&str]) {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(&self.dir)
            .output()
            .expect("openssl runs (scripts/test.sh installs it)");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `stunnel` accepting TLS on `port` and forwarding plain TCP to `upstream`, with the CA's
/// server certificate; with `require_client_cert`, only clients presenting a certificate signed
/// by the CA get through (mTLS).
pub struct Stunnel {
    child: Child,
    dir: PathBuf,
}

impl Stunnel {
    pub fn start(ca: &TestCa, port: u16, upstream: SocketAddr, require_client_cert: bool) -> Self {
        let dir = std::env::temp_dir().join(unique("stunnel"));
        std::fs::create_dir_all(&dir).unwrap();
        let verify = if require_client_cert {
            format!(
                "verifyChain = yes\nrequireCert = yes\nCAfile = {}\n",
                ca.path("ca.pem")
            )
        } else {
            String::new()
        };
        let config = format!(
            "foreground = yes\npid =\nsyslog = no\n[kafka]\naccept = 127.0.0.1:{port}\n\
             connect = {upstream}\ncert = {}\nkey = {}\n{verify}",
            ca.path("server.pem"),
            ca.path("server.key"),
        );
        let config_path = dir.join("stunnel.conf");
        std::fs::write(&config_path, config).unwrap();
        let child = Command::new(stunnel_binary())
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("stunnel starts (scripts/test.sh installs stunnel4)");
        wait_for_port(port, "stunnel");
        Stunnel { child, dir }
    }
}

impl Drop for Stunnel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn stunnel_binary() -> &'static str {
    let found = |name: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if found("stunnel4") {
        "stunnel4"
    } else {
        "stunnel"
    }
}

/// A Redis server that accepts only TLS, with the CA's server certificate, and an ACL user
/// `ackgate` (password `s3cret-pass`) while the default user is disabled.
pub struct TlsRedis {
    pub port: u16,
    child: Child,
}

pub const REDIS_USER: &str = "ackgate";
pub const REDIS_PASSWORD: &str = "s3cret-pass";

impl TlsRedis {
    pub fn start(ca: &TestCa, require_client_cert: bool) -> TlsRedis {
        let port = free_redis_port();
        let server = std::env::var("ACKGATE_TEST_REDIS_SERVER")
            .unwrap_or_else(|_| "redis-server".to_owned());
        let child = Command::new(server)
            .args(["--port", "0", "--bind", "127.0.0.1"])
            .args(["--tls-port", &port.to_string()])
            .args(["--tls-cert-file", &ca.path("server.pem")])
            .args(["--tls-key-file", &ca.path("server.key")])
            .args(["--tls-ca-cert-file", &ca.path("ca.pem")])
            .args([
                "--tls-auth-clients",
                if require_client_cert { "yes" } else { "no" },
            ])
            .args(["--save", "", "--appendonly", "no"])
            // One ACL rule per argument: redis-server joins them into one `user` line.
            .args(["--user", "default", "off"])
            .args(["--user", REDIS_USER, "on", &format!(">{REDIS_PASSWORD}")])
            .args(["~*", "&*", "+@all"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        wait_for_port(port, "redis-server --tls-port");
        TlsRedis { port, child }
    }

    /// `rediss://` with the ACL user and password.
    pub fn url(&self) -> String {
        format!(
            "rediss://{REDIS_USER}:{REDIS_PASSWORD}@localhost:{}",
            self.port
        )
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free port for a TLS terminator (the broker must be told it before the terminator runs).
pub fn tls_port() -> u16 {
    free_port()
}

fn wait_for_port(port: u16, what: &str) {
    let address: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(address).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SCRAM credentials of the SASL test broker.
pub const SASL_USER: &str = "gateway";
pub const SASL_PASSWORD: &str = "scram-s3cret";

/// A Tansu broker that requires SASL/SCRAM-SHA-512, reachable only through TLS on `port`
/// (stunnel in front; the broker advertises that port). SCRAM users live in the broker's
/// storage and its CLI cannot authenticate, so the user and `topics` are created on a first run
/// without authentication, and the broker is started again on the same SQLite file with it.
pub struct SaslKafka {
    pub port: u16,
    tansu: Child,
    _stunnel: Stunnel,
    dir: PathBuf,
}

impl SaslKafka {
    /// `None` when this machine has no Tansu with SQLite storage (said loudly by the caller's
    /// harness).
    pub fn start(ca: &TestCa, topics: &[&str]) -> Option<SaslKafka> {
        let binary = super::tansu::Broker::binary(super::tansu::Storage::Sqlite)?;
        let dir = std::env::temp_dir().join(unique("tansu-sasl"));
        std::fs::create_dir_all(&dir).unwrap();
        let (inner, port) = (free_port(), free_port());
        let inner_url = format!("tcp://127.0.0.1:{inner}");
        let broker = |advertised: &str, authentication: bool| {
            let mut command = Command::new(&binary);
            command
                .arg("broker")
                .args(["--listener-url", &inner_url])
                .args(["--advertised-listener-url", advertised])
                .args(["--storage-engine", "sqlite://tansu.db"])
                .current_dir(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if authentication {
                command.arg("--authentication");
            }
            let child = command.spawn().expect("tansu starts");
            wait_for_port(inner, "tansu");
            child
        };
        let cli = |args: &[&str]| {
            let status = Command::new(&binary)
                .args(args)
                .args(["--broker", &inner_url])
                .stdout(Stdio::null())
                .status()
                .expect("the tansu CLI runs");
            assert!(status.success(), "tansu {args:?} failed");
        };
        let mut setup = broker(&inner_url, false);
        cli(&[
            "user",
            "create",
            SASL_USER,
            SASL_PASSWORD,
            "--mechanism",
            "scram512",
        ]);
        for topic in topics {
            cli(&["topic", "create", topic, "--partitions", "1"]);
        }
        let _ = setup.kill();
        let _ = setup.wait();
        let tansu = broker(&format!("tcp://127.0.0.1:{port}"), true);
        let stunnel = Stunnel::start(ca, port, ([127, 0, 0, 1], inner).into(), false);
        Some(SaslKafka {
            port,
            tansu,
            _stunnel: stunnel,
            dir,
        })
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// librdkafka properties for SASL_SSL with SCRAM-SHA-512 and `password`.
    pub fn properties(&self, ca: &TestCa, password: &str) -> Vec<(String, String)> {
        [
            ("security.protocol", "SASL_SSL".to_owned()),
            ("ssl.ca.location", ca.path("ca.pem")),
            ("sasl.mechanism", "SCRAM-SHA-512".to_owned()),
            ("sasl.username", SASL_USER.to_owned()),
            ("sasl.password", password.to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}

impl Drop for SaslKafka {
    fn drop(&mut self) {
        let _ = self.tansu.kill();
        let _ = self.tansu.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
