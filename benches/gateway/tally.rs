//! What the workers of one phase count: latencies and answers ([`Tally`]), and for the
//! timeline phases the answers of every second ([`Timeline`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Largest latency recorded, in microseconds.
const MAX_LATENCY_US: u64 = 120_000_000;

fn histogram(significant: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, significant).expect("valid histogram bounds")
}

fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).clamp(1, MAX_LATENCY_US)
}

/// How an answer is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Outcome {
    /// 201 (or a broker acknowledgement / a settled key in the raw phases).
    Ok,
    /// 201 with `Idempotent-Replayed: true`.
    Replayed,
    /// 503 `overloaded` with `Retry-After`.
    Shed,
    /// Anything else.
    Other,
}

pub(crate) struct Tally {
    pub(crate) ok: Histogram<u64>,
    pub(crate) replayed: Histogram<u64>,
    pub(crate) shed: Histogram<u64>,
    /// Answers by kind ("201", "201 replayed", "503 overloaded", "409", "error: …").
    pub(crate) answers: BTreeMap<String, u64>,
    /// Tickets skipped because the generator was behind (overload only).
    pub(crate) skipped: u64,
    pub(crate) reconnects: u64,
}

impl Tally {
    pub(crate) fn new() -> Self {
        Tally {
            ok: histogram(3),
            replayed: histogram(3),
            shed: histogram(3),
            answers: BTreeMap::new(),
            skipped: 0,
            reconnects: 0,
        }
    }

    pub(crate) fn record(&mut self, outcome: Outcome, answer: &str, latency: Duration) {
        self.record_n(outcome, answer, latency, 1);
    }

    /// `n` events answered alike after `latency` (the events of one batch request).
    pub(crate) fn record_n(&mut self, outcome: Outcome, answer: &str, latency: Duration, n: u64) {
        if n == 0 {
            return;
        }
        let us = micros(latency);
        match outcome {
            Outcome::Ok => self.ok.saturating_record_n(us, n),
            Outcome::Replayed => self.replayed.saturating_record_n(us, n),
            Outcome::Shed => self.shed.saturating_record_n(us, n),
            Outcome::Other => {}
        }
        // Counted without allocating: the map has a handful of kinds.
        match self.answers.get_mut(answer) {
            Some(count) => *count += n,
            None => {
                self.answers.insert(answer.to_owned(), n);
            }
        }
    }

    pub(crate) fn successes(&self) -> u64 {
        self.ok.len() + self.replayed.len()
    }

    pub(crate) fn failures(&self) -> u64 {
        let total: u64 = self.answers.values().sum();
        total - self.successes() - self.shed.len()
    }
}

/// One second of the overload timeline.
pub(crate) struct SecondBucket {
    pub(crate) ok: u64,
    pub(crate) shed: u64,
    pub(crate) other: u64,
    pub(crate) skipped: u64,
    pub(crate) ok_latency: Histogram<u64>,
}

/// Answers per second since `origin`, across the segments of the overload phase.
pub(crate) struct Timeline {
    pub(crate) origin: Instant,
    pub(crate) seconds: Vec<SecondBucket>,
}

impl Timeline {
    pub(crate) fn bucket(&mut self, at: Instant) -> &mut SecondBucket {
        let index = at.saturating_duration_since(self.origin).as_secs() as usize;
        while self.seconds.len() <= index {
            self.seconds.push(SecondBucket {
                ok: 0,
                shed: 0,
                other: 0,
                skipped: 0,
                ok_latency: histogram(2),
            });
        }
        &mut self.seconds[index]
    }

    pub(crate) fn record(&mut self, at: Instant, outcome: Outcome, latency: Duration) {
        let bucket = self.bucket(at);
        match outcome {
            Outcome::Ok | Outcome::Replayed => {
                bucket.ok += 1;
                bucket.ok_latency.saturating_record(micros(latency));
            }
            Outcome::Shed => bucket.shed += 1,
            Outcome::Other => bucket.other += 1,
        }
    }
}

/// Locks what the workers of a phase share (a [`Tally`], a [`Timeline`]); counts left by a
/// worker that panicked holding it are still counts.
pub(crate) fn lock<T>(shared: &Mutex<T>) -> MutexGuard<'_, T> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn take_tally(tally: Arc<Mutex<Tally>>) -> Tally {
    match Arc::try_unwrap(tally) {
        Ok(mutex) => mutex.into_inner().unwrap_or_else(|e| e.into_inner()),
        Err(shared) => std::mem::replace(&mut *lock(&shared), Tally::new()),
    }
}
