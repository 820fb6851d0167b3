//! The extra librdkafka properties: `--kafka-property` flags, the `ACKGATE_KAFKA_PROPERTIES`
//! variable and `--kafka-properties-file`, checked against the properties ackgate sets itself.
//!
//! They carry the cluster's credentials (`sasl.password`, `ssl.key.password`, …), so three
//! rules hold here: a value is never cut at a comma it contains, an error names the source, the
//! line or the key and never a value, and [`KafkaProperties`]' `Debug` hides every value whose
//! key looks sensitive.

use std::fmt;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches};
use rdkafka::error::KafkaError;

use super::properties_file::parse_properties_file;

/// Which of ackgate's Kafka clients a `--kafka-property` is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KafkaClient {
    /// The gateway's idempotent producer (`ackgate serve` and `ackgate dev`).
    Producer,
    /// The consumer of `ackgate audit`.
    AuditConsumer,
}

const PRODUCER: &[KafkaClient] = &[KafkaClient::Producer];
const AUDIT_CONSUMER: &[KafkaClient] = &[KafkaClient::AuditConsumer];
const BOTH: &[KafkaClient] = &[KafkaClient::Producer, KafkaClient::AuditConsumer];

/// The librdkafka properties ackgate sets itself, and on which client: `--kafka-property`
/// refuses them there. On the producer, overriding one would silently break the delivery
/// guarantee; on the audit's consumer, what the audit reads. A producer-only property (`acks`)
/// is not refused on the consumer, which ignores it.
const RESERVED_KAFKA_PROPERTIES: &[(&str, &[KafkaClient])] = &[
    ("bootstrap.servers", BOTH),
    ("metadata.broker.list", BOTH),
    ("allow.auto.create.topics", BOTH),
    ("enable.idempotence", PRODUCER),
    ("acks", PRODUCER),
    ("request.required.acks", PRODUCER),
    ("delivery.timeout.ms", PRODUCER),
    ("message.timeout.ms", PRODUCER),
    ("transactional.id", PRODUCER),
    // The producer's watchdog reads its statistics at this interval (publisher/watchdog.rs).
    ("statistics.interval.ms", PRODUCER),
    ("enable.auto.commit", AUDIT_CONSUMER),
    ("enable.auto.offset.store", AUDIT_CONSUMER),
    ("enable.partition.eof", AUDIT_CONSUMER),
    ("auto.offset.reset", AUDIT_CONSUMER),
];

/// Words in a property name that mark its value as a secret (`sasl.password`,
/// `sasl.oauthbearer.client.secret`, `ssl.key.pem`, …), compared case-insensitively.
const SENSITIVE_WORDS: &[&str] = &["password", "secret", "key", "token", "jaas", "credentials"];

/// What is shown instead of a secret.
const REDACTED: &str = "<redacted>";

/// The arguments' ids, as clap knows them.
const PROPERTY_ID: &str = "kafka_properties";
const FILE_ID: &str = "kafka_properties_file";
const ENV_VAR: &str = "ACKGATE_KAFKA_PROPERTIES";

/// Extra librdkafka properties, in the order they are applied. `Debug` prints the keys, with
/// `"<redacted>"` for the value of every key that looks sensitive ([`is_sensitive`]).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KafkaProperties(Vec<(String, String)>);

impl KafkaProperties {
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `error` with the values of sensitive properties taken out: librdkafka's configuration
    /// errors quote the value they refuse (`KafkaError::ClientConfig` displays it), and the
    /// error is printed at start-up.
    pub fn redact_error(&self, error: KafkaError) -> KafkaError {
        match error {
            KafkaError::ClientConfig(result, description, key, value) => {
                let value = if is_sensitive(&key) {
                    REDACTED.to_owned()
                } else {
                    value
                };
                KafkaError::ClientConfig(result, self.redact(&description), key, value)
            }
            KafkaError::ClientCreation(text) => KafkaError::ClientCreation(self.redact(&text)),
            other => other,
        }
    }

    /// `text` with every value of a sensitive property replaced by `<redacted>`.
    fn redact(&self, text: &str) -> String {
        self.iter()
            .filter(|(key, value)| is_sensitive(key) && !value.is_empty())
            .fold(text.to_owned(), |text, (_, value)| {
                text.replace(value, REDACTED)
            })
    }
}

impl From<Vec<(String, String)>> for KafkaProperties {
    fn from(properties: Vec<(String, String)>) -> Self {
        KafkaProperties(properties)
    }
}

