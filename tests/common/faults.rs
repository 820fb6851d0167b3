//! What fault tests read and start besides the app: metric values from `/metrics`, the raw
//! idempotency record in Redis, a Redis started with flags of the test's choosing, and a
//! gateway in a process of its own that a test can SIGKILL.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{Reply, TestApp, free_port, unique};

/// Tests that make the producer hit a fatal error take this lock, so that the process-wide
/// `ackgate_producer_rebuilds_total` moves only because of the test that holds it (every app
/// in one test binary shares one metrics recorder).
pub static PRODUCER_FAULTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The value of one sample in Prometheus text, `sample` being the name with its labels exactly
/// as exposed (`ackgate_dedupe_outcomes_total{outcome="takeover"}`); 0 when absent, as a
/// counter that was never incremented.
pub fn metric_value(metrics: &str, sample: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let value = line.strip_prefix(sample)?.strip_prefix(' ')?;
            Some(value.trim().parse().expect("a sample value is a number"))
        })
        .unwrap_or(0.0)
}

impl TestApp {
    /// One sample of this app's `/metrics` (see [`metric_value`]).
    pub async fn metric(&self, sample: &str) -> f64 {
        let metrics = self.metrics().await;
        assert_eq!(metrics.status, 200, "{}", metrics.body);
        metric_value(&metrics.body, sample)
    }
}

/// The Redis key of an idempotency record of an open gateway's principal
/// (`<prefix>:i:anonymous:<topic>:<key>`).
pub fn idempotency_record_key(prefix: &str, topic: &str, key: &str) -> String {
    format!("{prefix}:i:anonymous:{topic}:{key}")
}

/// The idempotency record of (`topic`, `key`) under `prefix`, decoded into named fields (`state`,
/// `owner` in hex, `attempt`, `lease_until`, `suspect_since`, `accepted`, `maybe_duplicate`,
/// `partition`, `offset`, `timestamp_ms`, `status`, `body`); empty when there is none. The
/// layout is `src/idempotency/redis/record.rs`'s, read here independently of the gateway.
pub async fn idempotency_record(
    url: &str,
    prefix: &str,
    topic: &str,
    key: &str,
) -> HashMap<String, String> {
    let mut conn = redis_connection(url).await;
    let record: Option<Vec<u8>> = redis::cmd("GET")
        .arg(idempotency_record_key(prefix, topic, key))
        .query_async(&mut conn)
        .await
        .expect("GET");
    record.map(|r| decode_record(&r)).unwrap_or_default()
}

fn decode_record(r: &[u8]) -> HashMap<String, String> {
    let be = |range: std::ops::Range<usize>| -> i64 {
        r[range].iter().fold(0_i64, |n, &b| (n << 8) | i64::from(b))
    };
    let mut fields = HashMap::new();
    let mut put = |name: &str, value: String| {
        fields.insert(name.to_owned(), value);
    };
    let state = match r[0].to_ascii_uppercase() {
        b'I' => "in_flight",
        b'D' => "done",
        b'F' => "failed",
        b'R' => "released",
        other => panic!("unknown record state {other}"),
    };
    put("state", state.to_owned());
    if r[0].is_ascii_lowercase() {
        put("maybe_duplicate", "1".to_owned());
    }
    put("owner", hex::encode(&r[17..25]));
    match state {
        "in_flight" => {
            put("lease_until", be(25..33).to_string());
            if be(33..41) != 0 {
                put("suspect_since", be(33..41).to_string());
            }
            put("attempt", be(41..45).to_string());
            put("accepted", char::from(r[45]).to_string());
        }
        "done" => {
            put("partition", (be(25..29) as i32).to_string());
            put("offset", be(29..37).to_string());
            put("timestamp_ms", be(37..r.len()).to_string());
        }
        _ => {
            put("attempt", be(25..29).to_string());
            put("status", be(29..31).to_string());
            put("body", String::from_utf8_lossy(&r[31..]).into_owned());
        }
    }
    fields
}

pub async fn redis_connection(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("a Redis URL")
        .get_multiplexed_async_connection()
        .await
        .expect("Redis answers")
}

/// Redis's own clock in milliseconds, the clock leases are counted on.
pub async fn redis_now_ms(url: &str) -> i64 {
    let mut conn = redis_connection(url).await;
    let (secs, micros): (i64, i64) = redis::cmd("TIME")
        .query_async(&mut conn)
        .await
        .expect("TIME");
    secs * 1000 + micros / 1000
}

/// A Redis server of the test's own with extra flags (e.g. an eviction policy), stopped on
/// drop. (Never the shared one on 6379.)
pub struct RedisWith {
    pub port: u16,
    child: Child,
}

