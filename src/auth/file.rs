//! The auth file (`--auth-file`): the clients that may call, by API key or client certificate.
//!
//! ```toml
//! [[clients]]
//! name = "orders-service"                      # the principal
//! key_sha256 = "<hex SHA-256 of the secret>"   # the secret itself is never stored
//! produce = ["orders", "orders.*"]             # topic names or globs it may publish to
//! operator = false                             # may use /v1/failures
//! rate = 500                                   # optional: events per second
//! cert_names = ["orders.internal"]             # optional: client-certificate names
//! ```
//!
//! A key is looked up by comparing the SHA-256 of the presented secret with every client's
//! digest in constant time, so neither the comparison nor an early exit tells how close a guess
//! came.

use std::collections::HashSet;
use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::topics::TopicPatterns;

/// One `[[clients]]` entry, checked.
#[derive(Debug, Clone)]
pub(crate) struct ClientEntry {
    pub(crate) name: String,
    key_sha256: Option<[u8; 32]>,
    pub(crate) produce: TopicPatterns,
    pub(crate) operator: bool,
    pub(crate) rate: Option<u32>,
    pub(crate) cert_names: Vec<String>,
}

/// The clients of one auth file.
#[derive(Debug, Clone)]
pub(crate) struct ClientTable {
    clients: Vec<ClientEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileShape {
    #[serde(default)]
    clients: Vec<RawClient>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClient {
    name: String,
    key_sha256: Option<String>,
    #[serde(default)]
    produce: Vec<String>,
    #[serde(default)]
    operator: bool,
    rate: Option<u32>,
    #[serde(default)]
    cert_names: Vec<String>,
}

impl ClientTable {
    /// Reads and checks the file. The error is one line naming the file and the problem; it
    /// never quotes a digest.
    pub(crate) fn load(path: &Path) -> Result<ClientTable, String> {
        let shown = path.display();
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("--auth-file {shown}: cannot read it: {error}"))?;
        Self::parse(&text).map_err(|problem| format!("--auth-file {shown}: {problem}"))
    }

    fn parse(text: &str) -> Result<ClientTable, String> {
        let shape: FileShape = toml::from_str(text).map_err(|error| {
            // toml's message spans several lines (it quotes the file); keep its first.
            let message = error
                .message()
                .lines()
                .next()
                .unwrap_or("invalid TOML")
                .to_owned();
            match error.span() {
                Some(span) => {
                    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                    format!("line {line}: {message}")
                }
                None => message,
            }
        })?;
        if shape.clients.is_empty() {
            return Err("no [[clients]] entry: nobody could call".to_owned());
        }
        let mut names = HashSet::new();
        let mut digests = HashSet::new();
        let mut cert_names = HashSet::new();
        let mut clients = Vec::with_capacity(shape.clients.len());
        for raw in shape.clients {
            let entry = check(raw)?;
            if !names.insert(entry.name.clone()) {
                return Err(format!("client {:?} appears twice", entry.name));
            }
            if let Some(digest) = entry.key_sha256
                && !digests.insert(digest)
            {
                return Err(format!(
                    "client {:?} has the same key_sha256 as another client",
                    entry.name
                ));
            }
            for cert_name in &entry.cert_names {
                if !cert_names.insert(cert_name.clone()) {
                    return Err(format!(
                        "client {:?}: certificate name {cert_name:?} is mapped to two clients",
                        entry.name
                    ));
                }
            }
            clients.push(entry);
        }
        Ok(ClientTable { clients })
    }

    /// The client whose key is `secret`.
    pub(crate) fn by_secret(&self, secret: &str) -> Option<&ClientEntry> {
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        // Every entry is compared, whichever matches.
        let mut found = None;
        for client in &self.clients {
            if let Some(expected) = &client.key_sha256
                && bool::from(expected.ct_eq(&digest))
            {
                found = Some(client);
            }
        }
        found
    }

    /// The client mapped to one of a certificate's names (subject CN, DNS or URI SANs).
    pub(crate) fn by_certificate(&self, names: &[String]) -> Option<&ClientEntry> {
        self.clients
            .iter()
            .find(|client| client.cert_names.iter().any(|name| names.contains(name)))
    }

    pub(crate) fn clients(&self) -> &[ClientEntry] {
        &self.clients
    }
}

fn check(raw: RawClient) -> Result<ClientEntry, String> {
    let name = raw.name;
    valid_name(&name)?;
    let key_sha256 = raw
        .key_sha256
        .map(|hex_digest| {
            let mut digest = [0u8; 32];
            hex::decode_to_slice(hex_digest.trim(), &mut digest).map_err(|_| {
                format!("client {name:?}: key_sha256 must be 64 hex digits (a SHA-256 digest)")
            })?;
            Ok::<_, String>(digest)
        })
        .transpose()?;
    if key_sha256.is_none() && raw.cert_names.is_empty() {
        return Err(format!(
            "client {name:?} has neither key_sha256 nor cert_names: it could never authenticate"
        ));
    }
    let produce = TopicPatterns::parse(raw.produce).map_err(|e| format!("client {name:?}: {e}"))?;
    if raw.rate == Some(0) {
        return Err(format!(
            "client {name:?}: rate must be at least 1 event per second (leave it out for no limit)"
        ));
    }
    if raw.cert_names.iter().any(|n| n.is_empty()) {
        return Err(format!("client {name:?}: an empty certificate name"));
    }
    Ok(ClientEntry {
        name,
        key_sha256,
        produce,
        operator: raw.operator,
        rate: raw.rate,
        cert_names: raw.cert_names,
    })
}

/// Principal names end up in Redis keys, logs and (for auth-file clients) metric labels.
pub(super) fn valid_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "client name {name:?}: use 1-128 characters of a-z A-Z 0-9 . _ - @"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(secret: &str) -> String {
        hex::encode(Sha256::digest(secret.as_bytes()))
    }