impl fmt::Debug for KafkaProperties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|(key, value)| {
                let shown = if is_sensitive(key) { REDACTED } else { value };
                (key, shown)
            }))
            .finish()
    }
}

/// Whether the value of property `key` may be a secret.
pub fn is_sensitive(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SENSITIVE_WORDS.iter().any(|word| key.contains(word))
}

/// The producer's properties: `ackgate serve` and `ackgate dev` flatten this into their flags.
impl Args for KafkaProperties {
    fn augment_args(cmd: Command) -> Command {
        augment(cmd, KafkaClient::Producer)
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        augment(cmd, KafkaClient::Producer)
    }
}

impl FromArgMatches for KafkaProperties {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        from_matches(matches, KafkaClient::Producer)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = from_matches(matches, KafkaClient::Producer)?;
        Ok(())
    }
}

/// The audit consumer's properties: the same flags, refusing what the audit sets itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditKafkaProperties(pub KafkaProperties);

impl Args for AuditKafkaProperties {
    fn augment_args(cmd: Command) -> Command {
        augment(cmd, KafkaClient::AuditConsumer)
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        augment(cmd, KafkaClient::AuditConsumer)
    }
}

impl FromArgMatches for AuditKafkaProperties {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        from_matches(matches, KafkaClient::AuditConsumer).map(AuditKafkaProperties)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        self.0 = from_matches(matches, KafkaClient::AuditConsumer)?;
        Ok(())
    }
}

fn augment(cmd: Command, client: KafkaClient) -> Command {
    let which = match client {
        KafkaClient::Producer => "producer",
        KafkaClient::AuditConsumer => "consumer",
    };
    // No value delimiter: clap would cut `sasl.password=a,b` at its comma. The variable's value
    // arrives whole and `split_env_value` splits it.
    let property = Arg::new(PROPERTY_ID)
        .long("kafka-property")
        .env(ENV_VAR)
        .hide_env_values(true)
        .value_name("KEY=VALUE")
        .action(ArgAction::Append)
        .help(format!(
            "Extra librdkafka {which} property as KEY=VALUE (repeatable), e.g. for SASL/SSL: \
             `--kafka-property security.protocol=SASL_SSL`. In the environment, separate \
             several with commas: a piece that does not start with a property name and `=` \
             belongs to the value before it (`sasl.password=a,b` keeps its comma), and `\\,` is \
             a comma of the value. Any --kafka-property flag replaces the whole variable."
        ));
    let file = Arg::new(FILE_ID)
        .long("kafka-properties-file")
        .env("ACKGATE_KAFKA_PROPERTIES_FILE")
        .value_name("PATH")
        .value_parser(clap::value_parser!(PathBuf))
        .help(format!(
            "A Java-style .properties file of extra librdkafka {which} properties (a mounted \
             Kubernetes secret, say): `key=value` per line, `#` or `!` starts a comment line, \
             each value taken verbatim to the end of its line (no escapes) and trimmed. \
             Refused are the properties --kafka-property refuses; a --kafka-property of the \
             same name wins."
        ));
    cmd.arg(property).arg(file)
}

fn from_matches(matches: &ArgMatches, client: KafkaClient) -> Result<KafkaProperties, clap::Error> {
    let given: Vec<&String> = matches
        .get_many::<String>(PROPERTY_ID)
        .map(Iterator::collect)
        .unwrap_or_default();
    let explicit = match matches.value_source(PROPERTY_ID) {
        Some(ValueSource::EnvVariable) => Explicit::Env(given.first().map_or("", |v| v.as_str())),
        _ => Explicit::Flags(given.iter().map(|v| v.as_str()).collect()),
    };
    let file = matches.get_one::<PathBuf>(FILE_ID).map(PathBuf::as_path);
    collect(client, explicit, file)
        .map_err(|message| clap::Error::raw(clap::error::ErrorKind::ValueValidation, message))
}

