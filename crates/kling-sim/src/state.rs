//! The state shared by every request and background task of one simulator instance.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use crate::callbacks::CallbackSender;
use crate::config::SimConfig;
use crate::error::SimError;
use crate::faults::{FaultDecision, FaultPlan};
use crate::ids::IdGen;
use crate::stats::{InjectedFault, SimStats};
use crate::store::Store;

/// One simulator instance's shared state.
#[derive(Debug)]
pub(crate) struct Shared {
    pub cfg: SimConfig,
    pub faults: FaultPlan,
    pub ids: Mutex<IdGen>,
    pub store: Mutex<Store>,
    pub stats: Mutex<SimStats>,
    pub callbacks: CallbackSender,
    requests: AtomicU64,
    shutdown: watch::Sender<bool>,
}

/// Locks a mutex, carrying on after a panic elsewhere: every critical section here leaves the
/// data consistent, so a poisoned lock holds nothing half-written.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Milliseconds since the Unix epoch; 0 if the clock is before 1970.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Completes once the instance shuts down (or its state is gone).
pub(crate) async fn stopped(signal: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped at once so this future stays `Send`.
    let _ = signal.wait_for(|stopped| *stopped).await;
}

impl Shared {
    pub fn new(cfg: SimConfig) -> Result<Arc<Self>, SimError> {
        cfg.validate()?;
        let callbacks = CallbackSender::new(&cfg)?;
        let (shutdown, _) = watch::channel(false);
        Ok(Arc::new(Self {
            faults: FaultPlan::new(cfg.faults.clone()),
            ids: Mutex::new(IdGen::new(cfg.faults.seed)),
            store: Mutex::new(Store::new(&cfg)),
            stats: Mutex::new(SimStats::default()),
            callbacks,
            requests: AtomicU64::new(0),
            shutdown,
            cfg,
        }))
    }

    /// Numbers an arriving request and decides its faults.
    pub fn admit_request(&self) -> FaultDecision {
        let request_no = self.requests.fetch_add(1, Ordering::SeqCst);
        let decision = self.faults.decide(request_no);
        let mut stats = lock(&self.stats);
        stats.requests_total += 1;
        if !decision.is_clean() {
            stats.faults.push(InjectedFault {
                request_no,
                decision,
            });
        }
        decision
    }

    pub fn count_route(&self, label: &str) {
        *lock(&self.stats)
            .requests_by_route
            .entry(label.to_owned())
            .or_insert(0) += 1;
    }

    pub fn request_id(&self) -> String {
        lock(&self.ids).request_id()
    }

    pub fn numeric_id(&self) -> String {
        lock(&self.ids).numeric_id()
    }

    /// A receiver that turns true when the instance shuts down.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Tells background work (lifecycles, callbacks) to stop.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }
}
