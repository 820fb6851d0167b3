//! One parser for every way an event arrives.
//!
//! A transport collects the raw parts of an event — from HTTP headers and a body today, from
//! one item of a JSON batch tomorrow — into [`EventParts`], and [`Event::try_from`] turns them
//! into an [`Event`] or says, as an [`InvalidEvent`], what is wrong. The transport keeps only
//! what is its own (how a header is spelled, how large a body may be, how long it may take to
//! arrive); everything that makes an event valid is decided here, once.

use std::sync::Arc;

use bytes::Bytes;

use super::{CONTENT_TYPE_HEADER, Event, IDEMPOTENCY_KEY_HEADER, IdempotencyKey, TopicName};

/// The prefix of the record headers the gateway writes on dead-letter copies
/// (`dlt-original-topic`, `dlt-failure-id`, …; see `pipeline::dead_letter`). A client may not
/// send record headers with it, so a consumer of `<topic>.dlt` can trust them.
pub(crate) const DEAD_LETTER_HEADER_PREFIX: &str = "dlt-";

/// A part that may be given at most once, as a transport received it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Single<'a> {
    #[default]
    Absent,
    One(&'a [u8]),
    /// Given more than once (an HTTP header repeated, say): refused, never guessed.
    Repeated,
}

impl<'a> From<Option<&'a [u8]>> for Single<'a> {
    fn from(value: Option<&'a [u8]>) -> Self {
        value.map_or(Single::Absent, Single::One)
    }
}

/// The raw parts of one event, as a transport received them.
#[derive(Debug, Clone, Default)]
pub(crate) struct EventParts<'a> {
    /// Who sends it (authenticated before anything is parsed).
    pub(crate) principal: Arc<str>,
    pub(crate) topic: &'a str,
    pub(crate) idempotency_key: Single<'a>,
    /// The record key (`Kafka-Key`).
    pub(crate) key: Single<'a>,
    /// Record headers by name, in the order the client sent them.
    pub(crate) headers: Vec<(&'a str, &'a [u8])>,
    pub(crate) content_type: Single<'a>,
    /// The record value, byte for byte.
    pub(crate) value: Bytes,
}

/// Why the parts do not make an event. Each variant names what the client must fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum InvalidEvent {
    #[error("Invalid topic: {0}.")]
    Topic(&'static str),
    #[error(
        "Send an Idempotency-Key (1-255 visible ASCII characters, e.g. a UUID) that names this \
         event; retries of the same event reuse it."
    )]
    MissingIdempotencyKey,
    #[error("{0}.")]
    IdempotencyKey(&'static str),
    /// A single-valued part was given more than once; names the part.
    #[error("The {0} may be given only once.")]
    Repeated(&'static str),
    #[error("A record header needs a name, e.g. Kafka-Header-Trace-Id.")]
    EmptyHeaderName,
    #[error("The record header '{0}' is set by the gateway; use the {0} request header instead.")]
    ReservedHeader(&'static str),
    /// A record header with the prefix of the headers the gateway writes on dead-letter copies:
    /// a client's own would be taken for the gateway's.
    #[error(
        "The record header prefix '{DEAD_LETTER_HEADER_PREFIX}' is reserved for the headers the \
         gateway writes on dead-letter copies; choose another name."
    )]
    ReservedHeaderPrefix,
    #[error("Content-Type is not visible ASCII.")]
    ContentType,
    #[error("The body is declared as JSON but does not parse: {0}.")]
    Json(String),
}

/// Everything of an event but its value, checked: what a transport holds while the body is
/// still on its way.
#[derive(Debug)]
pub(crate) struct EventHead {
    principal: Arc<str>,
    topic: TopicName,
    idempotency_key: IdempotencyKey,
    key: Option<Bytes>,
    headers: Vec<(String, Bytes)>,
    content_type: Option<String>,
}

