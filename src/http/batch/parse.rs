//! A batch's JSON, read into the raw parts of its events. Whether the parts make a valid event
//! is [`Event::try_from`]'s call, the same as for a single request; here is only what JSON
//! spells its own way (a field that is not a string, an object of headers, base64).

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use base64::Engine as _;
use bytes::Bytes;
use serde::Deserialize;
use serde::de::{MapAccess, Visitor};
use serde_json::value::RawValue;

use super::super::error::ApiError;
use super::super::request;
use crate::auth::Principal;
use crate::contract::ProblemCode;
use crate::event::{Event, EventParts, InvalidEvent, Single, TopicName, is_json};

/// The fields an event may have.
const FIELDS: &str = "idempotency_key, key, headers, value, value_base64, content_type";

/// The events of a batch body, each still raw JSON: a bad event is that event's own 400, never
/// the batch's.
pub(super) fn envelope(body: &[u8], max_events: usize) -> Result<Vec<&RawValue>, ApiError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Envelope<'a> {
        #[serde(borrow)]
        events: Option<Vec<&'a RawValue>>,
    }
    let invalid = |detail: String| ApiError::new(ProblemCode::InvalidBatch, detail);
    let envelope: Envelope<'_> = serde_json::from_slice(body).map_err(|error| {
        if error.is_data() {
            invalid(format!(
                "A batch is a JSON object {{\"events\": [...]}}: {error}."
            ))
        } else {
            ApiError::new(
                ProblemCode::InvalidJson,
                format!("The body is not JSON: {error}."),
            )
        }
    })?;
    let events = envelope
        .events
        .ok_or_else(|| invalid("A batch needs an `events` array.".to_owned()))?;
    if events.is_empty() {
        return Err(invalid("The `events` array is empty.".to_owned()));
    }
    if events.len() > max_events {
        return Err(ApiError::new(
            ProblemCode::TooManyEvents,
            format!(
                "The batch has {} events; at most {max_events} are accepted in one request \
                 (--max-batch-events). Nothing was stored; split it.",
                events.len()
            ),
        ));
    }
    Ok(events)
}

/// One event's fields, each raw JSON until it is checked.
#[derive(Default)]
struct Fields<'a> {
    idempotency_key: Option<&'a RawValue>,
    key: Option<&'a RawValue>,
    headers: Option<&'a RawValue>,
    value: Option<&'a RawValue>,
    value_base64: Option<&'a RawValue>,
    content_type: Option<&'a RawValue>,
    /// The first field that is none of these.
    unknown: Option<String>,
    /// The first field given twice.
    repeated: Option<String>,
}

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldsVisitor;
        impl<'de> Visitor<'de> for FieldsVisitor {
            type Value = Fields<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an event: a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
                let mut fields = Fields::default();
                while let Some(name) = map.next_key::<Cow<'de, str>>()? {
                    let value: &'de RawValue = map.next_value()?;
                    let slot = match name.as_ref() {
                        "idempotency_key" => &mut fields.idempotency_key,
                        "key" => &mut fields.key,
                        "headers" => &mut fields.headers,
                        "value" => &mut fields.value,
                        "value_base64" => &mut fields.value_base64,
                        "content_type" => &mut fields.content_type,
                        _ => {
                            fields.unknown.get_or_insert_with(|| name.into_owned());
                            continue;
                        }
                    };
                    if slot.replace(value).is_some() {
                        fields.repeated.get_or_insert_with(|| name.into_owned());
                    }
                }
                Ok(fields)
            }
        }
        deserializer.deserialize_map(FieldsVisitor)
    }
}

/// What the batch's answer says of an event that is refused here: the key as sent (when it
/// was a string) and why.
pub(super) struct Refused {
    pub(super) idempotency_key: Option<String>,
    pub(super) error: ApiError,
}

/// Limits an event of a batch is held to.
#[derive(Debug, Clone, Copy)]
pub(super) struct EventLimits {
    /// `--max-body-bytes`: the largest value.
    pub(super) max_value_bytes: usize,
}

