//! The gateway against its physical limits, in one run on one machine: the raw idempotent
//! producer, the raw Redis claim + settle scripts, and the gateway process under keep-alive
//! HTTP/1.1 load, each with the same number of events outstanding (the window).
//!
//! Run it through `scripts/bench.sh [--quick]`, which starts a broker, makes sure Redis runs,
//! builds `target/release/ackgate` and this binary, and passes where everything is. The numbers
//! are measurements, never assertions: the binary fails only when the benchmark itself is
//! broken (errors, no throughput, answers other than the expected ones beyond a tiny tolerance).
//!
//! Phases, for every window W:
//! - `raw_producer`: a `ThreadedProducer` configured as the gateway's keeps W unique events
//!   outstanding; latency is send → delivery report.
//! - `raw_redis`: W tasks on one multiplexed connection run the gateway's CLAIM then SETTLE
//!   scripts on unique keys; latency is claim + settle.
//! - `gateway_unique`: W keep-alive HTTP/1.1 connections post unique events with unique keys to
//!   a fresh `ackgate serve` process; latency is request → whole response.
//! - `gateway_dup10`: the same, with one request in ten a retry of an answered event (replayed).
//!
//! Then, at half the gateway's best throughput, `gateway_fixed` and `raw_producer_fixed` at the
//! same open-loop rate (latency from the intended send time); then `overload`: one gateway with
//! `--max-in-flight` = W, closed-loop load, then 4× the sustainable rate open-loop, then
//! closed-loop load again, with a per-second timeline of answers, RSS and CPU.
//!
//! With `--soak-secs`, one gateway also runs that long at the largest window, its RSS and CPU
//! sampled every second, to show that memory settles instead of growing.

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::{DeliveryResult, Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext};
use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::Serialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// librdkafka's `delivery.timeout.ms` as the gateway sets it by default (`--delivery-timeout-ms`).
const DELIVERY_TIMEOUT_MS: u64 = 30_000;
/// The gateway's lease on a claimed key: delivery timeout + 10 s (see `Settings::lease`).
const LEASE_MS: u64 = DELIVERY_TIMEOUT_MS + 10_000;
/// Idempotency TTL for the bench's records (the keys are also deleted after each phase).
const TTL_SECS: u64 = 3_600;
/// A request or delivery that takes longer than this is counted as a timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(45);
/// Open-loop phases: a send this late against its schedule is charged from the schedule
/// (the client was queueing); below it, the lateness is timer slack and not charged.
const TIMER_SLACK: Duration = Duration::from_millis(2);
/// Overload phase: tickets this late are skipped (the generator cannot keep up), not sent.
const OVERLOAD_SKIP_LATE: Duration = Duration::from_secs(1);
/// How `perf record` samples the gateway (`--perf`).
const PERF_RECORD: &str = "-F 249 --call-graph dwarf,32768";
/// Largest latency recorded, in microseconds.
const MAX_LATENCY_US: u64 = 120_000_000;
/// Answers other than the expected ones tolerated before the bench counts as broken.
const TOLERATED_FAILURE_RATIO: f64 = 0.005;

#[derive(Debug, Clone, Parser)]
#[command(about = "ackgate benchmark: raw producer, raw Redis and the gateway, same window")]
struct Args {
    /// Kafka bootstrap servers (a broker of the bench's own: topics are created per phase).
    #[arg(long, env = "ACKGATE_BENCH_KAFKA_BROKERS", default_value = "")]
    brokers: String,
    #[arg(
        long,
        env = "ACKGATE_BENCH_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    redis_url: String,
    /// The gateway binary (`cargo build --release --bin ackgate`).
    #[arg(
        long,
        env = "ACKGATE_BENCH_GATEWAY_BIN",
        default_value = "target/release/ackgate"
    )]
    gateway_bin: PathBuf,
    /// Extra `ackgate serve` flags for every gateway, whitespace-separated.
    #[arg(long, env = "ACKGATE_BENCH_GATEWAY_ARGS", default_value = "")]
    gateway_args: String,
    /// Events outstanding at once, per phase.
    #[arg(
        long,
        env = "ACKGATE_BENCH_WINDOWS",
        value_delimiter = ',',
        default_value = "64,256,1024"
    )]
    windows: Vec<usize>,
    /// Measured seconds per phase.
    #[arg(long, env = "ACKGATE_BENCH_DURATION_SECS", default_value_t = 15.0)]
    duration: f64,
    /// Unmeasured seconds at the start of each phase.
    #[arg(long, env = "ACKGATE_BENCH_WARMUP_SECS", default_value_t = 2.0)]
    warmup: f64,
    /// Body size of each event, bytes.
    #[arg(long, env = "ACKGATE_BENCH_EVENT_BYTES", default_value_t = 1024)]
    event_bytes: usize,
    /// Partitions of each phase's topic.
    #[arg(long, env = "ACKGATE_BENCH_PARTITIONS", default_value_t = 3)]
    partitions: i32,
    /// Share of requests that are retries of answered events, in the duplicate mix (percent).
    #[arg(long, env = "ACKGATE_BENCH_DUPLICATE_PERCENT", default_value_t = 10)]
    duplicate_percent: u32,
    /// Window of the fixed-rate comparison and of the overload phase (default: 256 if measured,
    /// else the largest window).
    #[arg(long, env = "ACKGATE_BENCH_REFERENCE_WINDOW")]
    reference_window: Option<usize>,
    /// Skip the fixed-rate (half of max throughput) comparison.
    #[arg(long)]
    no_fixed_rate: bool,
    /// Skip the overload phase.
    #[arg(long)]
    no_overload: bool,
    /// Only the gateway phases (to compare gateway builds or flags quickly).
    #[arg(long)]
    gateway_only: bool,
    /// Seconds at 4× the sustainable rate in the overload phase.
    #[arg(long, env = "ACKGATE_BENCH_OVERLOAD_SECS", default_value_t = 15.0)]
    overload_secs: f64,
    /// Seconds of closed-loop load before and after the overload.
    #[arg(long, env = "ACKGATE_BENCH_CALM_SECS", default_value_t = 5.0)]
    calm_secs: f64,
    /// Seconds of the soak phase (0: none): one gateway under closed-loop load at the largest
    /// window, RSS sampled every second (`scripts/bench.sh --soak`: 600).
    #[arg(long, env = "ACKGATE_BENCH_SOAK_SECS", default_value_t = 0.0)]
    soak_secs: f64,
    /// Connections of the overload segment (default: 4 × the reference window).
    #[arg(long, env = "ACKGATE_BENCH_OVERLOAD_CONNECTIONS")]
    overload_connections: Option<usize>,
    /// Profile one extra gateway_unique phase (reference window) with `perf record`.
    #[arg(long, env = "ACKGATE_BENCH_PERF")]
    perf: bool,
    /// Where the .jsonl, .md and .svg go.
    #[arg(long, env = "ACKGATE_BENCH_OUT_DIR", default_value = "bench/results")]
    out_dir: PathBuf,
    /// Where scratch files (gateway logs, spools, perf data) go.
    #[arg(long, env = "ACKGATE_BENCH_WORK_DIR", default_value = "target/bench")]
    work_dir: PathBuf,
    /// The broker's pid, to report its CPU.
    #[arg(long, env = "ACKGATE_BENCH_BROKER_PID")]
    broker_pid: Option<u32>,
    /// The broker's version, for the report.
    #[arg(long, env = "ACKGATE_BENCH_BROKER_VERSION", default_value = "unknown")]
    broker_version: String,
    /// A short run (CI): label only; the windows and durations come from the flags.
    #[arg(long)]
    quick: bool,
    /// Print the report of an existing `perf record` file of the gateway, and exit.
    #[arg(long, value_name = "PERF_DATA")]
    perf_report: Option<PathBuf>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

// ---------------------------------------------------------------------------------------------
// /proc: CPU and memory of a process.

fn clock_ticks_per_sec() -> f64 {
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
fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
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
fn status_mib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The processes whose CPU a phase reports besides its own.
#[derive(Debug, Clone, Copy, Default)]
struct Probes {
    gateway: Option<u32>,
    broker: Option<u32>,
    redis: Option<u32>,
}

#[derive(Debug, Clone, Copy, Default)]
struct CpuSample {
    this: f64,
    gateway: Option<f64>,
    broker: Option<f64>,
    redis: Option<f64>,
    /// The whole machine: (busy, total) jiffies summed over every core, from /proc/stat.
    machine: Option<(f64, f64)>,
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
    fn sample(&self) -> CpuSample {
        CpuSample {
            this: cpu_seconds(None).unwrap_or(0.0),
            gateway: self.gateway.and_then(|p| cpu_seconds(Some(p))),
            broker: self.broker.and_then(|p| cpu_seconds(Some(p))),
            redis: self.redis.and_then(|p| cpu_seconds(Some(p))),
            machine: machine_jiffies(),
        }
    }
}

fn delta(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(b? - a?)
}

// ---------------------------------------------------------------------------------------------
// Tallies: latencies and answers, shared by the workers of one phase.

fn histogram(significant: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, significant).expect("valid histogram bounds")
}

fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).clamp(1, MAX_LATENCY_US)
}

/// How an answer is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// 201 (or a broker acknowledgement / a settled key in the raw phases).
    Ok,
    /// 201 with `Idempotent-Replayed: true`.
    Replayed,
    /// 503 `overloaded` with `Retry-After`.
    Shed,
    /// Anything else.
    Other,
}

struct Tally {
    ok: Histogram<u64>,
    replayed: Histogram<u64>,
    shed: Histogram<u64>,
    /// Answers by kind ("201", "201 replayed", "503 overloaded", "409", "error: …").
    answers: BTreeMap<String, u64>,
    /// Tickets skipped because the generator was behind (overload only).
    skipped: u64,
    reconnects: u64,
}

impl Tally {
    fn new() -> Self {
        Tally {
            ok: histogram(3),
            replayed: histogram(3),
            shed: histogram(3),
            answers: BTreeMap::new(),
            skipped: 0,
            reconnects: 0,
        }
    }

    fn record(&mut self, outcome: Outcome, answer: &str, latency: Duration) {
        let us = micros(latency);
        match outcome {
            Outcome::Ok => self.ok.saturating_record(us),
            Outcome::Replayed => self.replayed.saturating_record(us),
            Outcome::Shed => self.shed.saturating_record(us),
            Outcome::Other => {}
        }
        // Counted without allocating: the map has a handful of kinds.
        match self.answers.get_mut(answer) {
            Some(count) => *count += 1,
            None => {
                self.answers.insert(answer.to_owned(), 1);
            }
        }
    }

    fn successes(&self) -> u64 {
        self.ok.len() + self.replayed.len()
    }

    fn failures(&self) -> u64 {
        let total: u64 = self.answers.values().sum();
        total - self.successes() - self.shed.len()
    }
}

/// One second of the overload timeline.
struct SecondBucket {
    ok: u64,
    shed: u64,
    other: u64,
    skipped: u64,
    ok_latency: Histogram<u64>,
}

/// Answers per second since `origin`, across the segments of the overload phase.
struct Timeline {
    origin: Instant,
    seconds: Vec<SecondBucket>,
}

impl Timeline {
    fn bucket(&mut self, at: Instant) -> &mut SecondBucket {
        let index = at.saturating_duration_since(self.origin).as_secs() as usize;
        while self.seconds.len() <= index {
            self.seconds.push(SecondBucket {
                ok: 0,
                shed: 0,
                other: 0,
                skipped: 0,
                ok_latency: histogram(2),
            });
        }
        &mut self.seconds[index]
    }

