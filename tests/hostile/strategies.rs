//! The proptest strategies: raw header values and topic names for the parsers, and whole
//! requests (with their reuse of earlier ones) for the HTTP property.

use proptest::prelude::*;
use proptest::sample::Index;

use crate::request::{Body, Request};

pub(crate) fn visible_ascii(
    len: std::ops::RangeInclusive<usize>,
) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(0x21u8..=0x7e, len)
}

fn quoted(inner: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    inner.prop_map(|inner| [&b"\""[..], &inner, b"\""].concat())
}

/// Any bytes, visible ASCII near the length limits, and quoted forms of both.
pub(crate) fn raw_keys() -> impl Strategy<Value = Vec<u8>> {
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

pub(crate) fn topic_names() -> impl Strategy<Value = String> {
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
            "dlt-failure-id", "DLT-Original-Topic", "dlt", "dltx",
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
        // Internal topics: refused to every principal without a literal grant.
        1 => prop::sample::select(vec!["__consumer_offsets", "_schemas", "_", "orders.dlt"])
            .prop_map(str::to_owned),
        1 => "[a-z]{249,250}",
        1 => "\\PC{1,30}",
        1 => prop::sample::select(vec!["", ".", "..", "...", "a/b", "a:b", "a b", "%2E%2E", "ü"])
            .prop_map(str::to_owned),
    ]
}

/// Sends a fresh request, one accepted before (to be replayed), or a fresh event under a key
/// accepted before (to be refused as reused).
#[derive(Debug, Clone)]
pub(crate) enum Reuse {
    Fresh,
    Again(Index),
    KeyOf(Index),
}

pub(crate) fn requests(existing: String) -> impl Strategy<Value = (Request, Reuse)> {
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
