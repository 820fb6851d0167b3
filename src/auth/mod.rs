//! Who is calling, and what they may do.
//!
//! A request is authenticated once, at the edge, into a [`Principal`]: a name and its grants
//! (topics it may publish to, whether it is an operator, its rate). Credentials come from:
//! - the auth file (`--auth-file`, [`file`]): API keys sent as `Authorization: Bearer <secret>`,
//!   or client certificates mapped to a client by name;
//! - JWTs (`--jwt-jwks-file`, [`jwt`]): the principal is `sub`, the grants come from `scope`.
//!
//! With neither, the gateway is open: every caller is the principal `anonymous`, may publish to
//! every topic but the internal ones and is an operator. `ackgate serve` refuses to start open
//! unless told `--no-auth`.
//!
//! The principal scopes idempotency keys (two clients never share a key), owns its events'
//! status and failure records, and is what rate limits and in-flight shares count. The policy
//! lives behind an [`ArcSwap`]: `SIGHUP` swaps in a reloaded one while requests in progress keep
//! the principal they were given.

mod file;
pub(crate) mod jwt;
mod limits;
mod topics;

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use clap::Args;

pub(crate) use self::file::ClientTable;
pub use self::jwt::JwtArgs;
use self::jwt::{JwtRejection, JwtVerifier};
pub(crate) use self::limits::{Allowance, InFlightShares, Rate};
pub(crate) use self::topics::TopicPatterns;

/// The principal of an unauthenticated gateway.
pub const ANONYMOUS: &str = "anonymous";

/// How callers authenticate (`ackgate serve` and `ackgate dev`).
#[derive(Debug, Clone, Default, Args)]
pub struct AuthArgs {
    /// A TOML file of clients: name, SHA-256 of the API key, topics it may publish to, operator
    /// or not, rate, certificate names (README, "Identity and access"). Reloaded on SIGHUP.
    #[arg(long, env = "ACKGATE_AUTH_FILE")]
    pub auth_file: Option<PathBuf>,

    #[command(flatten)]
    pub jwt: JwtArgs,

    /// Serve without authentication: anyone who can reach the port may publish to every
    /// non-internal topic and act as an operator. `ackgate serve` refuses to start without
    /// either this or an auth file or JWT settings.
    #[arg(long, env = "ACKGATE_NO_AUTH", default_value_t = false)]
    pub no_auth: bool,

    /// Most event requests one client may have in progress at once; past it that client gets
    /// 503 `overloaded` while others go on. Default: half of --max-in-flight.
    #[arg(long, env = "ACKGATE_MAX_IN_FLIGHT_PER_CLIENT",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    pub max_in_flight_per_client: Option<usize>,
}

impl AuthArgs {
    /// Whether an auth file or JWT settings are given.
    pub fn is_configured(&self) -> bool {
        self.auth_file.is_some() || self.jwt.is_set()
    }

    /// The one-line reason `ackgate serve` gives when it would otherwise start open.
    pub fn refuse_open(&self) -> Result<(), String> {
        match (self.is_configured(), self.no_auth) {
            (true, true) => Err("--no-auth contradicts --auth-file/--jwt-*: choose one".to_owned()),
            (false, false) => Err("no authentication configured: give --auth-file (API keys) \
                 and/or --jwt-jwks-file with --jwt-issuer and --jwt-audience, or --no-auth to \
                 serve every caller without credentials"
                .to_owned()),
            _ => Ok(()),
        }
    }
}

/// How a principal proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Anonymous,
    /// An API key or a client certificate of an auth-file client.
    AuthFile,
    Jwt,
}

/// An authenticated caller. Cheap to clone (one reference count).
#[derive(Clone)]
pub(crate) struct Principal(Arc<Grants>);

struct Grants {
    name: Arc<str>,
    source: Source,
    produce: TopicPatterns,
    operator: bool,
    rate: Option<Arc<Rate>>,
}

impl Principal {
    pub(crate) fn anonymous() -> Principal {
        Principal(Arc::new(Grants {
            name: ANONYMOUS.into(),
            source: Source::Anonymous,
            produce: TopicPatterns::everything(),
            operator: true,
            rate: None,
        }))
    }

    pub(crate) fn name(&self) -> &str {
        &self.0.name
    }

    pub(crate) fn shared_name(&self) -> &Arc<str> {
        &self.0.name
    }

    pub(crate) fn may_produce(&self, topic: &str) -> bool {
        self.0.produce.allow(topic)
    }

    pub(crate) fn is_operator(&self) -> bool {
        self.0.operator
    }