    fn record(&mut self, at: Instant, outcome: Outcome, latency: Duration) {
        let bucket = self.bucket(at);
        match outcome {
            Outcome::Ok | Outcome::Replayed => {
                bucket.ok += 1;
                bucket.ok_latency.saturating_record(micros(latency));
            }
            Outcome::Shed => bucket.shed += 1,
            Outcome::Other => bucket.other += 1,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Pacing.

/// The measured part of a phase: `[measure_from, end)`; load runs over `[begin, end)`.
#[derive(Debug, Clone, Copy)]
struct Window {
    begin: Instant,
    measure_from: Instant,
    end: Instant,
}

impl Window {
    fn starting_now(warmup: f64, duration: f64) -> Window {
        let begin = Instant::now();
        let measure_from = begin + Duration::from_secs_f64(warmup);
        Window {
            begin,
            measure_from,
            end: measure_from + Duration::from_secs_f64(duration),
        }
    }

    fn counts(&self, done: Instant) -> bool {
        done >= self.measure_from && done < self.end
    }

    fn seconds(&self) -> f64 {
        (self.end - self.measure_from).as_secs_f64()
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Pace {
    /// Each worker sends its next event as soon as it has the previous answer.
    Closed,
    /// Open loop at this rate (events/s), at most `window` outstanding. Latency counts from the
    /// intended send time (no coordinated omission).
    Rate(f64),
    /// Open loop, overload: latency counts from the actual send; tickets more than
    /// [`OVERLOAD_SKIP_LATE`] late are skipped.
    Overload(f64),
}

struct Tickets {
    pace: Pace,
    window: Window,
    next: AtomicU64,
}

impl Tickets {
    fn new(pace: Pace, window: Window) -> Self {
        Tickets {
            pace,
            window,
            next: AtomicU64::new(0),
        }
    }

    /// The next event's intended send time, or `None` once the phase is over.
    fn take(&self) -> Option<Instant> {
        let at = match self.pace {
            Pace::Closed => Instant::now(),
            Pace::Rate(rate) | Pace::Overload(rate) => {
                let i = self.next.fetch_add(1, Ordering::Relaxed);
                self.window.begin + Duration::from_secs_f64(i as f64 / rate)
            }
        };
        (at < self.window.end).then_some(at)
    }

    /// Waits for the ticket's time. `false`: skip it (overload, too late).
    async fn wait(&self, at: Instant) -> bool {
        let now = Instant::now();
        if at > now {
            tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
            return true;
        }
        !matches!(self.pace, Pace::Overload(_)) || now - at <= OVERLOAD_SKIP_LATE
    }

    /// Where a latency starts.
    fn origin(&self, intended: Instant, sent: Instant) -> Instant {
        match self.pace {
            Pace::Rate(_) if sent.saturating_duration_since(intended) > TIMER_SLACK => intended,
            _ => sent,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Events.

/// Makes the unique events of one phase: a JSON body of exactly `bytes` bytes, and its key.
#[derive(Clone)]
struct Events {
    run: String,
    bytes: usize,
}

impl Events {
    fn key(&self, worker: usize, seq: u64) -> String {
        format!("{}-{worker}-{seq}", self.run)
    }

    fn body(&self, key: &str) -> Bytes {
        let head = format!("{{\"key\":\"{key}\",\"pad\":\"");
        let tail = "\"}";
        let pad = self.bytes.saturating_sub(head.len() + tail.len());
        let mut body = String::with_capacity(self.bytes.max(head.len() + tail.len()));
        body.push_str(&head);
        body.extend(std::iter::repeat_n('x', pad));
        body.push_str(tail);
        Bytes::from(body)
    }
}

/// Whether request number `n` of a worker is a retry, spreading `percent` evenly.
fn is_duplicate(n: u64, percent: u32) -> bool {
    let p = u64::from(percent.min(100));
    p > 0 && (n + 1) * p / 100 != n * p / 100
}

// ---------------------------------------------------------------------------------------------
// Raw producer.

/// The gateway's producer settings, from the gateway's own code: the raw producer phase is
/// only the gateway's physical limit while it is configured exactly the same way.
fn gateway_producer_config(brokers: &str) -> ClientConfig {
    let settings = ackgate::settings::Settings {
        delivery_timeout_ms: DELIVERY_TIMEOUT_MS,
        ..ackgate::settings::Settings::defaults()
    };
    ackgate::publisher::producer_config(&ackgate::publisher::PublisherConfig::new(
        brokers.to_owned(),
        &settings,
    ))
}

/// One outstanding event: when its latency starts, and its place in the window.
struct Outstanding {
    origin: Instant,
    _slot: OwnedSemaphorePermit,
}

struct RawContext {
    tally: Arc<Mutex<Tally>>,
    window: Window,
}

impl ClientContext for RawContext {}

impl ProducerContext for RawContext {
    type DeliveryOpaque = Box<Outstanding>;

    fn delivery(&self, result: &DeliveryResult<'_>, outstanding: Box<Outstanding>) {
        let done = Instant::now();
        if self.window.counts(done) {
            let latency = done - outstanding.origin;
            let mut tally = self.tally.lock().unwrap_or_else(|e| e.into_inner());
            match result {
                Ok(_) => tally.record(Outcome::Ok, "ack", latency),
                Err((error, _)) => {
                    tally.record(Outcome::Other, &format!("error: {error}"), latency)
                }
            }
        }
        // Dropping `outstanding` frees its slot in the window.
    }
}

struct RawProducerLoad<'a> {
    brokers: &'a str,
    topic: &'a str,
    events: Events,
    window_size: usize,
    pace: Pace,
    window: Window,
}

async fn run_raw_producer(load: RawProducerLoad<'_>) -> anyhow::Result<Tally> {
    let tally = Arc::new(Mutex::new(Tally::new()));
    let producer: ThreadedProducer<RawContext> = gateway_producer_config(load.brokers)
        .create_with_context(RawContext {
            tally: tally.clone(),
            window: load.window,
        })
        .context("creating the raw producer")?;
    let slots = Arc::new(Semaphore::new(load.window_size));
    let tickets = Tickets::new(load.pace, load.window);
    let mut seq = 0u64;
    while let Some(at) = tickets.take() {
        tickets.wait(at).await;
        let slot = slots.clone().acquire_owned().await?;
        seq += 1;
        let key = load.events.key(0, seq);
        let body = load.events.body(&key);
        // The record as the gateway builds it (src/publisher/mod.rs `publish_once`): value,
        // headers content-type and idempotency-key, creation timestamp.
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "content-type",
                value: Some("application/json"),
            })
            .insert(Header {
                key: "idempotency-key",
                value: Some(key.as_bytes()),
            });
        let sent = Instant::now();
        let outstanding = Box::new(Outstanding {
            origin: tickets.origin(at, sent),
            _slot: slot,
        });
        let record =
            BaseRecord::<(), [u8], Box<Outstanding>>::with_opaque_to(load.topic, outstanding)
                .payload(body.as_ref())
                .headers(headers)
                .timestamp(now_ms());
        if let Err((error, _record)) = producer.send(record) {
            // Not enqueued (queue full): counted, and the slot is freed with the record.
            if load.window.counts(sent) {
                let mut tally = tally.lock().unwrap_or_else(|e| e.into_inner());
                tally.record(
                    Outcome::Other,
                    &format!("not enqueued: {error}"),
                    Duration::ZERO,
                );
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    // Every outstanding event gets its report before the next phase starts.
    let all = u32::try_from(load.window_size).unwrap_or(u32::MAX);
    if tokio::time::timeout(REQUEST_TIMEOUT, slots.acquire_many(all))
        .await
        .is_err()
    {
        bail!("the raw producer still had events outstanding after {REQUEST_TIMEOUT:?}");
    }
    let flushed = tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(10)));
    flushed.await?.context("flushing the raw producer")?;
    Ok(take_tally(tally))
}

fn take_tally(tally: Arc<Mutex<Tally>>) -> Tally {
    match Arc::try_unwrap(tally) {
        Ok(mutex) => mutex.into_inner().unwrap_or_else(|e| e.into_inner()),
        Err(shared) => std::mem::replace(
            &mut *shared.lock().unwrap_or_else(|e| e.into_inner()),
            Tally::new(),
        ),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Raw Redis: the gateway's scripts.

/// A connection manager configured as the gateway's (`redis_connection` in src/lib.rs).
async fn redis_connection(url: &str) -> anyhow::Result<ConnectionManager> {
    let client = redis::Client::open(url).context("invalid Redis URL")?;
    let timeout = Duration::from_millis(1000);
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(1));
    ConnectionManager::new_with_config(client, config)
        .await
        .context("connecting to Redis")
}

struct RawRedisLoad {
    conn: ConnectionManager,
    /// The gateway's key layout: `<prefix>:idem:<topic>:<key>`.
    prefix: String,
    topic: String,
    events: Events,
    window_size: usize,
    window: Window,
}

async fn run_raw_redis(load: RawRedisLoad) -> anyhow::Result<Tally> {
    let tally = Arc::new(Mutex::new(Tally::new()));
    let load = Arc::new(load);
    let tickets = Arc::new(Tickets::new(Pace::Closed, load.window));
    let scripts = Arc::new((
        Script::new(ackgate::idempotency::CLAIM_SCRIPT),
        Script::new(ackgate::idempotency::SETTLE_SCRIPT),
    ));
    let ttl_ms = TTL_SECS * 1000;
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..load.window_size {
        let (load, tickets, scripts, tally) = (
            load.clone(),
            tickets.clone(),
            scripts.clone(),
            tally.clone(),
        );
        workers.spawn(async move {
            let mut conn = load.conn.clone();
            let (claim, settle) = &*scripts;
            let mut seq = 0u64;
            while tickets.take().is_some() {
                seq += 1;
                let key = load.events.key(worker, seq);
                let record = format!("{}:idem:{}:{}", load.prefix, load.topic, key);
                let owner = ulid::Ulid::new().to_string();
                let fingerprint = format!("{:032x}{:032x}", seq, worker);
                // The answer the gateway stores for a persisted event.
                let answer = format!(
                    "{{\"status\":\"persisted\",\"topic\":\"{}\",\"partition\":{},\"offset\":{seq},\
                     \"timestamp\":\"2026-11-23T14:00:00.123Z\",\"idempotency_key\":\"{key}\"}}",
                    load.topic,
                    worker % 3
                );
                let sent = Instant::now();
                let result: redis::RedisResult<(Vec<String>, i64)> = async {
                    let claimed: Vec<String> = claim
                        .key(&record)
                        .arg(&owner)
                        .arg(&fingerprint)
                        .arg(LEASE_MS)
                        .arg(ttl_ms)
                        .arg("0")
                        .invoke_async(&mut conn)
                        .await?;
                    let settled: i64 = settle
                        .key(&record)
                        .arg(&owner)
                        .arg("done")
                        .arg(201)
                        .arg(&answer)
                        .arg(ttl_ms)
                        .invoke_async(&mut conn)
                        .await?;
                    Ok((claimed, settled))
                }
                .await;
                let done = Instant::now();
                if !load.window.counts(done) {
                    continue;
                }
                let (outcome, answer) = match &result {
                    Ok((claimed, 1)) if claimed.first().map(String::as_str) == Some("claimed") => {
                        (Outcome::Ok, "claimed+settled".to_owned())
                    }
                    Ok((claimed, settled)) => (
                        Outcome::Other,
                        format!("unexpected: {claimed:?} / {settled}"),
                    ),
                    Err(error) => (Outcome::Other, format!("error: {:?}", error.kind())),
                };
                tally.lock().unwrap_or_else(|e| e.into_inner()).record(
                    outcome,
                    &answer,
                    done - sent,
                );
            }
        });
    }
    while let Some(joined) = workers.join_next().await {
        joined.context("a raw Redis worker panicked")?;
    }
    Ok(take_tally(tally))
}

/// Deletes every key under `prefix` (the bench's, never anyone else's).
async fn delete_keys(conn: &mut ConnectionManager, prefix: &str) -> anyhow::Result<u64> {
    let pattern = format!("{prefix}:*");
    let mut cursor: u64 = 0;
    let mut deleted = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(5000)
            .query_async(conn)
            .await?;
        if !keys.is_empty() {
            let n: u64 = redis::cmd("UNLINK").arg(&keys).query_async(conn).await?;
            deleted += n;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}

/// `INFO server` fields: the Redis server's pid (for its CPU) and version.
async fn redis_server_info(conn: &mut ConnectionManager) -> (Option<u32>, String) {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(conn)
        .await
        .unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
    };
    let pid = field("process_id").and_then(|p| p.parse().ok());
    // Only a Redis on this machine has its CPU in our /proc.
    let local_pid = pid.filter(|pid| Path::new(&format!("/proc/{pid}")).exists());
    (
        local_pid,
        field("redis_version").unwrap_or_else(|| "unknown".into()),
    )
}

// ---------------------------------------------------------------------------------------------
// The gateway process.

struct Gateway {
    child: Child,
    pid: u32,
    addr: SocketAddr,
    log: PathBuf,
    spool: PathBuf,
}

impl Gateway {
    async fn start(
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

    fn peak_rss_mib(&self) -> Option<f64> {
        status_mib(self.pid, "VmHWM:")
    }

    fn rss_mib(&self) -> Option<f64> {
        status_mib(self.pid, "VmRSS:")
    }

    /// SIGTERM, as an orchestrator stops it; SIGKILL if it has not drained in 40 s.
    async fn stop(mut self) -> anyhow::Result<()> {
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

/// The RSS and CPU-seconds of the gateway, Redis and the broker at one moment of a phase.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Seconds since the phase's origin.
    at: f64,
    rss: Option<f64>,
    cpu: Option<f64>,
    redis_rss: Option<f64>,
    redis_cpu: Option<f64>,
    broker_rss: Option<f64>,
    broker_cpu: Option<f64>,
}

/// Samples the probed processes once a second until stopped (overload and soak timelines).
struct Sampler {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Vec<Sample>>,
}

impl Sampler {
    fn start(origin: Instant, probes: Probes) -> Sampler {
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let rss = |pid: Option<u32>| pid.and_then(|p| status_mib(p, "VmRSS:"));
        let task = tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => samples.push(Sample {
                        at: origin.elapsed().as_secs_f64(),
                        rss: rss(probes.gateway),
                        cpu: cpu_seconds(probes.gateway),
                        redis_rss: rss(probes.redis),
                        redis_cpu: cpu_seconds(probes.redis),
                        broker_rss: rss(probes.broker),
                        broker_cpu: cpu_seconds(probes.broker),
                    }),
                    _ = &mut stopped => return samples,
                }
            }
        });
        Sampler { stop, task }
    }

    async fn stop(self) -> anyhow::Result<Samples> {
        let _ = self.stop.send(());
        Ok(Samples(self.task.await?))
    }
}

struct Samples(Vec<Sample>);

impl Samples {
    /// The sample nearest to `t` seconds.
    fn at(&self, t: f64) -> Option<Sample> {
        self.0
            .iter()
            .min_by(|a, b| (a.at - t).abs().total_cmp(&(b.at - t).abs()))
            .copied()
    }

    /// CPU use between the samples nearest to `from` and `to`, in % of one core.
    fn cpu_pct(&self, from: f64, to: f64, cpu: fn(&Sample) -> Option<f64>) -> Option<f64> {
        let (a, b) = (self.at(from)?, self.at(to)?);
        if b.at <= a.at {
            return None;
        }
        Some(100.0 * (cpu(&b)? - cpu(&a)?) / (b.at - a.at))
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP load.

struct HttpLoad {
    addr: SocketAddr,
    topic: String,
    events: Events,
    connections: usize,
    duplicate_percent: u32,
    tickets: Tickets,
    timeline: Option<Arc<Mutex<Timeline>>>,
}

/// One keep-alive HTTP/1.1 connection to the gateway, spoken by hand.
///
/// The generator shares the machine's cores with everything it measures, so every microsecond
/// it spends per request is one the gateway cannot: requests are written from one reused
/// buffer in a single `write`, and answers are read into another and parsed with `httparse`
/// (only the status and the headers the bench classifies by are looked at).
struct Conn {
    stream: TcpStream,
    /// The request being sent: head and body.
    out: Vec<u8>,
    /// Bytes read and not yet consumed.
    input: Vec<u8>,
}

/// What the bench needs of an answer.
struct Answer {
    status: u16,
    replayed: bool,
    retry_after: bool,
    /// The server said `Connection: close`.
    close: bool,
}

impl Conn {
    async fn open(addr: SocketAddr) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            out: Vec::with_capacity(4096),
            input: Vec::with_capacity(4096),
        })
    }

    /// Posts `body` to `path` with the idempotency key; reads the whole answer.
    async fn post(
        &mut self,
        host: &str,
        path: &str,
        key: &str,
        body: &[u8],
    ) -> std::io::Result<Answer> {
        self.out.clear();
        write!(
            self.out,
            "POST {path} HTTP/1.1\r\nhost: {host}\r\nidempotency-key: {key}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )?;
        self.out.extend_from_slice(body);
        self.stream.write_all(&self.out).await?;
        self.read_answer().await
    }

    async fn read_answer(&mut self) -> std::io::Result<Answer> {
        let invalid = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
        self.input.clear();
        loop {
            let (answer, head_len, body_len) = {
                let mut headers = [httparse::EMPTY_HEADER; 32];
                let mut response = httparse::Response::new(&mut headers);
                match response.parse(&self.input) {
                    Ok(httparse::Status::Complete(head_len)) => {
                        let mut answer = Answer {
                            status: response.code.unwrap_or_default(),
                            replayed: false,
                            retry_after: false,
                            close: false,
                        };
                        let mut body_len = 0usize;
                        for header in response.headers.iter() {
                            let name = header.name;
                            if name.eq_ignore_ascii_case("content-length") {
                                body_len = std::str::from_utf8(header.value)
                                    .ok()
                                    .and_then(|v| v.trim().parse().ok())
                                    .ok_or_else(|| invalid("bad content-length"))?;
                            } else if name.eq_ignore_ascii_case("idempotent-replayed") {
                                answer.replayed = header.value == b"true";
                            } else if name.eq_ignore_ascii_case("retry-after") {
                                answer.retry_after = true;
                            } else if name.eq_ignore_ascii_case("connection") {
                                answer.close = header.value.eq_ignore_ascii_case(b"close");
                            }
                        }
                        (answer, head_len, body_len)
                    }
                    Ok(httparse::Status::Partial) => {
                        self.fill().await?;
                        continue;
                    }
                    Err(_) => return Err(invalid("malformed response head")),
                }
            };
            while self.input.len() < head_len + body_len {
                self.fill().await?;
            }
            return Ok(answer);
        }
    }

    async fn fill(&mut self) -> std::io::Result<()> {
        self.input.reserve(4096);
        if self.stream.read_buf(&mut self.input).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }
}

/// Runs `connections` keep-alive HTTP/1.1 clients against the gateway until the window ends.
async fn run_http(load: HttpLoad) -> anyhow::Result<Tally> {
    let tally = Arc::new(Mutex::new(Tally::new()));
    let load = Arc::new(load);
    let path = format!("/v1/topics/{}/events", load.topic);
    // Connect everyone first: connection set-up is not what is measured.
    let mut conns = Vec::with_capacity(load.connections);
    for _ in 0..load.connections {
        conns.push(
            Conn::open(load.addr)
                .await
                .context("connecting to the gateway")?,
        );
    }
    let mut workers = tokio::task::JoinSet::new();
    for (worker, conn) in conns.into_iter().enumerate() {
        let (load, tally, path) = (load.clone(), tally.clone(), path.clone());
        workers.spawn(http_worker(worker, conn, load, tally, path));
    }
    while let Some(joined) = workers.join_next().await {
        joined.context("an HTTP worker panicked")?;
    }
    Ok(take_tally(tally))
}

async fn http_worker(
    worker: usize,
    conn: Conn,
    load: Arc<HttpLoad>,
    tally: Arc<Mutex<Tally>>,
    path: String,
) {
    let host = load.addr.to_string();
    let window = load.tickets.window;
    let mut conn = Some(conn);
    let mut seq = 0u64;
    let mut n = 0u64;
    // Answered events, oldest first: a retry resends one of them (each at most once).
    let mut answered: VecDeque<(String, Bytes)> = VecDeque::new();
    while let Some(at) = load.tickets.take() {
        if !load.tickets.wait(at).await {
            tally.lock().unwrap_or_else(|e| e.into_inner()).skipped += 1;
            if let Some(timeline) = &load.timeline {
                timeline
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .bucket(Instant::now())
                    .skipped += 1;
            }
            continue;
        }
        let retry = is_duplicate(n, load.duplicate_percent) && !answered.is_empty();
        n += 1;
        let (key, body) = if retry {
            answered.pop_front().expect("not empty")
        } else {
            seq += 1;
            let key = load.events.key(worker, seq);
            let body = load.events.body(&key);
            (key, body)
        };
        if conn.is_none() {
            // The server closed the connection (e.g. after a 503): open a new one.
            tally.lock().unwrap_or_else(|e| e.into_inner()).reconnects += 1;
            conn = Conn::open(load.addr).await.ok();
        }
        let Some(open) = conn.as_mut() else {
            record_http(
                &load,
                &tally,
                window,
                Outcome::Other,
                "error: connect",
                at,
                at,
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let sent = Instant::now();
        let exchange = open.post(&host, &path, &key, &body);
        let result = tokio::time::timeout(REQUEST_TIMEOUT, exchange).await;
        let done = Instant::now();
        let origin = load.tickets.origin(at, sent);
        let (outcome, answer) = match &result {
            Ok(Ok(answer)) => {
                if answer.close {
                    conn = None;
                }
                classify(answer)
            }
            Ok(Err(error)) => {
                conn = None;
                (Outcome::Other, error_kind(error))
            }
            Err(_) => {
                conn = None;
                (Outcome::Other, Cow::Borrowed("error: timeout"))
            }
        };
        if outcome == Outcome::Ok && !retry && load.duplicate_percent > 0 {
            answered.push_back((key, body));
            if answered.len() > 64 {
                answered.pop_front();
            }
        }
        record_http(&load, &tally, window, outcome, &answer, origin, done);
    }
}

fn error_kind(error: &std::io::Error) -> Cow<'static, str> {
    use std::io::ErrorKind;
    Cow::Borrowed(match error.kind() {
        ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::BrokenPipe => {
            "error: connection closed"
        }
        ErrorKind::InvalidData => "error: malformed response",
        _ => "error: transport",
    })
}

fn classify(answer: &Answer) -> (Outcome, Cow<'static, str>) {
    match answer.status {
        201 if answer.replayed => (Outcome::Replayed, Cow::Borrowed("201 replayed")),
        201 => (Outcome::Ok, Cow::Borrowed("201")),
        503 if answer.retry_after => (Outcome::Shed, Cow::Borrowed("503 + Retry-After")),
        other => (Outcome::Other, Cow::Owned(other.to_string())),
    }
}

fn record_http(
    load: &HttpLoad,
    tally: &Mutex<Tally>,
    window: Window,
    outcome: Outcome,
    answer: &str,
    origin: Instant,
    done: Instant,
) {
    let latency = done.saturating_duration_since(origin);
    if let Some(timeline) = &load.timeline {
        timeline
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(done, outcome, latency);
    }
    if window.counts(done) {
        tally
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(outcome, answer, latency);
    }
}

// ---------------------------------------------------------------------------------------------
// Kafka topics.

fn admin(brokers: &str) -> anyhow::Result<AdminClient<DefaultClientContext>> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?)
}

async fn create_topic(brokers: &str, name: &str, partitions: i32) -> anyhow::Result<()> {
    let admin = admin(brokers)?;
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics([&topic], &options).await? {
        if let Err((name, code)) = result {
            bail!("creating topic {name} failed: {code:?}");
        }
    }
    Ok(())
}

/// Best effort: the broker keeps its data in memory, so each phase's topic goes once measured.
async fn delete_topic(brokers: &str, name: &str) {
    if let Ok(admin) = admin(brokers) {
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let _ = admin.delete_topics(&[name], &options).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Results.

#[derive(Debug, Clone, Copy, Serialize)]
struct Latency {
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
    mean: f64,
}

fn latency(h: &Histogram<u64>) -> Option<Latency> {
    (!h.is_empty()).then(|| Latency {
        p50: h.value_at_quantile(0.50) as f64 / 1000.0,
        p99: h.value_at_quantile(0.99) as f64 / 1000.0,
        p999: h.value_at_quantile(0.999) as f64 / 1000.0,
        max: h.max() as f64 / 1000.0,
        mean: h.mean() / 1000.0,
    })
}

#[derive(Debug, Clone, Serialize)]
struct PhaseResult {
    kind: &'static str,
    run_id: String,
    phase: String,
    window: usize,
    /// Open-loop rate asked for, events/s (fixed-rate and overload phases).
    target_rate_eps: Option<f64>,
    event_bytes: usize,
    duration_s: f64,
    /// Successful events in the measured window (201s, replays, acks, settled keys).
    events: u64,
    throughput_eps: f64,
    /// Latency of first answers (201 / acks / claim+settle), ms.
    latency_ms: Option<Latency>,
    /// Latency of replayed 201s, ms (duplicate mix).
    replay_latency_ms: Option<Latency>,
    /// Latency of 503 answers, ms (overload).
    shed_latency_ms: Option<Latency>,
    answers: BTreeMap<String, u64>,
    /// Answers that are neither a success nor a 503 + Retry-After.
    failures: u64,
    skipped_tickets: u64,
    reconnects: u64,
    /// "gateway" for gateway phases; "bench" (this process, the client) for raw phases.
    measured_process: &'static str,
    process_cpu_s: f64,
    /// CPU-seconds of the measured process per 10 000 successful events.
    process_cpu_s_per_10k: Option<f64>,
    /// Percent of one core.
    process_cpu_pct: f64,
    gateway_peak_rss_mib: Option<f64>,
    generator_cpu_s: Option<f64>,
    generator_cpu_pct: Option<f64>,
    broker_cpu_pct: Option<f64>,
    redis_cpu_pct: Option<f64>,
    /// Busy share of all the machine's cores (everything on it, not only the bench), percent.
    machine_busy_pct: Option<f64>,
    /// Extra phase run under `perf record`: perturbed, left out of ratios and targets.
    profiled: bool,
}

struct Measured {
    tally: Tally,
    window: Window,
    before: CpuSample,
    after: CpuSample,
}

/// Runs `load` while sampling CPU at the start and end of the measured window.
async fn measure<F>(probes: Probes, window: Window, load: F) -> anyhow::Result<Measured>
where
    F: std::future::Future<Output = anyhow::Result<Tally>>,
{
    let samples = async {
        tokio::time::sleep_until(tokio::time::Instant::from_std(window.measure_from)).await;
        let before = probes.sample();
        tokio::time::sleep_until(tokio::time::Instant::from_std(window.end)).await;
        (before, probes.sample())
    };
    let (tally, (before, after)) = tokio::join!(load, samples);
    Ok(Measured {
        tally: tally?,
        window,
        before,
        after,
    })
}

struct PhaseMeta<'a> {
    run_id: &'a str,
    phase: &'a str,
    window: usize,
    target_rate: Option<f64>,
    event_bytes: usize,
    gateway: Option<&'a Gateway>,
}

fn phase_result(meta: PhaseMeta<'_>, m: &Measured) -> PhaseResult {
    let secs = m.window.seconds();
    let pct = |cpu: Option<f64>| cpu.map(|c| 100.0 * c / secs);
    let events = m.tally.successes();
    let this_cpu = m.after.this - m.before.this;
    let gateway_cpu = delta(m.before.gateway, m.after.gateway);
    let (measured_process, process_cpu, generator_cpu) = match meta.gateway {
        Some(_) => ("gateway", gateway_cpu.unwrap_or(0.0), Some(this_cpu)),
        None => ("bench", this_cpu, None),
    };
    PhaseResult {
        kind: "phase",
        run_id: meta.run_id.to_owned(),
        phase: meta.phase.to_owned(),
        window: meta.window,
        target_rate_eps: meta.target_rate,
        event_bytes: meta.event_bytes,
        duration_s: secs,
        events,
        throughput_eps: events as f64 / secs,
        latency_ms: latency(&m.tally.ok),
        replay_latency_ms: latency(&m.tally.replayed),
        shed_latency_ms: latency(&m.tally.shed),
        answers: m.tally.answers.clone(),
        failures: m.tally.failures(),
        skipped_tickets: m.tally.skipped,
        reconnects: m.tally.reconnects,
        measured_process,
        process_cpu_s: process_cpu,
        process_cpu_s_per_10k: (events > 0).then(|| process_cpu / events as f64 * 10_000.0),
        process_cpu_pct: 100.0 * process_cpu / secs,
        gateway_peak_rss_mib: meta.gateway.and_then(Gateway::peak_rss_mib),
        generator_cpu_s: generator_cpu,
        generator_cpu_pct: pct(generator_cpu),
        broker_cpu_pct: pct(delta(m.before.broker, m.after.broker)),
        redis_cpu_pct: pct(delta(m.before.redis, m.after.redis)),
        machine_busy_pct: match (m.before.machine, m.after.machine) {
            (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => Some(100.0 * (b1 - b0) / (t1 - t0)),
            _ => None,
        },
        profiled: false,
    }
}

/// Where a profiled gateway's CPU goes, by component: each sample counts for the first
/// component (in this order) that any frame of its stack belongs to.
const PERF_COMPONENTS: &[(&str, &[&str])] = &[
    (
        "tracing: the request span and its fields",
        &[
            "tracing_subscriber",
            "tracing_core::event",
            "tracing::span::Span::new",
            "nu_ansi_term",
        ],
    ),
    (
        "metrics: counters, histograms, in-flight gauge",
        &[
            "metrics_util",
            "metrics_exporter",
            "metrics::",
            "track_metrics",
        ],
    ),
    (
        "Redis client: claim + settle (redis-rs and its socket I/O)",
        &["redis::", "RedisStore"],
    ),
    (
        "Kafka: produce call and delivery report (request side)",
        &["rd_kafka", "rdkafka::", "Publisher"],
    ),
    (
        "request parsing: body, JSON syntax check, fingerprint",
        &[
            "parse_event",
            "read_body",
            "serde_json::de",
            "fingerprint",
            "sha2",
        ],
    ),
    (
        "request id (ULID)",
        &["ulid", "MakeRequestUlid", "SetRequestId"],
    ),
    (
        "HTTP read: recv + hyper head parsing",
        &["poll_read_head", "poll_read_from_io"],
    ),
    (
        "HTTP write: hyper encoding + writev",
        &["poll_flush", "Http1Transaction>::encode", "writev"],
    ),
    (
        "tokio: I/O driver, parking, wake-ups",
        &["Driver::turn", "park", "epoll_wait", "futex"],
    ),
];

/// The component table of a `perf record` file (empty if `perf script` fails).
fn perf_components(data: &Path) -> String {
    let Ok(out) = Command::new("perf")
        .args(["script", "-F", "comm,ip,sym,dso", "-i"])
        .arg(data)
        .stderr(Stdio::null())
        .output()
    else {
        return String::new();
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut components: BTreeMap<&str, u64> = BTreeMap::new();
    let mut leaves: BTreeMap<&str, u64> = BTreeMap::new();
    let mut total = 0u64;
    for block in text.split("\n\n") {
        let mut lines = block.lines().map(str::trim).filter(|l| !l.is_empty());
        let Some(thread) = lines.next() else { continue };
        let frames: Vec<&str> = lines.collect();
        total += 1;
        let component = if thread.starts_with("rdk:") || thread.starts_with("producer") {
            "librdkafka's own threads: batching, broker I/O, reports"
        } else {
            PERF_COMPONENTS
                .iter()
                .find(|(_, needles)| {
                    frames
                        .iter()
                        .any(|frame| needles.iter().any(|needle| frame.contains(needle)))
                })
                .map_or(
                    "other: hyper/axum/tower plumbing, handler, pipeline, task spawns",
                    |(name, _)| name,
                )
        };
        *components.entry(component).or_default() += 1;
        let leaf = frames.first().copied().unwrap_or_default();
        let kind = if leaf.contains("[kernel") {
            "kernel"
        } else if [
            "malloc",
            "free",
            "_int_",
            "unlink_chunk",
            "memalign",
            "consolidate",
            "mi_",
        ]
        .iter()
        .any(|n| leaf.contains(n))
        {
            "allocator (malloc/free)"
        } else if leaf.contains("memmove") || leaf.contains("memcpy") {
            "memcpy/memmove"
        } else {
            "user code"
        };
        *leaves.entry(kind).or_default() += 1;
    }
    if total == 0 {
        return String::new();
    }
    let mut out = format!(
        "## by component ({total} samples; each counts for the first component its stack \
         belongs to)\n\n"
    );
    let mut sorted: Vec<_> = components.into_iter().collect();
    sorted.sort_by_key(|entry| std::cmp::Reverse(entry.1));
    for (name, n) in sorted {
        let _ = writeln!(out, "  {:5.1}%  {name}", 100.0 * n as f64 / total as f64);
    }
    out.push_str("\n## by where the sample landed (the innermost frame)\n\n");
    let mut sorted: Vec<_> = leaves.into_iter().collect();
    sorted.sort_by_key(|entry| std::cmp::Reverse(entry.1));
    for (name, n) in sorted {
        let _ = writeln!(out, "  {:5.1}%  {name}", 100.0 * n as f64 / total as f64);
    }
    out.push('\n');
    out
}

/// The report of a `perf record` file of the gateway: components, then perf's own tables.
fn perf_text(data: &Path, what: &str) -> anyhow::Result<String> {
    let mut text = format!(
        "# perf profile of the gateway process, {what}\n\
         # perf record {PERF_RECORD} -p <gateway pid> during the measured window\n\
         # (the release build has no frame pointers: stacks come from DWARF unwinding)\n\n"
    );
    text.push_str(&perf_components(data));
    for (title, sort, children, lines) in [
        ("by thread", "comm", "--no-children", 10),
        ("by shared object", "dso", "--no-children", 10),
        ("by symbol, self time", "symbol", "--no-children", 40),
    ] {
        let out = Command::new("perf")
            .args(["report", "--stdio", children, "-i"])
            .arg(data)
            .args(["--sort", sort, "--percent-limit", "0.5", "-g", "none"])
            .stderr(Stdio::null())
            .output()
            .context("perf report")?;
        let report = String::from_utf8_lossy(&out.stdout);
        let _ = writeln!(text, "## {title}\n");
        for line in report
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .take(lines)
        {
            let _ = writeln!(text, "{}", line.trim_end().trim_end_matches(['-', ' ']));
        }
        text.push('\n');
    }
    Ok(text)
}

/// Everything shared by the phases of one run.
struct Run {
    args: Args,
    run_id: String,
    probes: Probes,
    redis: ConnectionManager,
    phase_count: usize,
    results: Vec<PhaseResult>,
    jsonl: PathBuf,
}

impl Run {
    /// A fresh topic and Redis prefix for the next phase.
    async fn fresh_names(&mut self) -> anyhow::Result<(String, String)> {
        self.phase_count += 1;
        let name = format!("bench-{}-{}", self.run_id, self.phase_count);
        create_topic(&self.args.brokers, &name, self.args.partitions).await?;
        Ok((name.clone(), name))
    }

    async fn cleanup(&mut self, topic: &str, prefix: &str) {
        delete_topic(&self.args.brokers, topic).await;
        if let Err(error) = delete_keys(&mut self.redis, prefix).await {
            eprintln!("warning: could not delete the bench's Redis keys under {prefix}: {error}");
        }
    }

    fn events(&self, topic: &str) -> Events {
        Events {
            run: topic.to_owned(),
            bytes: self.args.event_bytes,
        }
    }

    fn window(&self) -> Window {
        Window::starting_now(self.args.warmup, self.args.duration)
    }

    fn push(&mut self, result: PhaseResult) -> anyhow::Result<()> {
        let line = serde_json::to_string(&result)?;
        println!("{}", summary_line(&result));
        append_line(&self.jsonl, &line)?;
        self.results.push(result);
        Ok(())
    }

    async fn raw_producer(&mut self, window_size: usize, pace: Pace) -> anyhow::Result<()> {
        let (topic, prefix) = self.fresh_names().await?;
        let window = self.window();
        let load = RawProducerLoad {
            brokers: &self.args.brokers,
            topic: &topic,
            events: self.events(&topic),
            window_size,
            pace,
            window,
        };
        let probes = Probes {
            gateway: None,
            ..self.probes
        };
        let measured = measure(probes, window, run_raw_producer(load)).await?;
        let (phase, rate) = match pace {
            Pace::Rate(rate) => ("raw_producer_fixed", Some(rate)),
            _ => ("raw_producer", None),
        };
        let result = phase_result(
            PhaseMeta {
                run_id: &self.run_id,
                phase,
                window: window_size,
                target_rate: rate,
                event_bytes: self.args.event_bytes,
                gateway: None,
            },
            &measured,
        );
        self.cleanup(&topic, &prefix).await;
        self.push(result)
    }

    async fn raw_redis(&mut self, window_size: usize) -> anyhow::Result<()> {
        let (topic, prefix) = self.fresh_names().await?;
        let window = self.window();
        let load = RawRedisLoad {
            conn: redis_connection(&self.args.redis_url).await?,
            prefix: prefix.clone(),
            topic: topic.clone(),
            events: self.events(&topic),
            window_size,
            window,
        };
        let probes = Probes {
            gateway: None,
            ..self.probes
        };
        let measured = measure(probes, window, run_raw_redis(load)).await?;
        let result = phase_result(
            PhaseMeta {
                run_id: &self.run_id,
                phase: "raw_redis",
                window: window_size,
                target_rate: None,
                event_bytes: self.args.event_bytes,
                gateway: None,
            },
            &measured,
        );
        self.cleanup(&topic, &prefix).await;
        self.push(result)
    }

    /// One gateway process, one load; `perf` profiles the measured window.
    async fn gateway(
        &mut self,
        window_size: usize,
        pace: Pace,
        duplicate_percent: u32,
        perf: bool,
    ) -> anyhow::Result<()> {
        let (topic, prefix) = self.fresh_names().await?;
        let phase = match (pace, duplicate_percent) {
            (Pace::Rate(_), _) => "gateway_fixed".to_owned(),
            (_, 0) => "gateway_unique".to_owned(),
            (_, p) => format!("gateway_dup{p}"),
        };
        let name = format!("{topic}-{phase}");
        let gateway = Gateway::start(&self.args, &prefix, &name, &[]).await?;
        let window = self.window();
        let load = HttpLoad {
            addr: gateway.addr,
            topic: topic.clone(),
            events: self.events(&topic),
            connections: window_size,
            duplicate_percent,
            tickets: Tickets::new(pace, window),
            timeline: None,
        };
        let probes = Probes {
            gateway: Some(gateway.pid),
            ..self.probes
        };
        let profiler = if perf {
            Some(self.start_perf(gateway.pid, window)?)
        } else {
            None
        };
        let measured = measure(probes, window, run_http(load)).await?;
        let mut result = phase_result(
            PhaseMeta {
                run_id: &self.run_id,
                phase: &phase,
                window: window_size,
                target_rate: match pace {
                    Pace::Rate(rate) => Some(rate),
                    _ => None,
                },
                event_bytes: self.args.event_bytes,
                gateway: Some(&gateway),
            },
            &measured,
        );
        result.profiled = perf;
        // perf first: it must see the gateway exit only after it has written its data.
        if let Some(profiler) = profiler {
            self.finish_perf(profiler, &phase, window_size)?;
        }
        gateway.stop().await?;
        self.cleanup(&topic, &prefix).await;
        self.push(result)
    }

    /// `perf record` on the gateway during the measured window (waits for it to begin).
    fn start_perf(&self, pid: u32, window: Window) -> anyhow::Result<(Child, PathBuf)> {
        let data = self
            .args
            .work_dir
            .join(format!("perf-{}.data", self.run_id));
        let delay = window
            .measure_from
            .saturating_duration_since(Instant::now());
        let seconds = window.seconds();
        let script = format!(
            "sleep {:.3}; exec perf record -q {PERF_RECORD} -p {pid} -o {} -- sleep {seconds:.3}",
            delay.as_secs_f64(),
            data.display()
        );
        let child = Command::new("sh")
            .args(["-c", &script])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting perf")?;
        Ok((child, data))
    }

    fn finish_perf(
        &self,
        (mut child, data): (Child, PathBuf),
        phase: &str,
        window: usize,
    ) -> anyhow::Result<()> {
        let status = child.wait()?;
        if !status.success() || std::fs::metadata(&data).map_or(0, |m| m.len()) == 0 {
            eprintln!("warning: perf record failed ({status}); no profile");
            return Ok(());
        }
        let text = perf_text(&data, &format!("phase {phase}, window {window}"))?;
        let path = self
            .args
            .out_dir
            .join(format!("{}-{}-perf.txt", file_stem(), self.run_id));
        std::fs::write(&path, text)?;
        println!("profile: {}", path.display());
        Ok(())
    }

    /// One gateway with `--max-in-flight cap`: calm, 4× the sustainable rate, calm again.
    async fn overload(&mut self, cap: usize, sustainable: f64) -> anyhow::Result<OverloadSummary> {
        let (topic, prefix) = self.fresh_names().await?;
        let name = format!("{topic}-overload");
        let extra = ["--max-in-flight".to_owned(), cap.to_string()];
        let gateway = Gateway::start(&self.args, &prefix, &name, &extra).await?;
        let origin = Instant::now();
        let timeline = Arc::new(Mutex::new(Timeline {
            origin,
            seconds: Vec::new(),
        }));
        let probes = Probes {
            gateway: Some(gateway.pid),
            ..self.probes
        };
        let sampler = Sampler::start(origin, probes);
        let rate = 4.0 * sustainable;
        let calm = self.args.calm_secs;
        let crowd = self.args.overload_connections.unwrap_or(4 * cap);
        let mut segments = Vec::new();
        let mut rss_at = Vec::new();
        for (segment, pace, connections, seconds) in [
            ("overload_before", Pace::Closed, cap, calm),
            (
                "overload_4x",
                Pace::Overload(rate),
                crowd,
                self.args.overload_secs,
            ),
            ("overload_after", Pace::Closed, cap, calm),
        ] {
            let window = Window::starting_now(1.0, seconds);
            let load = HttpLoad {
                addr: gateway.addr,
                topic: topic.clone(),
                events: Events {
                    run: format!("{topic}-{segment}"),
                    bytes: self.args.event_bytes,
                },
                connections,
                duplicate_percent: 0,
                tickets: Tickets::new(pace, window),
                timeline: Some(timeline.clone()),
            };
            let measured = measure(probes, window, run_http(load)).await?;
            let result = phase_result(
                PhaseMeta {
                    run_id: &self.run_id,
                    phase: segment,
                    window: connections,
                    target_rate: match pace {
                        Pace::Overload(rate) => Some(rate),
                        _ => None,
                    },
                    event_bytes: self.args.event_bytes,
                    gateway: Some(&gateway),
                },
                &measured,
            );
            rss_at.push(gateway.rss_mib());
            segments.push(result.clone());
            self.push(result)?;
        }
        let samples = sampler.stop().await?;
        let peak_rss = gateway.peak_rss_mib();
        gateway.stop().await?;
        self.cleanup(&topic, &prefix).await;

        let timeline = Arc::try_unwrap(timeline)
            .map_err(|_| anyhow::anyhow!("timeline still shared"))?
            .into_inner()
            .unwrap_or_else(|e| e.into_inner());
        let seconds: Vec<TimelineSecond> = timeline
            .seconds
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let (from, to) = (i as f64, i as f64 + 1.0);
                TimelineSecond {
                    second: i,
                    ok: s.ok,
                    shed: s.shed,
                    other: s.other,
                    skipped: s.skipped,
                    ok_p99_ms: (!s.ok_latency.is_empty())
                        .then(|| s.ok_latency.value_at_quantile(0.99) as f64 / 1000.0),
                    rss_mib: samples.at(to).and_then(|e| e.rss),
                    cpu_pct: samples.cpu_pct(from, to, |s| s.cpu),
                }
            })
            .collect();
        let before = &segments[0];
        let during = &segments[1];
        let after = &segments[2];
        let answered = during.answers.values().sum::<u64>();
        let summary = OverloadSummary {
            kind: "overload",
            run_id: self.run_id.clone(),
            max_in_flight: cap,
            connections: crowd,
            sustainable_eps: sustainable,
            offered_eps: rate,
            sent_eps: answered as f64 / during.duration_s,
            ok_eps: during.throughput_eps,
            shed_eps: during.shed_latency_ms.map_or(0.0, |_| {
                during
                    .answers
                    .get("503 + Retry-After")
                    .copied()
                    .unwrap_or(0) as f64
                    / during.duration_s
            }),
            other_answers: during.failures,
            skipped_tickets: during.skipped_tickets,
            shed_latency_ms: during.shed_latency_ms,
            ok_latency_ms: during.latency_ms,
            throughput_before_eps: before.throughput_eps,
            throughput_after_eps: after.throughput_eps,
            recovered_ratio: after.throughput_eps / before.throughput_eps.max(f64::MIN_POSITIVE),
            rss_mib_end_before: rss_at[0],
            rss_mib_end_overload: rss_at[1],
            rss_mib_end_after: rss_at[2],
            rss_mib_max_during_overload: overload_rss(&seconds).0,
            rss_mib_drift_during_overload: overload_rss(&seconds).1,
            transport_errors: during
                .answers
                .iter()
                .filter(|(k, _)| k.starts_with("error"))
                .map(|(_, n)| n)
                .sum(),
            peak_rss_mib: peak_rss,
            timeline: seconds,
        };
        append_line(&self.jsonl, &serde_json::to_string(&summary)?)?;
        Ok(summary)
    }

    /// One gateway under closed-loop load at `window` for `seconds`: memory and CPU sampled
    /// every second, to show whether anything grows without bound.
    async fn soak(&mut self, window: usize, seconds: f64) -> anyhow::Result<SoakSummary> {
        let (topic, prefix) = self.fresh_names().await?;
        let gateway = Gateway::start(&self.args, &prefix, &format!("{topic}-soak"), &[]).await?;
        let origin = Instant::now();
        let timeline = Arc::new(Mutex::new(Timeline {
            origin,
            seconds: Vec::new(),
        }));
        let probes = Probes {
            gateway: Some(gateway.pid),
            ..self.probes
        };
        // Redis and the broker too: if throughput drifts, whose cost grew?
        let sampler = Sampler::start(origin, probes);
        let measured_window = Window::starting_now(0.0, seconds);
        let load = HttpLoad {
            addr: gateway.addr,
            topic: topic.clone(),
            events: Events {
                run: format!("{topic}-soak"),
                bytes: self.args.event_bytes,
            },
            connections: window,
            duplicate_percent: 0,
            tickets: Tickets::new(Pace::Closed, measured_window),
            timeline: Some(timeline.clone()),
        };
        let measured = measure(probes, measured_window, run_http(load)).await?;
        let result = phase_result(
            PhaseMeta {
                run_id: &self.run_id,
                phase: "soak",
                window,
                target_rate: None,
                event_bytes: self.args.event_bytes,
                gateway: Some(&gateway),
            },
            &measured,
        );
        let samples = sampler.stop().await?;
        let peak_rss = gateway.peak_rss_mib();
        gateway.stop().await?;
        self.cleanup(&topic, &prefix).await;
        let timeline = Arc::try_unwrap(timeline)
            .map_err(|_| anyhow::anyhow!("timeline still shared"))?
            .into_inner()
            .unwrap_or_else(|e| e.into_inner());

        // One row per minute: events answered, RSS at its end, CPU over it.
        let minutes = (seconds / 60.0).ceil() as usize;
        let rows: Vec<SoakMinute> = (0..minutes)
            .map(|m| {
                let (from, to) = (m as f64 * 60.0, ((m + 1) as f64 * 60.0).min(seconds));
                let events: u64 = timeline
                    .seconds
                    .iter()
                    .skip(from as usize)
                    .take((to - from).ceil() as usize)
                    .map(|s| s.ok)
                    .sum();
                let end = samples.at(to);
                SoakMinute {
                    minute: m + 1,
                    events_per_s: events as f64 / (to - from).max(f64::MIN_POSITIVE),
                    rss_mib: end.and_then(|e| e.rss),
                    cpu_pct: samples.cpu_pct(from, to, |s| s.cpu),
                    redis_rss_mib: end.and_then(|e| e.redis_rss),
                    redis_cpu_pct: samples.cpu_pct(from, to, |s| s.redis_cpu),
                    broker_rss_mib: end.and_then(|e| e.broker_rss),
                    broker_cpu_pct: samples.cpu_pct(from, to, |s| s.broker_cpu),
                }
            })
            .collect();
        let rss = |t: f64| samples.at(t).and_then(|s| s.rss);
        let summary = SoakSummary {
            kind: "soak",
            run_id: self.run_id.clone(),
            window,
            duration_s: seconds,
            throughput_eps: result.throughput_eps,
            failures: result.failures,
            rss_mib_after_first_minute: rss(60.0_f64.min(seconds)),
            rss_mib_at_half: rss(seconds / 2.0),
            rss_mib_end: rss(seconds),
            rss_mib_max: samples.0.iter().filter_map(|s| s.rss).reduce(f64::max),
            peak_rss_mib: peak_rss,
            minutes: rows,
        };
        self.push(result)?;
        append_line(&self.jsonl, &serde_json::to_string(&summary)?)?;
        Ok(summary)
    }
}

/// A soak run: does the gateway's memory settle under steady load?
#[derive(Debug, Clone, Serialize)]
struct SoakSummary {
    kind: &'static str,
    run_id: String,
    window: usize,
    duration_s: f64,
    throughput_eps: f64,
    failures: u64,
    rss_mib_after_first_minute: Option<f64>,
    rss_mib_at_half: Option<f64>,
    rss_mib_end: Option<f64>,
    rss_mib_max: Option<f64>,
    peak_rss_mib: Option<f64>,
    minutes: Vec<SoakMinute>,
}

#[derive(Debug, Clone, Serialize)]
struct SoakMinute {
    minute: usize,
    events_per_s: f64,
    rss_mib: Option<f64>,
    cpu_pct: Option<f64>,
    redis_rss_mib: Option<f64>,
    redis_cpu_pct: Option<f64>,
    broker_rss_mib: Option<f64>,
    broker_cpu_pct: Option<f64>,
}

fn soak_markdown(md: &mut String, s: &SoakSummary) {
    let drift = match (s.rss_mib_at_half, s.rss_mib_end) {
        (Some(half), Some(end)) => format!("{:+.1} MiB", end - half),
        _ => "–".to_owned(),
    };
    let _ = writeln!(
        md,
        "\n## Soak: {:.0} s at window {}\n\n\
         One gateway, {} keep-alive connections posting unique events closed-loop for {:.0} s: \
         {:.0} ev/s, {} unexpected answers. RSS (MiB) after the first minute {}, at half time {}, \
         at the end {}, highest sample {}, peak (VmHWM) {}; over the second half: {drift}.\n\n\
         | minute | ev/s | gateway RSS MiB at its end | gateway CPU % | Redis RSS MiB | Redis CPU % \
         | broker RSS MiB | broker CPU % |\n|---:|---:|---:|---:|---:|---:|---:|---:|",
        s.duration_s,
        s.window,
        s.window,
        s.duration_s,
        s.throughput_eps,
        s.failures,
        fmt_opt(s.rss_mib_after_first_minute, 1),
        fmt_opt(s.rss_mib_at_half, 1),
        fmt_opt(s.rss_mib_end, 1),
        fmt_opt(s.rss_mib_max, 1),
        fmt_opt(s.peak_rss_mib, 1),
    );
    for m in &s.minutes {
        let _ = writeln!(
            md,
            "| {} | {:.0} | {} | {} | {} | {} | {} | {} |",
            m.minute,
            m.events_per_s,
            fmt_opt(m.rss_mib, 1),
            fmt_opt(m.cpu_pct, 0),
            fmt_opt(m.redis_rss_mib, 0),
            fmt_opt(m.redis_cpu_pct, 0),
            fmt_opt(m.broker_rss_mib, 0),
            fmt_opt(m.broker_cpu_pct, 0)
        );
    }
}

/// RSS during the seconds the gateway shed load: the maximum, and the drift from two seconds
/// in (once the extra connections are open) to the last such second.
fn overload_rss(seconds: &[TimelineSecond]) -> (Option<f64>, Option<f64>) {
    let shedding: Vec<&TimelineSecond> = seconds.iter().filter(|s| s.shed > 0).collect();
    let (Some(first), Some(last)) = (shedding.first(), shedding.last()) else {
        return (None, None);
    };
    let span: Vec<&TimelineSecond> = seconds
        .iter()
        .filter(|s| s.second >= first.second && s.second <= last.second)
        .collect();
    let max = span.iter().filter_map(|s| s.rss_mib).reduce(f64::max);
    let settled = span
        .iter()
        .find(|s| s.second >= first.second + 2)
        .and_then(|s| s.rss_mib);
    let drift = match (settled, last.rss_mib) {
        (Some(a), Some(b)) if last.second > first.second + 2 => Some(b - a),
        _ => None,
    };
    (max, drift)
}

#[derive(Debug, Clone, Serialize)]
struct TimelineSecond {
    second: usize,
    ok: u64,
    shed: u64,
    other: u64,
    skipped: u64,
    ok_p99_ms: Option<f64>,
    rss_mib: Option<f64>,
    cpu_pct: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
struct OverloadSummary {
    kind: &'static str,
    run_id: String,
    max_in_flight: usize,
    connections: usize,
    sustainable_eps: f64,
    /// The open-loop rate asked for (4 × sustainable).
    offered_eps: f64,
    /// Requests actually sent (and answered) per second; below `offered_eps` when the
    /// generator's connections were all busy (see `skipped_tickets`).
    sent_eps: f64,
    ok_eps: f64,
    shed_eps: f64,
    other_answers: u64,
    skipped_tickets: u64,
    shed_latency_ms: Option<Latency>,
    ok_latency_ms: Option<Latency>,
    throughput_before_eps: f64,
    throughput_after_eps: f64,
    recovered_ratio: f64,
    rss_mib_end_before: Option<f64>,
    rss_mib_end_overload: Option<f64>,
    rss_mib_end_after: Option<f64>,
    rss_mib_max_during_overload: Option<f64>,
    /// RSS change from 2 s into the overload to its end, MiB.
    rss_mib_drift_during_overload: Option<f64>,
    /// Connection errors and timeouts during the overload.
    transport_errors: u64,
    peak_rss_mib: Option<f64>,
    timeline: Vec<TimelineSecond>,
}

fn append_line(path: &Path, line: &str) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(file, "{line}")?;
    Ok(())
}

fn fmt_opt(value: Option<f64>, digits: usize) -> String {
    value.map_or_else(|| "–".to_owned(), |v| format!("{v:.digits$}"))
}

fn summary_line(r: &PhaseResult) -> String {
    format!(
        "{:<20} w={:<5} {:>9.0} ev/s  p50 {:>7} ms  p99 {:>7} ms  p99.9 {:>7} ms  cpu/10k {:>6} s  \
         rss {:>6} MiB  failures {}",
        r.phase,
        r.window,
        r.throughput_eps,
        fmt_opt(r.latency_ms.map(|l| l.p50), 2),
        fmt_opt(r.latency_ms.map(|l| l.p99), 2),
        fmt_opt(r.latency_ms.map(|l| l.p999), 2),
        fmt_opt(r.process_cpu_s_per_10k, 3),
        fmt_opt(r.gateway_peak_rss_mib, 1),
        r.failures,
    )
}

// ---------------------------------------------------------------------------------------------
// Environment and report.

#[derive(Debug, Clone, Serialize)]
struct RunInfo {
    kind: &'static str,
    run_id: String,
    started_at: String,
    quick: bool,
    nproc: usize,
    cpu_model: String,
    memory_gib: Option<f64>,
    kernel: String,
    git_sha: String,
    git_dirty: bool,
    ackgate_version: String,
    rustc: String,
    librdkafka: String,
    broker: String,
    redis: String,
    windows: Vec<usize>,
    duration_s: f64,
    warmup_s: f64,
    event_bytes: usize,
    partitions: i32,
    duplicate_percent: u32,
    gateway_args: String,
    load_average: String,
}

fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn git_sha() -> String {
    command_output("git", &["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "nogit".into())
}

fn file_stem() -> String {
    static STEM: OnceLock<String> = OnceLock::new();
    STEM.get_or_init(|| {
        let date = time::OffsetDateTime::now_utc()
            .format(time::macros::format_description!("[year]-[month]-[day]"))
            .unwrap_or_else(|_| "undated".into());
        format!("{date}-{}", git_sha())
    })
    .clone()
}

fn run_info(args: &Args, run_id: &str, redis_version: &str) -> RunInfo {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map_or_else(|| "unknown".to_owned(), |(_, m)| m.trim().to_owned());
    let memory_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let line = m.lines().find(|l| l.starts_with("MemTotal:"))?.to_owned();
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map(|kib| kib / 1024.0 / 1024.0);
    let (_, librdkafka) = rdkafka::util::get_rdkafka_version();
    RunInfo {
        kind: "run",
        run_id: run_id.to_owned(),
        started_at: time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        quick: args.quick,
        nproc: std::thread::available_parallelism().map_or(0, usize::from),
        cpu_model,
        memory_gib,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        git_sha: git_sha(),
        git_dirty: command_output("git", &["status", "--porcelain", "--untracked-files=no"])
            .is_some_and(|s| !s.is_empty()),
        ackgate_version: command_output(&args.gateway_bin.to_string_lossy(), &["--version"])
            .unwrap_or_else(|| "unknown".into()),
        rustc: command_output("rustc", &["--version"]).unwrap_or_else(|| "unknown".into()),
        librdkafka,
        broker: args.broker_version.clone(),
        redis: redis_version.to_owned(),
        windows: args.windows.clone(),
        duration_s: args.duration,
        warmup_s: args.warmup,
        event_bytes: args.event_bytes,
        partitions: args.partitions,
        duplicate_percent: args.duplicate_percent,
        gateway_args: args.gateway_args.clone(),
        load_average: std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
            .to_owned(),
    }
}

fn find<'a>(results: &'a [PhaseResult], phase: &str, window: usize) -> Option<&'a PhaseResult> {
    results
        .iter()
        .find(|r| r.phase == phase && r.window == window && !r.profiled)
}

#[derive(Debug, Clone, Serialize)]
struct Ratio {
    window: usize,
    gateway_over_raw_producer: Option<f64>,
    gateway_over_raw_redis: Option<f64>,
    dup_over_unique: Option<f64>,
    gateway_p99_over_raw_producer_p99: Option<f64>,
    /// CPU the rest of the machine spent per gateway event (load generator + Redis + broker),
    /// microseconds, measured in the gateway_unique phase.
    others_cpu_us_per_event: Option<f64>,
    /// The gateway's own CPU per event there, microseconds.
    gateway_cpu_us_per_event: Option<f64>,
    /// nproc / others' CPU per event: the throughput even a gateway that cost no CPU at all
    /// could not pass on this machine, with its load generator, Redis and broker beside it.
    colocated_ceiling_eps: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
struct Target {
    target: String,
    measured: String,
    met: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
struct Summary {
    kind: &'static str,
    run_id: String,
    gateway_max_eps: f64,
    ratios: Vec<Ratio>,
    targets: Vec<Target>,
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    let (a, b) = (a?, b?);
    (b > 0.0).then(|| a / b)
}

/// CPU per event of everything but the gateway in a gateway phase, microseconds.
fn others_cpu_us_per_event(r: &PhaseResult) -> Option<f64> {
    if r.events == 0 {
        return None;
    }
    let seconds = |pct: Option<f64>| pct.unwrap_or(0.0) / 100.0 * r.duration_s;
    let others = r.generator_cpu_s? + seconds(r.broker_cpu_pct) + seconds(r.redis_cpu_pct);
    Some(others / r.events as f64 * 1e6)
}

fn summarize(
    run_id: &str,
    args: &Args,
    results: &[PhaseResult],
    reference: usize,
    gateway_max: f64,
    nproc: usize,
) -> Summary {
    let ratios: Vec<Ratio> = args
        .windows
        .iter()
        .map(|&w| {
            let gw = find(results, "gateway_unique", w);
            let dup = find(
                results,
                &format!("gateway_dup{}", args.duplicate_percent),
                w,
            );
            let producer = find(results, "raw_producer", w);
            let redis = find(results, "raw_redis", w);
            Ratio {
                window: w,
                gateway_over_raw_producer: ratio(
                    gw.map(|r| r.throughput_eps),
                    producer.map(|r| r.throughput_eps),
                ),
                gateway_over_raw_redis: ratio(
                    gw.map(|r| r.throughput_eps),
                    redis.map(|r| r.throughput_eps),
                ),
                dup_over_unique: ratio(dup.map(|r| r.throughput_eps), gw.map(|r| r.throughput_eps)),
                gateway_p99_over_raw_producer_p99: ratio(
                    gw.and_then(|r| r.latency_ms).map(|l| l.p99),
                    producer.and_then(|r| r.latency_ms).map(|l| l.p99),
                ),
                others_cpu_us_per_event: gw.and_then(others_cpu_us_per_event),
                gateway_cpu_us_per_event: gw
                    .and_then(|r| r.process_cpu_s_per_10k)
                    .map(|c| c * 100.0),
                colocated_ceiling_eps: gw
                    .and_then(others_cpu_us_per_event)
                    .filter(|us| *us > 0.0)
                    .map(|us| nproc as f64 * 1e6 / us),
            }
        })
        .collect();

    let mut targets = Vec::new();
    // 1. Throughput at the reference window.
    let gw = find(results, "gateway_unique", reference);
    let producer = find(results, "raw_producer", reference);
    let r1 = ratio(
        gw.map(|r| r.throughput_eps),
        producer.map(|r| r.throughput_eps),
    );
    targets.push(Target {
        target: format!(
            "gateway throughput ≥ 0.7 × raw producer (window {reference}, {} B events)",
            args.event_bytes
        ),
        measured: format!(
            "{} / {} ev/s = {}×",
            fmt_opt(gw.map(|r| r.throughput_eps), 0),
            fmt_opt(producer.map(|r| r.throughput_eps), 0),
            fmt_opt(r1, 2)
        ),
        met: r1.map(|r| r >= 0.7),
    });
    // 2. p99 at half the gateway's max throughput.
    let gw_fixed = results
        .iter()
        .find(|r| r.phase == "gateway_fixed" && !r.profiled);
    let producer_fixed = results.iter().find(|r| r.phase == "raw_producer_fixed");
    let r2 = ratio(
        gw_fixed.and_then(|r| r.latency_ms).map(|l| l.p99),
        producer_fixed.and_then(|r| r.latency_ms).map(|l| l.p99),
    );
    targets.push(Target {
        target: format!(
            "p99 at half the gateway's max throughput ({:.0} ev/s) ≤ 2 × raw producer p99 at that rate",
            gateway_max / 2.0
        ),
        measured: format!(
            "{} ms / {} ms = {}×",
            fmt_opt(gw_fixed.and_then(|r| r.latency_ms).map(|l| l.p99), 2),
            fmt_opt(producer_fixed.and_then(|r| r.latency_ms).map(|l| l.p99), 2),
            fmt_opt(r2, 2)
        ),
        met: r2.map(|r| r <= 2.0),
    });
    // 3. Peak RSS at the largest window.
    let largest = args.windows.iter().copied().max().unwrap_or(0);
    let rss = [
        "gateway_unique".to_owned(),
        format!("gateway_dup{}", args.duplicate_percent),
    ]
    .iter()
    .filter_map(|p| find(results, p, largest).and_then(|r| r.gateway_peak_rss_mib))
    .reduce(f64::max);
    targets.push(Target {
        target: format!("peak RSS ≤ 150 MiB at window {largest}"),
        measured: format!("{} MiB", fmt_opt(rss, 1)),
        met: if largest >= 1024 {
            rss.map(|r| r <= 150.0)
        } else {
            None
        },
    });
    // 4. CPU per event falls as the window grows.
    let mut windows = args.windows.clone();
    windows.sort_unstable();
    let cpu: Vec<(usize, Option<f64>)> = windows
        .iter()
        .map(|&w| {
            (
                w,
                find(results, "gateway_unique", w).and_then(|r| r.process_cpu_s_per_10k),
            )
        })
        .collect();
    let falls = (cpu.len() > 1).then(|| {
        cpu.windows(2).all(|pair| match (pair[0].1, pair[1].1) {
            (Some(a), Some(b)) => b < a,
            _ => false,
        })
    });
    targets.push(Target {
        target: "gateway CPU per event falls as the window grows".to_owned(),
        measured: cpu
            .iter()
            .map(|(w, c)| format!("w{w}: {} s/10k", fmt_opt(*c, 3)))
            .collect::<Vec<_>>()
            .join(", "),
        met: falls,
    });
    Summary {
        kind: "summary",
        run_id: run_id.to_owned(),
        gateway_max_eps: gateway_max,
        ratios,
        targets,
    }
}

fn markdown(
    info: &RunInfo,
    results: &[PhaseResult],
    summary: &Summary,
    overload: Option<&OverloadSummary>,
    svg_name: &str,
) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# ackgate benchmark {}, run {} ({})\n",
        file_stem(),
        info.run_id,
        if info.quick { "quick" } else { "full" }
    );
    let _ = writeln!(
        md,
        "- machine: **nproc {}**, {}, {} GiB, Linux {}; load average at start {}",
        info.nproc,
        info.cpu_model,
        fmt_opt(info.memory_gib, 1),
        info.kernel,
        info.load_average
    );
    let _ = writeln!(
        md,
        "- versions: {} (git {}{}), {}, librdkafka {}, broker {}, Redis {}",
        info.ackgate_version,
        info.git_sha,
        if info.git_dirty { ", dirty" } else { "" },
        info.rustc,
        info.librdkafka,
        info.broker,
        info.redis
    );
    let _ = writeln!(
        md,
        "- settings: {} B JSON events, {} partitions, {} s measured per phase after {} s warm-up, \
         windows {:?}, duplicate mix {} %, gateway flags `{}`; everything on this one machine \
         over loopback (gateway, broker, Redis and the load generator share the cores)",
        info.event_bytes,
        info.partitions,
        info.duration_s,
        info.warmup_s,
        info.windows,
        info.duplicate_percent,
        if info.gateway_args.is_empty() {
            "(defaults)"
        } else {
            &info.gateway_args
        }
    );
    let _ = writeln!(md, "- started {}\n", info.started_at);
    md.push_str(
        "CPU/10k is CPU-seconds per 10 000 successful events of the measured process: the gateway \
         for gateway phases, the bench's own client for raw phases. CPU % is of one core; machine busy % is of all cores, \
         everything on the machine included. \
         Latency is request → whole response (gateway), send → delivery report (raw producer), \
         claim + settle (raw Redis); fixed-rate phases count from the intended send time.\n\n",
    );
    md.push_str(
        "| phase | window | rate asked | throughput ev/s | p50 ms | p99 ms | p99.9 ms | CPU/10k s | \
         measured CPU % | gateway peak RSS MiB | generator CPU % | broker CPU % | Redis CPU % | \
         machine busy % | non-2xx |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in results {
        let _ = writeln!(
            md,
            "| {}{} | {} | {} | {:.0} | {} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} |",
            r.phase,
            if r.profiled { " (under perf)" } else { "" },
            r.window,
            fmt_opt(r.target_rate_eps, 0),
            r.throughput_eps,
            fmt_opt(r.latency_ms.map(|l| l.p50), 2),
            fmt_opt(r.latency_ms.map(|l| l.p99), 2),
            fmt_opt(r.latency_ms.map(|l| l.p999), 2),
            fmt_opt(r.process_cpu_s_per_10k, 3),
            r.process_cpu_pct,
            fmt_opt(r.gateway_peak_rss_mib, 1),
            fmt_opt(r.generator_cpu_pct, 0),
            fmt_opt(r.broker_cpu_pct, 0),
            fmt_opt(r.redis_cpu_pct, 0),
            fmt_opt(r.machine_busy_pct, 0),
            if r.phase == "overload_4x" {
                format!(
                    "{} shed (503), {} other",
                    r.answers.get("503 + Retry-After").copied().unwrap_or(0),
                    r.failures
                )
            } else {
                r.failures.to_string()
            }
        );
    }
    md.push_str("\n## Ratios (within this run)\n\n");
    md.push_str(
        "| window | gateway / raw producer | gateway / raw Redis | dup mix / unique | \
         gateway p99 / raw producer p99 | gateway CPU µs/event | generator + Redis + broker CPU \
         µs/event | ceiling if the gateway cost nothing, ev/s |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in &summary.ratios {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            r.window,
            fmt_opt(r.gateway_over_raw_producer, 2),
            fmt_opt(r.gateway_over_raw_redis, 2),
            fmt_opt(r.dup_over_unique, 2),
            fmt_opt(r.gateway_p99_over_raw_producer_p99, 2),
            fmt_opt(r.gateway_cpu_us_per_event, 0),
            fmt_opt(r.others_cpu_us_per_event, 0),
            fmt_opt(r.colocated_ceiling_eps, 0),
        );
    }
    md.push_str(
        "\nThe ceiling column: the cores of this machine divided by what the load generator, \
         Redis and the broker spent per gateway event in the same phase: no gateway, however \
         cheap, passes it while they share the machine.\n",
    );
    md.push_str("\n## Targets\n\n| target | measured | met |\n|---|---|---|\n");
    for t in &summary.targets {
        let _ = writeln!(
            md,
            "| {} | {} | {} |",
            t.target,
            t.measured,
            match t.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "n/a",
            }
        );
    }
    if let Some(o) = overload {
        let _ = writeln!(
            md,
            "\n## Overload: 4× the sustainable rate\n\n\
             One gateway with `--max-in-flight {}`: {} connections closed-loop, then {} connections \
             open-loop at 4 × {:.0} = {:.0} ev/s (new events, no retries), then closed-loop again.\n\n\
             - during overload: sent and answered {:.0} req/s ({} scheduled requests skipped: every \
             connection was busy): {:.0} × 201/s, {:.0} × 503 + Retry-After/s, {} other answers; \
             503 latency p50 {} ms, p99 {} ms; 201 latency p50 {} ms, p99 {} ms\n\
             - throughput before {:.0} ev/s, after {:.0} ev/s: recovered to {:.2}×\n\
             - RSS (MiB) at the end of: before {}, overload {}, after {}; max during overload {}; \
             peak (VmHWM) {}\n",
            o.max_in_flight,
            o.max_in_flight,
            o.connections,
            o.sustainable_eps,
            o.offered_eps,
            o.sent_eps,
            o.skipped_tickets,
            o.ok_eps,
            o.shed_eps,
            o.other_answers,
            fmt_opt(o.shed_latency_ms.map(|l| l.p50), 2),
            fmt_opt(o.shed_latency_ms.map(|l| l.p99), 2),
            fmt_opt(o.ok_latency_ms.map(|l| l.p50), 2),
            fmt_opt(o.ok_latency_ms.map(|l| l.p99), 2),
            o.throughput_before_eps,
            o.throughput_after_eps,
            o.recovered_ratio,
            fmt_opt(o.rss_mib_end_before, 1),
            fmt_opt(o.rss_mib_end_overload, 1),
            fmt_opt(o.rss_mib_end_after, 1),
            fmt_opt(o.rss_mib_max_during_overload, 1),
            fmt_opt(o.peak_rss_mib, 1),
        );
        let _ = writeln!(
            md,
            "| back-pressure check | measured |\n|---|---|\n\
             | keeps answering | {} connection errors or timeouts; 503 p99 {} ms |\n\
             | sheds load with 503 + Retry-After | {:.0} per second, {} other answers |\n\
             | goodput while shedding | {:.0} × 201/s = {:.2} × the sustainable rate |\n\
             | RSS flat | {} → max {} MiB; drift over the overload once its connections are \
             open: {} MiB |\n\
             | recovers its throughput | {:.0} → {:.0} ev/s = {:.2}× |\n",
            o.transport_errors,
            fmt_opt(o.shed_latency_ms.map(|l| l.p99), 1),
            o.shed_eps,
            o.other_answers,
            o.ok_eps,
            o.ok_eps / o.sustainable_eps.max(f64::MIN_POSITIVE),
            fmt_opt(o.rss_mib_end_before, 1),
            fmt_opt(o.rss_mib_max_during_overload, 1),
            fmt_opt(o.rss_mib_drift_during_overload, 1),
            o.throughput_before_eps,
            o.throughput_after_eps,
            o.recovered_ratio,
        );
        md.push_str(
            "| second | 201 | 503 | other | skipped | 201 p99 ms | gateway RSS MiB | gateway CPU % |\n\
             |---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for s in &o.timeline {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                s.second,
                s.ok,
                s.shed,
                s.other,
                s.skipped,
                fmt_opt(s.ok_p99_ms, 1),
                fmt_opt(s.rss_mib, 1),
                fmt_opt(s.cpu_pct, 0)
            );
        }
    }
    let _ = writeln!(
        md,
        "\n![latency vs throughput]({svg_name})\n\nRaw data: `{}.jsonl` (one JSON object per \
         line: `run`, `phase`, `overload`, `summary`).",
        file_stem()
    );
    md
}

/// Latency (p99 filled, p50 hollow; log scale) against throughput, one series per phase kind.
fn svg(results: &[PhaseResult]) -> String {
    let series: [(&str, &str, &[&str]); 4] = [
        (
            "raw producer",
            "#1f77b4",
            &["raw_producer", "raw_producer_fixed"],
        ),
        ("raw Redis", "#2ca02c", &["raw_redis"]),
        (
            "gateway, unique",
            "#d62728",
            &["gateway_unique", "gateway_fixed"],
        ),
        ("gateway, 10 % retries", "#ff7f0e", &["gateway_dup10"]),
    ];
    let points: Vec<(usize, f64, f64, f64, String)> = results
        .iter()
        .filter(|r| !r.profiled)
        .filter_map(|r| {
            let s = series
                .iter()
                .position(|(_, _, phases)| phases.contains(&r.phase.as_str()))?;
            let l = r.latency_ms?;
            let label = match r.target_rate_eps {
                Some(_) => format!("w{} fixed", r.window),
                None => format!("w{}", r.window),
            };
            Some((s, r.throughput_eps, l.p50.max(0.01), l.p99.max(0.01), label))
        })
        .collect();
    let (w, h, left, right, top, bottom) = (900.0, 560.0, 80.0, 220.0, 40.0, 60.0);
    let x_max = points.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let y_lo = points
        .iter()
        .map(|p| p.2)
        .fold(f64::INFINITY, f64::min)
        .min(1.0)
        .log10()
        .floor();
    let y_hi = points
        .iter()
        .map(|p| p.3)
        .fold(1.0, f64::max)
        .log10()
        .ceil()
        .max(y_lo + 1.0);
    let px = |x: f64| left + x / x_max * (w - left - right);
    let py = |y: f64| top + (y_hi - y.log10()) / (y_hi - y_lo) * (h - top - bottom);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"22\" font-size=\"15\">ackgate: latency vs throughput ({})</text>\n",
        left,
        file_stem()
    );
    // Axes and grid.
    let (x0, x1, y0, y1) = (left, w - right, top, h - bottom);
    let _ = writeln!(
        s,
        "<line x1=\"{x0}\" y1=\"{y1}\" x2=\"{x1}\" y2=\"{y1}\" stroke=\"black\"/>\
         <line x1=\"{x0}\" y1=\"{y0}\" x2=\"{x0}\" y2=\"{y1}\" stroke=\"black\"/>"
    );
    for decade in (y_lo as i32)..=(y_hi as i32) {
        let v = 10f64.powi(decade);
        let y = py(v);
        let _ = writeln!(
            s,
            "<line x1=\"{x0}\" y1=\"{y:.1}\" x2=\"{x1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{} ms</text>",
            x0 - 6.0,
            y + 4.0,
            if v < 1.0 {
                format!("{v}")
            } else {
                format!("{v:.0}")
            }
        );
    }
    let step = nice_step(x_max / 6.0);
    let mut tick = 0.0;
    while tick <= x_max {
        let x = px(tick);
        let _ = writeln!(
            s,
            "<line x1=\"{x:.1}\" y1=\"{y1}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"black\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{tick:.0}</text>",
            y1 + 5.0,
            y1 + 18.0
        );
        tick += step;
    }
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">throughput (events/s)</text>\
         <text x=\"16\" y=\"{:.1}\" transform=\"rotate(-90 16 {:.1})\" text-anchor=\"middle\">\
         latency (ms, log scale)</text>",
        (x0 + x1) / 2.0,
        h - 18.0,
        (y0 + y1) / 2.0,
        (y0 + y1) / 2.0
    );
    for (i, (name, color, _)) in series.iter().enumerate() {
        let mut mine: Vec<_> = points.iter().filter(|p| p.0 == i).collect();
        mine.sort_by(|a, b| a.1.total_cmp(&b.1));
        // The closed-loop points, in window order: the curve as the window grows.
        let mut curve: Vec<_> = mine.iter().filter(|p| !p.4.ends_with("fixed")).collect();
        curve.sort_by_key(|p| p.4.trim_start_matches('w').parse::<usize>().unwrap_or(0));
        if curve.len() > 1 {
            let path: Vec<String> = curve
                .iter()
                .map(|p| format!("{:.1},{:.1}", px(p.1), py(p.3)))
                .collect();
            let _ = writeln!(
                s,
                "<polyline points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\"/>",
                path.join(" ")
            );
        }
        for p in &mine {
            let (x, y50, y99) = (px(p.1), py(p.2), py(p.3));
            let _ = writeln!(
                s,
                "<line x1=\"{x:.1}\" y1=\"{y50:.1}\" x2=\"{x:.1}\" y2=\"{y99:.1}\" stroke=\"{color}\" \
                 stroke-opacity=\"0.4\"/>\
                 <circle cx=\"{x:.1}\" cy=\"{y99:.1}\" r=\"5\" fill=\"{color}\"/>\
                 <circle cx=\"{x:.1}\" cy=\"{y50:.1}\" r=\"4\" fill=\"white\" stroke=\"{color}\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" fill=\"{color}\">{}</text>",
                x + 7.0,
                y99 - 6.0,
                p.4
            );
        }
        let ly = top + 20.0 + 22.0 * i as f64;
        let lx = w - right + 20.0;
        let _ = writeln!(
            s,
            "<circle cx=\"{lx}\" cy=\"{ly}\" r=\"5\" fill=\"{color}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{name}</text>",
            lx + 10.0,
            ly + 4.0
        );
    }
    let ly = top + 20.0 + 22.0 * series.len() as f64 + 10.0;
    let lx = w - right + 20.0;
    let _ = writeln!(
        s,
        "<circle cx=\"{lx}\" cy=\"{ly}\" r=\"5\" fill=\"#555\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\">p99</text>\
         <circle cx=\"{lx}\" cy=\"{:.1}\" r=\"4\" fill=\"white\" stroke=\"#555\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\">p50</text>",
        lx + 10.0,
        ly + 4.0,
        ly + 20.0,
        lx + 10.0,
        ly + 24.0
    );
    s.push_str("</svg>\n");
    s
}

