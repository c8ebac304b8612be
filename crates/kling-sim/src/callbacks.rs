//! Status callbacks (reference section 10): the bare task object, legacy (10.2) or new-standard
//! (10.3) after the API that made the task, POSTed to the task's callback URL, signed with Standard Webhooks headers when a webhook secret is configured.
//!
//! Each task gets its own delivery queue, so its callbacks leave in status order while request
//! handling never waits for them. Failures are only logged. By default only loopback hosts are
//! called, so a simulator cannot be turned into a tool for reaching other machines.

use std::sync::Arc;
use std::time::Duration;

use kling_api::webhook::{self, HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::config::{SecretText, SimConfig};
use crate::error::SimError;
use crate::state::{lock, now_ms, Shared};

/// When callbacks are sent and how hard delivery tries (section 16.4).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CallbackConfig {
    pub on_submitted: bool,
    pub on_processing: bool,
    pub on_final: bool,
    /// Attempts per callback, at least 1.
    pub attempts: u32,
    /// Timeout of one attempt.
    pub timeout_ms: u64,
    /// Pause between attempts.
    pub retry_delay_ms: u64,
    /// Also call hosts other than loopback (`localhost`, 127.0.0.0/8, `::1`).
    pub allow_non_loopback: bool,
}

impl Default for CallbackConfig {
    fn default() -> Self {
        Self {
            on_submitted: false,
            on_processing: true,
            on_final: true,
            attempts: 1,
            timeout_ms: 5000,
            retry_delay_ms: 200,
            allow_non_loopback: false,
        }
    }
}

impl CallbackConfig {
    pub(crate) fn validate(&self) -> Result<(), SimError> {
        if self.attempts == 0 {
            return Err(SimError::invalid(
                "callbacks.attempts",
                "must be at least 1",
            ));
        }
        if self.timeout_ms == 0 {
            return Err(SimError::invalid(
                "callbacks.timeout_ms",
                "must be positive",
            ));
        }
        Ok(())
    }
}

/// The HTTP client and settings shared by every delivery queue.
#[derive(Debug)]
pub(crate) struct CallbackSender {
    client: reqwest::Client,
    cfg: CallbackConfig,
    secret: Option<SecretText>,
}

impl CallbackSender {
    pub fn new(cfg: &SimConfig) -> Result<Self, SimError> {
        if let Some(secret) = &cfg.webhook_secret {
            webhook::decode_secret(secret.expose()).map_err(|_| {
                SimError::invalid("webhook_secret", "must be whsec_ followed by base64")
            })?;
        }
        let client = reqwest::Client::builder()
            // Environment proxies must not reroute callbacks meant for a local receiver.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_millis(cfg.callbacks.timeout_ms))
            .build()
            .map_err(SimError::CallbackClient)?;
        Ok(Self {
            client,
            cfg: cfg.callbacks.clone(),
            secret: cfg.webhook_secret.clone(),
        })
    }
}

/// Starts a delivery queue for one task; callbacks pushed into it are sent in order.
pub(crate) fn start_queue(shared: Arc<Shared>, url: String) -> mpsc::UnboundedSender<Value> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Value>();
    tokio::spawn(async move {
        while let Some(body) = rx.recv().await {
            let delivered = deliver(&shared, &url, &body).await;
            let mut stats = lock(&shared.stats);
            if delivered {
                stats.callbacks_delivered += 1;
            } else {
                stats.callbacks_failed += 1;
            }
        }
    });
    tx
}

/// Whether a URL's host is loopback.
pub(crate) fn is_loopback_url(url: &str) -> bool {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return false;
    };
    match parsed.host_str() {
        Some(host) if host.eq_ignore_ascii_case("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

async fn deliver(shared: &Shared, url: &str, body: &Value) -> bool {
    let sender = &shared.callbacks;
    let task_id = body
        .get("task_id")
        .or_else(|| body.get("id"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let status = body
        .get("task_status")
        .or_else(|| body.get("status"))
        .and_then(Value::as_str)
        .unwrap_or("");
    if !sender.cfg.allow_non_loopback && !is_loopback_url(url) {
        tracing::warn!(target: "kling_sim::callbacks", task_id, "callback not sent: host is not loopback");
        return false;
    }
    let bytes = match serde_json::to_vec(body) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(target: "kling_sim::callbacks", task_id, error = %e, "callback body not encodable");
            return false;
        }
    };
    // One id per callback, kept across retries, as Standard Webhooks receivers deduplicate on it.
    let webhook_id = rand::thread_rng()
        .gen_range(1_000_000_000_000_000_000u64..10_000_000_000_000_000_000)
        .to_string();
    for attempt in 1..=sender.cfg.attempts {
        let mut request = sender
            .client
            .post(url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/json; charset=utf-8",
            )
            .body(bytes.clone());
        if let Some(secret) = &sender.secret {
            let timestamp = now_ms() / 1000;
            match webhook::sign(secret.expose(), &webhook_id, timestamp, &bytes) {
                Ok(signature) => {
                    request = request
                        .header(HEADER_ID, &webhook_id)
                        .header(HEADER_TIMESTAMP, timestamp.to_string())
                        .header(HEADER_SIGNATURE, signature);
                }
                Err(e) => {
                    tracing::warn!(target: "kling_sim::callbacks", task_id, error = %e, "callback not signed");
                }
            }
        }
        match request.send().await {
            Ok(resp) if resp.status().is_success() => {
                tracing::debug!(target: "kling_sim::callbacks", task_id, status, attempt, "callback delivered");
                return true;
            }
            Ok(resp) => {
                tracing::debug!(target: "kling_sim::callbacks", task_id, status, attempt, http_status = resp.status().as_u16(), "callback refused");
            }
            Err(e) => {
                tracing::debug!(target: "kling_sim::callbacks", task_id, status, attempt, error = %e.without_url(), "callback failed");
            }
        }
        if attempt < sender.cfg.attempts {
            tokio::time::sleep(Duration::from_millis(sender.cfg.retry_delay_ms)).await;
        }
    }
    tracing::warn!(target: "kling_sim::callbacks", task_id, status, "callback given up");
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_hosts_count_as_loopback() {
        assert!(is_loopback_url("http://127.0.0.1:9000/cb"));
        assert!(is_loopback_url("http://127.8.0.1/cb"));
        assert!(is_loopback_url("http://[::1]:80/cb"));
        assert!(is_loopback_url("https://LOCALHOST/cb"));
        assert!(!is_loopback_url("http://10.0.0.1/cb"));
        assert!(!is_loopback_url("http://example.test/cb"));
        assert!(!is_loopback_url("not a url"));
    }
}
