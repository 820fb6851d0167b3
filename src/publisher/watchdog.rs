//! Tells a producer that cannot make progress from one that is waiting for the cluster.
//!
//! A broker that restarts without the producer states it held answers the producer's next
//! produce with UNKNOWN_PRODUCER_ID. librdkafka (2.x) then bumps its epoch *locally* and sends
//! again from sequence 0; a broker that does not know the producer id at all refuses that too,
//! and the loop goes on for as long as one cares to watch: every message ends MessageTimedOut and
//! no fatal error is raised, so nothing would ever heal it. A producer built anew gets a producer
//! id from the broker and delivers at once.
//!
//! The watchdog is fed once a tick with what the publisher observed (delivery outcomes counted
//! by the producer's callbacks, and librdkafka's statistics) and says when the producer is
//! wedged, and why. (A broker that kept its storage but not every producer epoch can refuse
//! each produce at once instead, with an unknown error; that is a wedge too.) It is pure — no clock, no I/O — so every rule is tested here; the publisher
//! confirms with a metadata request that the cluster answers before it rebuilds.
//!
//! It never calls a producer wedged while no broker is up (a cluster that is down is waited
//! for, not rebuilt against), and it spaces rebuilds out, further each time one did not help.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use serde::Deserialize;

/// Producer id or epoch changes within one delivery timeout, with no acknowledgement, that make
/// a producer churning. A lost producer state costs one change (an epoch bump, or a new id),
/// message timeouts cost one each time they happen: the next acknowledgement ends both.
const CHURN_LIMIT: usize = 3;
/// The longest quiet period between two rebuilds for a wedge.
const MAX_QUIET: Duration = Duration::from_secs(300);

/// The few fields of librdkafka's statistics (`statistics.interval.ms`) the watchdog reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Snapshot {
    /// Brokers the producer holds a usable connection to (state `UP`).
    pub(super) brokers_up: usize,
    /// The producer id and epoch in use; `None` while the producer has no id.
    pub(super) producer: Option<(i64, i16)>,
    /// librdkafka's idempotence state (`Assigned`, `DrainBump`, `WaitPID`, …), for the log.
    pub(super) idemp_state: String,
}

impl Snapshot {
    /// Reads a snapshot from librdkafka's statistics JSON (everything else in it is skipped).
    pub(super) fn parse(json: &[u8]) -> Result<Snapshot, serde_json::Error> {
        #[derive(Deserialize)]
        struct Stats {
            #[serde(default)]
            brokers: std::collections::HashMap<String, Broker>,
            eos: Option<Eos>,
        }
        #[derive(Deserialize)]
        struct Broker {
            state: String,
            source: String,
        }
        #[derive(Deserialize)]
        struct Eos {
            idemp_state: String,
            producer_id: i64,
            producer_epoch: i16,
        }
        let stats: Stats = serde_json::from_slice(json)?;
        // The internal broker (unassigned partitions) and logical ones (coordinators) are no
        // connections of their own.
        let brokers_up = stats
            .brokers
            .values()
            .filter(|b| b.state == "UP" && matches!(b.source.as_str(), "configured" | "learned"))
            .count();
        let (producer, idemp_state) = match stats.eos {
            Some(eos) => (
                (eos.producer_id >= 0).then_some((eos.producer_id, eos.producer_epoch)),
                eos.idemp_state,
            ),
            None => (None, String::new()),
        };
        Ok(Snapshot {
            brokers_up,
            producer,
            idemp_state,
        })
    }
}

/// What the publisher observed since the previous tick.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Tick {
    /// Deliveries acknowledged.
    pub(super) acked: u64,
    /// Deliveries that ran out of time (MessageTimedOut).
    pub(super) timed_out: u64,
    /// Deliveries the cluster refused for no fault of the event's own (brokers' errors, not
    /// the client's: no authorization, no invalid records).
    pub(super) refused: u64,
    /// The latest statistics, if librdkafka reported any.
    pub(super) stats: Option<Snapshot>,
}

/// Why a producer is wedged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Wedge {
    /// The producer id or epoch changed again and again, nothing acknowledged in between: the
    /// "unknown producer id → bump the epoch → unknown producer id" loop.
    Churning {
        changes: usize,
        within: Duration,
        idemp_state: String,
    },
    /// Deliveries failed while a broker was up — refused, or timed out although a broker had
    /// been up for their whole delivery timeout — and nothing was acknowledged for a delivery
    /// timeout while one was.
    Failing { failed: u64, for_: Duration },
}

impl fmt::Display for Wedge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Wedge::Churning {
                changes,
                within,
                idemp_state,
            } => write!(
                f,
                "the producer id or epoch changed {changes} times in {:.1} s and nothing was \
                 acknowledged (idempotence state {idemp_state}): the broker refuses the \
                 producer's state",
                within.as_secs_f64()
            ),
            Wedge::Failing { failed, for_ } => write!(
                f,
                "{failed} deliveries failed or timed out while a broker was up, and nothing was \
                 acknowledged for {:.1} s",
                for_.as_secs_f64()
            ),
        }
    }
}

