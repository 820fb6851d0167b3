use super::*;

fn split(raw: &str) -> Vec<String> {
    split_env_value(raw)
}

#[test]
fn the_environment_keeps_commas_inside_values() {
    // Several properties, as before.
    assert_eq!(
        split("security.protocol=SASL_SSL,sasl.mechanism=PLAIN"),
        ["security.protocol=SASL_SSL", "sasl.mechanism=PLAIN"]
    );
    // A password with commas, one with `=` inside, and blanks after a separating comma.
    assert_eq!(
        split("sasl.password=a,B,C=d,,e, client.id=x"),
        ["sasl.password=a,B,C=d,,e", " client.id=x"]
    );
    assert_eq!(
        split("sasl.password=Pa55=,=x,linger.ms=5"),
        ["sasl.password=Pa55=,=x", "linger.ms=5"]
    );
    // A piece that looks like a property starts one, unless its comma is escaped.
    assert_eq!(split("sasl.password=a,b=c"), ["sasl.password=a", "b=c"]);
    assert_eq!(split(r"sasl.password=a\,b=c"), ["sasl.password=a,b=c"]);
    // Other backslashes are the value's own.
    assert_eq!(split(r"sasl.password=a\b\\n"), [r"sasl.password=a\b\\n"]);
    // A trailing comma belongs to the last value; nothing at all is no property.
    assert_eq!(split("client.id=x,"), ["client.id=x,"]);
    assert!(split("").is_empty());
    assert!(split("  ").is_empty());
    // A first piece that is no property stays an entry of its own, for `check` to refuse.
    assert_eq!(split("nonsense,linger.ms=1"), ["nonsense", "linger.ms=1"]);
}

#[test]
fn errors_name_the_source_and_never_the_value() {
    let producer = |explicit| collect(KafkaClient::Producer, explicit, None);
    for (explicit, expected) in [
        (
            Explicit::Env("hunter2,linger.ms=1"),
            "ACKGATE_KAFKA_PROPERTIES (entry 1): not KEY=VALUE",
        ),
        (
            Explicit::Env("linger.ms=1,acks=1"),
            "ACKGATE_KAFKA_PROPERTIES (entry 2): 'acks' is set by ackgate itself",
        ),
        (
            Explicit::Flags(vec!["linger.ms=1", " =hunter2"]),
            "--kafka-property (number 2): the key before `=` is empty",
        ),
        (
            Explicit::Flags(vec!["enable.idempotence=false"]),
            "--kafka-property (number 1): 'enable.idempotence' is set by ackgate itself",
        ),
    ] {
        let error = producer(explicit).unwrap_err();
        assert!(error.starts_with(expected), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }
}

#[test]
fn flags_are_taken_one_property_each() {
    let properties = collect(
        KafkaClient::Producer,
        Explicit::Flags(vec!["sasl.password=a,b=c", r"client.id=x\,y"]),
        None,
    )
    .unwrap();
    assert_eq!(
        properties.iter().collect::<Vec<_>>(),
        [("sasl.password", "a,b=c"), ("client.id", r"x\,y")]
    );
}

fn temp_file(text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "ackgate-kafka-{}.properties",
        ulid::Ulid::new().to_string().to_lowercase()
    ));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_file_is_read_and_an_explicit_property_wins() {
    let path = temp_file("sasl.password=from,file\nlinger.ms=5\nclient.id=file\n");
    let properties = collect(
        KafkaClient::Producer,
        Explicit::Env("linger.ms=7,sasl.username=u"),
        Some(&path),
    )
    .unwrap();
    assert_eq!(
        properties.iter().collect::<Vec<_>>(),
        [
            ("sasl.password", "from,file"),
            ("client.id", "file"),
            ("linger.ms", "7"),
            ("sasl.username", "u"),
        ]
    );
    std::fs::remove_file(path).unwrap();
}

