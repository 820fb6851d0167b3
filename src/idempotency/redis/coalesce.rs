//! Concurrent requests share script calls.
//!
//! One request's claim alone costs Redis a whole `EVALSHA` (about 9 µs of Redis CPU, measured
//! with `INFO commandstats`) and a read and a write on its socket, for a key whose own work in
//! the script is one `SET` of about 1.5 µs; the gateway pays a command's encoding, a socket
//! write and a wake-up on top. The claim and settle scripts take any number of keys, so
//! requests that arrive together go together: a [`Lane`] keeps at most [`CALLS_IN_FLIGHT`]
//! calls on the connection; a request that finds one free goes at once, alone (an idle gateway
//! waits for nothing), and the requests that come while all are busy go in the next call, up
//! to [`MOST_KEYS`] of them.
//!
//! Each key is still claimed (or settled) atomically on its own, exactly as alone: the script
//! handles its keys one after the other, and nothing ties one key's answer to another's. And
//! each request keeps its own deadline, `--redis-timeout-ms` from when it asked, however long
//! it waited for a call: a stalled Redis fails it as soon as it would have failed alone.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::idempotency::StoreError;

/// Most keys in one call: the script holds Redis for a few µs per key, so a call of this many
/// keeps it well under a millisecond.
const MOST_KEYS: usize = 64;

/// Calls on the connection at once: one that Redis runs while the next one travels. More
/// would only split the waiting requests into smaller calls (Redis runs one script at a time).
const CALLS_IN_FLIGHT: usize = 2;

/// Makes one script call for some keys, answering each in order.
pub(super) type Call<Req, Rep> =
    Arc<dyn Fn(Vec<Req>) -> BoxFuture<'static, Result<Vec<Rep>, StoreError>> + Send + Sync>;

type Waiting<Req, Rep> = (Req, oneshot::Sender<Result<Rep, StoreError>>);

/// The queue in front of one script. The task behind it ends with the last clone.
pub(super) struct Lane<Req, Rep> {
    queue: mpsc::UnboundedSender<Waiting<Req, Rep>>,
    deadline: Duration,
}

impl<Req, Rep> Clone for Lane<Req, Rep> {
    fn clone(&self) -> Self {
        Lane {
            queue: self.queue.clone(),
            deadline: self.deadline,
        }
    }
}

impl<Req: Send + 'static, Rep: Send + 'static> Lane<Req, Rep> {
    /// Starts the lane's task; needs a Tokio runtime. The queue is unbounded because what fills
    /// it is bounded already: each waiting request holds an in-flight slot of the gateway.
    pub(super) fn new(call: Call<Req, Rep>, deadline: Duration) -> Self {
        let (queue, waiting) = mpsc::unbounded_channel();
        tokio::spawn(run(waiting, call));
        Lane { queue, deadline }
    }

    /// This request's answer, from whichever call it went in, or a timeout at its deadline.
    pub(super) async fn call(&self, request: Req) -> Result<Rep, StoreError> {
        let (reply, answer) = oneshot::channel();
        let gone = || StoreError::Protocol("the Redis call queue stopped".into());
        self.queue.send((request, reply)).map_err(|_| gone())?;
        match tokio::time::timeout(self.deadline, answer).await {
            Ok(answer) => answer.map_err(|_| gone())?,
            Err(_) => Err(StoreError::Unavailable(redis::RedisError::from(
                std::io::Error::new(std::io::ErrorKind::TimedOut, "Redis did not answer in time"),
            ))),
        }
    }
}

