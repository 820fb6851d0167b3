//! What `/proc` says about a process (its CPU-seconds and memory) and about the whole machine
//! (busy and total jiffies): the [`Probes`] a phase samples around its measured window.

use std::process::Command;
use std::sync::OnceLock;

/// Clock ticks per second: the unit of `/proc/<pid>/stat`'s CPU times.
pub(crate) fn clock_ticks_per_sec() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// utime + stime of a process (all its threads), seconds; `None` once it is gone.
pub(crate) fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name may contain spaces: fields are counted after its closing parenthesis.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks_per_sec())
}

/// A `/proc/<pid>/status` memory line (VmHWM, VmRSS), MiB.
pub(crate) fn status_mib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The processes whose CPU a phase reports besides its own.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Probes {
    pub(crate) gateway: Option<u32>,
    pub(crate) broker: Option<u32>,
    pub(crate) redis: Option<u32>,
}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CpuSample {
    pub(crate) this: f64,
    pub(crate) gateway: Option<f64>,
    pub(crate) broker: Option<f64>,
    pub(crate) redis: Option<f64>,
    /// The whole machine: (busy, total) jiffies summed over every core, from /proc/stat.
    pub(crate) machine: Option<(f64, f64)>,
}

/// Busy and total jiffies of all cores: how much CPU was left on the machine.
fn machine_jiffies() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let values: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|v| v.parse().ok())
        .collect();
    if values.len() < 8 {
        return None;
    }
    let total: f64 = values.iter().sum();
    Some((total - values[3] - values[4], total))
}

impl Probes {
    pub(crate) fn sample(&self) -> CpuSample {
        CpuSample {
            this: cpu_seconds(None).unwrap_or(0.0),
            gateway: self.gateway.and_then(|p| cpu_seconds(Some(p))),
            broker: self.broker.and_then(|p| cpu_seconds(Some(p))),
            redis: self.redis.and_then(|p| cpu_seconds(Some(p))),
            machine: machine_jiffies(),
        }
    }
}

pub(crate) fn delta(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(b? - a?)
}