    fn table(text: &str) -> Result<ClientTable, String> {
        ClientTable::parse(text)
    }

    #[test]
    fn keys_find_their_client() {
        let text = format!(
            r#"
            [[clients]]
            name = "orders-service"
            key_sha256 = "{}"
            produce = ["orders", "orders.*"]
            rate = 500

            [[clients]]
            name = "ops"
            key_sha256 = "{}"
            operator = true
            cert_names = ["ops.internal"]
            "#,
            digest("s3cret-orders"),
            digest("s3cret-ops").to_uppercase(),
        );
        let table = table(&text).unwrap();
        let orders = table.by_secret("s3cret-orders").unwrap();
        assert_eq!(orders.name, "orders-service");
        assert_eq!(orders.rate, Some(500));
        assert!(!orders.operator);
        assert!(orders.produce.allow("orders.eu"));
        assert!(table.by_secret("s3cret-ops").unwrap().operator);
        assert!(table.by_secret("s3cret-other").is_none());
        assert!(table.by_secret("").is_none());
        let by_cert = table.by_certificate(&["x".into(), "ops.internal".into()]);
        assert_eq!(by_cert.unwrap().name, "ops");
        assert!(table.by_certificate(&["orders-service".into()]).is_none());
    }

    #[test]
    fn problems_are_named() {
        let key = digest("k");
        let cases = [
            ("", "no [[clients]]"),
            (
                "[[clients]]\nname = \"a\"\nkey_sha256 = \"abc\"\n",
                "64 hex digits",
            ),
            (
                "[[clients]]\nname = \"a\"\n",
                "neither key_sha256 nor cert_names",
            ),
            (
                "[[clients]]\nname = \"a b\"\ncert_names = [\"x\"]\n",
                "client name",
            ),
            (
                &format!("[[clients]]\nname = \"a\"\nkey_sha256 = \"{key}\"\noperater = true\n"),
                "line 4: unknown field `operater`",
            ),
            (
                &format!(
                    "[[clients]]\nname = \"a\"\nkey_sha256 = \"{key}\"\nproduce = [\"a/b\"]\n"
                ),
                "topic pattern",
            ),
            (
                &format!("[[clients]]\nname = \"a\"\nkey_sha256 = \"{key}\"\nrate = 0\n"),
                "rate must be",
            ),
            (
                &format!(
                    "[[clients]]\nname = \"a\"\nkey_sha256 = \"{key}\"\n\
                     [[clients]]\nname = \"b\"\nkey_sha256 = \"{key}\"\n"
                ),
                "same key_sha256",
            ),
            (
                "[[clients]]\nname = \"a\"\ncert_names = [\"x\"]\n\
                 [[clients]]\nname = \"a\"\ncert_names = [\"y\"]\n",
                "appears twice",
            ),
            ("[[clients]\n", "line 1"),
        ];
        for (text, expected) in cases {
            let error = table(text).unwrap_err();
            assert!(error.contains(expected), "{text:?}: {error}");
            assert!(!error.contains('\n'), "one line: {error}");
            assert!(!error.contains(&key), "no digest in: {error}");
        }
    }

    #[test]
    fn load_names_the_file() {
        let error = ClientTable::load(Path::new("/no/such/auth.toml")).unwrap_err();
        assert!(
            error.starts_with("--auth-file /no/such/auth.toml: cannot read it"),
            "{error}"
        );
    }
}
