//! Placeholder until the JWT verifier lands (replaced on merge).
use std::path::PathBuf;

#[derive(Debug, Clone, Default, clap::Args)]
pub struct JwtArgs {
    /// JWKS file.
    #[arg(long, env = "ACKGATE_JWT_JWKS_FILE")]
    pub jwt_jwks_file: Option<PathBuf>,
    /// Issuer.
    #[arg(long, env = "ACKGATE_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Audience.
    #[arg(long, env = "ACKGATE_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
}

impl JwtArgs {
    pub(crate) fn is_set(&self) -> bool {
        self.jwt_jwks_file.is_some() || self.jwt_issuer.is_some() || self.jwt_audience.is_some()
    }
}

#[derive(Debug)]
pub(crate) struct JwtVerifier;

pub(crate) struct JwtIdentity {
    pub(crate) subject: String,
    pub(crate) scopes: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JwtRejection {
    Malformed,
}

impl JwtRejection {
    pub(crate) fn label(self) -> &'static str {
        "malformed"
    }
}

impl JwtVerifier {
    pub(crate) fn from_args(_: &JwtArgs) -> Result<Option<JwtVerifier>, String> {
        Ok(None)
    }
    pub(crate) fn reload(&self) -> Result<JwtVerifier, String> {
        Ok(JwtVerifier)
    }
    pub(crate) fn verify(&self, _: &str) -> Result<JwtIdentity, JwtRejection> {
        Err(JwtRejection::Malformed)
    }
}