#[test]
fn the_file_refuses_what_the_flags_refuse_naming_its_line() {
    let path = temp_file("# managed\nlinger.ms=1\nacks=0\n");
    let producer = collect(KafkaClient::Producer, Explicit::Flags(vec![]), Some(&path));
    let error = producer.unwrap_err();
    assert_eq!(
        error,
        format!(
            "--kafka-properties-file {} line 3: 'acks' is set by ackgate itself (use the \
             matching ackgate setting, if any)",
            path.display()
        )
    );
    // The audit's consumer ignores `acks`, but refuses its own.
    let audit = collect(
        KafkaClient::AuditConsumer,
        Explicit::Flags(vec![]),
        Some(&path),
    );
    assert!(audit.is_ok());
    std::fs::write(&path, "enable.auto.commit=true\n").unwrap();
    let audit = collect(
        KafkaClient::AuditConsumer,
        Explicit::Flags(vec![]),
        Some(&path),
    );
    assert!(audit.unwrap_err().ends_with("line 1: 'enable.auto.commit' is set by the audit itself (use --kafka-brokers for the servers)"));
    std::fs::write(&path, "sasl.password=hunter2\nhunter3\n").unwrap();
    let error = collect(KafkaClient::Producer, Explicit::Flags(vec![]), Some(&path)).unwrap_err();
    assert!(
        error.ends_with("line 2: not key=value") && !error.contains("hunter"),
        "{error}"
    );
    std::fs::remove_file(&path).unwrap();

    let missing = collect(KafkaClient::Producer, Explicit::Flags(vec![]), Some(&path));
    let error = missing.unwrap_err();
    assert!(
        error.starts_with("--kafka-properties-file: cannot read "),
        "{error}"
    );
    assert_eq!(error.lines().count(), 1);
}

#[test]
fn debug_hides_the_values_of_sensitive_keys() {
    let properties = KafkaProperties::from(vec![
        ("security.protocol".to_owned(), "SASL_SSL".to_owned()),
        ("sasl.password".to_owned(), "hunter2".to_owned()),
        ("SSL.Key.Password".to_owned(), "hunter3".to_owned()),
        (
            "sasl.oauthbearer.client.secret".to_owned(),
            "hunter4".to_owned(),
        ),
        ("ssl.key.pem".to_owned(), "hunter5".to_owned()),
        (
            "sasl.oauthbearer.token.endpoint.url".to_owned(),
            "hunter6".to_owned(),
        ),
        ("sasl.jaas.config".to_owned(), "hunter7".to_owned()),
        ("x.credentials".to_owned(), "hunter8".to_owned()),
    ]);
    let shown = format!("{properties:?} {properties:#?}");
    assert!(!shown.contains("hunter"), "{shown}");
    assert!(
        shown.contains(r#""security.protocol": "SASL_SSL""#),
        "{shown}"
    );
    assert!(
        shown.contains(r#""sasl.password": "<redacted>""#),
        "{shown}"
    );
    assert!(!is_sensitive("linger.ms") && is_sensitive("sasl.PASSWORD"));
}

#[test]
fn configuration_errors_lose_the_secrets_they_quote() {
    use rdkafka::types::RDKafkaConfRes;
    let properties = KafkaProperties::from(vec![
        ("sasl.password".to_owned(), "hunter2".to_owned()),
        ("linger.ms".to_owned(), "abc".to_owned()),
    ]);
    let refused = |key: &str, value: &str| {
        let error = KafkaError::ClientConfig(
            RDKafkaConfRes::RD_KAFKA_CONF_INVALID,
            format!("Invalid value \"{value}\" for configuration property \"{key}\""),
            key.to_owned(),
            value.to_owned(),
        );
        properties.redact_error(error).to_string()
    };
    let shown = refused("sasl.password", "hunter2");
    assert!(
        !shown.contains("hunter2") && shown.contains("sasl.password"),
        "{shown}"
    );
    // Values that are no secret stay: they say what to fix.
    assert!(refused("linger.ms", "abc").contains("abc"));
    let creation = KafkaError::ClientCreation("cannot use hunter2".to_owned());
    let shown = properties.redact_error(creation).to_string();
    assert!(!shown.contains("hunter2"), "{shown}");
}
