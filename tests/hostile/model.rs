//! The model: what the gateway must answer, and what Kafka and Redis must then hold. It is
//! written from the contract, not from the gateway's code, so that it can disagree with it.

use std::collections::{BTreeMap, HashMap};

use ackgate::event::{IdempotencyKey, TopicName};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use crate::common::Record;
use crate::raw_http::RawReply;
use crate::request::{Esc, LIMIT, Request, escaped};

/// The contract of `Idempotency-Key`: one optional pair of surrounding quotes, then 1 to 255
/// visible ASCII characters.
pub(crate) fn model_key(raw: &[u8]) -> Option<&[u8]> {
    let inner = match raw {
        [b'"', inner @ .., b'"'] => inner,
        _ => raw,
    };
    let ok = (1..=255).contains(&inner.len()) && inner.iter().all(|b| (0x21..=0x7e).contains(b));
    ok.then_some(inner)
}

/// The contract of a topic name: 1 to 249 of `[a-zA-Z0-9._-]`, and neither `.` nor `..`.
pub(crate) fn model_topic(name: &str) -> bool {
    (1..=249).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

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
pub(crate) struct ExpectedRecord {
    key: Option<Vec<u8>>,
    headers: Vec<(String, Vec<u8>)>,
    value: Vec<u8>,
}

impl std::fmt::Debug for ExpectedRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let value = &self.value[..self.value.len().min(200)];
        f.debug_struct("Record")
            .field("key", &self.key.as_deref().map(Esc))
            .field("headers", &escaped(&self.headers))
            .field("value_len", &self.value.len())
            .field("value", &Esc(value))
            .finish()
    }
}

/// A record read back from Kafka, in the model's terms.
impl From<Record> for ExpectedRecord {
    fn from(record: Record) -> ExpectedRecord {
        let mut headers = record.headers;
        headers.sort_by(|a, b| a.0.cmp(&b.0));
        ExpectedRecord {
            key: record.key,
            headers,
            value: record.value,
        }
    }
}

#[derive(Debug, PartialEq)]
pub(crate) enum Expected {
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
pub(crate) fn expect(request: &Request, existing_topic: &str) -> Expected {
    use Expected::Problem;
    if TopicName::parse(&request.topic).is_err() {
        return Problem(400, "invalid-topic");
    }
    // The harness's gateway runs open: its one principal may publish to every topic but the
    // internal ones, and access is decided before anything else about the request.
    if request.topic.starts_with('_') || request.topic.ends_with(".dlt") {
        return Problem(403, "topic-forbidden");
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
            || record_name.starts_with("dlt-")
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
pub(crate) struct Model {
    /// Accepted requests, to send again.
    pub(crate) accepted: Vec<Request>,
    /// Per idempotency key: the event and the first answer's body.
    pub(crate) keys: HashMap<String, (ExpectedRecord, Vec<u8>)>,
    /// Every record published, by (partition, offset).
    pub(crate) records: HashMap<(i32, i64), ExpectedRecord>,
    /// How many answers of each kind, to see what the generators reach.
    pub(crate) outcomes: BTreeMap<String, usize>,
}

/// An RFC 9457 problem with this status and code, as every refusal must be.
pub(crate) fn check_problem(
    reply: &RawReply,
    status: u16,
    code: &str,
) -> Result<(), TestCaseError> {
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
