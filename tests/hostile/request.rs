//! One generated request, as it goes on the wire, printed legibly when a case fails.

/// The body limit of the app in the HTTP property: large enough for 100 000 levels of nested
/// JSON (200 000 bytes), small enough for librdkafka's default `message.max.bytes` (1 000 000).
pub(crate) const LIMIT: usize = 256 * 1024;
/// How deep the nested-JSON bodies go.
pub(crate) const NESTING: usize = 100_000;

/// One request as it goes on the wire. Header names are tokens; values are any bytes HTTP
/// allows in a field (visible ASCII, space, tab, obs-text 0x80-0xFF).
#[derive(Clone)]
pub(crate) struct Request {
    pub(crate) topic: String,
    pub(crate) headers: Vec<(String, Vec<u8>)>,
    pub(crate) body: Body,
}

/// Bytes printed as a byte string, so that a failing case reads like the request.
pub(crate) struct Esc<'a>(pub(crate) &'a [u8]);

impl std::fmt::Debug for Esc<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "b\"{}\"", self.0.escape_ascii())
    }
}

/// Header pairs with their values printed as byte strings.
pub(crate) fn escaped(headers: &[(String, Vec<u8>)]) -> Vec<(&String, Esc<'_>)> {
    headers
        .iter()
        .map(|(name, value)| (name, Esc(value)))
        .collect()
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let body = match &self.body {
            Body::Bytes(bytes) => format!("{:?}", Esc(bytes)),
            other => format!("{other:?}"),
        };
        f.debug_struct("Request")
            .field("topic", &self.topic)
            .field("headers", &escaped(&self.headers))
            .field("body", &format_args!("{body}"))
            .finish()
    }
}

/// A body; the large ones are built on demand so that a failing case prints legibly.
#[derive(Debug, Clone)]
pub(crate) enum Body {
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
    pub(crate) fn bytes(&self) -> Vec<u8> {
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
