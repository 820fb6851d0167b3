use std::io::Write;

use sha2::{Digest, Sha256};

use super::*;

/// An auth file in the temporary directory, removed on drop.
struct AuthFile(std::path::PathBuf);

impl Drop for AuthFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl AuthFile {
    fn new(text: &str) -> AuthFile {
        let path = std::env::temp_dir().join(format!("ackgate-auth-{}.toml", ulid::Ulid::new()));
        let file = AuthFile(path);
        file.write(text);
        file
    }

    fn write(&self, text: &str) {
        let mut file = std::fs::File::create(&self.0).unwrap();
        file.write_all(text.as_bytes()).unwrap();
    }

    fn args(&self) -> AuthArgs {
        AuthArgs {
            auth_file: Some(self.0.clone()),
            ..AuthArgs::default()
        }
    }
}

fn client(name: &str, secret: &str, extra: &str) -> String {
    format!(
        "[[clients]]\nname = \"{name}\"\nkey_sha256 = \"{}\"\n{extra}\n",
        hex::encode(Sha256::digest(secret.as_bytes()))
    )
}

fn bearer(token: &str) -> Credentials<'static> {
    Credentials {
        authorization: Some(Box::leak(format!("Bearer {token}").into_boxed_str()).as_bytes()),
        certificate: None,
    }
}

#[test]
fn open_gateways_call_everyone_anonymous() {
    let access = Access::new(&AuthArgs::default(), 100).unwrap();
    assert!(access.is_open());
    assert!(access.warning().is_some());
    let principal = access.authenticate(Credentials::default()).unwrap();
    assert_eq!(principal.name(), ANONYMOUS);
    assert!(principal.is_operator());
    assert!(principal.may_produce("orders"));
    assert!(!principal.may_produce("__consumer_offsets"));
    assert!(!principal.may_produce("orders.dlt"));
}

#[test]
fn api_keys_and_certificates_name_their_client() {
    let file = AuthFile::new(&format!(
        "{}{}",
        client("orders", "k-orders", "produce = [\"orders.*\"]\nrate = 10"),
        client(
            "ops",
            "k-ops",
            "operator = true\ncert_names = [\"ops.internal\"]"
        ),
    ));
    let access = Access::new(&file.args(), 100).unwrap();
    assert!(!access.is_open());
    assert!(access.warning().is_none());
    let orders = access.authenticate(bearer("k-orders")).unwrap();
    assert_eq!((orders.name(), orders.label()), ("orders", "orders"));
    assert!(orders.may_produce("orders.eu") && !orders.may_produce("payments"));
    assert!(!orders.is_operator());
    assert_eq!(orders.rate().unwrap().per_second(), 10);
    let scheme = Credentials {
        authorization: Some(b"bearer k-ops"),
        certificate: None,
    };
    assert!(access.authenticate(scheme).unwrap().is_operator());

    let names = ["ops.internal".to_owned()];
    let by_cert = Credentials {
        authorization: None,
        certificate: Some(&names),
    };
    assert_eq!(access.authenticate(by_cert).unwrap().name(), "ops");

    let refusals = [
        (Credentials::default(), Unauthenticated::Missing),
        (bearer("k-other"), Unauthenticated::UnknownKey),
        (bearer("a.b.c"), Unauthenticated::UnknownKey),
        (
            Credentials {
                authorization: Some(b"Basic b3BzOms="),
                certificate: None,
            },
            Unauthenticated::BadScheme,
        ),
        (
            Credentials {
                authorization: Some(b"Bearer "),
                certificate: None,
            },
            Unauthenticated::BadScheme,
        ),
        (
            Credentials {
                authorization: None,
                certificate: Some(&["x".to_owned()]),
            },
            Unauthenticated::UnknownCertificate,
        ),
    ];
    for (credentials, expected) in refusals {
        assert_eq!(access.authenticate(credentials).unwrap_err(), expected);
    }
}

#[test]
fn reload_swaps_clients_and_keeps_unchanged_rates() {
    let file = AuthFile::new(&client("a", "k-a", "rate = 5"));
    let access = Access::new(&file.args(), 100).unwrap();
    let before = access.authenticate(bearer("k-a")).unwrap();
    before
        .rate()
        .unwrap()
        .take(NonZeroU32::new(5).unwrap())
        .unwrap();

    file.write(&format!(
        "{}{}",
        client("a", "k-a", "rate = 5"),
        client("b", "k-b", "")
    ));
    access.reload().unwrap();
    let after = access.authenticate(bearer("k-a")).unwrap();
    assert!(
        after.rate().unwrap().take(NonZeroU32::MIN).is_err(),
        "the reloaded client kept its spent quota"
    );
    assert_eq!(access.authenticate(bearer("k-b")).unwrap().name(), "b");

    file.write("[[clients]]\nname = 'broken'\n");
    let error = access.reload().unwrap_err();
    assert!(
        error.contains("neither key_sha256 nor cert_names"),
        "{error}"
    );
    assert_eq!(access.authenticate(bearer("k-b")).unwrap().name(), "b");

    file.write(&client("b", "k-b", ""));
    access.reload().unwrap();
    assert_eq!(
        access.authenticate(bearer("k-a")).unwrap_err(),
        Unauthenticated::UnknownKey
    );
    // A request in progress keeps the principal it was given.
    assert_eq!(before.name(), "a");
}

#[test]
fn serve_refuses_to_start_open_unless_told() {
    let mut args = AuthArgs::default();
    let error = args.refuse_open().unwrap_err();
    assert!(
        error.contains("--auth-file") && error.contains("--no-auth"),
        "{error}"
    );
    args.no_auth = true;
    args.refuse_open().unwrap();
    args.auth_file = Some("x.toml".into());
    assert!(args.refuse_open().unwrap_err().contains("contradicts"));
    args.no_auth = false;
    args.refuse_open().unwrap();
}

#[test]
fn in_flight_share_defaults_to_half_and_stays_below_the_cap() {
    let access = Access::new(&AuthArgs::default(), 2048).unwrap();
    assert_eq!(access.shares().per_client(), 1024);
    let args = AuthArgs {
        max_in_flight_per_client: Some(3000),
        ..AuthArgs::default()
    };
    let error = Access::new(&args, 2048).err().unwrap();
    assert!(error.contains("--max-in-flight-per-client"), "{error}");
}
