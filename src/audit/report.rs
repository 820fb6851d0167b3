//! What the audit found ([`AuditReport`]) and the summary `ackgate audit` prints of it.

use serde::Serialize;

use super::{AuditVerdict, Position};

/// Problem items the human-readable summary prints (`--json` lists them all).
const SUMMARY_ITEMS: usize = 20;

/// Why reading a partition stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The broker reported the partition's end and the topic stayed quiet for `--idle-ms`.
    EndOfPartition,
    /// A record written after the audit started was reached past the starting watermark.
    Watermark,
}

/// What was read from one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionReport {
    pub partition: i32,
    /// The offset reading started at.
    pub start_offset: i64,
    /// One past the last offset audited.
    pub end_offset: i64,
    /// The high watermark Kafka reported when the audit started.
    pub high_watermark_at_start: i64,
    /// Records audited.
    pub records: u64,
    pub stopped_at: StopReason,
}

/// An idempotency key found on more than one record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DuplicateKey {
    pub idempotency_key: String,
    /// Every record with the key, in (partition, offset) order.
    pub records: Vec<Position>,
}

/// An acknowledged key with no record in the audited range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MissingKey {
    pub idempotency_key: String,
    /// Where the answer said the record is.
    pub acknowledged: Position,
}

/// What an acknowledged position holds when it is not the acknowledged key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum FoundThere {
    /// No record at that position was read (there is none, or the partition does not exist).
    NoRecord,
    /// A record without the `idempotency-key` header.
    WithoutHeader,
    /// A record with another key.
    OtherKey { idempotency_key: String },
}

/// An acknowledged key that is in the topic, but not where its answer said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OffsetMismatch {
    pub idempotency_key: String,
    pub acknowledged: Position,
    pub found_there: FoundThere,
    /// Where the key's records are.
    pub key_found_at: Vec<Position>,
}

/// The check of the saved answers (`--acks`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AcksReport {
    pub file: String,
    /// Non-empty lines in the file.
    pub lines: u64,
    /// Persisted answers for the audited topic (repeated identical answers count once).
    pub persisted_answers: u64,
    /// Lines that are not persisted answers.
    pub ignored_lines: u64,
    /// Persisted answers for other topics (ignored).
    pub other_topics: u64,
    /// Answers whose position is outside what was audited (before `--since`, deleted by
    /// retention, or written after the audit started): not checked.
    pub not_checked: u64,
    /// Answers checked against the topic.
    pub checked: u64,
    pub missing: Vec<MissingKey>,
    pub offset_mismatches: Vec<OffsetMismatch>,
}

/// Counts of what makes the verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Problems {
    pub missing: u64,
    pub offset_mismatches: u64,
    pub duplicate_keys: u64,
}

/// Everything the audit found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditReport {
    pub topic: String,
    /// `beginning`, or the `--since` time (RFC 3339).
    pub start: String,
    /// No acknowledged key missing, no offset mismatch, and no duplicate key (unless
    /// `allow_duplicates`).
    pub clean: bool,
    pub allow_duplicates: bool,
    pub problems: Problems,
    pub records_read: u64,
    /// Distinct `idempotency-key` values.
    pub distinct_keys: u64,
    /// Records beyond the first of each key.
    pub duplicate_records: u64,
    pub duplicate_keys: Vec<DuplicateKey>,
    pub records_without_header: u64,
    /// The first [`MAX_LISTED_WITHOUT_HEADER`](super::MAX_LISTED_WITHOUT_HEADER) of them.
    pub records_without_header_positions: Vec<Position>,
    pub partitions: Vec<PartitionReport>,
    pub acks: Option<AcksReport>,
}

impl AuditReport {
    pub fn verdict(&self) -> AuditVerdict {
        if self.clean {
            AuditVerdict::Clean
        } else {
            AuditVerdict::ProblemsFound
        }
    }
}