impl EventParts<'_> {
    /// Checks everything but the value, in the order the contract promises (topic, idempotency
    /// key, record key, record headers, content type), so that a transport can refuse a bad
    /// request before it reads the body; [`EventHead::with_value`] finishes the event.
    /// [`Event::try_from`] is the two steps in one.
    pub(crate) fn head(&self) -> Result<EventHead, InvalidEvent> {
        let topic = TopicName::parse(self.topic).map_err(InvalidEvent::Topic)?;
        let idempotency_key = match self.idempotency_key {
            Single::Absent => return Err(InvalidEvent::MissingIdempotencyKey),
            Single::One(raw) => IdempotencyKey::parse(raw).map_err(InvalidEvent::IdempotencyKey)?,
            Single::Repeated => return Err(InvalidEvent::Repeated(IDEMPOTENCY_KEY_HEADER)),
        };
        let key = match self.key {
            Single::Absent => None,
            Single::One(raw) => Some(Bytes::copy_from_slice(raw)),
            Single::Repeated => return Err(InvalidEvent::Repeated("kafka-key")),
        };
        let headers = self
            .headers
            .iter()
            .map(|&header| record_header(header))
            .collect::<Result<_, _>>()?;
        let content_type = match self.content_type {
            Single::Absent => None,
            // Visible ASCII, spaces and tabs, as HTTP allows in a header value.
            Single::One(raw) if raw.iter().all(|b| (0x20..=0x7e).contains(b) || *b == b'\t') => {
                Some(String::from_utf8_lossy(raw).into_owned())
            }
            Single::One(_) => return Err(InvalidEvent::ContentType),
            Single::Repeated => return Err(InvalidEvent::Repeated(CONTENT_TYPE_HEADER)),
        };
        Ok(EventHead {
            principal: self.principal.clone(),
            topic,
            idempotency_key,
            key,
            headers,
            content_type,
        })
    }
}

impl TryFrom<EventParts<'_>> for Event {
    type Error = InvalidEvent;

    fn try_from(parts: EventParts<'_>) -> Result<Self, InvalidEvent> {
        parts.head()?.with_value(parts.value)
    }
}

impl EventHead {
    /// The event, once its value is known: a value declared as JSON must parse.
    pub(crate) fn with_value(self, value: Bytes) -> Result<Event, InvalidEvent> {
        let EventHead {
            principal,
            topic,
            idempotency_key,
            key,
            headers,
            content_type,
        } = self;
        if content_type.as_deref().is_some_and(is_json) {
            // Parsing into `IgnoredAny` checks the syntax without building a value or recursing,
            // so deeply nested input costs neither memory nor stack.
            serde_json::from_slice::<serde::de::IgnoredAny>(&value)
                .map_err(|error| InvalidEvent::Json(error.to_string()))?;
        }
        Ok(Event {
            principal,
            topic,
            idempotency_key,
            key,
            headers,
            content_type,
            value,
        })
    }
}

fn record_header((name, value): (&str, &[u8])) -> Result<(String, Bytes), InvalidEvent> {
    if name.is_empty() {
        return Err(InvalidEvent::EmptyHeaderName);
    }
    for reserved in [IDEMPOTENCY_KEY_HEADER, CONTENT_TYPE_HEADER] {
        if name.eq_ignore_ascii_case(reserved) {
            return Err(InvalidEvent::ReservedHeader(reserved));
        }
    }
    // Compared as bytes: a name that is not ASCII has no character boundary to cut at.
    let prefix = DEAD_LETTER_HEADER_PREFIX.as_bytes();
    if name
        .as_bytes()
        .get(..prefix.len())
        .is_some_and(|start| start.eq_ignore_ascii_case(prefix))
    {
        return Err(InvalidEvent::ReservedHeaderPrefix);
    }
    Ok((name.to_owned(), Bytes::copy_from_slice(value)))
}

