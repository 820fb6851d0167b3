//! The flags of `ackgate audit` and how they become an [`AuditConfig`].

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{AuditConfig, DEFAULT_IDLE_MS, DEFAULT_TIMEOUT_MS, StartAt};
use crate::settings::AuditKafkaProperties;

/// Flags of `ackgate audit`.
#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Exit status: 0 clean; 1 acknowledged keys missing, offset mismatches or \
                        duplicate keys found; 2 usage or connection error."
)]
pub struct AuditArgs {
    /// Kafka bootstrap servers, comma-separated.
    #[arg(long, env = "ACKGATE_KAFKA_BROKERS", default_value = "localhost:9092")]
    pub kafka_brokers: String,

    /// The topic to audit (every partition is read).
    #[arg(long, value_name = "NAME")]
    pub topic: String,

    /// Read every partition from its first record (the default).
    #[arg(long, conflicts_with = "since")]
    pub from_beginning: bool,

    /// Start each partition at its first record with a timestamp at or after this time
    /// (RFC 3339, e.g. 2026-11-23T14:00:00Z), found with Kafka's offsets-for-times lookup.
    /// Acknowledged answers for earlier offsets are counted as not checked.
    #[arg(long, value_name = "RFC3339", value_parser = parse_since)]
    pub since: Option<OffsetDateTime>,

    /// A file of the gateway's 201 answers, one JSON object per line, as the gateway returned
    /// them. Each acknowledged key must be in the topic at the partition and offset its answer
    /// names. Lines that are not persisted answers (202s, problem documents, other text) are
    /// ignored and counted; answers for other topics too.
    #[arg(long, value_name = "FILE")]
    pub acks: Option<PathBuf>,

    /// Print one JSON object with every figure and list instead of the summary.
    #[arg(long)]
    pub json: bool,

    /// Report keys that occur more than once without failing. Expected after the documented
    /// edge: a gateway died after Kafka wrote a record but before it recorded that, and a retry
    /// published the event again after the lease ran out.
    #[arg(long)]
    pub allow_duplicates: bool,

    // `--kafka-property` (`ACKGATE_KAFKA_PROPERTIES`) and `--kafka-properties-file`: extra
    // librdkafka consumer properties, refusing what `reader::create_consumer` sets itself.
    #[command(flatten)]
    pub kafka_properties: AuditKafkaProperties,

    /// How long nothing new may arrive, once every partition reported its end, before the
    /// audit stops reading. Raise it for brokers that are slow to serve the last records.
    #[arg(long, default_value_t = DEFAULT_IDLE_MS,
          value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub idle_ms: u64,

    /// How long Kafka may take to answer a metadata, watermark or offset request, and how long
    /// reading may make no progress at all, before the audit gives up (exit status 2).
    #[arg(long, default_value_t = DEFAULT_TIMEOUT_MS,
          value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub timeout_ms: u64,
}

impl From<&AuditArgs> for AuditConfig {
    fn from(args: &AuditArgs) -> Self {
        AuditConfig {
            brokers: args.kafka_brokers.clone(),
            topic: args.topic.clone(),
            start: match args.since {
                Some(since) => StartAt::Since(since),
                None => StartAt::Beginning,
            },
            acks: args.acks.clone(),
            kafka_properties: args.kafka_properties.0.clone(),
            idle: Duration::from_millis(args.idle_ms),
            timeout: Duration::from_millis(args.timeout_ms),
            allow_duplicates: args.allow_duplicates,
            progress: std::io::stderr().is_terminal(),
        }
    }
}

fn parse_since(value: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(value, &Rfc3339)
        .map_err(|_| format!("'{value}' is not an RFC 3339 timestamp (e.g. 2026-11-23T14:00:00Z)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse() {
        assert!(parse_since("2026-11-23T14:00:00Z").is_ok());
        assert!(parse_since("2026-11-23T14:00:00.5+01:00").is_ok());
        assert!(parse_since("yesterday").is_err());
        let audit = |flags: &[&str]| {
            use clap::Parser;
            #[derive(Debug, Parser)]
            struct Cli {
                #[command(flatten)]
                audit: AuditArgs,
            }
            let args = ["ackgate", "--topic=t"].iter().chain(flags);
            Cli::try_parse_from(args).map(|cli| AuditConfig::from(&cli.audit))
        };
        assert!(audit(&["--kafka-property=noequals"]).is_err());
        // What create_consumer sets after the extra properties, and so would silently win.
        for key in [
            "enable.auto.commit",
            "auto.offset.reset",
            "allow.auto.create.topics",
        ] {
            let error = audit(&[&format!("--kafka-property={key}=x")]).unwrap_err();
            assert!(
                error.to_string().contains("set by the audit itself"),
                "{error}"
            );
        }
        // The group id is only a name here; the producer's own properties do nothing on a consumer.
        let config = audit(&[
            "--kafka-property=group.id=team-audit",
            "--kafka-property=acks=1",
        ])
        .unwrap();
        assert_eq!(
            config.kafka_properties,
            vec![
                ("group.id".into(), "team-audit".into()),
                ("acks".into(), "1".into())
            ]
            .into()
        );
    }
}
