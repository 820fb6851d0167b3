//! The batch load on the gateway: keep-alive HTTP/1.1 connections ([`Conn`]), each with one
//! batch of unique events in flight at `POST /v1/topics/{topic}/events:batch`; every event's
//! result in the 207 answer is counted, and the latency of the whole request is the latency of
//! each of its events.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Deserialize;

use crate::load::conn::Conn;
use crate::load::http::error_kind;
use crate::load::pacing::Tickets;
use crate::load::{Events, REQUEST_TIMEOUT};
use crate::tally::{Outcome, Tally, lock, take_tally};

pub(crate) struct BatchLoad {
    pub(crate) addr: SocketAddr,
    pub(crate) topic: String,
    pub(crate) events: Events,
    pub(crate) connections: usize,
    /// Events per batch request.
    pub(crate) batch_events: usize,
    /// One ticket per batch request.
    pub(crate) tickets: Tickets,
}

/// The part of a 207 answer the bench reads: each event's status, in request order.
#[derive(Deserialize)]
struct BatchAnswer {
    results: Vec<EventResult>,
}

#[derive(Deserialize)]
struct EventResult {
    status: u16,
    #[serde(default)]
    replayed: bool,
}

/// Runs `connections` clients, each posting one batch at a time, until the tickets run out.
pub(crate) async fn run_batches(load: BatchLoad) -> anyhow::Result<Tally> {
    let tally = Arc::new(Mutex::new(Tally::new()));
    let load = Arc::new(load);
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
        workers.spawn(batch_worker(worker, conn, load.clone(), tally.clone()));
    }
    while let Some(joined) = workers.join_next().await {
        joined.context("a batch worker panicked")?;
    }
    Ok(take_tally(tally))
}

async fn batch_worker(worker: usize, conn: Conn, load: Arc<BatchLoad>, tally: Arc<Mutex<Tally>>) {
    let host = load.addr.to_string();
    let path = format!("/v1/topics/{}/events:batch", load.topic);
    let n = load.batch_events;
    let window = load.tickets.window;
    let mut body = Vec::with_capacity(n * (load.events.bytes + 64) + 16);
    let mut conn = Some(conn);
    let mut seq = 0u64;
    while let Some(at) = load.tickets.take() {
        load.tickets.wait(at).await;
        body.clear();
        body.extend_from_slice(br#"{"events":["#);
        for i in 0..n {
            if i > 0 {
                body.push(b',');
            }
            seq += 1;
            let key = load.events.key(worker, seq);
            body.extend_from_slice(br#"{"idempotency_key":""#);
            body.extend_from_slice(key.as_bytes());
            body.extend_from_slice(br#"","value":"#);
            load.events.write_body(&key, &mut body);
            body.push(b'}');
        }
        body.extend_from_slice(b"]}");
        if conn.is_none() {
            lock(&tally).reconnects += 1;
            conn = Conn::open(load.addr).await.ok();
        }
        let Some(open) = conn.as_mut() else {
            if window.counts(Instant::now()) {
                lock(&tally).record_n(Outcome::Other, "error: connect", Duration::ZERO, n as u64);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let sent = Instant::now();
        let exchange = open.post(&host, &path, None, &body);
        let result = tokio::time::timeout(REQUEST_TIMEOUT, exchange).await;
        let done = Instant::now();
        let counts = match result {
            Ok(Ok(answer)) => {
                let counts = if answer.status == 207 {
                    count_results(open.answer_body(), n)
                } else {
                    whole(Cow::Owned(format!("{} (whole batch)", answer.status)), n)
                };
                if answer.close {
                    conn = None;
                }
                counts
            }
            Ok(Err(error)) => {
                conn = None;
                whole(error_kind(&error), n)
            }
            Err(_) => {
                conn = None;
                whole(Cow::Borrowed("error: timeout"), n)
            }
        };
        if window.counts(done) {
            let mut tally = lock(&tally);
            for ((outcome, answer), count) in &counts {
                tally.record_n(*outcome, answer, done - sent, *count);
            }
        }
    }
}

type Counts = BTreeMap<(Outcome, Cow<'static, str>), u64>;

/// All `n` events of a batch answered alike (a transport error, a whole-request refusal).
fn whole(answer: Cow<'static, str>, n: usize) -> Counts {
    Counts::from([((Outcome::Other, answer), n as u64)])
}

/// The events of a 207 answer by result: 201, 201 replayed, or another status.
fn count_results(body: &[u8], n: usize) -> Counts {
    let answer: BatchAnswer = match serde_json::from_slice(body) {
        Ok(answer) => answer,
        Err(_) => return whole(Cow::Borrowed("error: malformed 207 answer"), n),
    };
    if answer.results.len() != n {
        return whole(
            Cow::Borrowed("error: 207 answer without one result per event"),
            n,
        );
    }
    let mut counts = Counts::new();
    for result in &answer.results {
        let key = match (result.status, result.replayed) {
            (201, false) => (Outcome::Ok, Cow::Borrowed("201")),
            (201, true) => (Outcome::Replayed, Cow::Borrowed("201 replayed")),
            (status, _) => (Outcome::Other, Cow::Owned(format!("{status} in a batch"))),
        };
        *counts.entry(key).or_default() += 1;
    }
    counts
}
