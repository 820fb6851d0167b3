//! The saved answers (`--acks`), and the tally of every record read: keys seen more than once,
//! records without the header, and what each acknowledged position holds.

use std::collections::{HashMap, HashSet};

use anyhow::Context;
use serde::Deserialize;
use time::format_description::well_known::Rfc3339;

use super::report::{
    AcksReport, AuditReport, DuplicateKey, FoundThere, MissingKey, OffsetMismatch, PartitionReport,
    Problems, StopReason,
};
use super::{AuditConfig, MAX_LISTED_WITHOUT_HEADER, Position, StartAt};

// ---------------------------------------------------------------------------------------------
// The saved answers

pub(crate) struct Ack {
    key: String,
    position: Position,
}

pub(crate) struct Acks {
    file: String,
    lines: u64,
    ignored_lines: u64,
    other_topics: u64,
    pub(crate) entries: Vec<Ack>,
}

pub(crate) fn load_acks(path: &std::path::Path, topic: &str) -> anyhow::Result<Acks> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("could not read the acks file {}", path.display()))?;
    let mut acks = Acks {
        file: path.display().to_string(),
        lines: 0,
        ignored_lines: 0,
        other_topics: 0,
        entries: Vec::new(),
    };
    let mut seen = HashSet::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        acks.lines += 1;
        let Some(answer) = parse_ack_line(line) else {
            acks.ignored_lines += 1;
            continue;
        };
        if answer.topic != topic {
            acks.other_topics += 1;
            continue;
        }
        let position = Position {
            partition: answer.partition,
            offset: answer.offset,
        };
        // A replayed answer is the first answer again: check it once.
        if seen.insert((answer.idempotency_key.clone(), position)) {
            acks.entries.push(Ack {
                key: answer.idempotency_key,
                position,
            });
        }
    }
    Ok(acks)
}

/// The fields of a persisted answer (`contract::Persisted`) the audit needs; others are
/// ignored, so answers saved by older or newer gateways parse alike.
#[derive(Debug, PartialEq, Eq, Deserialize)]
struct SavedAnswer {
    status: String,
    topic: String,
    partition: i32,
    offset: i64,
    idempotency_key: String,
}

/// A persisted answer: the 201 body, or the status resource's `answer` when it is one.
fn parse_ack_line(line: &str) -> Option<SavedAnswer> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let body = match value.get("answer") {
        Some(answer) if value.get("state").is_some() => answer.clone(),
        _ => value,
    };
    let answer: SavedAnswer = serde_json::from_value(body).ok()?;
    (answer.status == "persisted").then_some(answer)
}

// ---------------------------------------------------------------------------------------------
// Grouping records

/// What a record at an acknowledged position carries.
enum Observed {
    Key(String),
    WithoutHeader,
}

pub(crate) struct Tally {
    pub(crate) records: u64,
    /// Each key's first record.
    first: HashMap<Box<str>, Position>,
    /// Every record of the keys seen more than once.
    repeated: HashMap<Box<str>, Vec<Position>>,
    without_header: u64,
    without_header_positions: Vec<Position>,
    /// The acknowledged positions, and what was read there.
    watched: HashMap<Position, Option<Observed>>,
}

impl Tally {
    pub(crate) fn new(acks: &[Ack]) -> Self {
        Tally {
            records: 0,
            first: HashMap::new(),
            repeated: HashMap::new(),
            without_header: 0,
            without_header_positions: Vec::new(),
            watched: acks.iter().map(|a| (a.position, None)).collect(),
        }
    }

    pub(crate) fn observe(&mut self, position: Position, key: Option<&str>) {
        self.records += 1;
        if let Some(slot) = self.watched.get_mut(&position) {
            *slot = Some(match key {
                Some(key) => Observed::Key(key.to_owned()),
                None => Observed::WithoutHeader,
            });
        }
        let Some(key) = key else {
            self.without_header += 1;
            if self.without_header_positions.len() < MAX_LISTED_WITHOUT_HEADER {
                self.without_header_positions.push(position);
            }
            return;
        };
        match self.first.get(key) {
            None => {
                self.first.insert(key.into(), position);
            }
            Some(first) => self
                .repeated
                .entry(key.into())
                .or_insert_with(|| vec![*first])
                .push(position),
        }
    }

