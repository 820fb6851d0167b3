//! Hostile input, generated: property tests on everything that parses what a client sends.
//!
//! The parsers (`TopicName::parse`, `IdempotencyKey::parse`) are checked directly against a
//! model of the contract with many cases. The whole request path is checked through the real
//! application against the real broker and Redis, with requests written byte by byte on a raw
//! socket (so no client library tidies them up first), and a model that predicts every answer:
//!
//! - never a 5xx (a panic would be a 500 from the catch-panic layer), never a dropped connection;
//! - every non-2xx is `application/problem+json` with the predicted `code`;
//! - a refused request publishes nothing and leaves no key in Redis (Redis is compared with the
//!   model after every request, Kafka once at the end);
//! - what is accepted is in Kafka byte for byte, where the 201 says, and a repeated event is
//!   replayed, not published again.
//!
//! Bytes HTTP forbids in a header (control characters, `{` in a name) never reach the
//! application: hyper answers them with a bare 400 (see
//! `malformed_header_bytes_are_refused_before_the_application`).
//!
//! Run: `bash scripts/tansu.sh start 19094`, then
//! `ACKGATE_TEST_KAFKA_BROKERS=127.0.0.1:19094 cargo test --test hostile`. The HTTP property
//! runs 64 cases; `ACKGATE_HOSTILE_CASES=2000` hunts longer.

mod common;

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use ackgate::event::{IdempotencyKey, TopicName};
use common::*;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PARTITIONS: i32 = 3;
/// The body limit of the app in the HTTP property: large enough for 100 000 levels of nested
/// JSON (200 000 bytes), small enough for librdkafka's default `message.max.bytes` (1 000 000).
const LIMIT: usize = 256 * 1024;
/// How deep the nested-JSON bodies go.
const NESTING: usize = 100_000;

// ---------------------------------------------------------------------------------------------
// The parsers, directly.

/// The contract of `Idempotency-Key`: one optional pair of surrounding quotes, then 1 to 255
/// visible ASCII characters.
fn model_key(raw: &[u8]) -> Option<&[u8]> {
    let inner = match raw {
        [b'"', inner @ .., b'"'] => inner,
        _ => raw,
    };
    let ok = (1..=255).contains(&inner.len()) && inner.iter().all(|b| (0x21..=0x7e).contains(b));
    ok.then_some(inner)
}

/// The contract of a topic name: 1 to 249 of `[a-zA-Z0-9._-]`, and neither `.` nor `..`.
fn model_topic(name: &str) -> bool {
    (1..=249).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn visible_ascii(len: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(0x21u8..=0x7e, len)
}

fn quoted(inner: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    inner.prop_map(|inner| [&b"\""[..], &inner, b"\""].concat())
}

/// Any bytes, visible ASCII near the length limits, and quoted forms of both.
fn raw_keys() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..=300),
        visible_ascii(0..=300),
        visible_ascii(253..=258),
        quoted(visible_ascii(0..=300)),
        quoted(visible_ascii(253..=258)),
        quoted(prop::collection::vec(any::<u8>(), 0..=300)),
        prop::sample::select(vec![
            &b""[..],
            b"\"",
            b"\"\"",
            b"\"\"\"",
            b" ",
            b"a b",
            b"\"a b\"",
            b"\t",
            b"\x7f",
            b"\xc3\xbc",
            b"\x00",
        ])
        .prop_map(<[u8]>::to_vec),
    ]
}

fn topic_names() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "\\PC{0,300}",
        "[a-zA-Z0-9._-]{0,260}",
        "[a-zA-Z0-9._-]{248,251}",
        "[a-z.]{1,3}",
        prop::sample::select(vec![
            "", ".", "..", "...", "a/b", "a:b", "a b", "a%2Fb", "ü", "日本", "a\u{0}",
        ])
        .prop_map(str::to_owned),
    ]
}

