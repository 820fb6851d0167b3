//! HAProxy in front of gateway processes, as an operator runs it: Debian's binary, a config the
//! test writes, health checks on each gateway's `/readyz` (admin port), one log line per
//! request in a file the test reads, and its view of each server through its admin socket.
//!
//! `scripts/test.sh` installs Debian's `haproxy` when it is missing; `ACKGATE_TEST_HAPROXY`
//! names another binary.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, unique};

/// How often HAProxy checks each gateway's `/readyz`, and how many checks in a row mark it
/// down (`fall`) or up again (`rise`): a dead gateway is out of the rotation within
/// `CHECK_INTERVAL × FALL` plus one check's timeout.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(300);
pub const FALL: u32 = 2;
pub const RISE: u32 = 2;

/// One gateway as the balancer sees it: the client port it forwards to, the admin port it
/// checks.
#[derive(Debug, Clone)]
pub struct Server {
    pub name: String,
    pub port: u16,
    pub admin_port: u16,
}

/// A running HAProxy; stopped (SIGKILL) when dropped, and its directory removed unless the
/// test failed.
pub struct Haproxy {
    pub port: u16,
    dir: PathBuf,
    child: Child,
}

impl Haproxy {
    /// The HAProxy to run: `ACKGATE_TEST_HAPROXY`, else Debian's `/usr/sbin/haproxy`, else
    /// `haproxy` on the PATH; `None` when there is none.
    pub fn binary() -> Option<String> {
        if let Ok(path) = std::env::var("ACKGATE_TEST_HAPROXY") {
            return Some(path);
        }
        ["/usr/sbin/haproxy", "haproxy"]
            .into_iter()
            .find(|candidate| {
                Command::new(candidate)
                    .arg("-v")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|status| status.success())
            })
            .map(str::to_owned)
    }

    /// Starts `binary` in front of `servers` and waits until it accepts connections.
    pub fn start(binary: &str, servers: &[Server]) -> Haproxy {
        Haproxy::start_with(binary, servers, true)
    }

    /// [`start`](Haproxy::start), and with `redispatch` false a balancer that never sends a
    /// refused connection to another server (HAProxy's default): what a gateway must survive
    /// by itself with `--drain-delay-ms`.
    pub fn start_with(binary: &str, servers: &[Server], redispatch: bool) -> Haproxy {
        let dir = std::env::temp_dir().join(unique("haproxy"));
        std::fs::create_dir_all(&dir).expect("a directory for haproxy");
        let port = free_port();
        let config = dir.join("haproxy.cfg");
        std::fs::write(&config, config_text(&dir, port, servers, redispatch)).expect("haproxy.cfg");
        let checked = Command::new(binary)
            .args(["-c", "-q", "-f"])
            .arg(&config)
            .output()
            .expect("haproxy -c runs");
        assert!(
            checked.status.success(),
            "haproxy refuses {}: {}",
            config.display(),
            String::from_utf8_lossy(&checked.stderr)
        );
        let child = Command::new(binary)
            // -db: in the foreground, not as a daemon, so the test owns the process.
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .stdout(std::fs::File::create(dir.join("requests.log")).expect("log file"))
            .stderr(std::fs::File::create(dir.join("haproxy.stderr")).expect("stderr file"))
            .stdin(Stdio::null())
            .spawn()
            .expect("haproxy starts");
        let haproxy = Haproxy { port, dir, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "haproxy did not listen: {}",
                std::fs::read_to_string(haproxy.dir.join("haproxy.stderr")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        haproxy
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Where its config and logs are (for failure messages).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// `show stat` on the admin socket: one row per frontend, backend and server, each a map
    /// from the CSV header's column names (`svname`, `status`, `stot`, `wretr`, …) to values.
    pub fn stats(&self) -> Vec<HashMap<String, String>> {
        let mut socket =
            UnixStream::connect(self.dir.join("admin.sock")).expect("haproxy's admin socket");
        socket
            .write_all(b"show stat\n")
            .expect("write to the socket");
        let mut text = String::new();
        socket
            .read_to_string(&mut text)
            .expect("read from the socket");
        let mut lines = text.lines();
        let header: Vec<&str> = lines
            .next()
            .and_then(|line| line.strip_prefix("# "))
            .unwrap_or_else(|| panic!("show stat answered no CSV header: {text}"))
            .split(',')
            .collect();
        lines
            .filter(|line| !line.is_empty())
            .map(|line| {
                header
                    .iter()
                    .zip(line.split(','))
                    .map(|(name, value)| ((*name).to_owned(), value.to_owned()))
                    .collect()
            })
            .collect()
    }

    /// The row of server `name` (or `BACKEND`) of the gateways' backend.
    pub fn row(&self, name: &str) -> HashMap<String, String> {
        self.stats()
            .into_iter()
            .find(|row| row["pxname"] == "gateways" && row["svname"] == name)
            .unwrap_or_else(|| panic!("haproxy has no row for {name}"))
    }

    /// The health-check status of server `name`: `UP`, `DOWN`, or a transition such as
    /// `UP 1/2` (one failed check of the two that mark it down).
    pub fn status(&self, name: &str) -> String {
        self.row(name)["status"].clone()
    }

    /// Waits up to `limit` until server `name` has `status`; how long that took.
    pub async fn wait_for_status(
        &self,
        name: &str,
        status: &str,
        limit: Duration,
    ) -> Option<Duration> {
        let since = Instant::now();
        while since.elapsed() < limit {
            if self.status(name) == status {
                return Some(since.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// Every request HAProxy logged so far.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        let text = std::fs::read_to_string(self.dir.join("requests.log")).unwrap_or_default();
        text.lines().filter_map(LoggedRequest::parse).collect()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The request log is what explains a failure: it stays when the test panicked.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// One line of the request log (`log-format` in [`config_text`]).
#[derive(Debug, Clone)]
pub struct LoggedRequest {
    /// When HAProxy accepted the request, in Unix milliseconds.
    pub accepted_ms: u64,
    /// The server that answered (the last one tried), or `<NOSRV>`.
    pub server: String,
    pub status: u16,
    /// How often HAProxy tried again (`%rc`: a `+` prefix when it went to another server).
    pub retries: String,
    /// Total time, from accept to the last byte, in milliseconds.
    pub total_ms: u64,
    /// How the session ended (`%tsc`): `----` for a normal end.
    pub termination: String,
    pub idempotency_key: String,
}

impl LoggedRequest {
    fn parse(line: &str) -> Option<LoggedRequest> {
        let mut fields = line.split_whitespace();
        let (seconds, millis) = fields.next()?.split_once('.')?;
        Some(LoggedRequest {
            accepted_ms: seconds.parse::<u64>().ok()? * 1000 + millis.parse::<u64>().ok()?,
            server: fields.next()?.to_owned(),
            status: fields.next()?.parse().ok()?,
            retries: fields.next()?.to_owned(),
            total_ms: fields.next()?.parse().ok()?,
            termination: fields.next()?.to_owned(),
            idempotency_key: fields
                .next()?
                .trim_start_matches('{')
                .trim_end_matches('}')
                .to_owned(),
        })
    }

    /// When HAProxy sent the last byte of the answer, in Unix milliseconds.
    pub fn finished_ms(&self) -> u64 {
        self.accepted_ms + self.total_ms
    }
}

/// The configuration: one frontend on `port`, one backend of `servers`, the admin socket in
/// `dir`, request lines on standard output.
fn config_text(dir: &std::path::Path, port: u16, servers: &[Server], redispatch: bool) -> String {
    let i = CHECK_INTERVAL.as_millis();
    let servers: String = servers
        .iter()
        .map(|s| {
            format!(
                "    server {} 127.0.0.1:{} check port {}\n",
                s.name, s.port, s.admin_port
            )
        })
        .collect();
    format!(
        r#"global
    maxconn 4096
    stats socket {socket} mode 600 level admin
    log stdout format raw local0 info

defaults
    mode http
    log global
    timeout connect 1s
    timeout client 30s
    # Above the gateways' --wait-timeout-ms: a request waits for its delivery report.
    timeout server 30s
    timeout http-request 10s
    timeout http-keep-alive 10s
    timeout check 2s
    # A connection a gateway refused is tried again on another gateway: nothing was sent, so
    # this is always safe. A gateway closes its ports the moment it gets SIGTERM, and until
    # the checks mark it down its connections are refused; HAProxy's default (no redispatch)
    # tries the same port again and then answers 503: 6 failed requests in a run of the drain
    # scenario (27 with no retries at all), none with these two lines.
    retries 3
{redispatch}
    # A request sent to a gateway that closed the connection without a word (killed while it
    # held the request, or a keep-alive connection it closed as the request arrived) is sent
    # again to another gateway: "empty-response". The request may have reached the first
    # gateway, so this is safe only for requests the gateway recognises when they come again —
    # see `disable-l7-retry` in the backend. Without it, the requests a killed gateway held
    # reach their clients as errors; with it, as the 409 of a key still in flight (which the
    # client retries until the key is taken over) or as a 201.
    retry-on conn-failure empty-response

frontend api
    bind 127.0.0.1:{port}
    http-request capture req.hdr(Idempotency-Key) len 100
    log-format "%Ts.%ms %s %ST %rc %Tt %tsc %hr"
    default_backend gateways

backend gateways
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    # What may be sent twice. An event carries its Idempotency-Key (a batch, one per event in
    # its body): a second copy of one that the first gateway claimed gets 409 and then the
    # first answer, never a second record; one the first gateway never saw is published once.
    # A GET changes nothing. Anything else (an operator's retry or discard of a failure record)
    # is left to the client: only a refused connection is tried again.
    acl replay_safe method GET HEAD
    acl replay_safe req.hdr(Idempotency-Key) -m found
    acl replay_safe path_end :batch
    http-request disable-l7-retry unless replay_safe
    default-server check inter {i}ms fastinter {i}ms downinter {i}ms fall {FALL} rise {RISE}
{servers}"#,
        socket = dir.join("admin.sock").display(),
        redispatch = if redispatch {
            "    option redispatch 1"
        } else {
            "    # No redispatch here: a refused connection is tried on the same server only."
        },
    )
}
