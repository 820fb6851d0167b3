//! The domain types of one event, parsed at the edge.
//!
//! After parsing, the rest of the crate cannot hold an invalid topic name or idempotency key:
//! [`TopicName::parse`] and [`IdempotencyKey::parse`] are the only ways to make one, and
//! [`Event::try_from`] (in [`parse`](self::parse)) the only way to make an event from what a
//! client sent.

mod parse;

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use sha2::{Digest, Sha256};

pub(crate) use self::parse::{EventParts, InvalidEvent, Single, is_json};

/// Record header that always carries the idempotency key, so consumers can dedupe.
pub(crate) const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
/// Record header that carries the request's `Content-Type`, when it had one.
pub(crate) const CONTENT_TYPE_HEADER: &str = "content-type";

/// A Kafka topic name: 1 to 249 characters of `[a-zA-Z0-9._-]`, and neither `.` nor `..`.
///
/// Shared, not copied: an event's name travels with its delivery, its lease and its answer, and
/// a clone costs a reference count.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicName(Arc<str>);

impl TopicName {
    pub fn parse(name: &str) -> Result<Self, &'static str> {
        if name.is_empty() || name.len() > 249 {
            return Err("a topic name has 1 to 249 characters");
        }
        if name == "." || name == ".." {
            return Err("'.' and '..' are not topic names");
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err("a topic name uses only the characters a-z A-Z 0-9 . _ -");
        }
        Ok(TopicName(Arc::from(name)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for TopicName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// A client's idempotency key: 1 to 255 visible ASCII characters (`!` to `~`).
///
/// The IETF draft defines the header as a structured-field string (`"…"`); the bare form that
/// most clients send is accepted too, and both spell the same key. Shared, as [`TopicName`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(Arc<str>);

impl IdempotencyKey {
    pub fn parse(raw: &[u8]) -> Result<Self, &'static str> {
        let unquoted = match raw {
            [b'"', inner @ .., b'"'] => inner,
            _ => raw,
        };
        if unquoted.is_empty() || unquoted.len() > 255 {
            return Err("an Idempotency-Key has 1 to 255 characters");
        }
        if !unquoted.iter().all(|b| (0x21..=0x7e).contains(b)) {
            return Err("an Idempotency-Key uses only visible ASCII characters (no spaces)");
        }
        // Checked above: every byte is ASCII.
        Ok(IdempotencyKey(Arc::from(String::from_utf8_lossy(unquoted))))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for IdempotencyKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// Where an idempotency key lives: one principal's keys on one topic. Two clients that send the
/// same key to the same topic name two different events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyScope<'a> {
    pub(crate) principal: &'a str,
    pub(crate) topic: &'a TopicName,
}

/// One event as the client sent it, ready to become one Kafka record.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    /// Who sent it: the principal whose idempotency keys, status and failure record it is.
    pub(crate) principal: Arc<str>,
    pub(crate) topic: TopicName,
    pub(crate) idempotency_key: IdempotencyKey,
    /// The record key (`Kafka-Key`), if any.
    pub(crate) key: Option<Bytes>,
    /// Record headers in the order the client sent them, without the ones the gateway adds.
    pub(crate) headers: Vec<(String, Bytes)>,
    pub(crate) content_type: Option<String>,
    /// The record value, byte for byte as received.
    pub(crate) value: Bytes,
}

impl Event {
    /// The scope of its idempotency key.
    pub(crate) fn scope(&self) -> KeyScope<'_> {
        KeyScope {
            principal: &self.principal,
            topic: &self.topic,
        }
    }

    /// Every header of the Kafka record: the client's, then `content-type` and
    /// `idempotency-key`.
    pub(crate) fn record_headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_ref()))
            .chain(
                self.content_type
                    .as_deref()
                    .map(|ct| (CONTENT_TYPE_HEADER, ct.as_bytes())),
            )
            .chain(std::iter::once((
                IDEMPOTENCY_KEY_HEADER,
                self.idempotency_key.as_str().as_bytes(),
            )))
    }

    /// A digest of everything that makes up the record: topic, key, headers and value.
    ///
    /// A key reused with a different event must be refused, never answered with the first
    /// event's result. Every field is length-prefixed so that no two different events can
    /// produce the same byte stream.
    pub(crate) fn fingerprint(&self) -> String {
        fn field(hasher: &mut Sha256, bytes: &[u8]) {
            hasher.update((bytes.len() as u64).to_be_bytes());
            hasher.update(bytes);
        }
        let mut hasher = Sha256::new();
        field(&mut hasher, self.topic.as_str().as_bytes());
        match &self.key {
            Some(key) => {
                hasher.update([1]);
                field(&mut hasher, key);
            }
            None => hasher.update([0]),
        }
        for (name, value) in self.record_headers() {
            field(&mut hasher, name.as_bytes());
            field(&mut hasher, value);
        }
        field(&mut hasher, &self.value);
        hex::encode(hasher.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(value: &'static [u8]) -> Event {
        Event {
            principal: "tests".into(),
            topic: TopicName::parse("orders").unwrap(),
            idempotency_key: IdempotencyKey::parse(b"k-1").unwrap(),
            key: None,
            headers: vec![],
            content_type: None,
            value: Bytes::from_static(value),
        }
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(TopicName::parse("orders.v1_eu-west").is_ok());
        assert!(TopicName::parse(&"a".repeat(249)).is_ok());
        for bad in ["", ".", "..", "has space", "slash/", "ü", &"a".repeat(250)] {
            assert!(TopicName::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn idempotency_keys_are_visible_ascii() {
        assert_eq!(IdempotencyKey::parse(b"abc").unwrap().as_str(), "abc");
        assert_eq!(IdempotencyKey::parse(b"\"abc\"").unwrap().as_str(), "abc");
        assert!(IdempotencyKey::parse(&[b'x'; 255]).is_ok());
        for bad in [
            &b""[..],
            b"\"\"",
            b"a b",
            b"tab\t",
            b"\xc3\xbc",
            &[b'x'; 256],
        ] {
            assert!(
                IdempotencyKey::parse(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn fingerprint_covers_key_headers_and_value() {
        let base = event(b"{}");
        assert_eq!(base.fingerprint(), event(b"{}").fingerprint());
        assert_ne!(base.fingerprint(), event(b"{ }").fingerprint());
        let keyed = Event {
            key: Some(Bytes::from_static(b"")),
            ..event(b"{}")
        };
        assert_ne!(base.fingerprint(), keyed.fingerprint());
        let with_header = Event {
            headers: vec![("a".into(), Bytes::from_static(b"b"))],
            ..event(b"{}")
        };
        assert_ne!(base.fingerprint(), with_header.fingerprint());
    }
}