    /// Where a key's records are.
    fn positions(&self, key: &str) -> Vec<Position> {
        match (self.repeated.get(key), self.first.get(key)) {
            (Some(all), _) => all.clone(),
            (None, Some(first)) => vec![*first],
            (None, None) => Vec::new(),
        }
    }

    pub(crate) fn into_report(
        self,
        config: &AuditConfig,
        partitions: Vec<PartitionReport>,
        acks: Option<Acks>,
    ) -> AuditReport {
        let acks = acks.map(|acks| self.check_acks(acks, &partitions));
        let mut duplicate_keys: Vec<DuplicateKey> = self
            .repeated
            .iter()
            .map(|(key, positions)| {
                let mut records = positions.clone();
                records.sort();
                DuplicateKey {
                    idempotency_key: key.to_string(),
                    records,
                }
            })
            .collect();
        duplicate_keys.sort_by(|a, b| a.records.cmp(&b.records));
        let duplicate_records = duplicate_keys
            .iter()
            .map(|d| d.records.len() as u64 - 1)
            .sum();
        let problems = Problems {
            missing: acks.as_ref().map_or(0, |a| a.missing.len() as u64),
            offset_mismatches: acks
                .as_ref()
                .map_or(0, |a| a.offset_mismatches.len() as u64),
            duplicate_keys: duplicate_keys.len() as u64,
        };
        let clean = problems.missing == 0
            && problems.offset_mismatches == 0
            && (problems.duplicate_keys == 0 || config.allow_duplicates);
        AuditReport {
            topic: config.topic.clone(),
            start: match &config.start {
                StartAt::Beginning => "beginning".to_owned(),
                StartAt::Since(since) => {
                    since.format(&Rfc3339).unwrap_or_else(|_| since.to_string())
                }
            },
            clean,
            allow_duplicates: config.allow_duplicates,
            problems,
            records_read: self.records,
            distinct_keys: self.first.len() as u64,
            duplicate_records,
            duplicate_keys,
            records_without_header: self.without_header,
            records_without_header_positions: self.without_header_positions,
            partitions,
            acks,
        }
    }

    fn check_acks(&self, acks: Acks, partitions: &[PartitionReport]) -> AcksReport {
        let ranges: HashMap<i32, &PartitionReport> =
            partitions.iter().map(|p| (p.partition, p)).collect();
        let mut report = AcksReport {
            file: acks.file,
            lines: acks.lines,
            persisted_answers: acks.entries.len() as u64,
            ignored_lines: acks.ignored_lines,
            other_topics: acks.other_topics,
            not_checked: 0,
            checked: 0,
            missing: Vec::new(),
            offset_mismatches: Vec::new(),
        };
        for ack in acks.entries {
            let in_range = match ranges.get(&ack.position.partition) {
                // An answer naming a partition the topic does not have is checked (and fails).
                None => true,
                Some(p) => {
                    ack.position.offset >= p.start_offset
                        && (p.stopped_at == StopReason::EndOfPartition
                            || ack.position.offset < p.end_offset)
                }
            };
            if !in_range {
                report.not_checked += 1;
                continue;
            }
            report.checked += 1;
            let found_there = match self.watched.get(&ack.position) {
                Some(Some(Observed::Key(key))) if *key == ack.key => continue,
                Some(Some(Observed::Key(key))) => FoundThere::OtherKey {
                    idempotency_key: key.clone(),
                },
                Some(Some(Observed::WithoutHeader)) => FoundThere::WithoutHeader,
                Some(None) | None => FoundThere::NoRecord,
            };
            let key_found_at = self.positions(&ack.key);
            if key_found_at.is_empty() {
                report.missing.push(MissingKey {
                    idempotency_key: ack.key,
                    acknowledged: ack.position,
                });
            } else {
                report.offset_mismatches.push(OffsetMismatch {
                    idempotency_key: ack.key,
                    acknowledged: ack.position,
                    found_there,
                    key_found_at,
                });
            }
        }
        report.missing.sort_by_key(|m| m.acknowledged);
        report.offset_mismatches.sort_by_key(|m| m.acknowledged);
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditVerdict, render_summary};

    fn at(partition: i32, offset: i64) -> Position {
        Position { partition, offset }
    }

    fn ack(key: &str, partition: i32, offset: i64) -> Ack {
        Ack {
            key: key.to_owned(),
            position: at(partition, offset),
        }
    }