proptest! {
    #![proptest_config(Config {
        cases: 4096,
        // Integration tests have no lib.rs beside them for proptest's regression files.
        failure_persistence: None,
        ..Config::default()
    })]

    #[test]
    fn idempotency_key_parse_is_the_contract(raw in raw_keys()) {
        let parsed = IdempotencyKey::parse(&raw);
        match model_key(&raw) {
            Some(inner) => {
                let key = parsed.map_err(|why| {
                    TestCaseError::fail(format!("{raw:?} refused: {why}"))
                })?;
                prop_assert_eq!(key.as_str().as_bytes(), inner);
            }
            None => prop_assert!(parsed.is_err(), "{:?} accepted as {:?}", raw, parsed),
        }
    }

    #[test]
    fn a_quoted_key_is_the_same_key(inner in visible_ascii(1..=255)) {
        let quoted = [&b"\""[..], &inner, b"\""].concat();
        let key = IdempotencyKey::parse(&quoted).unwrap();
        prop_assert_eq!(key.as_str().as_bytes(), &inner[..]);
        // Only one layer of quotes comes off: `""k""` is the key `"k"`.
        let twice = [&b"\""[..], &quoted, b"\""].concat();
        match IdempotencyKey::parse(&twice) {
            Ok(key) => prop_assert_eq!(key.as_str().as_bytes(), &quoted[..]),
            Err(_) => prop_assert!(quoted.len() > 255),
        }
    }

    #[test]
    fn topic_name_parse_is_the_contract(name in topic_names()) {
        let parsed = TopicName::parse(&name);
        if model_topic(&name) {
            let topic = parsed.map_err(|why| {
                TestCaseError::fail(format!("{name:?} refused: {why}"))
            })?;
            prop_assert_eq!(topic.as_str(), name.as_str());
        } else {
            prop_assert!(parsed.is_err(), "{:?} accepted", name);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Requests on the wire.

/// One request as it goes on the wire. Header names are tokens; values are any bytes HTTP
/// allows in a field (visible ASCII, space, tab, obs-text 0x80-0xFF).
#[derive(Clone)]
struct Request {
    topic: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Body,
}

/// Bytes printed as a byte string, so that a failing case reads like the request.
struct Esc<'a>(&'a [u8]);

impl std::fmt::Debug for Esc<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "b\"{}\"", self.0.escape_ascii())
    }
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<_> = self
            .headers
            .iter()
            .map(|(name, value)| (name, Esc(value)))
            .collect();
        let body = match &self.body {
            Body::Bytes(bytes) => format!("{:?}", Esc(bytes)),
            other => format!("{other:?}"),
        };
        f.debug_struct("Request")
            .field("topic", &self.topic)
            .field("headers", &headers)
            .field("body", &format_args!("{body}"))
            .finish()
    }
}

/// A body; the large ones are built on demand so that a failing case prints legibly.
#[derive(Debug, Clone)]
enum Body {
    Bytes(Vec<u8>),
    /// Exactly the limit: a JSON string, or plain bytes.
    AtLimit {
        json: bool,
    },
    /// One byte over the limit.
    OverLimit,
    /// `NESTING` opening brackets, closed (valid JSON) or not.
    Nested {
        closed: bool,
    },
}

impl Body {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Body::Bytes(bytes) => bytes.clone(),
            Body::AtLimit { json: true } => {
                let mut body = vec![b'j'; LIMIT];
                body[0] = b'"';
                body[LIMIT - 1] = b'"';
                body
            }
            Body::AtLimit { json: false } => (0..LIMIT).map(|i| (i % 251) as u8).collect(),
            Body::OverLimit => vec![b'x'; LIMIT + 1],
            Body::Nested { closed } => {
                let mut body = vec![b'['; NESTING];
                if *closed {
                    body.extend(std::iter::repeat_n(b']', NESTING));
                }
                body
            }
        }
    }
}

/// The path segment of a topic: every byte but the unreserved ones percent-encoded, so the
/// gateway sees exactly `topic` after decoding. `.` and `..` go as they are.
fn topic_segment(topic: &str) -> String {
    let mut out = String::new();
    for byte in topic.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[derive(Debug)]
struct RawReply {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl RawReply {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    fn header_str(&self, name: &str) -> Option<String> {
        self.header(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
}

/// Sends `head` + `body` on a fresh connection and reads the answer to the end. The body is
/// written while the answer is read, as a client that answers early would see it.
async fn exchange(addr: SocketAddr, head: Vec<u8>, body: Vec<u8>) -> Result<RawReply, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        write.write_all(&head).await?;
        write.write_all(&body).await?;
        write.flush().await?;
        // Returned, not dropped: dropping the write half would half-close the connection, and
        // hyper (without `half_close`) drops a request whose client half-closed.
        Ok::<_, std::io::Error>(write)
    });
    let mut raw = Vec::new();
    let read_result = tokio::time::timeout(Duration::from_secs(30), read.read_to_end(&mut raw))
        .await
        .map_err(|_| "no answer within 30 s".to_owned())?;
    // The gateway may answer before it read the whole body (e.g. an invalid key): a failed
    // write is then fine, a failed read before a whole answer is not.
    let _ = writer.await;
    if let Err(error) = read_result
        && raw.is_empty()
    {
        return Err(format!("connection failed before any answer: {error}"));
    }
    parse_reply(&raw)
}

fn parse_reply(raw: &[u8]) -> Result<RawReply, String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| {
            format!(
                "no complete answer head: {:?}",
                String::from_utf8_lossy(raw)
            )
        })?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, Vec<u8>)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().as_bytes().to_vec()))
        .collect();
    let rest = &raw[end + 4..];
    let reply = RawReply {
        status,
        headers,
        body: Vec::new(),
    };
    let body = if reply
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case(b"chunked"))
    {
        dechunk(rest)?
    } else if let Some(len) = reply.header("content-length") {
        let len: usize = std::str::from_utf8(len)
            .ok()
            .and_then(|l| l.parse().ok())
            .ok_or("bad content-length")?;
        if rest.len() < len {
            return Err(format!("body cut short: {} of {len} bytes", rest.len()));
        }
        rest[..len].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(RawReply { body, ..reply })
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("bad chunk")?;
        let size = std::str::from_utf8(&rest[..line_end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok())
            .ok_or("bad chunk size")?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        body.extend_from_slice(rest.get(..size).ok_or("chunk cut short")?);
        rest = rest.get(size + 2..).ok_or("chunk cut short")?;
    }
}

