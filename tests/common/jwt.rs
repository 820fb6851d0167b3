//! A JWT issuer of the tests' own: an RSA-2048 and a P-256 key pair, the JWKS file that
//! publishes their public halves, and tokens signed with them (RS256, ES256), plus a
//! "foreign" RSA key that claims the same `kid` but is not in the set.
//!
//! Self-contained (no `super::` imports): the library's unit tests include this file too.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// The `iss` the issuer's tokens carry.
pub const ISSUER: &str = "https://issuer.test/";
/// The `aud` the issuer's tokens carry.
pub const AUDIENCE: &str = "ackgate";
/// The `kid` of the RSA key (and of the foreign key).
pub const RSA_KID: &str = "rsa-1";
/// The `kid` of the P-256 key.
pub const EC_KID: &str = "ec-1";

/// An RSA-2048 key pair: the signing key and the public JWK.
pub struct RsaKey {
    pub kid: String,
    signing: EncodingKey,
    /// The public key as PKCS#1 `RSAPublicKey` DER.
    pub public_der: Vec<u8>,
    pub jwk: Value,
}

impl RsaKey {
    pub fn generate(kid: &str) -> RsaKey {
        let pair = RsaKeyPair::generate(KeySize::Rsa2048).expect("RSA key generation");
        let pkcs8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair).expect("PKCS#8");
        // jsonwebtoken signs with a PKCS#1 key; its PEM reader unwraps PKCS#8.
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            STANDARD.encode(pkcs8.as_ref())
        );
        let signing = EncodingKey::from_rsa_pem(pem.as_bytes()).expect("RSA PEM");
        let components = PublicKeyComponents::<Vec<u8>>::from(pair.public_key());
        let jwk = json!({
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
            "n": URL_SAFE_NO_PAD.encode(&components.n),
            "e": URL_SAFE_NO_PAD.encode(&components.e),
        });
        RsaKey {
            kid: kid.to_owned(),
            signing,
            public_der: pair.public_key().as_ref().to_vec(),
            jwk,
        }
    }
}

/// A P-256 key pair: the signing key and the public JWK.
pub struct EcKey {
    pub kid: String,
    signing: EncodingKey,
    pub jwk: Value,
}

impl EcKey {
    pub fn generate(kid: &str) -> EcKey {
        let alg = &ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &SystemRandom::new()).expect("EC key");
        let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref()).expect("EC PKCS#8");
        // The uncompressed point: 0x04, then x and y, 32 bytes each.
        let point = pair.public_key().as_ref();
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        });
        EcKey {
            kid: kid.to_owned(),
            signing: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk,
        }
    }
}

/// The issuer: its keys and the JWKS file (in a directory of its own, removed on drop).
pub struct JwtIssuer {
    pub jwks_path: PathBuf,
    pub issuer: String,
    pub audience: String,
    pub rsa: RsaKey,
    pub ec: EcKey,
    /// Not in the key set, but with the RSA key's `kid`: its tokens must fail the signature.
    pub foreign: RsaKey,
    dir: PathBuf,
}

impl JwtIssuer {
    /// New keys, and a JWKS file with the RSA and the EC key.
    pub fn new() -> JwtIssuer {
        let dir = std::env::temp_dir().join(format!(
            "ackgate-jwt-{}",
            ulid::Ulid::new().to_string().to_lowercase()
        ));
        std::fs::create_dir_all(&dir).expect("JWKS directory");
        let issuer = JwtIssuer {
            jwks_path: dir.join("jwks.json"),
            issuer: ISSUER.to_owned(),
            audience: AUDIENCE.to_owned(),
            rsa: RsaKey::generate(RSA_KID),
            ec: EcKey::generate(EC_KID),
            foreign: RsaKey::generate(RSA_KID),
            dir,
        };
        issuer.write_jwks(&[issuer.rsa.jwk.clone(), issuer.ec.jwk.clone()]);
        issuer
    }

    /// Replaces the JWKS file with a set of these keys (the raw JWK objects).
    pub fn write_jwks(&self, keys: &[Value]) {
        self.write_jwks_text(&json!({ "keys": keys }).to_string());
    }

    /// Replaces the JWKS file with any text (for load errors). Written to a temporary name and
    /// renamed, as a deployment would, so a reader never sees half a file.
    pub fn write_jwks_text(&self, text: &str) {
        let partial = self.dir.join("jwks.json.partial");
        std::fs::write(&partial, text).expect("write JWKS");
        std::fs::rename(&partial, &self.jwks_path).expect("rename JWKS");
    }

    /// Rotation: a new RSA key under `kid`, which replaces the old RSA key in the file (the EC
    /// key stays). Tokens signed by the old key fail once the gateway reloads.
    pub fn rotate_rsa(&mut self, kid: &str) {
        self.rsa = RsaKey::generate(kid);
        self.write_jwks(&[self.rsa.jwk.clone(), self.ec.jwk.clone()]);
    }

    /// Claims valid for five minutes: `sub`, `scope`, and the issuer's `iss` and `aud`.
    pub fn claims(&self, subject: &str, scope: &str) -> Value {
        json!({
            "sub": subject, "scope": scope, "iss": self.issuer, "aud": self.audience,
            "iat": now(), "exp": now() + 300,
        })
    }

    /// `claims` signed RS256 by the RSA key, with its `kid`.
    pub fn token(&self, claims: Value) -> String {
        sign(
            Algorithm::RS256,
            Some(&self.rsa.kid),
            &self.rsa.signing,
            &claims,
        )
    }

    /// `claims` signed ES256 by the P-256 key, with its `kid`.
    pub fn token_es256(&self, claims: Value) -> String {
        sign(
            Algorithm::ES256,
            Some(&self.ec.kid),
            &self.ec.signing,
            &claims,
        )
    }

    /// `claims` signed RS256 by the foreign key under the RSA key's `kid`.
    pub fn foreign_token(&self, claims: Value) -> String {
        sign(
            Algorithm::RS256,
            Some(&self.foreign.kid),
            &self.foreign.signing,
            &claims,
        )
    }

    /// `claims` signed RS256 by the RSA key, with no `kid` in the header.
    pub fn token_without_kid(&self, claims: Value) -> String {
        sign(Algorithm::RS256, None, &self.rsa.signing, &claims)
    }
}

impl Default for JwtIssuer {
    fn default() -> Self {
        JwtIssuer::new()
    }
}

impl Drop for JwtIssuer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A token with any header and no signature: `base64url(header).base64url(claims).` (for
/// `alg: none`).
pub fn unsigned_token(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

/// `claims` signed HS256 with `secret`, under `kid`: the algorithm-confusion attack signs with
/// the bytes of the server's public key.
pub fn hs256_token(kid: &str, secret: &[u8], claims: &Value) -> String {
    let key = EncodingKey::from_secret(secret).expect("HMAC secret");
    sign(Algorithm::HS256, Some(kid), &key, claims)
}

fn sign(algorithm: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(algorithm);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("sign token")
}