impl RedisWith {
    pub fn start(flags: &[&str]) -> RedisWith {
        let port = free_port();
        let server = std::env::var("ACKGATE_TEST_REDIS_SERVER")
            .unwrap_or_else(|_| "redis-server".to_owned());
        let child = Command::new(server)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(flags)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts (install it, or run scripts/test.sh)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "own redis did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        RedisWith { port, child }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisWith {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ackgate serve` in a process of its own, so that a test can kill it the way a crash does:
/// no drain, no settle, nothing flushed.
pub struct GatewayProcess {
    pub port: u16,
    child: Option<Child>,
}

impl GatewayProcess {
    /// Starts `ackgate serve` on a free port with `args` added, and waits until it listens.
    pub fn start(args: &[&str]) -> GatewayProcess {
        let port = free_port();
        let spool = std::env::temp_dir().join(format!("{}.spool", unique("ackgate")));
        let child = Command::new(env!("CARGO_BIN_EXE_ackgate"))
            .arg("serve")
            .arg("--no-auth")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--failure-spool-path", &spool.display().to_string()])
            .args(["--log-filter", "warn"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ackgate serve starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the gateway did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        GatewayProcess {
            port,
            child: Some(child),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `POST /v1/topics/{topic}/events` to this process.
    pub async fn post_event(&self, topic: &str, key: &str, body: &str) -> reqwest::Result<Reply> {
        let response = reqwest::Client::new()
            .post(self.url(&format!("/v1/topics/{topic}/events")))
            .header("Idempotency-Key", key)
            .header("Content-Type", "application/json")
            .body(body.to_owned())
            .send()
            .await?;
        Ok(Reply::from(response).await)
    }

    /// SIGKILL: the process dies wherever it is.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP proxy in front of a broker that can swallow the broker's replies: the requests still
/// reach the broker (so a produce is appended), but the client never hears back and, after its
/// `socket.timeout.ms`, gives up on the request, reconnects and sends it again.
///
/// It runs on a runtime of its own, so that it keeps relaying while the test blocks (reading
/// the topic back with a synchronous consumer).
pub struct ReplyEatingProxy {
    pub port: u16,
    listener: Option<std::net::TcpListener>,
    /// Connections with an id up to this one get no more replies.
    silenced_upto: Arc<AtomicU64>,
    opened: Arc<AtomicU64>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl ReplyEatingProxy {
    /// Takes a free port, so that a broker can advertise it before the proxy forwards.
    pub fn bind() -> ReplyEatingProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener.set_nonblocking(true).unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("the proxy's runtime");
        ReplyEatingProxy {
            port: listener.local_addr().unwrap().port(),
            listener: Some(listener),
            silenced_upto: Arc::new(AtomicU64::new(0)),
            opened: Arc::new(AtomicU64::new(0)),
            runtime: Some(runtime),
        }
    }

    /// Starts relaying every connection to `upstream`.
    pub fn forward_to(&mut self, upstream: std::net::SocketAddr) {
        let listener = self.listener.take().expect("forwarding once");
        let silenced_upto = self.silenced_upto.clone();
        let opened = self.opened.clone();
        let runtime = self.runtime.as_ref().unwrap();
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            while let Ok((client, _)) = listener.accept().await {
                let id = opened.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::spawn(relay(client, upstream, id, silenced_upto.clone()));
            }
        });
    }

    /// Every connection open now gets no further reply from the broker; connections opened
    /// later (the client's reconnects) pass everything.
    pub fn silence_open_connections(&self) {
        self.silenced_upto
            .store(self.opened.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

impl Drop for ReplyEatingProxy {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

async fn relay(
    client: tokio::net::TcpStream,
    upstream: std::net::SocketAddr,
    id: u64,
    silenced_upto: Arc<AtomicU64>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
        return;
    };
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    let requests = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut from_client, &mut to_server).await;
        let _ = to_server.shutdown().await;
    });
    let mut buf = vec![0; 64 * 1024];
    loop {
        match from_server.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) if id <= silenced_upto.load(Ordering::SeqCst) => {}
            Ok(n) => {
                if to_client.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    requests.abort();
}

/// A Tansu broker of the test's own (in-memory storage), advertising `advertised_port` to
/// clients, so that a proxy on that port sees every connection. Stopped on drop.
pub struct OwnTansu {
    pub listen: std::net::SocketAddr,
    child: Child,
}

impl OwnTansu {
    pub fn start(advertised_port: u16) -> OwnTansu {
        let repo = env!("CARGO_MANIFEST_DIR");
        let path = Command::new("bash")
            .arg(format!("{repo}/scripts/tansu.sh"))
            .arg("path")
            .stderr(Stdio::inherit())
            .output()
            .expect("scripts/tansu.sh path");
        assert!(path.status.success(), "scripts/tansu.sh path failed");
        let binary = String::from_utf8(path.stdout).unwrap().trim().to_owned();
        let port = free_port();
        let child = Command::new(binary)
            .arg("broker")
            .args(["--listener-url", &format!("tcp://127.0.0.1:{port}")])
            .args([
                "--advertised-listener-url",
                &format!("tcp://127.0.0.1:{advertised_port}"),
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu starts");
        let listen: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(listen).is_err() {
            assert!(Instant::now() < deadline, "tansu did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        OwnTansu { listen, child }
    }
}

impl Drop for OwnTansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