fn request_head(path: &str, headers: &[(String, Vec<u8>)], body_len: usize) -> Vec<u8> {
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\nContent-Length: \
         {body_len}\r\n"
    )
    .into_bytes();
    for (name, value) in headers {
        head.extend_from_slice(name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

async fn send_raw(addr: SocketAddr, request: &Request) -> Result<RawReply, String> {
    let body = request.body.bytes();
    let path = format!("/v1/topics/{}/events", topic_segment(&request.topic));
    exchange(
        addr,
        request_head(&path, &request.headers, body.len()),
        body,
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// The model: what the gateway must answer, and what Kafka and Redis must then hold.

/// HTTP trims spaces and tabs around a field value.
fn ows_trim(value: &[u8]) -> &[u8] {
    let start = value
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |i| i + 1);
    &value[start..end]
}

/// A JSON content type, as the contract defines it.
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// A Kafka record as the model expects it; headers sorted by name (stably: values of one name
/// keep their order).
#[derive(Clone, PartialEq, Eq)]
struct ExpectedRecord {
    key: Option<Vec<u8>>,
    headers: Vec<(String, Vec<u8>)>,
    value: Vec<u8>,
}

impl std::fmt::Debug for ExpectedRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<_> = self
            .headers
            .iter()
            .map(|(name, value)| (name, Esc(value)))
            .collect();
        let value = &self.value[..self.value.len().min(200)];
        f.debug_struct("Record")
            .field("key", &self.key.as_deref().map(Esc))
            .field("headers", &headers)
            .field("value_len", &self.value.len())
            .field("value", &Esc(value))
            .finish()
    }
}

#[derive(Debug, PartialEq)]
enum Expected {
    Problem(u16, &'static str),
    /// Valid: published, or replayed if the same event came before under this key.
    Accepted {
        key: String,
        record: ExpectedRecord,
    },
}

fn values<'a>(request: &'a Request, name: &str) -> Vec<&'a [u8]> {
    request
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| ows_trim(v))
        .collect()
}

/// What the gateway must answer to `request`, checking in the order the contract does.
fn expect(request: &Request, existing_topic: &str) -> Expected {
    use Expected::Problem;
    if TopicName::parse(&request.topic).is_err() {
        return Problem(400, "invalid-topic");
    }
    let key = match values(request, "idempotency-key")[..] {
        [] => return Problem(400, "missing-idempotency-key"),
        [one] => match IdempotencyKey::parse(one) {
            Ok(key) => key,
            Err(_) => return Problem(400, "invalid-idempotency-key"),
        },
        _ => return Problem(400, "invalid-header"),
    };
    let kafka_key = match values(request, "kafka-key")[..] {
        [] => None,
        [one] => Some(one.to_vec()),
        _ => return Problem(400, "invalid-header"),
    };
    let mut headers = Vec::new();
    for (name, value) in &request.headers {
        let name = name.to_ascii_lowercase();
        let Some(record_name) = name.strip_prefix("kafka-header-") else {
            continue;
        };
        if record_name.is_empty()
            || record_name == "idempotency-key"
            || record_name == "content-type"
        {
            return Problem(400, "invalid-header");
        }
        headers.push((record_name.to_owned(), ows_trim(value).to_vec()));
    }
    let content_type = match values(request, "content-type")[..] {
        [] => None,
        [one] if one.iter().all(|b| (0x20..0x7f).contains(b) || *b == b'\t') => {
            Some(String::from_utf8(one.to_vec()).unwrap())
        }
        _ => return Problem(400, "invalid-header"),
    };
    let value = request.body.bytes();
    if value.len() > LIMIT {
        return Problem(413, "payload-too-large");
    }
    if content_type.as_deref().is_some_and(is_json)
        && serde_json::from_slice::<serde::de::IgnoredAny>(&value).is_err()
    {
        return Problem(400, "invalid-json");
    }
    if request.topic != existing_topic {
        return Problem(404, "topic-not-found");
    }
    if let Some(content_type) = content_type {
        headers.push(("content-type".to_owned(), content_type.into_bytes()));
    }
    headers.push((
        "idempotency-key".to_owned(),
        key.as_str().as_bytes().to_vec(),
    ));
    headers.sort_by(|a, b| a.0.cmp(&b.0));
    Expected::Accepted {
        key: key.as_str().to_owned(),
        record: ExpectedRecord {
            key: kafka_key,
            headers,
            value,
        },
    }
}

