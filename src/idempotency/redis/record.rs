//! The layout of a record: one Redis string per key, a few dozen bytes.
//!
//! ```text
//!  0       tag: I in flight, D done, F failed, R released; lower case once the event may be
//!          in Kafka twice (a takeover, an operator's retry of a failure)
//!  1..17   fingerprint: the first 16 bytes of SHA-256 of the event's fingerprint
//!  17..25  owner: the first 8 bytes of SHA-256 of the claim's owner id
//!  then, in flight:          25..33 lease until (ms, u64)   33..41 suspected since (ms, 0 = not)
//!                            41..45 attempt (u32)           45 accepted ('1' or '0')
//!  done:                     25..29 partition (i32)         29..37 offset (i64)
//!                            37..   timestamp (ms; 6 bytes, or 8 outside 0..2^48)
//!  failed, released:         25..29 attempt (u32)           29..31 status (u16)   31.. body
//! ```
//!
//! Integers are big-endian. A settled `done` record is 43 bytes, which Redis keeps in one
//! allocation with its object header (strings of up to 44 bytes): with a 64-byte key, under 250
//! bytes of Redis memory per record in all. A hash would cost several times that, and its
//! scripts several more commands.

use sha2::{Digest, Sha256};

use crate::idempotency::{Delivered, KeyStatus, Position, StoreError, StoredAnswer, StoredProblem};

const HEAD: usize = 25;

/// The 16 bytes a record keeps of an event's fingerprint.
pub(super) fn fingerprint(fingerprint: &str) -> [u8; 16] {
    truncated(fingerprint)
}

/// The 8 bytes a record keeps of its owner's id. Two claims of one key collide with odds of
/// 2^-64, and only a takeover or a reclaim ever puts a second owner on a key.
pub(super) fn owner(owner: &str) -> [u8; 8] {
    truncated(owner)
}

fn truncated<const N: usize>(text: &str) -> [u8; N] {
    let digest = Sha256::digest(text.as_bytes());
    let mut bytes = [0; N];
    bytes.copy_from_slice(&digest[..N]);
    bytes
}

/// The settled state's tag and the bytes that follow the record's head, as SETTLE takes them.
pub(super) fn settled(answer: &StoredAnswer) -> (&'static str, Vec<u8>) {
    match answer {
        StoredAnswer::Done(delivered) => {
            let mut rest = Vec::with_capacity(20);
            rest.extend_from_slice(&delivered.position.partition.to_be_bytes());
            rest.extend_from_slice(&delivered.position.offset.to_be_bytes());
            let timestamp = delivered.timestamp_ms.to_be_bytes();
            if (0..1 << 48).contains(&delivered.timestamp_ms) {
                rest.extend_from_slice(&timestamp[2..]);
            } else {
                rest.extend_from_slice(&timestamp);
            }
            ("D", rest)
        }
        StoredAnswer::Failed(problem) => ("F", problem_rest(problem)),
        StoredAnswer::Released(problem) => ("R", problem_rest(problem)),
    }
}

fn problem_rest(problem: &StoredProblem) -> Vec<u8> {
    let mut rest = Vec::with_capacity(2 + problem.body.len());
    rest.extend_from_slice(&problem.status.to_be_bytes());
    rest.extend_from_slice(problem.body.as_bytes());
    rest
}

