//! JWT bearer tokens checked against a JWKS file (`--jwt-jwks-file`, `--jwt-issuer`,
//! `--jwt-audience`).
//!
//! A token names its principal in `sub` and its permissions in `scope`, a space-separated
//! string (`produce:<pattern>`, `operator`). The rules, each a secure default:
//!
//! - **All three flags together.** A key set without an issuer would accept tokens from anyone
//!   whose keys are in it; without an audience, tokens minted for other services. Giving one
//!   flag without the others is a start-up error.
//! - **RS256 and ES256 only, decided by the key.** Each key's algorithm comes from the JWK
//!   (`kty` RSA → RS256, `kty` EC with `crv` P-256 → ES256; an `alg` on the key must agree).
//!   A token whose header names another algorithm (`none`, HS256 — including HS256 "signed"
//!   with the public key's bytes, the classic confusion attack) is refused before any key is
//!   looked at; one naming the other supported algorithm than its key's fails as a bad
//!   signature. Keys the header embeds or points to (`jwk`, `jku`, `x5u`, `x5c`) are ignored.
//! - **Key by `kid`.** A token without `kid` is accepted only when the set has exactly one
//!   usable key. Keys with `use` other than `sig`, `key_ops` without `verify`, other key types
//!   or curves, and RSA keys under 2048 bits are skipped with a warning naming their `kid`; a
//!   set with no usable key is a start-up (or reload) error.
//! - **Time.** `exp` is required, `nbf` is honoured when present, both with [`LEEWAY_SECS`]
//!   of clock skew allowed. A token without `exp` is refused as malformed.
//! - **Issuer and audience.** `iss` must equal the issuer exactly (a string, not an array);
//!   `aud`, a string or an array, must be or contain the audience.
//! - **Subject.** `sub` must be a non-empty string.
//! - **Scopes.** `scope` may be absent (no permissions), a space-separated string, or an array
//!   of strings. Without `scope`, `scp` is read the same way, as some identity providers
//!   (Azure AD, Okta) put the scopes there as an array.
//!
//! The token is never logged nor returned: a refusal is one of the [`JwtRejection`] kinds,
//! whose [`label`](JwtRejection::label) is fit for metrics and logs. The key set is re-read by
//! [`JwtVerifier::reload`] (on SIGHUP); a failed reload keeps the old one.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::Args;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use serde_json::Value;

mod keys;
#[cfg(test)]
mod tests;

use keys::KeySet;

/// Clock skew allowed on `exp` and `nbf`, in seconds: enough for hosts kept in sync by NTP,
/// short enough that an expired token is not usable for long.
pub(crate) const LEEWAY_SECS: u64 = 30;

/// Longest token looked at, in bytes; real tokens are a few hundred bytes to a few KiB.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// JWT bearer tokens: the key set and the claims every token must carry.
#[derive(Debug, Clone, Default, Args)]
pub struct JwtArgs {
    /// JWKS file (JSON Web Key Set, RFC 7517) with the public keys that sign bearer tokens:
    /// RSA keys (RS256) and P-256 keys (ES256). Re-read on SIGHUP. Needs --jwt-issuer and
    /// --jwt-audience.
    #[arg(long, env = "ACKGATE_JWT_JWKS_FILE", value_name = "FILE")]
    pub jwt_jwks_file: Option<PathBuf>,

    /// The issuer every token's `iss` must equal exactly (e.g. `https://idp.example/`).
    #[arg(long, env = "ACKGATE_JWT_ISSUER", value_name = "ISSUER")]
    pub jwt_issuer: Option<String>,

    /// The audience every token's `aud` must be or contain (e.g. `ackgate`): tokens minted for
    /// other services are refused.
    #[arg(long, env = "ACKGATE_JWT_AUDIENCE", value_name = "AUDIENCE")]
    pub jwt_audience: Option<String>,
}

impl JwtArgs {
    /// Whether any JWT flag is given.
    pub(crate) fn is_set(&self) -> bool {
        self.jwt_jwks_file.is_some() || self.jwt_issuer.is_some() || self.jwt_audience.is_some()
    }
}

