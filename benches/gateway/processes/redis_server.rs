//! A `redis-server` of the bench's own, on a free port, with no persistence (`--save ''
//! --appendonly no`) and otherwise Redis's defaults: the memory phase measures what the
//! gateway's records cost in a Redis that holds nothing else.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener as StdListener, TcpStream as StdStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

pub(crate) struct RedisServer {
    child: Child,
    pub(crate) port: u16,
    dir: PathBuf,
}

impl RedisServer {
    /// Starts `bin` with its files under `work_dir/name`, and waits until it answers PING.
    pub(crate) async fn start(bin: &Path, work_dir: &Path, name: &str) -> anyhow::Result<Self> {
        let dir = work_dir.join(name);
        std::fs::create_dir_all(&dir)?;
        let port = StdListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let log = std::fs::File::create(dir.join("redis.log"))?;
        let child = Command::new(bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {} (--redis-server)", bin.display()))?;
        let mut server = RedisServer { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !server.pong() {
            if let Some(status) = server.child.try_wait()? {
                bail!("{} exited at start-up ({status})", bin.display());
            }
            if Instant::now() > deadline {
                bail!("{} did not answer PING within 10 s", bin.display());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(server)
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn pong(&self) -> bool {
        let Ok(mut stream) = StdStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut answer = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut answer).is_ok()
            && &answer == b"+PONG\r\n"
    }

    /// SIGTERM (nothing to save), SIGKILL if it has not exited in 10 s; its files go.
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        Ok(())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
