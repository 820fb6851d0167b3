//! The HTTP load on the gateway: keep-alive HTTP/1.1 connections spoken by hand (one reused
//! buffer per connection, a single `write` per request, `httparse` for the answer), each
//! posting unique events or, in the duplicate mix, retries of answered ones.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

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
        lock(timeline).record(done, outcome, latency);
    }
    if window.counts(done) {
        lock(tally).record(outcome, answer, latency);
    }
}
