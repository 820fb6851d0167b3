//! The JWT rules, against keys and a JWKS file made for each run (the integration tests'
//! fixture, `tests/common/jwt.rs`).

use std::sync::OnceLock;

use serde_json::{Value, json};

use super::*;

#[path = "../../../tests/common/jwt.rs"]
#[allow(dead_code, unreachable_pub)]
mod fixture;

use fixture::{JwtIssuer, hs256_token, now, unsigned_token};

/// One issuer and its verifier for the tests that only read (RSA key generation is slow).
fn shared() -> &'static (JwtIssuer, JwtVerifier) {
    static SHARED: OnceLock<(JwtIssuer, JwtVerifier)> = OnceLock::new();
    SHARED.get_or_init(|| {
        let issuer = JwtIssuer::new();
        let verifier = verifier_for(&issuer).expect("the fixture's key set loads");
        (issuer, verifier)
    })
}

fn args(issuer: &JwtIssuer) -> JwtArgs {
    JwtArgs {
        jwt_jwks_file: Some(issuer.jwks_path.clone()),
        jwt_issuer: Some(issuer.issuer.clone()),
        jwt_audience: Some(issuer.audience.clone()),
    }
}

fn verifier_for(issuer: &JwtIssuer) -> Result<JwtVerifier, String> {
    JwtVerifier::from_args(&args(issuer)).map(|verifier| verifier.expect("flags are set"))
}

/// Valid claims, with `changes` merged in (`null` removes a claim).
fn claims(changes: Value) -> Value {
    let mut claims = shared()
        .0
        .claims("orders-service", "produce:orders operator");
    for (name, value) in changes.as_object().expect("an object") {
        match value {
            Value::Null => claims.as_object_mut().unwrap().remove(name),
            value => claims
                .as_object_mut()
                .unwrap()
                .insert(name.clone(), value.clone()),
        };
    }
    claims
}

fn verify(token: &str) -> Result<JwtIdentity, JwtRejection> {
    shared().1.verify(token)
}

fn rs256(changes: Value) -> Result<JwtIdentity, JwtRejection> {
    verify(&shared().0.token(claims(changes)))
}

#[test]
fn a_valid_rs256_token_gives_subject_scopes_and_expiry() {
    let exp = now() + 300;
    let identity = rs256(json!({ "exp": exp })).expect("valid");
    assert_eq!(identity.subject, "orders-service");
    assert_eq!(identity.scopes, ["produce:orders", "operator"]);
    assert_eq!(identity.expires_at, exp);
}

#[test]
fn a_valid_es256_token_is_accepted() {
    let identity = verify(&shared().0.token_es256(claims(json!({})))).expect("valid");
    assert_eq!(identity.subject, "orders-service");
}

#[test]
fn times_are_checked_with_the_leeway() {
    assert_eq!(
        rs256(json!({ "exp": now() - 120 })),
        Err(JwtRejection::Expired)
    );
    assert_eq!(
        rs256(json!({ "nbf": now() + 120 })),
        Err(JwtRejection::NotYetValid)
    );
    assert!(
        rs256(json!({ "exp": now() - 10 })).is_ok(),
        "within the leeway"
    );
    assert!(
        rs256(json!({ "nbf": now() + 10 })).is_ok(),
        "within the leeway"
    );
    assert!(rs256(json!({ "nbf": now() - 10 })).is_ok());
    assert_eq!(rs256(json!({ "exp": null })), Err(JwtRejection::Malformed));
    assert_eq!(
        rs256(json!({ "exp": "tomorrow" })),
        Err(JwtRejection::Malformed)
    );
}

#[test]
fn the_issuer_must_match_exactly() {
    let wrong = Err(JwtRejection::WrongIssuer);
    assert_eq!(rs256(json!({ "iss": "https://other.test/" })), wrong);
    assert_eq!(rs256(json!({ "iss": "https://issuer.test" })), wrong);
    assert_eq!(rs256(json!({ "iss": null })), wrong);
    assert_eq!(rs256(json!({ "iss": [fixture::ISSUER] })), wrong);
}

#[test]
fn the_audience_must_be_or_contain_ours() {
    let wrong = Err(JwtRejection::WrongAudience);
    assert_eq!(rs256(json!({ "aud": "billing" })), wrong);
    assert_eq!(rs256(json!({ "aud": ["billing", "crm"] })), wrong);
    assert_eq!(rs256(json!({ "aud": null })), wrong);
    assert_eq!(rs256(json!({ "aud": [] })), wrong);
    assert!(rs256(json!({ "aud": ["billing", fixture::AUDIENCE] })).is_ok());
}

#[test]
fn a_signature_by_another_key_under_the_same_kid_is_refused() {
    let token = shared().0.foreign_token(claims(json!({})));
    assert_eq!(verify(&token), Err(JwtRejection::BadSignature));
}

#[test]
fn a_tampered_payload_is_refused() {
    let token = shared().0.token(claims(json!({})));
    let [header, _, signature]: [&str; 3] =
        token.split('.').collect::<Vec<_>>().try_into().unwrap();
    let forged = URL_SAFE_NO_PAD.encode(claims(json!({ "sub": "admin" })).to_string());
    let token = format!("{header}.{forged}.{signature}");
    assert_eq!(verify(&token), Err(JwtRejection::BadSignature));
}

