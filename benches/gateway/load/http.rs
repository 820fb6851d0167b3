//! The single-event HTTP load on the gateway: keep-alive HTTP/1.1 connections spoken by hand
//! ([`Conn`]), each posting unique events or, in the duplicate mix, retries of answered ones.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;

use crate::load::conn::{Answer, Conn};
use crate::load::pacing::{Pace, Tickets, Window};
use crate::load::{Events, REQUEST_TIMEOUT, is_duplicate};
use crate::tally::{Outcome, Tally, Timeline, lock, take_tally};

pub(crate) struct HttpLoad {
    pub(crate) addr: SocketAddr,
    pub(crate) topic: String,
    pub(crate) events: Events,
    pub(crate) connections: usize,
    pub(crate) duplicate_percent: u32,
    pub(crate) tickets: Tickets,
    pub(crate) timeline: Option<Arc<Mutex<Timeline>>>,
}

impl HttpLoad {
    /// `connections` connections to the gateway at `addr` posting `events` to `topic`, paced by
    /// `pace` over `window`: no retries, no timeline (set those fields for them).
    pub(crate) fn new(
        addr: SocketAddr,
        topic: &str,
        events: Events,
        connections: usize,
        pace: Pace,
        window: Window,
    ) -> Self {
        HttpLoad {
            addr,
            topic: topic.to_owned(),
            events,
            connections,
            duplicate_percent: 0,
            tickets: Tickets::new(pace, window),
            timeline: None,
        }
    }
}

/// Runs `connections` keep-alive HTTP/1.1 clients against the gateway until the window ends.
pub(crate) async fn run_http(load: HttpLoad) -> anyhow::Result<Tally> {
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
            lock(&tally).skipped += 1;
            if let Some(timeline) = &load.timeline {
                lock(timeline).bucket(Instant::now()).skipped += 1;
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
            lock(&tally).reconnects += 1;
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
        let exchange = open.post(&host, &path, Some(&key), &body);
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

pub(crate) fn error_kind(error: &std::io::Error) -> Cow<'static, str> {
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
        lock(timeline).record(done, outcome, latency);
    }
    if window.counts(done) {
        lock(tally).record(outcome, answer, latency);
    }
}
