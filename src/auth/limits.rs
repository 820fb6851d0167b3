//! Per-client limits: a rate in events per second, and a share of the in-flight requests.
//!
//! Both are kept per gateway process. A shared rate would cost a Redis round trip per event and
//! make every 429 depend on Redis; behind a load balancer that spreads a client's requests over
//! N replicas, a client is admitted up to N × its `rate` (README, "Rate limits").

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

type Limiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// A client's rate: `per_second` events per second, with bursts of up to one second's worth
/// (a generic cell rate algorithm: no window edges where twice the rate gets through).
pub(crate) struct Rate {
    per_second: NonZeroU32,
    limiter: Limiter,
}

/// What the `RateLimit` header reports after an admitted request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Allowance {
    pub(crate) limit: u32,
    pub(crate) remaining: u32,
    /// Seconds until the whole quota is available again.
    pub(crate) reset_secs: u64,
}

impl Rate {
    pub(crate) fn new(per_second: NonZeroU32) -> Rate {
        let limiter = RateLimiter::direct(Quota::per_second(per_second))
            .with_middleware::<StateInformationMiddleware>();
        Rate {
            per_second,
            limiter,
        }
    }

    pub(crate) fn per_second(&self) -> u32 {
        self.per_second.get()
    }

    /// Takes `events` from the quota, or says how long until they would fit. A request larger
    /// than the whole burst never fits and waits one second, the time the full quota takes.
    pub(crate) fn take(&self, events: NonZeroU32) -> Result<Allowance, Duration> {
        let limit = self.per_second.get();
        match self.limiter.check_n(events) {
            Ok(Ok(snapshot)) => {
                let remaining = snapshot.remaining_burst_capacity();
                let used = limit.saturating_sub(remaining);
                Ok(Allowance {
                    limit,
                    remaining,
                    reset_secs: u64::from(used).div_ceil(u64::from(limit)),
                })
            }
            Ok(Err(not_until)) => Err(not_until.wait_time_from(DefaultClock::default().now())),
            Err(_insufficient) => Err(Duration::from_secs(1)),
        }
    }
}

/// Caps the requests one principal has in progress, so that one client cannot take the whole
/// `--max-in-flight`. The map holds only principals with a request in progress.
pub(crate) struct InFlightShares {
    per_client: usize,
    held: Mutex<HashMap<Arc<str>, usize>>,
}

/// One request's place in its principal's share; given back on drop.
pub(crate) struct ShareGuard {
    shares: Arc<InFlightShares>,
    principal: Arc<str>,
}

impl InFlightShares {
    pub(crate) fn new(per_client: usize) -> Arc<InFlightShares> {
        Arc::new(InFlightShares {
            per_client: per_client.max(1),
            held: Mutex::default(),
        })
    }

    pub(crate) fn per_client(&self) -> usize {
        self.per_client
    }

    /// A place for one more request of `principal`, if its share has one.
    pub(crate) fn enter(self: &Arc<Self>, principal: &Arc<str>) -> Option<ShareGuard> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let count = held.entry(principal.clone()).or_default();
        if *count >= self.per_client {
            return None;
        }
        *count += 1;
        Some(ShareGuard {
            shares: self.clone(),
            principal: principal.clone(),
        })
    }
}

impl Drop for ShareGuard {
    fn drop(&mut self) {
        let mut held = self.shares.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = held.get_mut(&self.principal) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.principal);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one() -> NonZeroU32 {
        NonZeroU32::MIN
    }

    #[test]
    fn a_rate_admits_one_seconds_burst_then_says_when() {
        let rate = Rate::new(NonZeroU32::new(5).unwrap());
        for expected_remaining in (0..5).rev() {
            let quota = rate.take(one()).unwrap();
            assert_eq!(quota.limit, 5);
            assert_eq!(quota.remaining, expected_remaining);
            assert!(quota.reset_secs <= 1);
        }
        let wait = rate.take(one()).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(200),
            "{wait:?}"
        );
        assert_eq!(
            rate.take(NonZeroU32::new(6).unwrap()).unwrap_err(),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn shares_cap_each_principal_and_forget_idle_ones() {
        let shares = InFlightShares::new(2);
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let first = shares.enter(&a).unwrap();
        let _second = shares.enter(&a).unwrap();
        assert!(shares.enter(&a).is_none());
        let other = shares.enter(&b).unwrap();
        drop(first);
        let _third = shares.enter(&a).unwrap();
        drop(other);
        assert!(!shares.held.lock().unwrap().contains_key(&b));
    }
}