/// The properties given one by one, and where from.
#[derive(Debug)]
pub(super) enum Explicit<'a> {
    /// `--kafka-property` flags, one property each, taken as given.
    Flags(Vec<&'a str>),
    /// The whole value of `ACKGATE_KAFKA_PROPERTIES`.
    Env(&'a str),
}

/// The file's properties, then the explicit ones; an explicit property replaces the file's of
/// the same name. Each error is one line naming the flag, variable or file line at fault.
pub(super) fn collect(
    client: KafkaClient,
    explicit: Explicit<'_>,
    file: Option<&Path>,
) -> Result<KafkaProperties, String> {
    let explicit = match explicit {
        Explicit::Flags(values) => values
            .into_iter()
            .enumerate()
            .map(|(i, value)| {
                check(client, value)
                    .map_err(|why| format!("--kafka-property (number {}): {why}", i + 1))
            })
            .collect::<Result<Vec<_>, _>>()?,
        Explicit::Env(raw) => split_env_value(raw)
            .iter()
            .enumerate()
            .map(|(i, entry)| {
                check(client, entry).map_err(|why| format!("{ENV_VAR} (entry {}): {why}", i + 1))
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    let mut properties = match file {
        Some(path) => read_file(client, path)?,
        None => Vec::new(),
    };
    properties.retain(|(key, _)| !explicit.iter().any(|(given, _)| given == key));
    properties.extend(explicit);
    Ok(KafkaProperties(properties))
}

fn read_file(client: KafkaClient, path: &Path) -> Result<Vec<(String, String)>, String> {
    let at = |line: usize| format!("--kafka-properties-file {} line {line}", path.display());
    let bytes = std::fs::read(path).map_err(|error| {
        format!(
            "--kafka-properties-file: cannot read {}: {error}",
            path.display()
        )
    })?;
    let text = String::from_utf8(bytes).map_err(|_| {
        format!(
            "--kafka-properties-file: {} is not UTF-8 text",
            path.display()
        )
    })?;
    let lines =
        parse_properties_file(&text).map_err(|(line, why)| format!("{}: {why}", at(line)))?;
    lines
        .into_iter()
        .map(|(line, key, value)| {
            refuse_reserved(client, &key).map_err(|why| format!("{}: {why}", at(line)))?;
            Ok((key, value))
        })
        .collect()
}

/// Splits `ACKGATE_KAFKA_PROPERTIES` into `KEY=VALUE` entries. It is cut at each comma, and a
/// piece that does not start with a property name (`[a-z0-9._-]+`, after optional blanks)
/// followed by `=` is joined back to the piece before it, comma and all: a password with commas
/// stays whole. `\,` is a comma that never separates; any other backslash is kept as it is.
pub(super) fn split_env_value(raw: &str) -> Vec<String> {
    let mut pieces = vec![String::new()];
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        let piece = pieces.last_mut().expect("never empty");
        match c {
            '\\' if chars.peek() == Some(&',') => {
                piece.push(',');
                chars.next();
            }
            ',' => pieces.push(String::new()),
            _ => piece.push(c),
        }
    }
    let mut entries: Vec<String> = Vec::new();
    for piece in pieces {
        match entries.last_mut() {
            Some(previous) if !starts_with_property_name(&piece) => {
                previous.push(',');
                previous.push_str(&piece);
            }
            _ => entries.push(piece),
        }
    }
    if entries.len() == 1 && entries[0].trim().is_empty() {
        entries.clear();
    }
    entries
}

fn starts_with_property_name(piece: &str) -> bool {
    let piece = piece.trim_start_matches([' ', '\t']);
    let name_len = piece
        .bytes()
        .take_while(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(b))
        .count();
    name_len > 0 && piece.as_bytes().get(name_len) == Some(&b'=')
}

/// One `KEY=VALUE` entry, its key trimmed; the error names the key at most, never the value.
fn check(client: KafkaClient, entry: &str) -> Result<(String, String), String> {
    let (key, value) = entry
        .split_once('=')
        .ok_or_else(|| "not KEY=VALUE".to_owned())?;
    let key = key.trim();
    if key.is_empty() {
        return Err("the key before `=` is empty".to_owned());
    }
    refuse_reserved(client, key)?;
    Ok((key.to_owned(), value.to_owned()))
}

fn refuse_reserved(client: KafkaClient, key: &str) -> Result<(), String> {
    let reserved = RESERVED_KAFKA_PROPERTIES
        .iter()
        .any(|(name, clients)| *name == key && clients.contains(&client));
    if !reserved {
        return Ok(());
    }
    Err(match client {
        KafkaClient::Producer => {
            format!("'{key}' is set by ackgate itself (use the matching ackgate setting, if any)")
        }
        KafkaClient::AuditConsumer => {
            format!("'{key}' is set by the audit itself (use --kafka-brokers for the servers)")
        }
    })
}

#[cfg(test)]
#[path = "kafka_tests.rs"]
mod tests;
