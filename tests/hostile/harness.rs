//! The HTTP property, one case at a time: send a request, check the answer against the model,
//! then check Redis against the model.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::net::SocketAddr;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use crate::PARTITIONS;
use crate::common::{redis_keys, redis_url};
use crate::model::{Expected, Model, check_problem, expect};
use crate::raw_http::send_raw;
use crate::request::Request;
use crate::strategies::Reuse;

pub(crate) struct Harness {
    pub(crate) addr: SocketAddr,
    pub(crate) topic: String,
    pub(crate) prefix: String,
    pub(crate) model: RefCell<Model>,
}

impl Harness {
    pub(crate) async fn case(
        &self,
        mut request: Request,
        reuse: Reuse,
    ) -> Result<(), TestCaseError> {
        {
            let model = self.model.borrow();
            match reuse {
                Reuse::Fresh => {}
                _ if model.accepted.is_empty() => {}
                Reuse::Again(index) => request = index.get(&model.accepted).clone(),
                Reuse::KeyOf(index) => {
                    let before = index.get(&model.accepted);
                    request.topic = self.topic.clone();
                    request
                        .headers
                        .retain(|(n, _)| !n.eq_ignore_ascii_case("idempotency-key"));
                    request.headers.extend(
                        before
                            .headers
                            .iter()
                            .filter(|(n, _)| n.eq_ignore_ascii_case("idempotency-key"))
                            .cloned(),
                    );
                }
            }
        }
        let expected = expect(&request, &self.topic);
        let reply = send_raw(self.addr, &request)
            .await
            .map_err(TestCaseError::fail)?;
        let body = String::from_utf8_lossy(&reply.body).into_owned();
        prop_assert!(reply.status < 500, "{}: {}", reply.status, body);
        let outcome = match serde_json::from_slice::<serde_json::Value>(&reply.body) {
            Ok(json) if json["code"].is_string() => format!("{} {}", reply.status, json["code"]),
            _ if reply.header("idempotent-replayed").is_some() => {
                format!("{} replayed", reply.status)
            }
            _ => reply.status.to_string(),
        };
        *self.model.borrow_mut().outcomes.entry(outcome).or_default() += 1;

        match expected {
            Expected::Problem(status, code) => check_problem(&reply, status, code)?,
            Expected::Accepted { key, record } => {
                let before = self.model.borrow().keys.get(&key).cloned();
                match before {
                    Some((first, _)) if first != record => {
                        check_problem(&reply, 422, "idempotency-key-reused")?;
                    }
                    Some((_, first_body)) => {
                        prop_assert_eq!(reply.status, 201, "{}", body);
                        prop_assert_eq!(
                            reply.header_str("idempotent-replayed"),
                            Some("true".into())
                        );
                        prop_assert_eq!(&reply.body, &first_body, "a replay is the first answer");
                    }
                    None => {
                        prop_assert_eq!(reply.status, 201, "{}", body);
                        prop_assert_eq!(
                            reply.header_str("content-type"),
                            Some("application/json".into())
                        );
                        prop_assert_eq!(reply.header_str("idempotent-replayed"), None);
                        let json: serde_json::Value = serde_json::from_slice(&reply.body)
                            .map_err(|e| TestCaseError::fail(format!("{e}: {body}")))?;
                        prop_assert_eq!(&json["status"], "persisted");
                        prop_assert_eq!(&json["topic"], self.topic.as_str());
                        prop_assert_eq!(&json["idempotency_key"], key.as_str());
                        let partition = json["partition"].as_i64().unwrap_or(-1);
                        let offset = json["offset"].as_i64().unwrap_or(-1);
                        prop_assert!(
                            (0..i64::from(PARTITIONS)).contains(&partition) && offset >= 0
                        );
                        let mut model = self.model.borrow_mut();
                        let previous = model
                            .records
                            .insert((partition as i32, offset), record.clone());
                        prop_assert!(previous.is_none(), "two 201s name one offset");
                        model.keys.insert(key, (record, reply.body.clone()));
                        model.accepted.push(request);
                    }
                }
            }
        }

        // Only accepted events hold a key; nothing else is ever written under the prefix.
        let in_redis: BTreeSet<String> = redis_keys(&redis_url(), &format!("{}:*", self.prefix))
            .await
            .into_iter()
            .collect();
        let expected: BTreeSet<String> = self
            .model
            .borrow()
            .keys
            .keys()
            .map(|key| format!("{}:i:anonymous:{}:{key}", self.prefix, self.topic))
            .collect();
        prop_assert_eq!(in_redis, expected);
        Ok(())
    }
}