fn nice_step(raw: f64) -> f64 {
    let magnitude = 10f64.powf(raw.max(1.0).log10().floor());
    let base = raw / magnitude;
    let nice = if base <= 1.0 {
        1.0
    } else if base <= 2.0 {
        2.0
    } else if base <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

/// What makes the benchmark broken (not slow): errors, no throughput, unexpected answers.
fn broken(results: &[PhaseResult], overload: Option<&OverloadSummary>) -> Vec<String> {
    let mut problems = Vec::new();
    for r in results {
        let answered: u64 = r.answers.values().sum();
        if r.events == 0 {
            problems.push(format!(
                "{} (window {}): no successful event",
                r.phase, r.window
            ));
        }
        let tolerated = ((answered as f64) * TOLERATED_FAILURE_RATIO).ceil() as u64;
        if r.failures > tolerated.max(1) {
            problems.push(format!(
                "{} (window {}): {} unexpected answers of {answered}: {:?}",
                r.phase, r.window, r.failures, r.answers
            ));
        }
        let expects_shedding = r.phase == "overload_4x";
        if !expects_shedding && r.answers.contains_key("503 + Retry-After") {
            // Shedding below the cap would be a gateway or bench bug; counted above as well.
            problems.push(format!(
                "{} (window {}): the gateway shed load without overload",
                r.phase, r.window
            ));
        }
    }
    if let Some(o) = overload
        && o.ok_eps <= 0.0
    {
        problems.push("overload: no 201 at all during the overload".to_owned());
    }
    problems
}

// ---------------------------------------------------------------------------------------------

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if let Some(data) = &args.perf_report {
        return match perf_text(data, &data.display().to_string()) {
            Ok(text) => {
                print!("{text}");
                std::process::ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("perf report failed: {error:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let outcome = tokio::select! {
        outcome = run(args) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    match outcome {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(error) => {
            eprintln!("bench error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs every phase; `Ok(false)` when the benchmark turned out broken.
async fn run(args: Args) -> anyhow::Result<bool> {
    if args.brokers.is_empty() {
        bail!("--brokers (ACKGATE_BENCH_KAFKA_BROKERS) is required: run scripts/bench.sh");
    }
    if args.windows.is_empty() || args.windows.contains(&0) {
        bail!("--windows must list positive numbers");
    }
    if !args.gateway_bin.exists() {
        bail!(
            "{} does not exist: cargo build --release --bin ackgate",
            args.gateway_bin.display()
        );
    }
    std::fs::create_dir_all(&args.out_dir)?;
    std::fs::create_dir_all(&args.work_dir)?;
    let run_id = ulid::Ulid::new().to_string().to_lowercase()[16..].to_owned();
    let mut redis = redis_connection(&args.redis_url).await?;
    let (redis_pid, redis_version) = redis_server_info(&mut redis).await;
    let info = run_info(&args, &run_id, &redis_version);
    let stem = file_stem();
    let jsonl = args.out_dir.join(format!("{stem}.jsonl"));
    append_line(&jsonl, &serde_json::to_string(&info)?)?;
    println!(
        "ackgate bench {stem} run {run_id}: nproc {}, {}; windows {:?}, {} s (+{} s warm-up) per \
         phase, {} B events",
        info.nproc, info.cpu_model, args.windows, args.duration, args.warmup, args.event_bytes
    );
    let reference = args.reference_window.unwrap_or_else(|| {
        if args.windows.contains(&256) {
            256
        } else {
            *args.windows.iter().max().expect("not empty")
        }
    });
    let mut run = Run {
        args: args.clone(),
        run_id: run_id.clone(),
        probes: Probes {
            gateway: None,
            broker: args.broker_pid,
            redis: redis_pid,
        },
        redis,
        phase_count: 0,
        results: Vec::new(),
        jsonl: jsonl.clone(),
    };

    for &window in &args.windows {
        if !args.gateway_only {
            run.raw_producer(window, Pace::Closed).await?;
            run.raw_redis(window).await?;
        }
        run.gateway(window, Pace::Closed, 0, false).await?;
        if args.duplicate_percent > 0 {
            run.gateway(window, Pace::Closed, args.duplicate_percent, false)
                .await?;
        }
    }
    let gateway_max = run
        .results
        .iter()
        .filter(|r| r.phase == "gateway_unique")
        .map(|r| r.throughput_eps)
        .fold(0.0, f64::max);
    if !args.no_fixed_rate && gateway_max > 0.0 {
        let half = gateway_max / 2.0;
        run.gateway(reference, Pace::Rate(half), 0, false).await?;
        if !args.gateway_only {
            run.raw_producer(reference, Pace::Rate(half)).await?;
        }
    }
    let overload = if !args.no_overload && gateway_max > 0.0 {
        Some(run.overload(reference, gateway_max).await?)
    } else {
        None
    };
    let soak = if args.soak_secs > 0.0 {
        let window = *args.windows.iter().max().expect("not empty");
        Some(run.soak(window, args.soak_secs).await?)
    } else {
        None
    };
    if args.perf {
        if command_output("perf", &["--version"]).is_some() {
            run.gateway(reference, Pace::Closed, 0, true).await?;
        } else {
            eprintln!("warning: perf is not installed; no profile");
        }
    }

    let summary = summarize(
        &run_id,
        &args,
        &run.results,
        reference,
        gateway_max,
        info.nproc,
    );
    append_line(&jsonl, &serde_json::to_string(&summary)?)?;
    // One .jsonl and one .md per day and commit, each run appended; one plot per run.
    let svg_name = format!("{stem}-{run_id}.svg");
    std::fs::write(args.out_dir.join(&svg_name), svg(&run.results))?;
    let mut md = markdown(&info, &run.results, &summary, overload.as_ref(), &svg_name);
    if let Some(soak) = &soak {
        soak_markdown(&mut md, soak);
    }
    let md_path = args.out_dir.join(format!("{stem}.md"));
    let separator = if md_path.exists() { "\n---\n\n" } else { "" };
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&md_path)?
        .write_all(format!("{separator}{md}").as_bytes())?;
    println!("\n{md}");
    println!(
        "results: {} (+ .md, .svg)",
        args.out_dir.join(format!("{stem}.jsonl")).display()
    );

    let problems = broken(&run.results, overload.as_ref());
    for problem in &problems {
        eprintln!("BROKEN: {problem}");
    }
    Ok(problems.is_empty())
}
