//! A private corner of the test Redis for unit tests: a key prefix no other test uses,
//! deleted at the end. The Redis is `ACKGATE_TEST_REDIS_URL` (default
//! `redis://127.0.0.1:6379`), the one `scripts/test.sh` ensures; the Redis Cluster is
//! `ACKGATE_TEST_REDIS_CLUSTER_URL`, the seed nodes of the one `scripts/test.sh` starts with
//! `scripts/redis-cluster.sh`.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;

use crate::redis_link::RedisConn;

pub(crate) struct Scratch {
    pub(crate) conn: RedisConn,
    pub(crate) prefix: String,
}

impl Scratch {
    pub(crate) fn new() -> Self {
        let url = std::env::var("ACKGATE_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
        Scratch {
            conn: crate::redis_link::connect(
                &url,
                &Default::default(),
                Duration::from_secs(5),
                false,
            )
            .unwrap(),
            prefix: format!("ackgate-test:{}", ulid::Ulid::new()),
        }
    }

    /// A prefix of its own on the test Redis Cluster. Its keys are left there: they spread
    /// over every master, and the cluster is the test run's own, removed with it.
    pub(crate) fn cluster() -> Self {
        let urls = std::env::var("ACKGATE_TEST_REDIS_CLUSTER_URL").expect(
            "ACKGATE_TEST_REDIS_CLUSTER_URL is not set: run the tests with scripts/test.sh, or \
             start a cluster with `scripts/redis-cluster.sh start 31000` and export the seed \
             URLs it prints",
        );
        Scratch {
            conn: crate::redis_link::connect(
                &urls,
                &Default::default(),
                Duration::from_secs(5),
                true,
            )
            .unwrap(),
            prefix: format!("ackgate-test:{}", ulid::Ulid::new()),
        }
    }

    /// Runs a case, then deletes its keys (on one server), whether the case passed or not.
    pub(crate) async fn run(self, case: impl Future<Output = ()>) {
        let outcome = AssertUnwindSafe(case).catch_unwind().await;
        if self.conn.is_cluster() {
            if let Err(panic) = outcome {
                std::panic::resume_unwind(panic);
            }
            return;
        }
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
