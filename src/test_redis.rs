//! A private corner of the test Redis for unit tests: a key prefix no other test uses,
//! deleted at the end. The Redis is `ACKGATE_TEST_REDIS_URL` (default
//! `redis://127.0.0.1:6379`), the one `scripts/test.sh` ensures.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;
use redis::aio::ConnectionManager;

pub(crate) struct Scratch {
    pub(crate) conn: ConnectionManager,
    pub(crate) prefix: String,
}

impl Scratch {
    pub(crate) fn new() -> Self {
        let url = std::env::var("ACKGATE_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
        Scratch {
            conn: crate::redis_link::connect(&url, &Default::default(), Duration::from_secs(5))
                .unwrap(),
            prefix: format!("ackgate-test:{}", ulid::Ulid::new()),
        }
    }

    /// Runs a case, then deletes its keys, whether the case passed or not.
    pub(crate) async fn run(self, case: impl Future<Output = ()>) {
        let outcome = AssertUnwindSafe(case).catch_unwind().await;
        let mut conn = self.conn.clone();
        let pattern = format!("{}:*", self.prefix);
        let mut cursor = 0_u64;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .expect("scanning the test keys");
            if !keys.is_empty() {
                let _: i64 = redis::cmd("DEL")
                    .arg(&keys)
                    .query_async(&mut conn)
                    .await
                    .expect("deleting the test keys");
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }
}