/// The detector: one per publisher, fed once a tick.
#[derive(Debug)]
pub(super) struct Watchdog {
    delivery_timeout: Duration,
    /// Since when some broker has been up without a break; `None` when none was at the last
    /// snapshot.
    up_since: Option<Instant>,
    /// The producer id and epoch at the last snapshot.
    producer: Option<(i64, i16)>,
    /// When the producer id or epoch changed since the last acknowledgement, while a broker was
    /// up (at most [`CHURN_LIMIT`], the latest).
    changes: VecDeque<Instant>,
    /// Deliveries that failed since the last acknowledgement while a broker was up (a timeout
    /// counts once a broker had been up for a whole delivery timeout).
    stranded: u64,
    /// The last acknowledgement, or when the watch of this producer began.
    progress_at: Instant,
    idemp_state: String,
    /// No rebuild for a wedge before this.
    quiet_until: Option<Instant>,
    /// The quiet period after the next rebuild for a wedge.
    quiet: Duration,
}

impl Watchdog {
    pub(super) fn new(delivery_timeout: Duration, now: Instant) -> Self {
        Watchdog {
            delivery_timeout,
            up_since: None,
            producer: None,
            changes: VecDeque::new(),
            stranded: 0,
            progress_at: now,
            idemp_state: String::new(),
            quiet_until: None,
            quiet: Self::base_quiet(delivery_timeout),
        }
    }

    /// Two delivery timeouts: a rebuild that did not help shows it within one.
    fn base_quiet(delivery_timeout: Duration) -> Duration {
        (delivery_timeout * 2).min(MAX_QUIET)
    }

    /// Takes what happened since the previous tick; says whether the producer is wedged and may
    /// be rebuilt now.
    pub(super) fn observe(&mut self, now: Instant, tick: Tick) -> Option<Wedge> {
        if tick.acked > 0 {
            // Progress: whatever churned before it, this producer delivers.
            self.progress_at = now;
            self.changes.clear();
            self.stranded = 0;
            self.quiet = Self::base_quiet(self.delivery_timeout);
        }
        if let Some(stats) = tick.stats {
            self.read(now, stats, tick.acked > 0);
        }
        let up_long_enough = self
            .up_since
            .is_some_and(|since| now.duration_since(since) >= self.delivery_timeout);
        if tick.acked == 0 && self.up_since.is_some() {
            self.stranded += tick.refused;
            if up_long_enough {
                self.stranded += tick.timed_out;
            }
        }
        if self.up_since.is_none() || self.quiet_until.is_some_and(|until| now < until) {
            return None;
        }
        self.verdict(now)
    }

    fn read(&mut self, now: Instant, stats: Snapshot, acked: bool) {
        if stats.brokers_up == 0 {
            self.up_since = None;
        } else if self.up_since.is_none() {
            self.up_since = Some(now);
        }
        let changed = stats.producer.is_some() && stats.producer != self.producer;
        if changed && self.producer.is_some() && stats.brokers_up > 0 && !acked {
            // An epoch bump of the same id counts once per step it went (several may fall
            // between two snapshots); a new id counts once.
            let steps = match (self.producer, stats.producer) {
                (Some((old_id, old)), Some((new_id, new))) if old_id == new_id && new > old => {
                    usize::from((new - old).unsigned_abs())
                }
                _ => 1,
            };
            for _ in 0..steps.min(CHURN_LIMIT) {
                if self.changes.len() == CHURN_LIMIT {
                    self.changes.pop_front();
                }
                self.changes.push_back(now);
            }
        }
        if stats.producer.is_some() {
            self.producer = stats.producer;
        }
        self.idemp_state = stats.idemp_state;
    }

    fn verdict(&self, now: Instant) -> Option<Wedge> {
        if let (CHURN_LIMIT, Some(first)) = (self.changes.len(), self.changes.front()) {
            let within = now.duration_since(*first);
            if within <= self.delivery_timeout {
                return Some(Wedge::Churning {
                    changes: self.changes.len(),
                    within,
                    idemp_state: self.idemp_state.clone(),
                });
            }
        }
        // Counted from the last acknowledgement, or from when a broker came up if that was later:
        // after an outage a working producer delivers well within a delivery timeout.
        let since = self
            .up_since
            .map_or(self.progress_at, |up| up.max(self.progress_at));
        let for_ = now.duration_since(since);
        if self.stranded > 0 && for_ >= self.delivery_timeout {
            return Some(Wedge::Failing {
                failed: self.stranded,
                for_,
            });
        }
        None
    }

    /// The publisher could not confirm that the cluster answers: wait for a broker to be up for
    /// a while again before blaming the producer.
    pub(super) fn cluster_silent(&mut self) {
        self.up_since = None;
        self.changes.clear();
        self.stranded = 0;
    }

    /// The producer was replaced (for whatever reason): what was observed belongs to the old
    /// one.
    pub(super) fn replaced(&mut self, now: Instant) {
        self.up_since = None;
        self.producer = None;
        self.changes.clear();
        self.stranded = 0;
        self.progress_at = now;
    }

    /// The producer was rebuilt because it was wedged: no second rebuild for a wedge until the
    /// quiet period is over, and the next quiet period is twice as long unless the new
    /// producer delivers.
    pub(super) fn rebuilt_for_wedge(&mut self, now: Instant) {
        self.replaced(now);
        self.quiet_until = Some(now + self.quiet);
        self.quiet = (self.quiet * 2).min(MAX_QUIET);
    }
}

#[cfg(test)]
#[path = "watchdog_tests.rs"]
mod tests;