/// What the run has put into Kafka and Redis so far.
#[derive(Default)]
struct Model {
    /// Accepted requests, to send again.
    accepted: Vec<Request>,
    /// Per idempotency key: the event and the first answer's body.
    keys: HashMap<String, (ExpectedRecord, Vec<u8>)>,
    /// Every record published, by (partition, offset).
    records: HashMap<(i32, i64), ExpectedRecord>,
    /// How many answers of each kind, to see what the generators reach.
    outcomes: std::collections::BTreeMap<String, usize>,
}

// ---------------------------------------------------------------------------------------------
// Generated requests.

/// Bytes HTTP allows in a field value: visible ASCII, space, tab and obs-text.
fn field_bytes(len: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![8 => 0x20u8..=0x7e, 1 => Just(b'\t'), 2 => 0x80u8..=0xff],
        len,
    )
}

fn idempotency_key_values() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => visible_ascii(1..=40),
        1 => visible_ascii(254..=256),
        2 => quoted(visible_ascii(0..=40)),
        1 => quoted(visible_ascii(255..=256)),
        2 => field_bytes(0..=300),
        1 => prop::sample::select(vec![&b"\"\""[..], b"\"", b"  k  ", b"\"k k\"", b"\xff"])
            .prop_map(<[u8]>::to_vec),
    ]
}

/// 0 to 2 occurrences of a header, mostly 0 or 1.
fn occurrences(value: BoxedStrategy<Vec<u8>>, none: u32) -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop_oneof![
        none => Just(Vec::new()),
        8 => value.clone().prop_map(|v| vec![v]),
        1 => prop::collection::vec(value, 2..=2),
    ]
}

fn kafka_keys() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => field_bytes(0..=128),
        1 => prop::sample::select(vec![&b""[..], b"  ", b"\t", b"\xff\xfe", b" k "])
            .prop_map(<[u8]>::to_vec),
    ]
}

fn kafka_headers() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    let prefix = prop::sample::select(vec!["Kafka-Header-", "kafka-header-", "KAFKA-HEADER-"]);
    let name = prop_oneof![
        16 => "[!#$%&'*+.^_`|~0-9A-Za-z-]{1,16}",
        1 => prop::sample::select(vec![
            "", "Idempotency-Key", "idempotency-key", "Content-Type", "CONTENT-TYPE", "Trace-Id",
        ])
        .prop_map(str::to_owned),
    ];
    prop::collection::vec(
        (prefix, name, field_bytes(0..=64)).prop_map(|(p, n, v)| (format!("{p}{n}"), v)),
        0..=4,
    )
}

fn content_types() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => prop::sample::select(vec![
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/cloudevents+json",
            "application/jsonl",
            "text/plain",
            "text/x+json",
            "application/octet-stream",
            "",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        1 => field_bytes(0..=40),
    ]
}

fn json_values() -> impl Strategy<Value = Vec<u8>> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        "\\PC{0,20}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::btree_map("\\PC{0,8}", inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
    .prop_map(|v| serde_json::to_vec(&v).unwrap())
}

fn bodies() -> impl Strategy<Value = Body> {
    prop_oneof![
        1 => Just(Body::Bytes(Vec::new())),
        4 => json_values().prop_map(Body::Bytes),
        3 => prop::collection::vec(any::<u8>(), 0..=2048).prop_map(Body::Bytes),
        2 => prop::sample::select(vec![
            &b"{not json"[..],
            b"[1,",
            b"\"unterminated",
            b"{\"a\":}",
            b"\xff\xfe{}",
            b"{\"a\":\"\xc3\x28\"}",
            b"nul\x00l",
            b"{} trailing",
        ])
        .prop_map(|b| Body::Bytes(b.to_vec())),
        1 => any::<bool>().prop_map(|json| Body::AtLimit { json }),
        1 => Just(Body::OverLimit),
        1 => any::<bool>().prop_map(|closed| Body::Nested { closed }),
    ]
}