    pub(crate) fn rate(&self) -> Option<&Rate> {
        self.0.rate.as_deref()
    }

    /// A metric label: the client's name when the auth file bounds the set of names, else the
    /// way it authenticated (`jwt`, `anonymous`): JWT subjects are unbounded.
    pub(crate) fn label(&self) -> &str {
        match self.0.source {
            Source::AuthFile => &self.0.name,
            Source::Jwt => "jwt",
            Source::Anonymous => ANONYMOUS,
        }
    }
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principal")
            .field("name", &self.0.name)
            .field("source", &self.0.source)
            .field("produce", &self.0.produce)
            .field("operator", &self.0.operator)
            .finish()
    }
}

/// Why a request was not authenticated; a bounded metric label and log field, never shown to
/// the client beyond "missing" versus "invalid".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unauthenticated {
    /// No credentials at all.
    Missing,
    /// An `Authorization` header that is not `Bearer <token>`.
    BadScheme,
    /// A bearer secret no client has.
    UnknownKey,
    /// A client certificate no client is mapped to (and no bearer token).
    UnknownCertificate,
    /// A JWT that failed verification.
    Jwt(JwtRejection),
}

impl Unauthenticated {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Unauthenticated::Missing => "missing",
            Unauthenticated::BadScheme => "bad_scheme",
            Unauthenticated::UnknownKey => "unknown_api_key",
            Unauthenticated::UnknownCertificate => "unknown_certificate",
            Unauthenticated::Jwt(rejection) => rejection.label(),
        }
    }
}

/// The credentials a request carries.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Credentials<'a> {
    /// The `Authorization` header, if any.
    pub(crate) authorization: Option<&'a [u8]>,
    /// The verified client certificate's names, if the connection presented one.
    pub(crate) certificate: Option<&'a [String]>,
}

/// The policy in force: who may call, reloadable.
pub(crate) struct Access {
    args: AuthArgs,
    policy: ArcSwap<Policy>,
    shares: Arc<InFlightShares>,
}

enum Policy {
    Open(Principal),
    Closed {
        clients: Option<ClientTable>,
        /// One principal per auth-file client, built once: authenticating is a lookup and a
        /// reference count.
        principals: HashMap<String, Principal>,
        jwt: Option<JwtVerifier>,
    },
}

impl Access {
    /// Loads the auth file and the JWKS file; with neither, the gateway is open. Errors are one
    /// line naming the flag or file.
    pub(crate) fn new(args: &AuthArgs, max_in_flight: usize) -> Result<Access, String> {
        let per_client = args
            .max_in_flight_per_client
            .unwrap_or((max_in_flight / 2).max(1));
        if per_client > max_in_flight {
            return Err(format!(
                "--max-in-flight-per-client ({per_client}) is above --max-in-flight \
                 ({max_in_flight})"
            ));
        }
        let policy = Policy::load(args, None)?;
        Ok(Access {
            args: args.clone(),
            policy: ArcSwap::from_pointee(policy),
            shares: InFlightShares::new(per_client),
        })
    }

    pub(crate) fn is_open(&self) -> bool {
        matches!(**self.policy.load(), Policy::Open(_))
    }

    pub(crate) fn shares(&self) -> &Arc<InFlightShares> {
        &self.shares
    }

    /// Reads the files again; on any error the policy in force stays, and the error says why.
    pub(crate) fn reload(&self) -> Result<(), String> {
        let current = self.policy.load_full();
        let policy = Policy::load(&self.args, Some(&current))?;
        self.policy.store(Arc::new(policy));
        Ok(())
    }

    /// The principal behind `credentials`. A bearer token is tried as an API key, then as a
    /// JWT; without one, a client certificate mapped in the auth file.
    pub(crate) fn authenticate(
        &self,
        credentials: Credentials<'_>,
    ) -> Result<Principal, Unauthenticated> {
        let policy = self.policy.load();
        let (clients, principals, jwt) = match &**policy {
            Policy::Open(anonymous) => return Ok(anonymous.clone()),
            Policy::Closed {
                clients,
                principals,
                jwt,
            } => (clients, principals, jwt),
        };
        let lookup = |name: &str| principals.get(name).cloned();
        if let Some(header) = credentials.authorization {
            let token = bearer_token(header).ok_or(Unauthenticated::BadScheme)?;
            if let Some(client) = clients.as_ref().and_then(|c| c.by_secret(token)) {
                return lookup(&client.name).ok_or(Unauthenticated::UnknownKey);
            }
            return match jwt {
                Some(verifier) if token.bytes().filter(|&b| b == b'.').count() == 2 => {
                    let identity = verifier.verify(token).map_err(Unauthenticated::Jwt)?;
                    Ok(jwt_principal(identity))
                }
                _ => Err(Unauthenticated::UnknownKey),
            };
        }
        if let Some(names) = credentials.certificate {
            let client = clients.as_ref().and_then(|c| c.by_certificate(names));
            return client
                .and_then(|client| principals.get(&client.name).cloned())
                .ok_or(Unauthenticated::UnknownCertificate);
        }
        Err(Unauthenticated::Missing)
    }

