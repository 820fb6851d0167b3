//! The flags and the JWKS file: what loads, what is skipped, and one-line errors naming the
//! flag or the file.

use super::*;

fn load_error(args: &JwtArgs) -> String {
    let error = JwtVerifier::from_args(args).expect_err("refused");
    assert!(!error.contains('\n'), "one line: {error}");
    error
}

fn file_error(issuer: &JwtIssuer) -> String {
    let error = load_error(&args(issuer));
    assert!(
        error.starts_with(&format!("--jwt-jwks-file {}: ", issuer.jwks_path.display())),
        "{error}"
    );
    error
}

#[test]
fn no_flag_means_no_verifier() {
    assert!(!JwtArgs::default().is_set());
    assert!(
        JwtVerifier::from_args(&JwtArgs::default())
            .unwrap()
            .is_none()
    );
}

#[test]
fn the_three_flags_go_together() {
    let issuer = &shared().0;
    let all = args(issuer);
    let error = load_error(&JwtArgs {
        jwt_issuer: None,
        ..all.clone()
    });
    assert!(
        error.starts_with("--jwt-jwks-file needs --jwt-issuer"),
        "{error}"
    );
    let error = load_error(&JwtArgs {
        jwt_audience: None,
        ..all.clone()
    });
    assert!(
        error.starts_with("--jwt-jwks-file needs --jwt-audience"),
        "{error}"
    );
    assert!(error.contains("other services"), "{error}");
    let error = load_error(&JwtArgs {
        jwt_jwks_file: None,
        ..all.clone()
    });
    assert!(error.contains("need --jwt-jwks-file"), "{error}");
    let error = load_error(&JwtArgs {
        jwt_audience: Some(" ".to_owned()),
        ..all
    });
    assert_eq!(error, "--jwt-audience is empty");
}

#[test]
fn an_unreadable_or_non_jwks_file_is_named() {
    let issuer = JwtIssuer::new();
    issuer.write_jwks_text("{ not json");
    assert!(file_error(&issuer).contains("not JSON"));
    for text in ["[]", "{\"keys\": {}}", "{\"kid\": \"a\"}"] {
        issuer.write_jwks_text(text);
        assert!(file_error(&issuer).contains("not a JWK set"), "{text}");
    }
    std::fs::remove_file(&issuer.jwks_path).unwrap();
    assert!(file_error(&issuer).contains("cannot read"));
}

#[test]
fn a_set_without_a_usable_key_is_refused_with_the_reasons() {
    let issuer = JwtIssuer::new();
    issuer.write_jwks(&[]);
    assert!(file_error(&issuer).ends_with("no RS256 or ES256 key in the key set"));

    let with = |changes: Value| {
        let mut jwk = issuer.rsa.jwk.clone();
        for (name, value) in changes.as_object().unwrap() {
            jwk[name] = value.clone();
        }
        jwk
    };
    let mut no_kid = with(json!({ "alg": "RS384" }));
    no_kid.as_object_mut().unwrap().remove("kid");
    issuer.write_jwks(&[
        json!({ "kty": "oct", "kid": "hmac", "k": "c2VjcmV0" }),
        with(json!({ "kid": "enc", "use": "enc" })),
        with(json!({ "kid": "ops", "key_ops": ["sign"] })),
        with(json!({ "kid": "short", "n": URL_SAFE_NO_PAD.encode([0xc5; 128]) })),
        with(json!({ "kid": "garbled", "n": "***" })),
        no_kid,
        json!({ "kty": "EC", "crv": "P-384", "kid": "p384", "x": "AA", "y": "AA" }),
        json!({ "kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": "AA" }),
        json!("not an object"),
    ]);
    let error = file_error(&issuer);
    assert!(
        error.contains("no RS256 or ES256 key in the key set (skipped "),
        "{error}"
    );
    for named in [
        "\"hmac\"",
        "\"enc\"",
        "\"ops\"",
        "\"short\"",
        "\"garbled\"",
        "#5",
        "#8",
    ] {
        assert!(
            error.contains(&format!("key {named}: ")),
            "{named}: {error}"
        );
    }
    assert!(error.contains("shorter than 2048 bits"), "{error}");
}

#[test]
fn unusable_keys_are_skipped_when_others_are_usable() {
    let issuer = JwtIssuer::new();
    issuer.write_jwks(&[
        json!({ "kty": "oct", "kid": "hmac", "k": "c2VjcmV0" }),
        json!({ "kty": "RSA", "kid": "broken", "n": 1, "e": "AQAB" }),
        issuer.ec.jwk.clone(),
    ]);
    let verifier = verifier_for(&issuer).expect("the EC key is usable");
    let claims = issuer.claims("svc", "operator");
    assert!(verifier.verify(&issuer.token_es256(claims.clone())).is_ok());
    // The only usable key: a token without kid would be checked against it, but the RSA kid is
    // unknown.
    assert_eq!(
        verifier.verify(&issuer.token(claims)),
        Err(JwtRejection::UnknownKey)
    );
    // An HMAC key in the set is never used: an HS256 token signed with it is still refused.
    let hs = hs256_token("hmac", b"secret", &issuer.claims("svc", ""));
    assert_eq!(
        verifier.verify(&hs),
        Err(JwtRejection::UnsupportedAlgorithm)
    );
}

#[test]
fn keys_without_use_or_alg_are_usable() {
    let issuer = JwtIssuer::new();
    let mut rsa = issuer.rsa.jwk.clone();
    let mut ec = issuer.ec.jwk.clone();
    for jwk in [&mut rsa, &mut ec] {
        let jwk = jwk.as_object_mut().unwrap();
        jwk.remove("use");
        jwk.remove("alg");
    }
    ec["key_ops"] = json!(["verify"]);
    issuer.write_jwks(&[rsa, ec]);
    let verifier = verifier_for(&issuer).unwrap();
    let claims = issuer.claims("svc", "");
    assert!(verifier.verify(&issuer.token(claims.clone())).is_ok());
    assert!(verifier.verify(&issuer.token_es256(claims)).is_ok());
}

#[test]
fn reload_picks_up_a_rotated_key_set_and_a_failed_reload_changes_nothing() {
    let mut issuer = JwtIssuer::new();
    let verifier = verifier_for(&issuer).unwrap();
    let old_token = issuer.token(issuer.claims("svc", ""));
    assert!(verifier.verify(&old_token).is_ok());

    issuer.rotate_rsa("rsa-2");
    let new_token = issuer.token(issuer.claims("svc", ""));
    assert_eq!(verifier.verify(&new_token), Err(JwtRejection::UnknownKey));
    let reloaded = verifier.reload().expect("the rotated set loads");
    assert!(reloaded.verify(&new_token).is_ok());
    assert_eq!(reloaded.verify(&old_token), Err(JwtRejection::UnknownKey));
    assert!(format!("{reloaded:?}").contains("rsa-2"));

    issuer.write_jwks_text("{ half a fi");
    let error = reloaded.reload().expect_err("a broken file");
    assert!(error.contains("not JSON"), "{error}");
    assert!(reloaded.verify(&new_token).is_ok());
}

#[test]
fn the_verifier_can_be_shared_between_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<JwtVerifier>();
}