#[test]
fn keys_are_chosen_by_kid() {
    let issuer = &shared().0;
    let mut header = jsonwebtoken::Header::new(Algorithm::RS256);
    header.kid = Some("rsa-9".to_owned());
    let unknown = unsigned_token(&serde_json::to_value(&header).unwrap(), &claims(json!({})));
    assert_eq!(
        verify(&format!("{unknown}c2ln")),
        Err(JwtRejection::UnknownKey)
    );
    // Two keys: a token without kid names none of them.
    let token = issuer.token_without_kid(claims(json!({})));
    assert_eq!(verify(&token), Err(JwtRejection::UnknownKey));
    // RS256 under the EC key's kid cannot be that key's signature.
    let mut header = jsonwebtoken::Header::new(Algorithm::RS256);
    header.kid = Some(fixture::EC_KID.to_owned());
    let token = unsigned_token(&serde_json::to_value(&header).unwrap(), &claims(json!({})));
    assert_eq!(
        verify(&format!("{token}c2ln")),
        Err(JwtRejection::BadSignature)
    );
}

#[test]
fn without_kid_the_only_key_is_used() {
    let issuer = JwtIssuer::new();
    issuer.write_jwks(std::slice::from_ref(&issuer.rsa.jwk));
    let verifier = verifier_for(&issuer).unwrap();
    let token = issuer.token_without_kid(issuer.claims("svc", ""));
    assert_eq!(verifier.verify(&token).unwrap().subject, "svc");
    let foreign = issuer.foreign_token(issuer.claims("svc", ""));
    assert_eq!(verifier.verify(&foreign), Err(JwtRejection::BadSignature));
}

#[test]
fn algorithms_come_from_the_key_not_the_token() {
    let issuer = &shared().0;
    let body = claims(json!({}));
    for alg in ["none", "None", "HS256", "RS512", "PS256", "EdDSA"] {
        let token = unsigned_token(&json!({ "alg": alg, "kid": fixture::RSA_KID }), &body);
        assert_eq!(
            verify(&token),
            Err(JwtRejection::UnsupportedAlgorithm),
            "{alg}"
        );
    }
    // HS256 keyed with the public key's bytes, or with the JWKS file itself.
    let jwks = std::fs::read(&issuer.jwks_path).unwrap();
    for secret in [&issuer.rsa.public_der, &jwks] {
        let token = hs256_token(fixture::RSA_KID, secret, &body);
        assert_eq!(verify(&token), Err(JwtRejection::UnsupportedAlgorithm));
    }
}

#[test]
fn the_subject_is_required() {
    for sub in [json!(null), json!(""), json!(42)] {
        assert_eq!(
            rs256(json!({ "sub": sub })),
            Err(JwtRejection::MissingSubject)
        );
    }
}

#[test]
fn malformed_tokens_are_refused() {
    let long = "a".repeat(MAX_TOKEN_BYTES + 1);
    let valid = shared().0.token(claims(json!({})));
    let two_parts = valid.rsplit_once('.').unwrap().0;
    for token in ["", "abc", "a.b.c", "....", "!!!.e30.", &long, two_parts] {
        assert_eq!(verify(token), Err(JwtRejection::Malformed), "{token}");
    }
    let no_alg = unsigned_token(&json!({ "kid": fixture::RSA_KID }), &json!({}));
    assert_eq!(verify(&no_alg), Err(JwtRejection::Malformed));
}

#[test]
fn scopes_come_from_scope_or_scp() {
    let scopes = |changes| rs256(changes).expect("valid").scopes;
    assert_eq!(
        scopes(json!({ "scope": "  produce:a   operator " })),
        ["produce:a", "operator"]
    );
    assert!(scopes(json!({ "scope": null })).is_empty());
    assert!(scopes(json!({ "scope": "" })).is_empty());
    assert_eq!(
        scopes(json!({ "scope": null, "scp": ["produce:b", "operator"] })),
        ["produce:b", "operator"]
    );
    assert_eq!(scopes(json!({ "scope": ["produce:c"] })), ["produce:c"]);
    // `scope` wins over `scp`.
    assert_eq!(
        scopes(json!({ "scope": "produce:d", "scp": ["operator"] })),
        ["produce:d"]
    );
    assert_eq!(rs256(json!({ "scope": 7 })), Err(JwtRejection::Malformed));
    assert_eq!(
        rs256(json!({ "scope": null, "scp": [1] })),
        Err(JwtRejection::Malformed)
    );
}

#[test]
fn labels_are_distinct_words() {
    use JwtRejection::*;
    let all = [
        Malformed,
        UnsupportedAlgorithm,
        UnknownKey,
        BadSignature,
        Expired,
        NotYetValid,
        WrongIssuer,
        WrongAudience,
        MissingSubject,
    ];
    let labels: std::collections::HashSet<_> = all.iter().map(|r| r.label()).collect();
    assert_eq!(labels.len(), all.len());
    assert!(
        labels
            .iter()
            .all(|l| l.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
    );
}

#[test]
fn debug_shows_the_file_and_key_ids_only() {
    let (issuer, verifier) = shared();
    let debug = format!("{verifier:?}");
    assert!(
        debug.contains(issuer.jwks_path.to_str().unwrap()),
        "{debug}"
    );
    assert!(
        debug.contains(fixture::RSA_KID) && debug.contains(fixture::EC_KID),
        "{debug}"
    );
    let n = issuer.rsa.jwk["n"].as_str().unwrap();
    assert!(!debug.contains(&n[..16]), "{debug}");
}

mod loading;