fn topics(existing: String) -> impl Strategy<Value = String> {
    prop_oneof![
        14 => Just(existing),
        1 => "[a-zA-Z0-9._-]{1,40}",
        1 => "[a-z]{249,250}",
        1 => "\\PC{1,30}",
        1 => prop::sample::select(vec!["", ".", "..", "...", "a/b", "a:b", "a b", "%2E%2E", "ü"])
            .prop_map(str::to_owned),
    ]
}

/// Sends a fresh request, one accepted before (to be replayed), or a fresh event under a key
/// accepted before (to be refused as reused).
#[derive(Debug, Clone)]
enum Reuse {
    Fresh,
    Again(Index),
    KeyOf(Index),
}

fn requests(existing: String) -> impl Strategy<Value = (Request, Reuse)> {
    let request = (
        topics(existing),
        occurrences(idempotency_key_values().boxed(), 1),
        occurrences(kafka_keys().boxed(), 16),
        kafka_headers(),
        occurrences(content_types().boxed(), 4),
        bodies(),
    )
        .prop_map(
            |(topic, keys, kafka_keys, kafka_headers, content_types, body)| {
                let mut headers = Vec::new();
                headers.extend(keys.into_iter().map(|v| ("Idempotency-Key".to_owned(), v)));
                headers.extend(kafka_keys.into_iter().map(|v| ("Kafka-Key".to_owned(), v)));
                headers.extend(kafka_headers);
                headers.extend(
                    content_types
                        .into_iter()
                        .map(|v| ("Content-Type".to_owned(), v)),
                );
                Request {
                    topic,
                    headers,
                    body,
                }
            },
        );
    let reuse = prop_oneof![
        8 => Just(Reuse::Fresh),
        1 => any::<Index>().prop_map(Reuse::Again),
        1 => any::<Index>().prop_map(Reuse::KeyOf),
    ];
    (request, reuse)
}

// ---------------------------------------------------------------------------------------------
// The HTTP property.

fn check_problem(reply: &RawReply, status: u16, code: &str) -> Result<(), TestCaseError> {
    let body = String::from_utf8_lossy(&reply.body);
    prop_assert_eq!(
        (reply.status, reply.header_str("content-type")),
        (status, Some("application/problem+json".to_owned())),
        "body: {}",
        body
    );
    let json: serde_json::Value = serde_json::from_slice(&reply.body)
        .map_err(|e| TestCaseError::fail(format!("problem is not JSON ({e}): {body}")))?;
    prop_assert_eq!(&json["code"], code, "body: {}", body);
    prop_assert_eq!(&json["status"], status);
    prop_assert_eq!(&json["type"], &format!("urn:ackgate:problem:{code}"));
    prop_assert!(json["title"].is_string() && json["detail"].is_string());
    Ok(())
}

struct Harness {
    addr: SocketAddr,
    topic: String,
    prefix: String,
    model: RefCell<Model>,
}

