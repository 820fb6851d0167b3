//! Real `ackgate serve` processes, as an operator runs them: started from the binary cargo
//! built, stopped with real signals, logging JSON lines to files the test reads afterwards.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::{Reply, free_port, send, unique};

/// What the gateway logs (WARN, with `topic`, `idempotency_key` and `attempt`) when it claims a
/// key whose previous owner did not settle it before its lease ran out.
pub const TAKEOVER_MESSAGE: &str = "took over the key of a gateway that did not settle it in time";

/// The binary, with none of the caller's `ACKGATE_*` settings: the test decides every one.
pub fn ackgate() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ackgate"));
    for (key, _) in std::env::vars() {
        if key.starts_with("ACKGATE_") && !key.starts_with("ACKGATE_TEST_") {
            command.env_remove(key);
        }
    }
    command
}

/// `ackgate serve --no-auth` with these flags and environment, which must stop at start-up:
/// its standard error. The spool is never the default in the working directory, whose lock
/// would outlive the test.
pub fn serve_refused(args: &[&str], env: &[(&str, &str)]) -> String {
    let spool = std::env::temp_dir().join(format!("{}.spool", super::unique("refused")));
    let output = ackgate()
        .arg("serve")
        .arg("--no-auth")
        .args(["--listen", "127.0.0.1:0"])
        .args(["--failure-spool-path", &spool.display().to_string()])
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(!output.status.success(), "{args:?} {env:?} must fail");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// One gateway, restartable on the same port; every start logs to a file of its own.
pub struct Gateway {
    pub port: u16,
    args: Vec<String>,
    dir: PathBuf,
    child: Option<Child>,
    /// One per start, in order: its JSON log and whether it was SIGKILLed (which may cut its
    /// last line).
    runs: Vec<(PathBuf, bool)>,
}

impl Gateway {
    /// A gateway on a free port with these `ackgate serve` flags (besides `--listen` and
    /// `--log-format json`, which it sets itself). Not started yet.
    pub fn new<S: AsRef<str>>(args: &[S]) -> Gateway {
        let dir = std::env::temp_dir().join(unique("ackgate-logs"));
        std::fs::create_dir_all(&dir).expect("a log directory");
        Gateway {
            port: free_port(),
            args: args.iter().map(|a| a.as_ref().to_owned()).collect(),
            dir,
            child: None,
            runs: Vec::new(),
        }
    }

    /// Starts the process and waits until it accepts connections.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let n = self.runs.len();
        let log = self.dir.join(format!("{}-run{n}.jsonl", self.port));
        let stderr = self.dir.join(format!("{}-run{n}.stderr", self.port));
        let mut child = ackgate()
            .arg("serve")
            // These tests are about delivery, not access: the gateway runs open.
            .arg("--no-auth")
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--log-format", "json"])
            .args(&self.args)
            .stdout(std::fs::File::create(&log).expect("log file"))
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .stdin(Stdio::null())
            .spawn()
            .expect("ackgate serve starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "ackgate serve exited ({status}) before listening: {}",
                    std::fs::read_to_string(&stderr).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "ackgate serve did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child = Some(child);
        self.runs.push((log, false));
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Sends `signal` (`-KILL`, `-TERM`, …) and waits for the process to exit.
    pub fn signal(&mut self, signal: &str) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let sent = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill {signal} {}", child.id());
        if signal == "-KILL" {
            self.runs.last_mut().expect("a run").1 = true;
        }
        Some(child.wait().expect("wait for ackgate"))
    }

    /// Sends `signal` without waiting; [`Gateway::wait`] collects the exit.
    pub fn signal_nowait(&mut self, signal: &str) {
        let child = self.child.as_ref().expect("running");
        let sent = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill {signal} {}", child.id());
    }

    /// Waits up to `limit` for the process to exit; `None` if it is still running then.
    pub fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            let child = self.child.as_mut()?;
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill(&mut self) -> Option<ExitStatus> {
        self.signal("-KILL")
    }

    /// Every log line of every start, parsed. A line that is not JSON fails the test, except the
    /// last line of a run that was SIGKILLed, which the kill may have cut.
    pub fn log_lines(&self) -> Vec<serde_json::Value> {
        let mut parsed = Vec::new();
        for (path, killed) in &self.runs {
            let text = std::fs::read_to_string(path).expect("log file");
            let lines: Vec<&str> = text.lines().collect();
            for (i, line) in lines.iter().enumerate() {
                match serde_json::from_str(line) {
                    Ok(value) => parsed.push(value),
                    Err(_) if *killed && i + 1 == lines.len() => {}
                    Err(e) => panic!("{}: not a JSON log line ({e}): {line}", path.display()),
                }
            }
        }
        parsed
    }

    /// The takeover warnings this gateway logged, over all its starts.
    pub fn takeovers(&self) -> Vec<Takeover> {
        self.log_lines()
            .iter()
            .filter(|l| {
                l["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(TAKEOVER_MESSAGE))
            })
            .map(|l| {
                assert_eq!(l["level"], "WARN", "a takeover is a warning: {l}");
                Takeover {
                    topic: l["topic"].as_str().expect("topic field").to_owned(),
                    idempotency_key: l["idempotency_key"]
                        .as_str()
                        .expect("idempotency_key field")
                        .to_owned(),
                    attempt: l["attempt"].as_u64().expect("attempt field"),
                }
            })
            .collect()
    }

    /// Where this gateway's logs are (for failure messages).
    pub fn log_dir(&self) -> &std::path::Path {
        &self.dir
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One takeover warning, as logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Takeover {
    pub topic: String,
    pub idempotency_key: String,
    pub attempt: u64,
}

/// `ackgate audit` of `topic` against the 201 bodies in `acks_file`, as an operator runs it:
/// its exit status and JSON report.
pub fn audit(
    brokers: &str,
    topic: &str,
    acks_file: &std::path::Path,
) -> (Option<i32>, serde_json::Value) {
    let audit = ackgate()
        .args(["audit", "--kafka-brokers", brokers, "--topic", topic])
        .args(["--acks", &acks_file.display().to_string(), "--json"])
        .output()
        .expect("ackgate audit runs");
    let report = serde_json::from_slice(&audit.stdout).unwrap_or_else(|e| {
        panic!(
            "ackgate audit prints JSON ({e}): {}{}",
            String::from_utf8_lossy(&audit.stdout),
            String::from_utf8_lossy(&audit.stderr)
        )
    });
    (audit.status.code(), report)
}

/// Publishes events with many record keys through a gateway process, so that its producer has
/// its id, the metadata and a connection to every partition leader before a test slows the
/// brokers down (a message for a leader not yet connected under injected latency times out
/// unsent).
pub async fn warm_up(client: &reqwest::Client, gateway: &Gateway, topic: &str) {
    for i in 0..30 {
        let reply = post(
            client,
            gateway,
            topic,
            &unique("warm-up"),
            "{}",
            &[("Kafka-Key", &format!("warm-{i}"))],
        )
        .await;
        assert_eq!(reply.status, 201, "warm-up publishes: {}", reply.body);
    }
}

/// `POST /v1/topics/{topic}/events` to a gateway process, JSON body, with extra headers.
pub async fn post(
    client: &reqwest::Client,
    gateway: &Gateway,
    topic: &str,
    key: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut request = client
        .post(gateway.url(&format!("/v1/topics/{topic}/events")))
        .header("Idempotency-Key", key)
        .header("Content-Type", "application/json")
        .body(body.to_owned());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(request).await
}