async fn run<Req: Send + 'static, Rep: Send + 'static>(
    mut waiting: mpsc::UnboundedReceiver<Waiting<Req, Rep>>,
    call: Call<Req, Rep>,
) {
    let calls = Arc::new(Semaphore::new(CALLS_IN_FLIGHT));
    while let Some(first) = waiting.recv().await {
        let Ok(permit) = calls.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MOST_KEYS {
            match waiting.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        // A request that stopped waiting (its deadline passed, or its caller gave up) is not
        // sent at all, as it would not have been without the lane.
        batch.retain(|(_, reply)| !reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let (requests, replies): (Vec<Req>, Vec<_>) = batch.into_iter().unzip();
        let call = Arc::clone(&call);
        tokio::spawn(async move {
            let _permit = permit;
            match call(requests).await {
                Ok(answers) => {
                    for (reply, answer) in replies.into_iter().zip(answers) {
                        let _ = reply.send(Ok(answer));
                    }
                }
                Err(error) => {
                    for reply in replies {
                        let _ = reply.send(Err(error.clone()));
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use futures::FutureExt;

    use super::*;

    const DEADLINE: Duration = Duration::from_secs(5);

    /// A lane whose calls take `delay` and record how many requests each carried.
    fn recording(delay: Duration) -> (Lane<u32, u32>, Arc<Mutex<Vec<usize>>>) {
        recording_within(delay, DEADLINE)
    }

    fn recording_within(
        delay: Duration,
        deadline: Duration,
    ) -> (Lane<u32, u32>, Arc<Mutex<Vec<usize>>>) {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&sizes);
        let call: Call<u32, u32> = Arc::new(move |requests: Vec<u32>| {
            seen.lock().unwrap().push(requests.len());
            async move {
                tokio::time::sleep(delay).await;
                Ok(requests.into_iter().map(|n| n * 10).collect())
            }
            .boxed()
        });
        (Lane::new(call, deadline), sizes)
    }

    #[tokio::test]
    async fn a_lone_request_goes_at_once_alone() {
        let (lane, sizes) = recording(Duration::ZERO);
        assert_eq!(lane.call(7).await.unwrap(), 70);
        assert_eq!(lane.call(8).await.unwrap(), 80);
        assert_eq!(*sizes.lock().unwrap(), vec![1, 1]);
    }

    #[tokio::test]
    async fn requests_that_wait_go_together_and_each_gets_its_own_answer() {
        let (lane, sizes) = recording(Duration::from_millis(50));
        let answers = futures::future::join_all((0..200).map(|n| lane.call(n))).await;
        for (n, answer) in answers.into_iter().enumerate() {
            assert_eq!(answer.unwrap(), n as u32 * 10);
        }
        let sizes = sizes.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 200);
        assert!(sizes.iter().all(|&n| n <= MOST_KEYS), "{sizes:?}");
        // All 200 were queued before the lane ran: they fill calls of MOST_KEYS.
        assert_eq!(sizes, vec![64, 64, 64, 8]);
    }

    #[tokio::test]
    async fn a_failed_call_fails_every_request_in_it() {
        let call: Call<u32, u32> =
            Arc::new(|_| async { Err(StoreError::Protocol("refused".into())) }.boxed());
        let lane = Lane::new(call, DEADLINE);
        let answers = futures::future::join_all((0..5).map(|n| lane.call(n))).await;
        assert!(
            answers
                .iter()
                .all(|a| matches!(a, Err(StoreError::Protocol(_))))
        );
    }

    #[tokio::test]
    async fn a_request_fails_at_its_own_deadline_and_is_not_sent_after_it() {
        let (lane, sizes) = recording_within(Duration::from_millis(80), Duration::from_millis(30));
        // Both calls busy past the deadline: their requests time out, and the one queued
        // behind them times out too, without being sent when a call comes back.
        let mut calls = Vec::new();
        for n in 0..3 {
            let lane = lane.clone();
            calls.push(tokio::spawn(async move { lane.call(n).await }));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for call in calls {
            match call.await.unwrap() {
                Err(StoreError::Unavailable(error)) => assert!(error.is_timeout(), "{error}"),
                other => panic!("expected a timeout, got {other:?}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            sizes.lock().unwrap().iter().sum::<usize>(),
            2,
            "the third was sent"
        );
    }

    #[tokio::test]
    async fn a_request_nobody_waits_for_is_not_sent() {
        let (lane, sizes) = recording(Duration::from_millis(50));
        // Both calls busy, each with one request; then one request given up before its turn.
        let mut busy = Vec::new();
        for n in [1, 2] {
            let lane = lane.clone();
            busy.push(tokio::spawn(async move { lane.call(n).await }));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let given_up = tokio::time::timeout(Duration::from_millis(5), lane.call(3)).await;
        assert!(given_up.is_err());
        assert_eq!(lane.call(4).await.unwrap(), 40);
        for call in busy {
            call.await.unwrap().unwrap();
        }
        assert_eq!(*sizes.lock().unwrap(), vec![1, 1, 1]);
    }
}