impl Harness {
    async fn case(&self, mut request: Request, reuse: Reuse) -> Result<(), TestCaseError> {
        {
            let model = self.model.borrow();
            match reuse {
                Reuse::Fresh => {}
                _ if model.accepted.is_empty() => {}
                Reuse::Again(index) => request = index.get(&model.accepted).clone(),
                Reuse::KeyOf(index) => {
                    let before = index.get(&model.accepted);
                    request.topic = self.topic.clone();
                    request
                        .headers
                        .retain(|(n, _)| !n.eq_ignore_ascii_case("idempotency-key"));
                    request.headers.extend(
                        before
                            .headers
                            .iter()
                            .filter(|(n, _)| n.eq_ignore_ascii_case("idempotency-key"))
                            .cloned(),
                    );
                }
            }
        }
        let expected = expect(&request, &self.topic);
        let reply = send_raw(self.addr, &request)
            .await
            .map_err(TestCaseError::fail)?;
        let body = String::from_utf8_lossy(&reply.body).into_owned();
        prop_assert!(reply.status < 500, "{}: {}", reply.status, body);
        let outcome = match serde_json::from_slice::<serde_json::Value>(&reply.body) {
            Ok(json) if json["code"].is_string() => format!("{} {}", reply.status, json["code"]),
            _ if reply.header("idempotent-replayed").is_some() => {
                format!("{} replayed", reply.status)
            }
            _ => reply.status.to_string(),
        };
        *self.model.borrow_mut().outcomes.entry(outcome).or_default() += 1;

        match expected {
            Expected::Problem(status, code) => check_problem(&reply, status, code)?,
            Expected::Accepted { key, record } => {
                let before = self.model.borrow().keys.get(&key).cloned();
                match before {
                    Some((first, _)) if first != record => {
                        check_problem(&reply, 422, "idempotency-key-reused")?;
                    }
                    Some((_, first_body)) => {
                        prop_assert_eq!(reply.status, 201, "{}", body);
                        prop_assert_eq!(
                            reply.header_str("idempotent-replayed"),
                            Some("true".into())
                        );
                        prop_assert_eq!(&reply.body, &first_body, "a replay is the first answer");
                    }
                    None => {
                        prop_assert_eq!(reply.status, 201, "{}", body);
                        prop_assert_eq!(
                            reply.header_str("content-type"),
                            Some("application/json".into())
                        );
                        prop_assert_eq!(reply.header_str("idempotent-replayed"), None);
                        let json: serde_json::Value = serde_json::from_slice(&reply.body)
                            .map_err(|e| TestCaseError::fail(format!("{e}: {body}")))?;
                        prop_assert_eq!(&json["status"], "persisted");
                        prop_assert_eq!(&json["topic"], self.topic.as_str());
                        prop_assert_eq!(&json["idempotency_key"], key.as_str());
                        let partition = json["partition"].as_i64().unwrap_or(-1);
                        let offset = json["offset"].as_i64().unwrap_or(-1);
                        prop_assert!(
                            (0..i64::from(PARTITIONS)).contains(&partition) && offset >= 0
                        );
                        let mut model = self.model.borrow_mut();
                        let previous = model
                            .records
                            .insert((partition as i32, offset), record.clone());
                        prop_assert!(previous.is_none(), "two 201s name one offset");
                        model.keys.insert(key, (record, reply.body.clone()));
                        model.accepted.push(request);
                    }
                }
            }
        }

        // Only accepted events hold a key; nothing else is ever written under the prefix.
        let in_redis: BTreeSet<String> = redis_keys(&redis_url(), &format!("{}:*", self.prefix))
            .await
            .into_iter()
            .collect();
        let expected: BTreeSet<String> = self
            .model
            .borrow()
            .keys
            .keys()
            .map(|key| format!("{}:idem:{}:{key}", self.prefix, self.topic))
            .collect();
        prop_assert_eq!(in_redis, expected);
        Ok(())
    }
}