/// `application/json`, `application/cloudevents+json` and other `+json` types, with or
/// without parameters.
pub(crate) fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(value: &'static [u8]) -> EventParts<'static> {
        EventParts {
            principal: "tests".into(),
            topic: "orders",
            idempotency_key: Single::One(b"k-1"),
            value: Bytes::from_static(value),
            ..EventParts::default()
        }
    }

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/cloudevents+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/jsonl"));
    }

    #[test]
    fn parses_every_part() {
        let event = Event::try_from(EventParts {
            principal: "tests".into(),
            key: Single::One(b"customer-7"),
            headers: vec![("trace-id", b"abc")],
            content_type: Single::One(b"application/json"),
            ..parts(br#"{"a":1}"#)
        })
        .expect("a valid event");
        assert_eq!(event.topic.as_str(), "orders");
        assert_eq!(event.idempotency_key.as_str(), "k-1");
        assert_eq!(event.key.as_deref(), Some(&b"customer-7"[..]));
        assert_eq!(
            event.headers,
            vec![("trace-id".into(), Bytes::from_static(b"abc"))]
        );
        assert_eq!(event.content_type.as_deref(), Some("application/json"));
        assert_eq!(event.value, Bytes::from_static(br#"{"a":1}"#));
    }

    #[test]
    fn says_what_is_wrong() {
        let cases: Vec<(EventParts<'static>, InvalidEvent)> = vec![
            (
                EventParts {
                    principal: "tests".into(),
                    topic: "a/b",
                    ..parts(b"")
                },
                InvalidEvent::Topic("a topic name uses only the characters a-z A-Z 0-9 . _ -"),
            ),
            (
                EventParts {
                    principal: "tests".into(),
                    idempotency_key: Single::Absent,
                    ..parts(b"")
                },
                InvalidEvent::MissingIdempotencyKey,
            ),
            (
                EventParts {
                    principal: "tests".into(),
                    idempotency_key: Single::One(b"a b"),
                    ..parts(b"")
                },
                InvalidEvent::IdempotencyKey(
                    "an Idempotency-Key uses only visible ASCII characters (no spaces)",
                ),
            ),
            (
                EventParts {
                    principal: "tests".into(),
                    headers: vec![("", b"x")],
                    ..parts(b"")
                },
                InvalidEvent::EmptyHeaderName,
            ),
            (
                EventParts {
                    principal: "tests".into(),
                    headers: vec![("Idempotency-Key", b"x")],
                    ..parts(b"")
                },
                InvalidEvent::ReservedHeader(IDEMPOTENCY_KEY_HEADER),
            ),
            (
                EventParts {
                    principal: "tests".into(),
                    headers: vec![("content-type", b"x")],
                    ..parts(b"")
                },
                InvalidEvent::ReservedHeader(CONTENT_TYPE_HEADER),
            ),
            (
                EventParts {
                    headers: vec![("trace-id", b"x"), ("DLT-Failure-Id", b"forged")],
                    ..parts(b"")
                },
                InvalidEvent::ReservedHeaderPrefix,
            ),
            (
                EventParts {
                    headers: vec![("dlt-", b"x")],
                    ..parts(b"")
                },
                InvalidEvent::ReservedHeaderPrefix,
            ),
            (
                EventParts {
                    content_type: Single::One("tëxt".as_bytes()),
                    ..parts(b"")
                },
                InvalidEvent::ContentType,
            ),
            (
                EventParts {
                    principal: "tests".into(),
                    key: Single::Repeated,
                    ..parts(b"")
                },
                InvalidEvent::Repeated("kafka-key"),
            ),
            // The order is part of the contract: the topic is checked before the key.
            (
                EventParts {
                    principal: "tests".into(),
                    topic: "",
                    idempotency_key: Single::Repeated,
                    ..parts(b"")
                },
                InvalidEvent::Topic("a topic name has 1 to 249 characters"),
            ),
            (
                EventParts {
                    principal: "tests".into(),
                    idempotency_key: Single::Absent,
                    key: Single::Repeated,
                    ..parts(b"")
                },
                InvalidEvent::MissingIdempotencyKey,
            ),
        ];
        for (parts, expected) in cases {
            assert_eq!(Event::try_from(parts).unwrap_err(), expected);
        }
        let not_json = EventParts {
            principal: "tests".into(),
            content_type: Single::One(b"application/json"),
            ..parts(b"{")
        };
        assert!(matches!(
            Event::try_from(not_json),
            Err(InvalidEvent::Json(_))
        ));
    }

    #[test]
    fn only_the_dead_letter_prefix_itself_is_reserved() {
        for name in ["dlt", "dltx", "x-dlt-failure-id", "dlt_failure_id", "dlté"] {
            let event = Event::try_from(EventParts {
                headers: vec![(name, b"v")],
                ..parts(b"")
            });
            assert!(event.is_ok(), "{name}");
        }
        let detail = InvalidEvent::ReservedHeaderPrefix.to_string();
        assert!(
            detail.contains("'dlt-'") && detail.contains("dead-letter"),
            "{detail}"
        );
    }

    #[test]
    fn json_is_checked_only_when_declared() {
        assert!(Event::try_from(parts(b"{")).is_ok());
        let text = EventParts {
            principal: "tests".into(),
            content_type: Single::One(b"text/plain"),
            ..parts(b"{")
        };
        assert!(Event::try_from(text).is_ok());
    }
}