/// The human-readable summary `ackgate audit` prints without `--json`.
pub fn render_summary(report: &AuditReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let start = if report.start == "beginning" {
        "from the beginning".to_owned()
    } else {
        format!("since {}", report.start)
    };
    let _ = writeln!(
        out,
        "Audit of topic {} ({} partitions, {start})",
        report.topic,
        report.partitions.len()
    );

    let _ = writeln!(out, "\nPartitions");
    for p in report.partitions.iter().take(SUMMARY_ITEMS) {
        let stop = match p.stopped_at {
            StopReason::EndOfPartition => "end of partition",
            StopReason::Watermark => "watermark at start",
        };
        let _ = writeln!(
            out,
            "  {:>4}  offsets {}..{}  {} records  (stopped at: {stop})",
            p.partition, p.start_offset, p.end_offset, p.records
        );
    }
    more(
        &mut out,
        report.partitions.len(),
        SUMMARY_ITEMS,
        "partitions",
    );

    let _ = writeln!(out, "\nRecords");
    let _ = writeln!(
        out,
        "  records read                 {}",
        report.records_read
    );
    let _ = writeln!(
        out,
        "  distinct idempotency keys    {}",
        report.distinct_keys
    );
    let _ = writeln!(
        out,
        "  keys seen more than once     {} ({} extra records){}",
        report.duplicate_keys.len(),
        report.duplicate_records,
        if report.allow_duplicates && !report.duplicate_keys.is_empty() {
            ", allowed by --allow-duplicates"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "  records without the header   {}",
        report.records_without_header
    );

    if let Some(acks) = &report.acks {
        let _ = writeln!(out, "\nAcknowledged answers ({})", acks.file);
        let _ = writeln!(out, "  lines                        {}", acks.lines);
        let _ = writeln!(
            out,
            "  persisted answers            {}",
            acks.persisted_answers
        );
        let _ = writeln!(out, "  ignored lines                {}", acks.ignored_lines);
        let _ = writeln!(out, "  answers for other topics     {}", acks.other_topics);
        let _ = writeln!(out, "  checked                      {}", acks.checked);
        let _ = writeln!(out, "  not checked (outside range)  {}", acks.not_checked);
        let _ = writeln!(out, "  missing from the topic       {}", acks.missing.len());
        let _ = writeln!(
            out,
            "  offset mismatches            {}",
            acks.offset_mismatches.len()
        );
    }

    let mut items: Vec<String> = Vec::new();
    if let Some(acks) = &report.acks {
        items.extend(acks.missing.iter().map(|m| {
            format!(
                "missing    {}: acknowledged at {}, not in the topic",
                m.idempotency_key, m.acknowledged
            )
        }));
        items.extend(acks.offset_mismatches.iter().map(|m| {
            let there = match &m.found_there {
                FoundThere::NoRecord => "no record there".to_owned(),
                FoundThere::WithoutHeader => "a record without the header there".to_owned(),
                FoundThere::OtherKey { idempotency_key } => {
                    format!("key {idempotency_key} there")
                }
            };
            format!(
                "mismatch   {}: acknowledged at {}, {there}; the key is at {}",
                m.idempotency_key,
                m.acknowledged,
                list(&m.key_found_at)
            )
        }));
    }
    items.extend(report.duplicate_keys.iter().map(|d| {
        format!(
            "duplicate  {}: {} records at {}",
            d.idempotency_key,
            d.records.len(),
            list(&d.records)
        )
    }));
    if !items.is_empty() {
        let _ = writeln!(out, "\nProblems");
        for item in items.iter().take(SUMMARY_ITEMS) {
            let _ = writeln!(out, "  {item}");
        }
        more(
            &mut out,
            items.len(),
            SUMMARY_ITEMS,
            "problems (see --json)",
        );
    }
    if report.records_without_header > 0 {
        let _ = writeln!(out, "\nRecords without the idempotency-key header");
        for position in report
            .records_without_header_positions
            .iter()
            .take(SUMMARY_ITEMS)
        {
            let _ = writeln!(out, "  {position}");
        }
        more(
            &mut out,
            report.records_without_header as usize,
            SUMMARY_ITEMS,
            "records",
        );
    }

    let _ = writeln!(out);
    if report.clean {
        let _ = writeln!(out, "Verdict: clean");
    } else {
        let mut reasons = Vec::new();
        let p = report.problems;
        if p.missing > 0 {
            reasons.push(format!("{} acknowledged keys missing", p.missing));
        }
        if p.offset_mismatches > 0 {
            reasons.push(format!("{} offset mismatches", p.offset_mismatches));
        }
        if p.duplicate_keys > 0 && !report.allow_duplicates {
            reasons.push(format!("{} duplicate keys", p.duplicate_keys));
        }
        let _ = writeln!(out, "Verdict: PROBLEMS FOUND ({})", reasons.join(", "));
    }
    out
}

fn list(positions: &[Position]) -> String {
    let shown: Vec<String> = positions
        .iter()
        .take(5)
        .map(|p| format!("{}/{}", p.partition, p.offset))
        .collect();
    let rest = positions.len().saturating_sub(shown.len());
    if rest > 0 {
        format!("{} and {rest} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

fn more(out: &mut String, total: usize, shown: usize, what: &str) {
    use std::fmt::Write as _;
    if total > shown {
        let _ = writeln!(out, "  … and {} more {what}", total - shown);
    }
}
