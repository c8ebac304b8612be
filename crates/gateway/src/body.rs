//! Request bodies read under the gateway's limits.
//!
//! A body is buffered whole before it is recorded and forwarded (its fields are committed in
//! the request record), so memory is what bounds it: each body may hold at most
//! `server.max_body_bytes`, and all bodies held at once share `server.max_buffered_bytes`.
//! Without the second limit, a few hundred callers sending large bodies together could make
//! the gateway hold tens of gigabytes. A body that finds the budget spent is refused at once
//! rather than made to wait, so that half-read bodies can never wait on each other.
//!
//! A JSON body is parsed into a `serde_json::Value` to be recorded, and a `Value` takes up to
//! dozens of bytes per value of the text (`[1,1,...]` is two bytes a value): a 10 MB body of
//! small values once took the gateway to 840 MB. So the first pass over the text, which looks
//! for what the record could not read faithfully, also counts the values, and a body of more
//! than `server.max_body_values` is refused before any `Value` is built.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use http_body_util::BodyExt;
use kling_audit_ledger::UnfaithfulJson;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a request body was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BodyRefusal {
    /// Longer than `server.max_body_bytes` (declared or read).
    TooLarge,
    /// The bodies already held use up `server.max_buffered_bytes`.
    Busy,
    /// The caller's connection failed or sent a malformed body.
    Unreadable,
    /// The JSON body repeats this key within one object: the record would commit one value
    /// while the upstream might use the other.
    RepeatedKey(String),
    /// The JSON body nests deeper than the record's parser reads, so its fields (the prompt
    /// among them) could not be committed.
    TooDeep,
    /// The JSON body holds a string with a lone surrogate escape or bytes that are not UTF-8:
    /// the record's parser stops there, while many upstream parsers read on.
    NotUnicode,
    /// The JSON body holds a number beyond a double's range, which the record's parser
    /// refuses while many upstream parsers read it as infinity.
    NumberOutOfRange,
    /// The JSON body holds more values than `server.max_body_values`.
    TooManyValues,
    /// The body did not arrive within `server.body_timeout_ms`.
    TimedOut,
}

impl BodyRefusal {
    /// The `reason` of the `gateway.denied` record.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Self::TooLarge => "body-too-large",
            Self::Busy => "body-budget-spent",
            Self::Unreadable => "body-unreadable",
            Self::RepeatedKey(_) => "body-repeats-key",
            Self::TooDeep => "body-too-deep",
            Self::NotUnicode => "body-not-unicode",
            Self::NumberOutOfRange => "body-number-out-of-range",
            Self::TooManyValues => "body-too-many-values",
            Self::TimedOut => "body-timeout",
        }
    }
}

/// The bytes held for bodies, shared by every request.
#[derive(Debug, Clone)]
pub(crate) struct BodyBudget {
    bytes: Arc<Semaphore>,
    total: usize,
    /// Most JSON values a body may hold (`server.max_body_values`).
    max_values: usize,
}