/// Checks bearer tokens against one JWKS file, issuer and audience.
pub(crate) struct JwtVerifier {
    path: PathBuf,
    issuer: String,
    audience: String,
    keys: KeySet,
}

/// Who a valid token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JwtIdentity {
    /// `sub`.
    pub(crate) subject: String,
    /// `scope` (or `scp`), one entry per scope.
    pub(crate) scopes: Vec<String>,
    /// `exp`, in seconds since the Unix epoch.
    pub(crate) expires_at: u64,
}

/// Why a token is refused (every kind is answered 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JwtRejection {
    /// Not three base64url parts of JSON, a claim of the wrong type, or no `exp`.
    Malformed,
    /// The header names an algorithm other than RS256 and ES256.
    UnsupportedAlgorithm,
    /// No key with the token's `kid`, or no `kid` and more than one key.
    UnknownKey,
    /// The signature is not the key's (or the algorithm is not the key's).
    BadSignature,
    Expired,
    NotYetValid,
    WrongIssuer,
    WrongAudience,
    /// `sub` absent, empty or not a string.
    MissingSubject,
}

impl JwtRejection {
    /// A fixed word for metric labels and log fields.
    pub(crate) fn label(self) -> &'static str {
        match self {
            JwtRejection::Malformed => "malformed",
            JwtRejection::UnsupportedAlgorithm => "unsupported_algorithm",
            JwtRejection::UnknownKey => "unknown_key",
            JwtRejection::BadSignature => "bad_signature",
            JwtRejection::Expired => "expired",
            JwtRejection::NotYetValid => "not_yet_valid",
            JwtRejection::WrongIssuer => "wrong_issuer",
            JwtRejection::WrongAudience => "wrong_audience",
            JwtRejection::MissingSubject => "missing_subject",
        }
    }
}

impl JwtVerifier {
    /// The verifier the flags describe; `None` when no JWT flag is given. Errors are one line
    /// naming the flag or the file and the problem.
    pub(crate) fn from_args(args: &JwtArgs) -> Result<Option<JwtVerifier>, String> {
        if !args.is_set() {
            return Ok(None);
        }
        let Some(path) = &args.jwt_jwks_file else {
            return Err(
                "--jwt-issuer and --jwt-audience need --jwt-jwks-file (the keys that \
                        sign the tokens)"
                    .to_owned(),
            );
        };
        let issuer = required(
            args.jwt_issuer.as_deref(),
            "--jwt-issuer",
            "tokens from any issuer whose keys are in the set would be accepted",
        )?;
        let audience = required(
            args.jwt_audience.as_deref(),
            "--jwt-audience",
            "tokens minted for other services would be accepted",
        )?;
        JwtVerifier::load(path, issuer, audience).map(Some)
    }

    /// The same flags with the JWKS file read again (on SIGHUP). On error the caller keeps the
    /// old verifier.
    pub(crate) fn reload(&self) -> Result<JwtVerifier, String> {
        JwtVerifier::load(&self.path, self.issuer.clone(), self.audience.clone())
    }

    fn load(path: &Path, issuer: String, audience: String) -> Result<JwtVerifier, String> {
        Ok(JwtVerifier {
            keys: KeySet::load(path)?,
            path: path.to_owned(),
            issuer,
            audience,
        })
    }

    /// Checks a token (the text after `Bearer `): header, key, signature, then claims.
    pub(crate) fn verify(&self, token: &str) -> Result<JwtIdentity, JwtRejection> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(JwtRejection::Malformed);
        }
        let header = Header::read(token)?;
        let algorithm = match header.alg.as_str() {
            "RS256" => Algorithm::RS256,
            "ES256" => Algorithm::ES256,
            _ => return Err(JwtRejection::UnsupportedAlgorithm),
        };
        let key = self.keys.select(header.kid.as_deref(), algorithm)?;
        let mut validation = Validation::new(key.algorithm);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        // Checked below, exactly (the library would also take an `iss` array).
        validation.validate_aud = false;
        let claims = jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
            .map_err(|error| rejection(error.kind()))?
            .claims;
        claims.identity(&self.issuer, &self.audience)
    }
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("jwks_file", &self.path)
            .field("key_ids", &self.keys.key_ids())
            .finish_non_exhaustive()
    }
}

