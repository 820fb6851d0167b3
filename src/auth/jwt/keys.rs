//! The key set: a JWKS file read into the RS256 and ES256 keys that may sign tokens, and the
//! choice of one key for a token's `kid`.
//!
//! Each key's algorithm comes from the key itself (`kty`, `crv`, `alg`), never from a token.
//! Keys that cannot sign tokens here are skipped with a warning naming their `kid`; a file with
//! no usable key is an error.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};

use super::JwtRejection;

/// The smallest RSA modulus accepted, in bytes (2048 bits): the verifier refuses smaller keys,
/// so such a key could never check a token.
const MIN_RSA_MODULUS_BYTES: usize = 256;

/// One public key and the one algorithm it checks.
pub(super) struct VerifyingKey {
    pub(super) kid: Option<String>,
    pub(super) algorithm: Algorithm,
    pub(super) key: DecodingKey,
}

/// The usable keys of one JWKS file.
pub(super) struct KeySet {
    keys: Vec<VerifyingKey>,
}

impl KeySet {
    /// Reads and parses the file. Errors are one line naming the flag and the file.
    pub(super) fn load(path: &Path) -> Result<KeySet, String> {
        let fail = |problem: String| format!("--jwt-jwks-file {}: {problem}", path.display());
        let text = std::fs::read(path).map_err(|error| fail(format!("cannot read: {error}")))?;
        let document: Value =
            serde_json::from_slice(&text).map_err(|error| fail(format!("not JSON ({error})")))?;
        let Some(entries) = document.get("keys").and_then(Value::as_array) else {
            return Err(fail(
                "not a JWK set (expected an object with a \"keys\" array)".to_owned(),
            ));
        };
        let mut keys = Vec::with_capacity(entries.len());
        let mut skipped = Vec::new();
        for (index, entry) in entries.iter().enumerate() {
            let kid = entry.get("kid").and_then(Value::as_str);
            match entry.as_object().ok_or("not a JSON object").and_then(parse) {
                Ok(key) => {
                    if entry.get("d").is_some() {
                        tracing::warn!(
                            file = %path.display(), kid,
                            "the JWKS file holds a private key: publish only public keys"
                        );
                    }
                    keys.push(key);
                }
                Err(reason) => {
                    let name = kid.map_or_else(|| format!("#{index}"), |kid| format!("\"{kid}\""));
                    tracing::warn!(
                        file = %path.display(), kid, index, reason,
                        "JWKS key skipped: it cannot check RS256 or ES256 tokens"
                    );
                    skipped.push(format!("key {name}: {reason}"));
                }
            }
        }
        if keys.is_empty() {
            let why = if skipped.is_empty() {
                String::new()
            } else {
                format!(" (skipped {})", skipped.join("; "))
            };
            return Err(fail(format!("no RS256 or ES256 key in the key set{why}")));
        }
        Ok(KeySet { keys })
    }

    /// The key for a token with this header. With a `kid`, the key with that `kid` (among keys
    /// sharing it, the one for the token's algorithm); without, the set's only key.
    pub(super) fn select(
        &self,
        kid: Option<&str>,
        algorithm: Algorithm,
    ) -> Result<&VerifyingKey, JwtRejection> {
        let mut candidates = self.keys.iter().filter(|key| match kid {
            Some(kid) => key.kid.as_deref() == Some(kid),
            None => self.keys.len() == 1,
        });
        let first = candidates.next().ok_or(JwtRejection::UnknownKey)?;
        // A token whose algorithm is not its key's cannot carry that key's signature.
        std::iter::once(first)
            .chain(candidates)
            .find(|key| key.algorithm == algorithm)
            .ok_or(JwtRejection::BadSignature)
    }

    /// The `kid`s of the usable keys ("-" for a key without one), for logs.
    pub(super) fn key_ids(&self) -> Vec<&str> {
        self.keys
            .iter()
            .map(|key| key.kid.as_deref().unwrap_or("-"))
            .collect()
    }
}

/// One JWK into a key, or why it is skipped.
fn parse(jwk: &Map<String, Value>) -> Result<VerifyingKey, &'static str> {
    let kid = match jwk.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err("\"kid\" is not a string"),
    };
    match jwk.get("use") {
        None => {}
        Some(Value::String(usage)) if usage == "sig" => {}
        Some(_) => return Err("\"use\" is not \"sig\""),
    }
    if let Some(operations) = jwk.get("key_ops") {
        let verify = Value::String("verify".to_owned());
        if !operations
            .as_array()
            .is_some_and(|ops| ops.contains(&verify))
        {
            return Err("\"key_ops\" does not allow \"verify\"");
        }
    }
    let text = |name: &str| jwk.get(name).and_then(Value::as_str);
    let bytes = |name: &str| {
        text(name)
            .and_then(|value| URL_SAFE_NO_PAD.decode(value).ok())
            .ok_or("a key parameter is missing or not base64url")
    };
    let (algorithm, key) = match text("kty") {
        Some("RSA") => {
            if !matches!(text("alg"), None | Some("RS256")) {
                return Err("an RSA key for another algorithm than RS256");
            }
            let (n, e) = (bytes("n")?, bytes("e")?);
            let modulus = n.iter().skip_while(|byte| **byte == 0).count();
            if modulus < MIN_RSA_MODULUS_BYTES {
                return Err("an RSA key shorter than 2048 bits");
            }
            if e.iter().all(|byte| *byte == 0) {
                return Err("an RSA key without an exponent");
            }
            (
                Algorithm::RS256,
                DecodingKey::from_rsa_raw_components(&n, &e),
            )
        }
        Some("EC") => {
            if text("crv") != Some("P-256") || !matches!(text("alg"), None | Some("ES256")) {
                return Err("an EC key that is not P-256 for ES256");
            }
            let (x, y) = (bytes("x")?, bytes("y")?);
            if x.len() != 32 || y.len() != 32 {
                return Err("a P-256 key whose x or y is not 32 bytes");
            }
            // The uncompressed point, which jsonwebtoken's EC verifier takes (what its
            // `from_ec_components` builds).
            let mut point = Vec::with_capacity(65);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            (Algorithm::ES256, DecodingKey::from_ec_der(&point))
        }
        Some(_) => return Err("an unsupported key type (only RSA and EC P-256)"),
        None => return Err("no \"kty\""),
    };
    Ok(VerifyingKey {
        kid,
        algorithm,
        key,
    })
}
