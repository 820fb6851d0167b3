//! The gateway's routes as typed methods of [`TestApp`], so that a test says what it asks
//! for instead of building the request by hand.

use futures::FutureExt;
use futures::future::BoxFuture;

use super::{Reply, TestApp, send};

/// One typed method per route. Each sends at once and returns the answer as a [`Pending`]:
/// it owns its request, so a test may await it, join several, or `tokio::spawn` it.
///
/// Topics go into the path as they are (a test may send an invalid one on purpose);
/// idempotency keys and failure ids are percent-encoded, as a client must.
impl TestApp {
    /// `POST /v1/topics/{topic}/events` with `Idempotency-Key` and a JSON content type.
    pub fn post_event(&self, topic: &str, key: &str, body: impl AsRef<[u8]>) -> Pending {
        self.post_event_with(topic, key, body, &[])
    }

    /// Like [`TestApp::post_event`], with `headers` added after `Idempotency-Key`. A
    /// `Content-Type` among them replaces the JSON one; any other name is added, even a
    /// second `Idempotency-Key`.
    pub fn post_event_with(
        &self,
        topic: &str,
        key: &str,
        body: impl AsRef<[u8]>,
        headers: &[(&str, &str)],
    ) -> Pending {
        send(self.event_request_with(topic, key, body, headers)).boxed()
    }

    /// `POST /v1/topics/{topic}/events` with exactly these headers (none added) and any body
    /// reqwest sends (bytes, or a stream to send it chunked).
    pub fn post_event_raw(
        &self,
        topic: &str,
        headers: &[(&str, &str)],
        body: impl Into<reqwest::Body>,
    ) -> Pending {
        let mut request = self.client.post(self.url(&events_path(topic)));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        send(request.body(body)).boxed()
    }

    /// The request [`TestApp::post_event`] sends, unsent: for a test that needs reqwest's own
    /// result (a refused connection) or sends it with a client of its own.
    pub fn event_request(
        &self,
        topic: &str,
        key: &str,
        body: impl AsRef<[u8]>,
    ) -> reqwest::RequestBuilder {
        self.event_request_with(topic, key, body, &[])
    }

    fn event_request_with(
        &self,
        topic: &str,
        key: &str,
        body: impl AsRef<[u8]>,
        headers: &[(&str, &str)],
    ) -> reqwest::RequestBuilder {
        let mut request = self
            .client
            .post(self.url(&events_path(topic)))
            .header("Idempotency-Key", key);
        if !headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        {
            request = request.header("Content-Type", "application/json");
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(body.as_ref().to_vec())
    }

    /// `POST /v1/topics/{topic}/events:batch` with a JSON content type.
    pub fn post_batch(&self, topic: &str, body: impl AsRef<[u8]>) -> Pending {
        self.post_batch_raw(
            topic,
            &[("Content-Type", "application/json")],
            body.as_ref().to_vec(),
        )
    }

    /// `POST /v1/topics/{topic}/events:batch` with exactly these headers (none added).
    pub fn post_batch_raw(
        &self,
        topic: &str,
        headers: &[(&str, &str)],
        body: impl Into<reqwest::Body>,
    ) -> Pending {
        let mut request = self
            .client
            .post(self.url(&format!("{}:batch", events_path(topic))));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        send(request.body(body)).boxed()
    }

    /// `GET /v1/topics/{topic}/events/{key}`: what became of the event under `key`.
    pub fn event_status(&self, topic: &str, key: &str) -> Pending {
        self.get(&format!("{}/{}", events_path(topic), path_segment(key)))
    }

    /// `GET /v1/failures?{query}` (no `?` for an empty query).
    pub fn list_failures(&self, query: &str) -> Pending {
        if query.is_empty() {
            self.get("/v1/failures")
        } else {
            self.get(&format!("/v1/failures?{query}"))
        }
    }

    /// `GET /v1/failures/{id}`.
    pub fn get_failure(&self, id: &str) -> Pending {
        self.get(&failure_path(id))
    }

    /// `POST /v1/failures/{id}/retry` with no body: the retry is the default operator's.
    pub fn retry_failure(&self, id: &str) -> Pending {
        let url = self.url(&format!("{}/retry", failure_path(id)));
        send(self.client.post(url)).boxed()
    }

    /// `POST /v1/failures/{id}/retry` as `{"by": by}`.
    pub fn retry_failure_as(&self, id: &str, by: &str) -> Pending {
        let body = serde_json::json!({ "by": by });
        self.post_json(&format!("{}/retry", failure_path(id)), &body.to_string())
    }

    /// `POST /v1/failures/{id}/discard` as `{"reason": reason}`.
    pub fn discard_failure(&self, id: &str, reason: &str) -> Pending {
        let body = serde_json::json!({ "reason": reason });
        self.post_json(&format!("{}/discard", failure_path(id)), &body.to_string())
    }

    /// `POST /v1/failures/{id}/discard` as `{"reason": reason, "by": by}`.
    pub fn discard_failure_as(&self, id: &str, reason: &str, by: &str) -> Pending {
        let body = serde_json::json!({ "reason": reason, "by": by });
        self.post_json(&format!("{}/discard", failure_path(id)), &body.to_string())
    }

    /// `GET /healthz`.
    pub fn healthz(&self) -> Pending {
        self.get("/healthz")
    }

    /// `GET /readyz`.
    pub fn readyz(&self) -> Pending {
        self.get("/readyz")
    }

    /// `GET /metrics`.
    pub fn metrics(&self) -> Pending {
        self.get("/metrics")
    }

    /// `GET /openapi.json`.
    pub fn openapi(&self) -> Pending {
        self.get("/openapi.json")
    }

    /// `GET` of any path (a `Location` the gateway gave, a route that does not exist).
    pub fn get(&self, path: &str) -> Pending {
        send(self.client.get(self.url(path))).boxed()
    }

    /// `POST` of a JSON body to any path (a body a typed method would not send).
    pub fn post_json(&self, path: &str, body: &str) -> Pending {
        let request = self
            .client
            .post(self.url(path))
            .header("Content-Type", "application/json")
            .body(body.to_owned());
        send(request).boxed()
    }
}

/// An answer on its way from one of [`TestApp`]'s route methods.
pub type Pending = BoxFuture<'static, Reply>;

fn events_path(topic: &str) -> String {
    format!("/v1/topics/{topic}/events")
}

fn failure_path(id: &str) -> String {
    format!("/v1/failures/{}", path_segment(id))
}

/// `text` as one path segment: every byte but the unreserved ones percent-encoded, so the
/// gateway sees exactly `text` after decoding. `.` and `..` go as they are.
pub fn path_segment(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