/// One event of the batch, checked as a single request's would be.
pub(super) fn event(
    raw: &RawValue,
    principal: &Principal,
    topic: &TopicName,
    limits: EventLimits,
) -> Result<Event, Refused> {
    let fields: Fields<'_> = serde_json::from_str(raw.get()).map_err(|error| Refused {
        idempotency_key: None,
        error: ApiError::new(
            ProblemCode::InvalidBody,
            format!("An event is a JSON object with {FIELDS}: {error}."),
        ),
    })?;
    let idempotency_key: Option<Cow<'_, str>> = fields
        .idempotency_key
        .and_then(|raw| serde_json::from_str(raw.get()).ok());
    let refuse = |error: ApiError| Refused {
        idempotency_key: idempotency_key.as_deref().map(str::to_owned),
        error,
    };
    let invalid = |code: ProblemCode, detail: String| refuse(ApiError::new(code, detail));
    if let Some(name) = fields.unknown {
        return Err(invalid(
            ProblemCode::InvalidBody,
            format!("Unknown field `{name}`; an event has {FIELDS}."),
        ));
    }
    if let Some(name) = fields.repeated {
        return Err(invalid(
            ProblemCode::InvalidBody,
            format!("The field `{name}` is given twice."),
        ));
    }
    let idempotency_key_single = match (fields.idempotency_key, &idempotency_key) {
        (None, _) => Single::Absent,
        (Some(_), Some(key)) => Single::One(key.as_bytes()),
        (Some(_), None) => {
            return Err(invalid(
                ProblemCode::InvalidIdempotencyKey,
                "`idempotency_key` must be a string of 1-255 visible ASCII characters.".to_owned(),
            ));
        }
    };
    let key = string(fields.key, "key").map_err(&refuse)?;
    let content_type = string(fields.content_type, "content_type").map_err(&refuse)?;
    let headers = headers(fields.headers).map_err(&refuse)?;
    let (value, content_type) = match (fields.value, fields.value_base64) {
        (Some(value), None) => {
            // The JSON text exactly as it appears in the request.
            let content_type = match content_type {
                None => Cow::Borrowed("application/json"),
                Some(given) if is_json(&given) => given,
                Some(_) => {
                    return Err(invalid(
                        ProblemCode::InvalidHeader,
                        "An event with `value` is JSON: its `content_type` may only be a JSON \
                         type (application/json, …+json). Send other bytes as `value_base64`."
                            .to_owned(),
                    ));
                }
            };
            (
                Bytes::copy_from_slice(value.get().as_bytes()),
                Some(content_type),
            )
        }
        (None, Some(encoded)) => {
            let encoded = string(Some(encoded), "value_base64")
                .map_err(&refuse)?
                .unwrap_or_default();
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded.as_bytes())
                .map_err(|error| {
                    invalid(
                        ProblemCode::InvalidBody,
                        format!(
                            "`value_base64` is not standard base64: {}.",
                            error.to_string().trim_end_matches('.')
                        ),
                    )
                })?;
            (Bytes::from(decoded), content_type)
        }
        _ => {
            return Err(invalid(
                ProblemCode::InvalidBody,
                "An event has exactly one of `value` (JSON) and `value_base64` (bytes).".to_owned(),
            ));
        }
    };
    if value.len() > limits.max_value_bytes {
        return Err(invalid(
            ProblemCode::PayloadTooLarge,
            format!(
                "The value is larger than the limit of {} bytes.",
                limits.max_value_bytes
            ),
        ));
    }
    let parts = EventParts {
        principal: principal.shared_name().clone(),
        topic: topic.as_str(),
        idempotency_key: idempotency_key_single,
        key: key.as_deref().map(str::as_bytes).into(),
        headers: headers
            .iter()
            .map(|(name, value)| (name.as_ref(), value.as_bytes()))
            .collect(),
        content_type: content_type.as_deref().map(str::as_bytes).into(),
        value,
    };
    Event::try_from(parts).map_err(|why| refuse(invalid_event(why)))
}

/// The problem for an invalid event, in the batch's words where they differ from a header's.
fn invalid_event(why: InvalidEvent) -> ApiError {
    match why {
        InvalidEvent::MissingIdempotencyKey => ApiError::new(
            ProblemCode::MissingIdempotencyKey,
            "Give each event an `idempotency_key` (1-255 visible ASCII characters, e.g. a UUID) \
             that names it; retries of the same event reuse it.",
        ),
        InvalidEvent::ReservedHeader(name) => ApiError::new(
            ProblemCode::InvalidHeader,
            format!(
                "The record header '{name}' is set by the gateway from the event's `{}` field.",
                name.replace('-', "_")
            ),
        ),
        other => request::invalid(other),
    }
}

/// A field that must be a string, if given.
fn string<'a>(raw: Option<&'a RawValue>, name: &str) -> Result<Option<Cow<'a, str>>, ApiError> {
    raw.map(|raw| {
        serde_json::from_str::<Cow<'a, str>>(raw.get()).map_err(|_| {
            let code = if name == "content_type" {
                ProblemCode::InvalidHeader
            } else {
                ProblemCode::InvalidBody
            };
            ApiError::new(code, format!("`{name}` must be a string."))
        })
    })
    .transpose()
}

/// A record header's name and value.
type Header<'a> = (Cow<'a, str>, Cow<'a, str>);

/// The record headers, in the order given; each name once.
fn headers(raw: Option<&RawValue>) -> Result<Vec<Header<'_>>, ApiError> {
    struct Ordered<'a>(Vec<Header<'a>>);
    impl<'de> Deserialize<'de> for Ordered<'de> {
        fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct OrderedVisitor;
            impl<'de> Visitor<'de> for OrderedVisitor {
                type Value = Ordered<'de>;

                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("an object of string values")
                }

                fn visit_map<A: MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<Ordered<'de>, A::Error> {
                    let mut headers = Vec::new();
                    while let Some(entry) = map.next_entry()? {
                        headers.push(entry);
                    }
                    Ok(Ordered(headers))
                }
            }
            deserializer.deserialize_map(OrderedVisitor)
        }
    }
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    let Ordered(headers) = serde_json::from_str(raw.get()).map_err(|error| {
        ApiError::new(
            ProblemCode::InvalidHeader,
            format!("`headers` must be an object of string values: {error}."),
        )
    })?;
    let mut seen = HashSet::with_capacity(headers.len());
    for (name, _) in &headers {
        if !seen.insert(name.as_ref()) {
            return Err(ApiError::new(
                ProblemCode::InvalidHeader,
                format!("The record header '{name}' is given twice."),
            ));
        }
    }
    Ok(headers)
}