fn required(value: Option<&str>, flag: &str, otherwise: &str) -> Result<String, String> {
    match value.map(str::trim) {
        Some(value) if !value.is_empty() => Ok(value.to_owned()),
        Some(_) => Err(format!("{flag} is empty")),
        None => Err(format!(
            "--jwt-jwks-file needs {flag}: without it, {otherwise}"
        )),
    }
}

/// The parts of the header the key choice needs, read before any signature is checked.
#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
}

impl Header {
    fn read(token: &str) -> Result<Header, JwtRejection> {
        let encoded = token.split('.').next().unwrap_or_default();
        let json = URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| JwtRejection::Malformed)?;
        serde_json::from_slice(&json).map_err(|_| JwtRejection::Malformed)
    }
}

/// The claims read once the signature and the times are checked. `Value`s, so that a claim of
/// an unexpected type is refused by the check that owns it rather than as unparsable JSON.
#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Value,
    #[serde(default)]
    iss: Value,
    #[serde(default)]
    aud: Value,
    #[serde(default)]
    exp: Value,
    #[serde(default)]
    scope: Value,
    #[serde(default)]
    scp: Value,
}

impl Claims {
    fn identity(self, issuer: &str, audience: &str) -> Result<JwtIdentity, JwtRejection> {
        if self.iss.as_str() != Some(issuer) {
            return Err(JwtRejection::WrongIssuer);
        }
        let audience_matches = match &self.aud {
            Value::String(aud) => aud == audience,
            Value::Array(auds) => auds.iter().any(|aud| aud.as_str() == Some(audience)),
            _ => false,
        };
        if !audience_matches {
            return Err(JwtRejection::WrongAudience);
        }
        let subject = match self.sub {
            Value::String(sub) if !sub.is_empty() => sub,
            _ => return Err(JwtRejection::MissingSubject),
        };
        let scopes = match self.scope {
            Value::Null => scopes(self.scp)?,
            scope => scopes(scope)?,
        };
        // The library has checked `exp` is a non-negative number; it rounds fractions too.
        let expires_at = self
            .exp
            .as_u64()
            .or_else(|| self.exp.as_f64().map(|exp| exp.round() as u64))
            .ok_or(JwtRejection::Malformed)?;
        Ok(JwtIdentity {
            subject,
            scopes,
            expires_at,
        })
    }
}

/// A scope claim: absent, a space-separated string, or an array of strings.
fn scopes(claim: Value) -> Result<Vec<String>, JwtRejection> {
    match claim {
        Value::Null => Ok(Vec::new()),
        Value::String(scope) => Ok(scope.split_whitespace().map(str::to_owned).collect()),
        Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                Value::String(scope) if !scope.is_empty() => Ok(scope),
                _ => Err(JwtRejection::Malformed),
            })
            .collect(),
        _ => Err(JwtRejection::Malformed),
    }
}

/// The library's verdict as a rejection.
fn rejection(kind: &ErrorKind) -> JwtRejection {
    match kind {
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidKeyFormat => JwtRejection::BadSignature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::InvalidAlgorithmName => JwtRejection::UnsupportedAlgorithm,
        ErrorKind::ExpiredSignature => JwtRejection::Expired,
        ErrorKind::ImmatureSignature => JwtRejection::NotYetValid,
        ErrorKind::InvalidIssuer => JwtRejection::WrongIssuer,
        ErrorKind::InvalidAudience => JwtRejection::WrongAudience,
        ErrorKind::InvalidSubject => JwtRejection::MissingSubject,
        // A bad shape, base64 or JSON, a missing `exp`, a claim of the wrong type.
        _ => JwtRejection::Malformed,
    }
}
