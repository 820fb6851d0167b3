//! The gateway as a process: `ackgate serve` started fresh for a phase on a free port, waited
//! for until `/readyz` answers, its RSS read from `/proc`, and stopped with SIGTERM.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::cli::{Args, TTL_SECS};
use crate::processes::procfs::status_mib;

pub(crate) struct Gateway {
    child: Child,
    pub(crate) pid: u32,
    pub(crate) addr: SocketAddr,
    log: PathBuf,
    spool: PathBuf,
}

impl Gateway {
    pub(crate) async fn start(
        args: &Args,
        prefix: &str,
        name: &str,
        extra: &[String],
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&args.work_dir)?;
        let log = args.work_dir.join(format!("{name}.log"));
        let spool = args.work_dir.join(format!("{name}.spool"));
        let port = StdListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let out = std::fs::File::create(&log)?;
        let mut command = Command::new(&args.gateway_bin);
        command
            .arg("serve")
            .arg("--no-auth")
            .args(["--listen", &addr.to_string()])
            .args(["--kafka-brokers", &args.brokers])
            .args(["--redis-url", &args.redis_url])
            .args(["--redis-key-prefix", prefix])
            .args(["--idempotency-ttl-secs", &TTL_SECS.to_string()])
            .arg("--failure-spool-path")
            .arg(&spool)
            .args(args.gateway_args.split_whitespace())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", args.gateway_bin.display()))?;
        let pid = child.id();
        let mut gateway = Gateway {
            child,
            pid,
            addr,
            log,
            spool,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = gateway.child.try_wait()? {
                bail!(
                    "the gateway exited at start-up ({status}); log:\n{}",
                    gateway.log_tail()
                );
            }
            if readyz(addr) {
                return Ok(gateway);
            }
            if Instant::now() > deadline {
                bail!(
                    "the gateway was not ready within 30 s; log:\n{}",
                    gateway.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    pub(crate) fn peak_rss_mib(&self) -> Option<f64> {
        status_mib(self.pid, "VmHWM:")
    }

    pub(crate) fn rss_mib(&self) -> Option<f64> {
        status_mib(self.pid, "VmRSS:")
    }

    /// SIGTERM, as an orchestrator stops it; SIGKILL if it has not drained in 40 s.
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(40);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("the gateway did not stop within 40 s of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = std::fs::remove_file(&self.log);
        let _ = std::fs::remove_file(&self.spool);
        Ok(())
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Whether `GET /readyz` answers 200 (Redis and Kafka reachable).
fn readyz(addr: SocketAddr) -> bool {
    let Ok(mut stream) = StdStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET /readyz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && &head[9..12] == b"200"
}