#[test]
fn hostile_requests_get_problems_and_leave_no_trace_valid_ones_land_byte_for_byte() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let settings = ackgate::settings::Settings {
        max_body_bytes: LIMIT,
        ..test_settings()
    };
    let prefix = settings.redis_key_prefix.clone();
    let topic = unique("hostile");
    let app = runtime.block_on(async {
        create_topic(&kafka_brokers(), &topic, PARTITIONS).await;
        TestApp::spawn_default(settings).await
    });
    let harness = Harness {
        addr: app.addr,
        topic: topic.clone(),
        prefix,
        model: RefCell::default(),
    };

    // 64 keeps the suite fast; raise it for a longer hunt.
    let cases = std::env::var("ACKGATE_HOSTILE_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(64);
    let mut runner = TestRunner::new(Config {
        cases,
        max_shrink_iters: 256,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&requests(topic.clone()), |(request, reuse)| {
        runtime.block_on(harness.case(request, reuse))
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }

    // Kafka holds exactly what the 201s named, byte for byte: no refused request got through.
    let model = harness.model.into_inner();
    eprintln!("answers: {:?}", model.outcomes);
    let in_kafka = consume_until(
        &kafka_brokers(),
        &topic,
        PARTITIONS,
        model.records.len().max(1),
        Duration::from_secs(30),
    );
    let in_kafka: HashMap<(i32, i64), ExpectedRecord> = in_kafka
        .into_iter()
        .map(|r| {
            let mut headers = r.headers;
            headers.sort_by(|a, b| a.0.cmp(&b.0));
            let record = ExpectedRecord {
                key: r.key,
                headers,
                value: r.value,
            };
            ((r.partition, r.offset), record)
        })
        .collect();
    assert!(
        !model.records.is_empty(),
        "no generated request was accepted"
    );
    assert_eq!(in_kafka.len(), model.records.len(), "records in Kafka");
    for (at, expected) in &model.records {
        assert_eq!(in_kafka.get(at), Some(expected), "the record at {at:?}");
    }

    runtime.block_on(async {
        let health = send(app.client.get(app.url("/healthz"))).await;
        assert_eq!(health.status, 200, "the gateway survived");
        app.stop().await.expect("a clean shutdown");
    });
}

// ---------------------------------------------------------------------------------------------
// Fixed hostile cases the generators do not reach.

/// Asserts nothing of `prefix` is in Redis and nothing is in `topic`.
async fn assert_no_trace(prefix: &str, topic: &str) {
    let keys = redis_keys(&redis_url(), &format!("{prefix}:*")).await;
    assert!(keys.is_empty(), "no key claimed: {keys:?}");
    let records = consume_all(&kafka_brokers(), topic, 1);
    assert!(records.is_empty(), "nothing published: {records:?}");
}

/// Paths the generated (percent-encoded) topics never spell: encoded dots, bytes that are not
/// UTF-8, encoded slashes and NULs. Each reaches the handler (or no route) and gets a problem.
#[tokio::test]
async fn raw_topic_segments_get_problems() {
    let settings = test_settings();
    let prefix = settings.redis_key_prefix.clone();
    let app = TestApp::spawn_default(settings).await;
    let topic = unique("hostile-raw");
    create_topic(&kafka_brokers(), &topic, 1).await;
    let headers = [
        ("Idempotency-Key".to_owned(), b"raw-1".to_vec()),
        ("Content-Type".to_owned(), b"application/json".to_vec()),
    ];
    for (segment, status, code) in [
        (".", 400, "invalid-topic"),
        ("..", 400, "invalid-topic"),
        ("%2E", 400, "invalid-topic"),
        ("%2e%2E", 400, "invalid-topic"),
        ("%FF", 400, "invalid-topic"),
        ("%C3%28", 400, "invalid-topic"),
        ("a%00b", 400, "invalid-topic"),
        ("a%2Fb", 400, "invalid-topic"),
        (&format!("{topic}%20"), 400, "invalid-topic"),
        ("%", 400, "invalid-topic"),
        (&"a".repeat(250), 400, "invalid-topic"),
        (&format!("{topic}/x"), 404, "not-found"),
    ] {
        let path = format!("/v1/topics/{segment}/events");
        let reply = exchange(app.addr, request_head(&path, &headers, 2), b"{}".to_vec())
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        check_problem(&reply, status, code).unwrap_or_else(|e| panic!("{path}: {e}"));
    }
    assert_no_trace(&prefix, &topic).await;
    app.stop().await.unwrap();
}

/// Bytes HTTP does not allow in a header (control characters, `{` in a name) are refused by
/// the HTTP parser before the application runs: 400 with an empty body, not a problem
/// document, because no handler ever sees the request. What matters is that nothing is
/// published and no key is claimed.
#[tokio::test]
async fn malformed_header_bytes_are_refused_before_the_application() {
    let settings = test_settings();
    let prefix = settings.redis_key_prefix.clone();
    let app = TestApp::spawn_default(settings).await;
    let topic = unique("hostile-ctl");
    create_topic(&kafka_brokers(), &topic, 1).await;
    let path = format!("/v1/topics/{topic}/events");
    let cases: Vec<Vec<(String, Vec<u8>)>> = vec![
        vec![("Idempotency-Key".into(), b"ctl-\x00".to_vec())],
        vec![("Idempotency-Key".into(), b"ctl-\x01".to_vec())],
        vec![
            ("Idempotency-Key".into(), b"ctl-2".to_vec()),
            ("Kafka-Key".into(), b"a\x1bb".to_vec()),
        ],
        vec![
            ("Idempotency-Key".into(), b"ctl-3".to_vec()),
            ("Kafka-Header-Trace".into(), b"a\x7fb".to_vec()),
        ],
        vec![
            ("Idempotency-Key".into(), b"ctl-4".to_vec()),
            ("Kafka-Header-{name}".into(), b"x".to_vec()),
        ],
        vec![
            ("Idempotency-Key".into(), b"ctl-5".to_vec()),
            ("Content-Type".into(), b"text/plain\rX".to_vec()),
        ],
    ];
    for headers in cases {
        let reply = exchange(app.addr, request_head(&path, &headers, 2), b"{}".to_vec())
            .await
            .unwrap_or_else(|e| panic!("{headers:?}: {e}"));
        assert_eq!(reply.status, 400, "{headers:?}: {reply:?}");
    }
    assert_no_trace(&prefix, &topic).await;
    let health = send(app.client.get(app.url("/healthz"))).await;
    assert_eq!(health.status, 200);
    app.stop().await.unwrap();
}

/// The default limit (1 MiB): one byte over is 413 `payload-too-large` whatever the body
/// says, declared or chunked; exactly at the limit passes the gateway's check.
#[tokio::test]
async fn bodies_at_and_over_the_default_limit() {
    let settings = test_settings();
    let limit = settings.max_body_bytes;
    assert_eq!(limit, 1024 * 1024, "the default limit");
    let prefix = settings.redis_key_prefix.clone();
    let app = TestApp::spawn_default(settings).await;
    let topic = unique("hostile-limit");
    create_topic(&kafka_brokers(), &topic, 1).await;
    let path = format!("/v1/topics/{topic}/events");
    let head = |key: &str, content_type: &str, len: usize| {
        request_head(
            &path,
            &[
                ("Idempotency-Key".to_owned(), key.as_bytes().to_vec()),
                ("Content-Type".to_owned(), content_type.as_bytes().to_vec()),
            ],
            len,
        )
    };

    let mut over_json = vec![b'"'; limit + 1];
    over_json[1..limit].fill(b'o');
    for (key, content_type, body) in [
        ("over-text", "text/plain", vec![0xffu8; limit + 1]),
        ("over-json", "application/json", over_json),
        ("over-nested", "application/json", vec![b'['; limit + 1]),
    ] {
        let reply = exchange(app.addr, head(key, content_type, body.len()), body)
            .await
            .unwrap();
        check_problem(&reply, 413, "payload-too-large").unwrap_or_else(|e| panic!("{key}: {e}"));
    }
    assert_no_trace(&prefix, &topic).await;

    // Exactly at the limit passes the gateway's check. With librdkafka's default
    // `message.max.bytes` (1 000 000, below 1 MiB) Kafka's client then refuses it: 413
    // `message-too-large`, nothing published, and (unlike the gateway's own 4xx) the key is
    // kept as `not_persisted` for the status resource, as the README describes. Should the
    // producer's limit be raised to the body limit, the same request must land byte for byte.
    let at_limit: Vec<u8> = (0..limit).map(|i| (i % 256) as u8).collect();
    let reply = exchange(
        app.addr,
        head("at-limit", "application/octet-stream", limit),
        at_limit.clone(),
    )
    .await
    .unwrap();
    let in_kafka = consume_all(&kafka_brokers(), &topic, 1);
    if reply.status == 201 {
        assert_eq!(in_kafka.len(), 1);
        assert_eq!(in_kafka[0].value, at_limit, "byte for byte");
    } else {
        check_problem(&reply, 413, "message-too-large").unwrap();
        assert!(in_kafka.is_empty(), "nothing published: {in_kafka:?}");
        let status = send(
            app.client
                .get(app.url(&format!("/v1/topics/{topic}/events/at-limit"))),
        )
        .await;
        assert_eq!(status.status, 200, "{}", status.body);
        assert_eq!(status.json()["state"], "not_persisted");
        assert_eq!(status.json()["answer_status"], 413);
    }
    app.stop().await.unwrap();
}

/// 100 000 levels of nesting. serde_json skips a value it ignores without recursing, so depth
/// is no danger to the gateway's stack: the unclosed document is `invalid-json`, the closed
/// one is valid JSON and lands byte for byte.
#[tokio::test]
async fn deeply_nested_json_is_judged_without_a_crash() {
    let settings = test_settings();
    let prefix = settings.redis_key_prefix.clone();
    let app = TestApp::spawn_default(settings).await;
    let topic = unique("hostile-deep");
    create_topic(&kafka_brokers(), &topic, 1).await;
    let path = format!("/v1/topics/{topic}/events");
    let closed = Body::Nested { closed: true }.bytes();
    let open = Body::Nested { closed: false }.bytes();
    let head = |key: &str, content_type: &str, len: usize| {
        request_head(
            &path,
            &[
                ("Idempotency-Key".to_owned(), key.as_bytes().to_vec()),
                ("Content-Type".to_owned(), content_type.as_bytes().to_vec()),
            ],
            len,
        )
    };
    for content_type in ["application/json", "application/cloudevents+json; x=y"] {
        let reply = exchange(
            app.addr,
            head("deep-open", content_type, open.len()),
            open.clone(),
        )
        .await
        .unwrap();
        check_problem(&reply, 400, "invalid-json").unwrap_or_else(|e| panic!("{e}"));
    }
    let keys = redis_keys(&redis_url(), &format!("{prefix}:*")).await;
    assert!(keys.is_empty(), "no key claimed: {keys:?}");

    let reply = exchange(
        app.addr,
        head("deep-closed", "application/json", closed.len()),
        closed.clone(),
    )
    .await
    .unwrap();
    assert_eq!(
        reply.status,
        201,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let in_kafka = consume_all(&kafka_brokers(), &topic, 1);
    assert_eq!(in_kafka.len(), 1, "only the valid document");
    assert!(in_kafka[0].value == closed, "byte for byte");
    app.stop().await.unwrap();
}
