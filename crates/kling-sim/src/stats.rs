//! Counters a test can read back: what the simulated upstream received and did. The gateway's
//! fail-closed test uses them to prove that nothing reached the upstream.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::faults::FaultDecision;

/// A snapshot of the simulator's counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SimStats {
    /// Every HTTP request that arrived, including those whose connection was dropped.
    pub requests_total: u64,
    /// Requests per route template, e.g. `"POST /v1/videos/text2video"`,
    /// `"GET /v1/videos/text2video/{id}"`; unknown routes count as `"unmatched"`. Requests
    /// dropped before handling are not counted here.
    pub requests_by_route: BTreeMap<String, u64>,
    /// Creates that made a task.
    pub creates_accepted: u64,
    /// Callback POSTs answered with a 2xx status.
    pub callbacks_delivered: u64,
    /// Callbacks given up on after every attempt (or not sent because their host is not
    /// allowed).
    pub callbacks_failed: u64,
    /// Every request that had a fault injected, in arrival order.
    pub faults: Vec<InjectedFault>,
}

impl SimStats {
    /// Requests seen for one route template.
    pub fn route(&self, label: &str) -> u64 {
        self.requests_by_route.get(label).copied().unwrap_or(0)
    }
}

/// One request's injected faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct InjectedFault {
    /// The request's number in arrival order, starting at 0.
    pub request_no: u64,
    pub decision: FaultDecision,
}