/// What a record says.
pub(super) fn decode(record: &[u8]) -> Result<KeyStatus, StoreError> {
    let bad = |why: &str| StoreError::Protocol(format!("idempotency record: {why}"));
    let (&tag, _) = record.split_first().ok_or_else(|| bad("empty"))?;
    let rest = record.get(HEAD..).ok_or_else(|| bad("too short"))?;
    match tag.to_ascii_uppercase() {
        b'I' => Ok(KeyStatus::InFlight),
        b'D' => {
            let (partition, rest) = split::<4>(rest).ok_or_else(|| bad("no partition"))?;
            let (offset, rest) = split::<8>(rest).ok_or_else(|| bad("no offset"))?;
            let timestamp_ms = match rest.len() {
                6 => {
                    let mut wide = [0; 8];
                    wide[2..].copy_from_slice(rest);
                    i64::from_be_bytes(wide)
                }
                8 => i64::from_be_bytes(rest.try_into().expect("8 bytes")),
                _ => return Err(bad("bad timestamp")),
            };
            Ok(KeyStatus::Settled(StoredAnswer::Done(Delivered {
                position: Position {
                    partition: i32::from_be_bytes(partition),
                    offset: i64::from_be_bytes(offset),
                },
                timestamp_ms,
            })))
        }
        state @ (b'F' | b'R') => {
            let (_attempt, rest) = split::<4>(rest).ok_or_else(|| bad("no attempt"))?;
            let (status, body) = split::<2>(rest).ok_or_else(|| bad("no status"))?;
            let problem = StoredProblem {
                status: u16::from_be_bytes(status),
                body: String::from_utf8(body.to_vec()).map_err(|_| bad("body not UTF-8"))?,
            };
            Ok(KeyStatus::Settled(if state == b'F' {
                StoredAnswer::Failed(problem)
            } else {
                StoredAnswer::Released(problem)
            }))
        }
        _ => Err(bad("unknown state")),
    }
}

fn split<const N: usize>(bytes: &[u8]) -> Option<([u8; N], &[u8])> {
    let (head, rest) = bytes.split_first_chunk::<N>()?;
    Some((*head, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A settled record as SETTLE writes it after a fresh claim.
    fn written(answer: &StoredAnswer) -> Vec<u8> {
        let (tag, rest) = settled(answer);
        let mut record = tag.as_bytes().to_vec();
        record.extend_from_slice(&fingerprint("fp"));
        record.extend_from_slice(&owner("owner"));
        if tag != "D" {
            record.extend_from_slice(&1_u32.to_be_bytes());
        }
        record.extend_from_slice(&rest);
        record
    }

    #[test]
    fn a_done_record_fits_in_one_small_redis_allocation() {
        let answer = StoredAnswer::Done(Delivered {
            position: Position {
                partition: 2,
                offset: 1234,
            },
            timestamp_ms: 1_796_000_000_000,
        });
        let record = written(&answer);
        assert_eq!(record.len(), 43, "Redis embeds strings of up to 44 bytes");
        assert_eq!(decode(&record).unwrap(), KeyStatus::Settled(answer));
    }

    #[test]
    fn extreme_values_round_trip() {
        for (partition, offset, timestamp_ms) in [
            (i32::MAX, i64::MAX, i64::MAX),
            (0, 0, 0),
            (-1, -1, -1),
            (7, 1 << 40, (1 << 48) - 1),
            (7, 1 << 40, 1 << 48),
        ] {
            let answer = StoredAnswer::Done(Delivered {
                position: Position { partition, offset },
                timestamp_ms,
            });
            assert_eq!(
                decode(&written(&answer)).unwrap(),
                KeyStatus::Settled(answer)
            );
        }
        for body in ["", "{\"a\":\"ü 中文\"}", "nul \0 and ]] quotes"] {
            let problem = StoredProblem {
                status: 503,
                body: body.to_owned(),
            };
            for answer in [
                StoredAnswer::Failed(problem.clone()),
                StoredAnswer::Released(problem.clone()),
            ] {
                assert_eq!(
                    decode(&written(&answer)).unwrap(),
                    KeyStatus::Settled(answer)
                );
            }
        }
    }

    #[test]
    fn a_marked_record_reads_the_same() {
        let answer = StoredAnswer::Failed(StoredProblem {
            status: 504,
            body: "{}".to_owned(),
        });
        let mut record = written(&answer);
        record[0] = b'f';
        assert_eq!(decode(&record).unwrap(), KeyStatus::Settled(answer));
    }

    #[test]
    fn damaged_records_are_protocol_errors_not_panics() {
        for record in [
            &b""[..],
            b"D",
            b"Dshort",
            b"X0123456789012345678901234567890",
        ] {
            assert!(decode(record).is_err(), "{record:?}");
        }
        let mut truncated = written(&StoredAnswer::Done(Delivered {
            position: Position {
                partition: 1,
                offset: 1,
            },
            timestamp_ms: 1,
        }));
        truncated.pop();
        assert!(decode(&truncated).is_err());
    }
}
