//! Which topics a principal may publish to: glob patterns, and the internal topics no wildcard
//! reaches.

use std::fmt;

/// A client's `produce` patterns. `*` matches any run of characters (also none), `?` exactly
/// one; everything else matches itself.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct TopicPatterns(Vec<String>);

impl TopicPatterns {
    /// Checks each pattern's characters: those of a topic name, plus `*` and `?`.
    pub(crate) fn parse<I, S>(patterns: I) -> Result<Self, String>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let patterns = patterns
            .into_iter()
            .map(Into::into)
            .collect::<Vec<String>>();
        for pattern in &patterns {
            let valid = !pattern.is_empty()
                && pattern.len() <= 249
                && pattern.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'*' | b'?')
                });
            if !valid {
                return Err(format!(
                    "topic pattern {pattern:?} is not a topic name or a glob of one \
                     (characters a-z A-Z 0-9 . _ - and the wildcards * ?)"
                ));
            }
        }
        Ok(TopicPatterns(patterns))
    }

    /// Every topic, internal ones excepted: what an unauthenticated gateway (`--no-auth`,
    /// `ackgate dev`) allows.
    pub(crate) fn everything() -> Self {
        TopicPatterns(vec!["*".to_owned()])
    }

    /// Whether a pattern allows `topic`. An internal topic (see [`is_internal`]) is allowed
    /// only by a pattern that names it literally, without wildcards.
    pub(crate) fn allow(&self, topic: &str) -> bool {
        if is_internal(topic) {
            self.0.iter().any(|pattern| pattern == topic)
        } else {
            self.0
                .iter()
                .any(|pattern| glob_match(pattern.as_bytes(), topic.as_bytes()))
        }
    }
}

impl fmt::Debug for TopicPatterns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.0).finish()
    }
}

/// Topics of Kafka itself and of the tools around it (`__consumer_offsets`, `_schemas`,
/// `__transaction_state`, Connect's and Streams' `_…` topics by convention), and the gateway's own
/// dead-letter copies (`<topic>.dlt`), whose headers consumers trust.
pub(crate) fn is_internal(topic: &str) -> bool {
    topic.starts_with('_') || topic.ends_with(".dlt")
}

/// Iterative glob matching with one backtrack point (the last `*`): linear in practice, and no
/// recursion a hostile pattern could deepen.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((star_p, star_t)) => {
                    p = star_p + 1;
                    t = star_t + 1;
                    star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patterns(list: &[&str]) -> TopicPatterns {
        TopicPatterns::parse(list.iter().copied()).unwrap()
    }

    #[test]
    fn globs_match_whole_names() {
        let orders = patterns(&["orders", "orders.*"]);
        assert!(orders.allow("orders"));
        assert!(orders.allow("orders.eu"));
        assert!(orders.allow("orders."));
        assert!(!orders.allow("orders-eu"));
        assert!(!orders.allow("xorders"));
        assert!(!orders.allow("order"));
        let mid = patterns(&["a*b*c", "t?"]);
        assert!(mid.allow("abc"));
        assert!(mid.allow("aXXbYYc"));
        assert!(mid.allow("abbbc"));
        assert!(!mid.allow("aXXbYY"));
        assert!(mid.allow("t1"));
        assert!(!mid.allow("t12"));
        assert!(!mid.allow("t"));
    }

    #[test]
    fn internal_topics_need_a_literal_pattern() {
        let all = TopicPatterns::everything();
        for internal in ["__consumer_offsets", "_schemas", "orders.dlt", "_x.dlt"] {
            assert!(!all.allow(internal), "{internal}");
            assert!(
                !patterns(&["_*", "*.dlt", "orders*"]).allow(internal),
                "{internal}"
            );
        }
        assert!(all.allow("connect-configs"));
        assert!(all.allow("orders"));
        assert!(patterns(&["orders.dlt"]).allow("orders.dlt"));
        assert!(patterns(&["_schemas"]).allow("_schemas"));
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in ["", "orders/eu", "ord ers", "a:b", "{a}"] {
            assert!(TopicPatterns::parse([bad]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn stars_backtrack() {
        assert!(glob_match(b"*a*a*a", b"bababa"));
        assert!(!glob_match(b"*a*a*a*a", b"bababa"));
        assert!(glob_match(b"**", b""));
        assert!(glob_match(b"*.eu", b"x.eu.eu"));
    }
}