    /// What `/readyz` and the start-up log say about access, when it is open.
    pub(crate) fn warning(&self) -> Option<&'static str> {
        self.is_open().then_some(
            "authentication is off: anyone who can reach the gateway may publish to every \
             non-internal topic and act as an operator",
        )
    }
}

impl Policy {
    /// Builds the policy; `previous` lends its rate limiters to clients whose rate is unchanged,
    /// so a reload does not hand every client a fresh burst.
    fn load(args: &AuthArgs, previous: Option<&Policy>) -> Result<Policy, String> {
        if !args.is_configured() {
            return Ok(Policy::Open(Principal::anonymous()));
        }
        let clients = args
            .auth_file
            .as_deref()
            .map(ClientTable::load)
            .transpose()?;
        let jwt = match previous {
            Some(Policy::Closed { jwt: Some(old), .. }) => Some(old.reload()?),
            _ => JwtVerifier::from_args(&args.jwt)?,
        };
        let old_rates = |name: &str, per_second: u32| match previous {
            Some(Policy::Closed { principals, .. }) => principals
                .get(name)
                .and_then(|p| p.0.rate.clone())
                .filter(|rate| rate.per_second() == per_second),
            _ => None,
        };
        let principals = clients
            .iter()
            .flat_map(ClientTable::clients)
            .map(|client| {
                let rate = client.rate.and_then(NonZeroU32::new).map(|per_second| {
                    old_rates(&client.name, per_second.get())
                        .unwrap_or_else(|| Arc::new(Rate::new(per_second)))
                });
                let principal = Principal(Arc::new(Grants {
                    name: client.name.as_str().into(),
                    source: Source::AuthFile,
                    produce: client.produce.clone(),
                    operator: client.operator,
                    rate,
                }));
                (client.name.clone(), principal)
            })
            .collect();
        Ok(Policy::Closed {
            clients,
            principals,
            jwt,
        })
    }
}

/// A new API key for `ackgate new-key`: 32 random bytes from the crypto provider, base64url,
/// and the auth-file entry that stores only its digest.
pub fn new_key(name: &str) -> anyhow::Result<String> {
    use base64::Engine;
    use sha2::{Digest, Sha256};
    if file::valid_name(name).is_err() {
        anyhow::bail!("--name {name:?}: use 1-128 characters of a-z A-Z 0-9 . _ - @");
    }
    let mut bytes = [0u8; 32];
    rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("the system's random source failed"))?;
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let digest = hex::encode(Sha256::digest(secret.as_bytes()));
    Ok(format!(
        "# The secret: give it to the client (Authorization: Bearer <secret>); it is not kept.\n\
         {secret}\n\n\
         # The auth-file entry (it holds only the SHA-256 of the secret):\n\
         [[clients]]\n\
         name = \"{name}\"\n\
         key_sha256 = \"{digest}\"\n\
         produce = []            # topics or globs, e.g. [\"orders\", \"orders.*\"]\n\
         operator = false\n\
         # rate = 500            # events per second\n"
    ))
}

/// `Bearer <token>` (the scheme is case-insensitive, RFC 9110 §11.1).
fn bearer_token(header: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(header).ok()?;
    let (scheme, token) = text.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn jwt_principal(identity: jwt::JwtIdentity) -> Principal {
    let mut produce = Vec::new();
    let mut operator = false;
    for scope in &identity.scopes {
        if scope == "operator" {
            operator = true;
        } else if let Some(pattern) = scope.strip_prefix("produce:") {
            produce.push(pattern.to_owned());
        }
    }
    // A malformed pattern in a token grants nothing rather than failing the request.
    let produce = TopicPatterns::parse(
        produce
            .iter()
            .map(String::as_str)
            .filter(|p| TopicPatterns::parse([*p]).is_ok()),
    )
    .unwrap_or_default();
    Principal(Arc::new(Grants {
        name: identity.subject.into(),
        source: Source::Jwt,
        produce,
        operator,
        rate: None,
    }))
}

#[cfg(test)]
mod tests;
