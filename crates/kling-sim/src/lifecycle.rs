//! Drives one task through `submitted` → `processing` → `succeed`/`failed` in the background,
//! on the configured timings, queueing a callback at each configured transition.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, watch};

use crate::callbacks;
use crate::state::{lock, now_ms, Shared};

/// Starts the background driver for a stored task.
pub(crate) fn start(shared: Arc<Shared>, task_id: String, callback_url: Option<String>) {
    tokio::spawn(drive(shared, task_id, callback_url));
}

async fn drive(shared: Arc<Shared>, task_id: String, callback_url: Option<String>) {
    let mut shutdown = shared.shutdown_signal();
    let queue = callback_url.map(|url| callbacks::start_queue(Arc::clone(&shared), url));
    let cb = shared.cfg.callbacks.clone();
    let timing = shared.cfg.lifecycle.clone();

    if cb.on_submitted {
        let snapshot = lock(&shared.store).snapshot(&task_id);
        send(queue.as_ref(), snapshot);
    }
    if !pause(timing.to_processing_ms, &mut shutdown).await {
        return;
    }
    let snapshot = lock(&shared.store).start(&task_id, now_ms());
    if cb.on_processing {
        send(queue.as_ref(), snapshot);
    }
    if !pause(timing.to_final_ms, &mut shutdown).await {
        return;
    }
    let snapshot = {
        let mut store = lock(&shared.store);
        store.finish(&task_id, now_ms(), &shared.cfg, || shared.numeric_id())
    };
    let status = snapshot
        .as_ref()
        .and_then(|s| s.get("task_status").or_else(|| s.get("status")))
        .and_then(serde_json::Value::as_str)
        .unwrap_or("");
    tracing::debug!(target: "kling_sim::lifecycle", task_id = %task_id, status, "task finished");
    if cb.on_final {
        send(queue.as_ref(), snapshot);
    }
}

fn send(queue: Option<&mpsc::UnboundedSender<Value>>, snapshot: Option<Value>) {
    if let (Some(queue), Some(snapshot)) = (queue, snapshot) {
        // A closed queue means the runtime is going away; the callback is moot then.
        let _ = queue.send(snapshot);
    }
}

/// Sleeps for `ms`; false when the simulator shuts down first.
async fn pause(ms: u64, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(Duration::from_millis(ms)) => true,
        () = crate::state::stopped(shutdown) => false,
    }
}
