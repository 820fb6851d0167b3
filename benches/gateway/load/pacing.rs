//! When a load generator sends: the phase's [`Window`] (warm-up, then measured), and the
//! [`Tickets`] that pace the sends closed-loop, at a fixed rate, or as an overload.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Open-loop phases: a send this late against its schedule is charged from the schedule
/// (the client was queueing); below it, the lateness is timer slack and not charged.
const TIMER_SLACK: Duration = Duration::from_millis(2);
/// Overload phase: tickets this late are skipped (the generator cannot keep up), not sent.
const OVERLOAD_SKIP_LATE: Duration = Duration::from_secs(1);

/// The measured part of a phase: `[measure_from, end)`; load runs over `[begin, end)`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    pub(crate) begin: Instant,
    pub(crate) measure_from: Instant,
    pub(crate) end: Instant,
}

impl Window {
    pub(crate) fn starting_now(warmup: f64, duration: f64) -> Window {
        let begin = Instant::now();
        let measure_from = begin + Duration::from_secs_f64(warmup);
        Window {
            begin,
            measure_from,
            end: measure_from + Duration::from_secs_f64(duration),
        }
    }

    pub(crate) fn counts(&self, done: Instant) -> bool {
        done >= self.measure_from && done < self.end
    }

    pub(crate) fn seconds(&self) -> f64 {
        (self.end - self.measure_from).as_secs_f64()
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Pace {
    /// Each worker sends its next event as soon as it has the previous answer.
    Closed,
    /// Open loop at this rate (events/s), at most `window` outstanding. Latency counts from the
    /// intended send time (no coordinated omission).
    Rate(f64),
    /// Open loop, overload: latency counts from the actual send; tickets more than
    /// [`OVERLOAD_SKIP_LATE`] late are skipped.
    Overload(f64),
}

impl Pace {
    /// The open-loop rate asked for, events/s; `None` closed-loop.
    pub(crate) fn target_rate(self) -> Option<f64> {
        match self {
            Pace::Closed => None,
            Pace::Rate(rate) | Pace::Overload(rate) => Some(rate),
        }
    }
}

pub(crate) struct Tickets {
    pub(crate) pace: Pace,
    pub(crate) window: Window,
    next: AtomicU64,
    /// At most this many tickets in all (a load of a fixed size), if set.
    limit: Option<u64>,
    taken: AtomicU64,
}

impl Tickets {
    pub(crate) fn new(pace: Pace, window: Window) -> Self {
        Tickets {
            pace,
            window,
            next: AtomicU64::new(0),
            limit: None,
            taken: AtomicU64::new(0),
        }
    }

    /// `limit` tickets closed-loop, as fast as they are answered (within `window`).
    pub(crate) fn counted(limit: u64, window: Window) -> Self {
        Tickets {
            limit: Some(limit),
            ..Tickets::new(Pace::Closed, window)
        }
    }

    /// The next event's intended send time, or `None` once the phase is over.
    pub(crate) fn take(&self) -> Option<Instant> {
        if let Some(limit) = self.limit
            && self.taken.fetch_add(1, Ordering::Relaxed) >= limit
        {
            return None;
        }
        let at = match self.pace {
            Pace::Closed => Instant::now(),
            Pace::Rate(rate) | Pace::Overload(rate) => {
                let i = self.next.fetch_add(1, Ordering::Relaxed);
                self.window.begin + Duration::from_secs_f64(i as f64 / rate)
            }
        };
        (at < self.window.end).then_some(at)
    }

    /// Waits for the ticket's time. `false`: skip it (overload, too late).
    pub(crate) async fn wait(&self, at: Instant) -> bool {
        let now = Instant::now();
        if at > now {
            tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
            return true;
        }
        !matches!(self.pace, Pace::Overload(_)) || now - at <= OVERLOAD_SKIP_LATE
    }

    /// Where a latency starts.
    pub(crate) fn origin(&self, intended: Instant, sent: Instant) -> Instant {
        match self.pace {
            Pace::Rate(_) if sent.saturating_duration_since(intended) > TIMER_SLACK => intended,
            _ => sent,
        }
    }
}
