//! A Redis Cluster of a test's own (3 masters, 3 replicas), started and stopped with
//! `scripts/redis-cluster.sh`, whose nodes the test can kill.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// A running cluster; stopped (and its files removed) when dropped.
pub struct Cluster {
    base: u16,
    /// The seed nodes' URLs, comma-separated, as `--redis-url` takes them.
    pub seeds: String,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/redis-cluster.sh")
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

impl Cluster {
    /// Six nodes on free consecutive ports (each at most 55535: the bus port is +10000).
    pub fn start() -> Cluster {
        Cluster::start_on(free_range())
    }

    /// The seed URLs a cluster on `base` will have, before it is started.
    pub fn seeds_on(base: u16) -> String {
        (base..base + 3)
            .map(|port| format!("redis://127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Six nodes from `base` on.
    pub fn start_on(base: u16) -> Cluster {
        let output = Command::new("bash")
            .arg(script())
            .args(["start", &base.to_string()])
            .output()
            .expect("scripts/redis-cluster.sh runs");
        assert!(
            output.status.success(),
            "the test cluster did not start: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let seeds = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        Cluster { base, seeds }
    }

    fn ports(&self) -> impl Iterator<Item = u16> + use<> {
        self.base..self.base + 6
    }

    /// The masters' ports, as the cluster sees them now.
    pub fn masters(&self) -> Vec<u16> {
        let nodes = self
            .ports()
            .map(|port| redis_cli(port, &["cluster", "nodes"]))
            .find(|nodes| !nodes.trim().is_empty())
            .expect("a node answers CLUSTER NODES");
        nodes
            .lines()
            .filter(|line| line.contains("master") && !line.contains("fail"))
            .filter_map(|line| {
                let address = line.split_whitespace().nth(1)?;
                address.split(['@', ':']).nth(1)?.parse().ok()
            })
            .collect()
    }

    /// The port of the master that serves `key` now.
    pub fn master_of(&self, key: &str) -> u16 {
        let slot: u16 = redis_cli(self.base, &["cluster", "keyslot", key])
            .trim()
            .parse()
            .expect("CLUSTER KEYSLOT answers a number");
        // A master's line in CLUSTER NODES ends with the slot ranges it owns, `start-end`.
        let nodes = redis_cli(self.base, &["cluster", "nodes"]);
        nodes
            .lines()
            .filter(|line| line.contains("master"))
            .find_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let owns = fields.iter().skip(8).any(|range| {
                    let (start, end) = range.split_once('-').unwrap_or((range, range));
                    matches!((start.parse::<u16>(), end.parse::<u16>()),
                        (Ok(start), Ok(end)) if (start..=end).contains(&slot))
                });
                owns.then(|| fields[1].split(['@', ':']).nth(1)?.parse().ok())
                    .flatten()
            })
            .expect("a master owns the slot")
    }

    /// SIGKILLs the node on `port`.
    pub fn kill(&self, port: u16) {
        let pid_file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!(
            "target/redis-cluster-{}/{port}/redis.pid",
            self.base
        ));
        let pid = std::fs::read_to_string(&pid_file).expect("the node's pid file");
        let killed = Command::new("kill")
            .args(["-KILL", pid.trim()])
            .status()
            .expect("kill runs");
        assert!(killed.success(), "kill -KILL {}", pid.trim());
    }

    /// Waits until the live nodes have marked the killed master `victim` failed and agree that
    /// every slot has a master again (its replica promoted). Returns how long that took.
    pub fn wait_for_failover(&self, victim: u16, limit: Duration) -> Duration {
        let started = Instant::now();
        let victim = format!("127.0.0.1:{victim}@");
        loop {
            let live: Vec<u16> = self
                .ports()
                .filter(|&port| !redis_cli(port, &["ping"]).is_empty())
                .collect();
            let failed = live.iter().all(|&port| {
                redis_cli(port, &["cluster", "nodes"])
                    .lines()
                    .any(|line| line.contains(&victim) && line.contains("fail"))
            });
            let ok = live
                .iter()
                .all(|&port| redis_cli(port, &["cluster", "info"]).contains("cluster_state:ok"));
            if !live.is_empty() && failed && ok {
                return started.elapsed();
            }
            assert!(started.elapsed() < limit, "no failover after {limit:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `SCRIPT FLUSH` on every live node: what a promoted replica that never loaded the
    /// scripts looks like.
    pub fn flush_scripts(&self) {
        for port in self.ports() {
            redis_cli(port, &["script", "flush"]);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .args(["stop", &self.base.to_string()])
            .output();
    }
}

/// A first port whose six ports, and their bus ports, are free.
pub fn free_range() -> u16 {
    loop {
        let base = super::free_redis_port();
        if base > 55_530 {
            continue;
        }
        let free = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
        if (base..base + 6).all(|port| free(port) && free(port + 10_000)) {
            return base;
        }
    }
}