    fn read_to_end(partition: i32, start: i64, end: i64) -> PartitionReport {
        PartitionReport {
            partition,
            start_offset: start,
            end_offset: end,
            high_watermark_at_start: end,
            records: (end - start) as u64,
            stopped_at: StopReason::EndOfPartition,
        }
    }

    #[test]
    fn answers_are_read_from_201_bodies_and_status_resources_only() {
        let body = r#"{"status":"persisted","topic":"t","partition":2,"offset":7,"timestamp":"2026-11-23T14:00:00.123Z","idempotency_key":"k-1"}"#;
        let parsed = parse_ack_line(body).unwrap();
        assert_eq!((parsed.partition, parsed.offset), (2, 7));
        let status = format!(
            r#"{{"state":"persisted","topic":"t","idempotency_key":"k-1","answer_status":201,"answer":{body}}}"#
        );
        assert_eq!(parse_ack_line(&status).unwrap(), parsed);
        assert!(
            parse_ack_line(r#"{"status":"accepted","topic":"t","idempotency_key":"k"}"#).is_none()
        );
        assert!(
            parse_ack_line(r#"{"type":"urn:ackgate:problem:overloaded","status":503}"#).is_none()
        );
        assert!(parse_ack_line("HTTP/1.1 201 Created").is_none());
    }

    #[test]
    fn acks_are_checked_against_what_was_read() {
        let acks = vec![
            ack("ok", 0, 0),
            ack("gone", 0, 5),
            ack("moved", 0, 1),
            ack("early", 1, 3),
        ];
        let mut tally = Tally::new(&acks);
        tally.observe(at(0, 0), Some("ok"));
        tally.observe(at(0, 1), Some("other"));
        tally.observe(at(0, 2), Some("moved"));
        tally.observe(at(0, 3), None);
        tally.observe(at(0, 4), Some("ok"));
        let mut config = AuditConfig::new("b", "t");
        let acks = Acks {
            file: "f".into(),
            lines: 6,
            ignored_lines: 1,
            other_topics: 1,
            entries: acks,
        };
        let partitions = vec![read_to_end(0, 0, 5), read_to_end(1, 10, 10)];
        config.allow_duplicates = true;
        let report = tally.into_report(&config, partitions, Some(acks));
        let acks = report.acks.as_ref().unwrap();
        assert_eq!(
            (acks.checked, acks.not_checked),
            (3, 1),
            "1/3 is before the range"
        );
        assert_eq!(acks.missing.len(), 1);
        assert_eq!(acks.missing[0].idempotency_key, "gone");
        assert_eq!(acks.offset_mismatches.len(), 1);
        let mismatch = &acks.offset_mismatches[0];
        assert_eq!(mismatch.idempotency_key, "moved");
        assert_eq!(
            mismatch.found_there,
            FoundThere::OtherKey {
                idempotency_key: "other".into()
            }
        );
        assert_eq!(mismatch.key_found_at, vec![at(0, 2)]);
        assert_eq!(report.records_read, 5);
        assert_eq!(report.distinct_keys, 3);
        assert_eq!(report.duplicate_records, 1);
        assert_eq!(report.duplicate_keys[0].records, vec![at(0, 0), at(0, 4)]);
        assert_eq!(report.records_without_header_positions, vec![at(0, 3)]);
        assert!(
            !report.clean,
            "missing and mismatch fail even with duplicates allowed"
        );
    }

    #[test]
    fn duplicates_fail_unless_allowed() {
        let mut tally = Tally::new(&[]);
        tally.observe(at(0, 0), Some("k"));
        tally.observe(at(1, 0), Some("k"));
        let mut config = AuditConfig::new("b", "t");
        let report = tally.into_report(&config, vec![], None);
        assert_eq!(report.verdict(), AuditVerdict::ProblemsFound);
        config.allow_duplicates = true;
        let mut tally = Tally::new(&[]);
        tally.observe(at(0, 0), Some("k"));
        tally.observe(at(1, 0), Some("k"));
        let report = tally.into_report(&config, vec![], None);
        assert_eq!(report.verdict(), AuditVerdict::Clean);
        assert_eq!(report.problems.duplicate_keys, 1);
        assert!(render_summary(&report).contains("allowed by --allow-duplicates"));
    }
}