/// Bytes of the budget held by one body; given back when dropped.
#[derive(Debug)]
pub(crate) struct Held(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

impl BodyBudget {
    pub(crate) fn new(total: usize) -> Self {
        let total = total.min(Semaphore::MAX_PERMITS);
        BodyBudget {
            bytes: Arc::new(Semaphore::new(total)),
            total,
            max_values: usize::MAX,
        }
    }

    /// The same budget, refusing JSON bodies of more than `max` values.
    pub(crate) fn with_max_values(mut self, max: usize) -> Self {
        self.max_values = max;
        self
    }

    /// Bytes held by bodies now.
    pub(crate) fn held(&self) -> usize {
        self.total.saturating_sub(self.bytes.available_permits())
    }

    /// Reads `body` whole, within `timeout`. `declared` is its `Content-Length`, when sent.
    pub(crate) async fn read(
        &self,
        mut body: Body,
        declared: Option<u64>,
        max: usize,
        timeout: Duration,
    ) -> Result<(Bytes, Held), BodyRefusal> {
        if declared.is_some_and(|n| n > max as u64) {
            return Err(BodyRefusal::TooLarge);
        }
        // Most calls (every GET) come without a body: no timer, no loop.
        if axum::body::HttpBody::is_end_stream(&body) {
            return Ok((Bytes::new(), Held(None)));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut chunks: Vec<Bytes> = Vec::new();
        let mut len = 0usize;
        let mut held: Option<OwnedSemaphorePermit> = None;
        loop {
            let Ok(next) = tokio::time::timeout_at(deadline, body.frame()).await else {
                return Err(BodyRefusal::TimedOut);
            };
            let Some(frame) = next else { break };
            let Ok(frame) = frame else {
                return Err(BodyRefusal::Unreadable);
            };
            // Trailers carry nothing the gateway records or forwards.
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if data.is_empty() {
                continue;
            }
            len += data.len();
            if len > max {
                return Err(BodyRefusal::TooLarge);
            }
            let n = u32::try_from(data.len()).map_err(|_| BodyRefusal::TooLarge)?;
            let permit = Arc::clone(&self.bytes)
                .try_acquire_many_owned(n)
                .map_err(|_| BodyRefusal::Busy)?;
            match &mut held {
                Some(h) => h.merge(permit),
                None => held = Some(permit),
            }
            chunks.push(data);
        }
        let bytes = join(chunks);
        if bytes.is_empty() {
            // Most calls (every GET) have no body; nothing to check.
            return Ok((bytes, Held(held)));
        }
        // One pass for every check, values counted on the way.
        match kling_audit_ledger::unfaithful_json_within(&bytes, self.max_values) {
            Some(UnfaithfulJson::RepeatedKey(key)) => Err(BodyRefusal::RepeatedKey(key)),
            Some(UnfaithfulJson::TooDeep) => Err(BodyRefusal::TooDeep),
            Some(UnfaithfulJson::NotUnicode) => Err(BodyRefusal::NotUnicode),
            Some(UnfaithfulJson::NumberOutOfRange) => Err(BodyRefusal::NumberOutOfRange),
            Some(UnfaithfulJson::TooManyValues { .. }) => Err(BodyRefusal::TooManyValues),
            None => Ok((bytes, Held(held))),
        }
    }
}

/// The `Content-Length` a message declares, when it declares a readable one.
pub(crate) fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// The chunks of a body as one buffer; most bodies arrive in one chunk, which is not copied.
pub(crate) fn join(mut chunks: Vec<Bytes>) -> Bytes {
    match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.swap_remove(0),
        _ => Bytes::from(chunks.concat()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use http_body_util::channel::Channel;

    const SECOND: Duration = Duration::from_secs(1);

    /// A body arriving in the given frames, then ending or failing.
    async fn streamed(parts: &[&'static [u8]], fail: bool) -> Body {
        let (mut tx, body) = Channel::<Bytes, std::io::Error>::new(parts.len() + 1);
        for part in parts {
            tx.send_data(Bytes::from_static(part))
                .await
                .expect("room for every frame");
        }
        if fail {
            tx.abort(std::io::Error::other("connection reset"));
        }
        Body::new(body)
    }

    #[tokio::test]
    async fn a_body_in_several_frames_is_joined_and_holds_its_bytes_until_dropped() {
        let budget = BodyBudget::new(100);
        let (bytes, held) = budget
            .read(
                streamed(&[b"ab", b"cd", b"e"], false).await,
                None,
                10,
                SECOND,
            )
            .await
            .unwrap();
        assert_eq!(&bytes[..], b"abcde");
        assert_eq!(budget.held(), 5);
        drop(held);
        assert_eq!(budget.held(), 0);
    }

    #[tokio::test]
    async fn a_declared_length_over_the_limit_is_refused_before_reading() {
        let budget = BodyBudget::new(100);
        let refused = budget.read(Body::from("abc"), Some(11), 10, SECOND).await;
        assert_eq!(refused.unwrap_err(), BodyRefusal::TooLarge);
        assert_eq!(budget.held(), 0);
    }

    #[tokio::test]
    async fn a_body_longer_than_declared_is_still_cut_at_the_limit() {
        let budget = BodyBudget::new(100);
        let refused = budget
            .read(
                streamed(&[b"0123456", b"789ab"], false).await,
                Some(3),
                10,
                SECOND,
            )
            .await;
        assert_eq!(refused.unwrap_err(), BodyRefusal::TooLarge);
        assert_eq!(budget.held(), 0, "a refused body gives its bytes back");
    }

    #[tokio::test]
    async fn a_body_that_finds_the_budget_spent_is_refused_at_once() {
        let budget = BodyBudget::new(8);
        let (_, first) = budget
            .read(Body::from("123456"), None, 10, SECOND)
            .await
            .unwrap();
        let refused = budget.read(Body::from("abc"), None, 10, SECOND).await;
        assert_eq!(refused.unwrap_err(), BodyRefusal::Busy);
        drop(first);
        let (bytes, _) = budget
            .read(Body::from("abc"), None, 10, SECOND)
            .await
            .unwrap();
        assert_eq!(&bytes[..], b"abc");
    }

    #[tokio::test]
    async fn a_body_that_stops_arriving_times_out_and_gives_its_bytes_back() {
        let budget = BodyBudget::new(100);
        let (mut tx, body) = Channel::<Bytes, std::io::Error>::new(4);
        tx.send_data(Bytes::from_static(b"ab")).await.unwrap();
        let refused = budget
            .read(Body::new(body), Some(50), 60, Duration::from_millis(50))
            .await;
        assert_eq!(refused.unwrap_err(), BodyRefusal::TimedOut);
        assert_eq!(budget.held(), 0);
        drop(tx);
    }

    #[tokio::test]
    async fn a_json_body_of_more_values_than_allowed_is_refused_and_gives_its_bytes_back() {
        let budget = BodyBudget::new(100).with_max_values(4);
        let refused = budget
            .read(Body::from(r#"{"a":[1,2,3]}"#), None, 50, SECOND)
            .await;
        assert_eq!(refused.unwrap_err(), BodyRefusal::TooManyValues);
        assert_eq!(budget.held(), 0);
        let (bytes, _) = budget
            .read(Body::from(r#"{"a":[1,2]}"#), None, 50, SECOND)
            .await
            .unwrap();
        assert_eq!(&bytes[..], br#"{"a":[1,2]}"#);
    }

    #[tokio::test]
    async fn a_broken_body_is_unreadable() {
        let budget = BodyBudget::new(100);
        let refused = budget
            .read(streamed(&[b"ab"], true).await, None, 10, SECOND)
            .await;
        assert_eq!(refused.unwrap_err(), BodyRefusal::Unreadable);
        assert_eq!(budget.held(), 0);
    }
}
