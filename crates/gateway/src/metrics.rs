//! Prometheus text exposition, hand-rolled on atomics.
//!
//! Histograms are fixed-bucket atomic counters, so observing never locks. Request counts are
//! keyed by route template and outcome under short-lived mutexes (never held across an
//! await). Both are kept in per-thread stripes, added up when scraped; route labels come from [`crate::inspect::route_label`], which folds unknown paths
//! into `other`, so the label set stays bounded whatever callers send.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Bucket bounds in seconds, from 50 µs to 60 s: overheads are sub-millisecond, upstream
/// calls take up to a minute.
const BOUNDS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Stripes of each metric, so that threads counting at once do not contend for one cache
/// line: a thread writes to its own stripe, and a scrape adds the stripes up.
const STRIPES: usize = 8;

/// The stripe of the calling thread: threads take stripes in turn as they first count.
fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    STRIPE.with(|s| *s)
}

/// One stripe of a histogram, on cache lines of its own.
#[derive(Debug)]
#[repr(align(128))]
struct HistogramStripe {
    buckets: [AtomicU64; BUCKETS],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Default for HistogramStripe {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
        }
    }
}

const BUCKETS: usize = BOUNDS.len();

/// A latency histogram.
#[derive(Debug)]
pub struct Histogram {
    stripes: Box<[HistogramStripe; STRIPES]>,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            stripes: Box::new(std::array::from_fn(|_| HistogramStripe::default())),
        }
    }
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let stripe = &self.stripes[stripe()];
        let secs = d.as_secs_f64();
        if let Some(i) = BOUNDS.iter().position(|b| secs <= *b) {
            stripe.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        stripe.count.fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        stripe.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.stripes
            .iter()
            .map(|s| s.count.load(Ordering::Relaxed))
            .sum()
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, bound) in BOUNDS.iter().enumerate() {
            cumulative += self
                .stripes
                .iter()
                .map(|s| s.buckets[i].load(Ordering::Relaxed))
                .sum::<u64>();
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        // Read after the buckets, so that a scrape racing observations never shows a count
        // below the last bucket's (a bucket is bumped before its count).
        let count = self.count().max(cumulative);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum_ns: u64 = self
            .stripes
            .iter()
            .map(|s| s.sum_ns.load(Ordering::Relaxed))
            .fold(0, u64::saturating_add);
        let sum = sum_ns as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// How a request ended, for the request counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// Forwarded; upstream answered with code 0.
    Ok,
    /// Forwarded; upstream answered with an error status or non-zero code.
    KlingError,
    /// Forwarded; no usable answer (timeout, connection failure).
    UpstreamError,
    /// Refused by caller authentication.
    AuthFailed,
    /// Refused because the task belongs to another actor (or to nobody known).
    NotOwner,
    /// Refused because the audit ledger could not record the request.
    AuditUnavailable,
    /// Refused for its body (too large, or cut short).
    BadRequest,
    /// Refused because request bodies already held use up the gateway's buffer budget.
    Busy,
}

impl Outcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::KlingError => "kling_error",
            Self::UpstreamError => "upstream_error",
            Self::AuthFailed => "auth_failed",
            Self::NotOwner => "not_owner",
            Self::AuditUnavailable => "audit_unavailable",
            Self::BadRequest => "bad_request",
            Self::Busy => "busy",
        }
    }
}

/// Request counts by route, then outcome.
type RequestCounts = BTreeMap<String, BTreeMap<Outcome, u64>>;

/// Every gateway metric.
#[derive(Debug, Default)]
pub struct Metrics {
    /// By route, then outcome, in stripes (see [`STRIPES`]): a known route is counted
    /// without allocating its key.
    requests: [Mutex<RequestCounts>; STRIPES],
    /// Time spent waiting for the upstream.
    pub upstream_latency: Histogram,
    /// Time the gateway added (total minus upstream wait).
    pub overhead: Histogram,
    /// Time from submitting a record to its durable acknowledgement.
    pub ledger_append: Histogram,
    /// Requests forwarded without a request record (fail-open).
    pub unaudited: AtomicU64,
    /// Answers returned without a response record.
    pub unrecorded_responses: AtomicU64,
    /// Appends the ledger refused.
    pub ledger_failures: AtomicU64,
    /// Callbacks received on the callback endpoint.
    pub callbacks_received: AtomicU64,
    /// Callbacks refused (bad token, body too large).
    pub callbacks_rejected: AtomicU64,
    /// Relay attempts that got a 2xx.
    pub relay_delivered: AtomicU64,
    /// Relay attempts that failed.
    pub relay_failed: AtomicU64,
    /// Ledger reopen successes after a failure.
    pub ledger_reopens: AtomicU64,
    /// Refusals of unauthenticated requests counted for a summary record instead of recorded
    /// one by one (see `flood`).
    pub denials_summarized: AtomicU64,
}

impl Metrics {
    /// Counts one request.
    pub fn count_request(&self, route: &str, outcome: Outcome) {
        let mut map = self.requests[stripe()]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let outcomes = match map.get_mut(route) {
            Some(outcomes) => outcomes,
            None => map.entry(route.to_owned()).or_default(),
        };
        *outcomes.entry(outcome).or_insert(0) += 1;
    }

    /// Requests counted for a route and outcome.
    pub fn requests(&self, route: &str, outcome: Outcome) -> u64 {
        self.requests
            .iter()
            .map(|stripe| {
                let map = stripe.lock().unwrap_or_else(PoisonError::into_inner);
                map.get(route)
                    .and_then(|outcomes| outcomes.get(&outcome))
                    .copied()
                    .unwrap_or(0)
            })
            .sum()
    }

    /// Every stripe's request counts added up.
    fn request_totals(&self) -> RequestCounts {
        let mut totals = RequestCounts::new();
        for stripe in &self.requests {
            let map = stripe.lock().unwrap_or_else(PoisonError::into_inner);
            for (route, outcomes) in map.iter() {
                let into = totals.entry(route.clone()).or_default();
                for (outcome, n) in outcomes {
                    *into.entry(*outcome).or_insert(0) += n;
                }
            }
        }
        totals
    }

    /// The exposition text, with gauges read by the caller at scrape time.
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::with_capacity(8192);
        out.push_str(
            "# HELP kling_gateway_requests_total Requests by route template and outcome.\n",
        );
        out.push_str("# TYPE kling_gateway_requests_total counter\n");
        {
            let map = self.request_totals();
            for (route, outcomes) in map.iter() {
                for (outcome, n) in outcomes {
                    let _ = writeln!(
                        out,
                        "kling_gateway_requests_total{{route=\"{}\",outcome=\"{}\"}} {n}",
                        escape_label(route),
                        outcome.as_str()
                    );
                }
            }
        }
        self.upstream_latency.render(
            &mut out,
            "kling_gateway_upstream_latency_seconds",
            "Time waiting for the Kling API.",
        );
        self.overhead.render(
            &mut out,
            "kling_gateway_overhead_seconds",
            "Time the gateway added to a request, auditing included.",
        );
        self.ledger_append.render(
            &mut out,
            "kling_gateway_ledger_append_seconds",
            "Time until an audit record was durable.",
        );
        let counters = [
            (
                "kling_gateway_unaudited_requests_total",
                "Requests forwarded without a request record (fail-open).",
                &self.unaudited,
            ),
            (
                "kling_gateway_unrecorded_responses_total",
                "Answers returned without a response record.",
                &self.unrecorded_responses,
            ),
            (
                "kling_gateway_ledger_failures_total",
                "Audit records the ledger refused.",
                &self.ledger_failures,
            ),
            (
                "kling_gateway_callbacks_received_total",
                "Callbacks received from Kling.",
                &self.callbacks_received,
            ),
            (
                "kling_gateway_callbacks_rejected_total",
                "Callbacks refused (unknown token, too large).",
                &self.callbacks_rejected,
            ),
            (
                "kling_gateway_callback_relay_delivered_total",
                "Callback relay attempts answered 2xx.",
                &self.relay_delivered,
            ),
            (
                "kling_gateway_callback_relay_failed_total",
                "Callback relay attempts that failed.",
                &self.relay_failed,
            ),
            (
                "kling_gateway_ledger_reopens_total",
                "Times the ledger was reopened after a failure.",
                &self.ledger_reopens,
            ),
            (
                "kling_gateway_denials_summarized_total",
                "Refusals of unauthenticated requests recorded in a summary, not one by one.",
                &self.denials_summarized,
            ),
        ];
        for (name, help, counter) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", counter.load(Ordering::Relaxed));
        }
        let gauges = [
            (
                "kling_gateway_ledger_queue_depth",
                "Audit records waiting for the writer.",
                gauges.queue_depth as u64,
            ),
            (
                "kling_gateway_ledger_records",
                "Durable records in the ledger.",
                gauges.ledger_size,
            ),
            (
                "kling_gateway_ledger_writable",
                "1 when the ledger accepts records.",
                u64::from(gauges.ledger_ok),
            ),
            (
                "kling_gateway_body_bytes_held",
                "Bytes of request bodies held now (limit: server.max_buffered_bytes).",
                gauges.body_bytes_held as u64,
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        out
    }
}

/// Values read at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    /// Audit records waiting for the writer.
    pub queue_depth: usize,
    /// Durable records in the ledger.
    pub ledger_size: u64,
    /// The ledger accepts records.
    pub ledger_ok: bool,
    /// Bytes of request bodies held.
    pub body_bytes_held: usize,
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(40));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(100));
        let mut out = String::new();
        h.render(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"0.00005\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.005\"} 2\n"));
        assert!(out.contains("x_bucket{le=\"60\"} 2\n"));
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n"));
        assert!(out.contains("x_count 3\n"));
    }

    #[test]
    fn exposition_has_counters_and_gauges() {
        let m = Metrics::default();
        m.count_request("/v1/videos/text2video", Outcome::Ok);
        m.count_request("/v1/videos/text2video", Outcome::Ok);
        m.count_request("other", Outcome::AuthFailed);
        m.unaudited.fetch_add(3, Ordering::Relaxed);
        let text = m.render(&Gauges {
            queue_depth: 4,
            ledger_size: 10,
            ledger_ok: true,
            body_bytes_held: 2048,
        });
        assert!(text.contains(
            "kling_gateway_requests_total{route=\"/v1/videos/text2video\",outcome=\"ok\"} 2\n"
        ));
        assert!(text.contains("outcome=\"auth_failed\"} 1\n"));
        assert!(text.contains("kling_gateway_unaudited_requests_total 3\n"));
        assert!(text.contains("kling_gateway_ledger_queue_depth 4\n"));
        assert!(text.contains("kling_gateway_ledger_writable 1\n"));
        assert!(text.contains("kling_gateway_body_bytes_held 2048\n"));
        assert_eq!(m.requests("other", Outcome::AuthFailed), 1);
    }

    #[test]
    fn counts_from_many_threads_add_up_across_stripes() {
        let m = Metrics::default();
        std::thread::scope(|scope| {
            for t in 0..(2 * STRIPES) {
                let m = &m;
                scope.spawn(move || {
                    for _ in 0..100 {
                        m.count_request("/account/costs", Outcome::Ok);
                        m.overhead
                            .observe(Duration::from_micros(40 + t as u64 * 1000));
                    }
                });
            }
        });
        assert_eq!(
            m.requests("/account/costs", Outcome::Ok),
            200 * STRIPES as u64
        );
        assert_eq!(m.overhead.count(), 200 * STRIPES as u64);
        let text = m.render(&Gauges::default());
        assert!(text.contains(&format!(
            "kling_gateway_requests_total{{route=\"/account/costs\",outcome=\"ok\"}} {}\n",
            200 * STRIPES
        )));
        // Thread t observed 40 µs + t ms: only thread 0's observations fall in the first bucket.
        assert!(text.contains("kling_gateway_overhead_seconds_bucket{le=\"0.00005\"} 100\n"));
        assert!(text.contains(&format!(
            "kling_gateway_overhead_seconds_bucket{{le=\"+Inf\"}} {}\n",
            200 * STRIPES
        )));
        let sum_us: u64 = (0..2 * STRIPES as u64).map(|t| 100 * (40 + t * 1000)).sum();
        assert!(text.contains(&format!(
            "kling_gateway_overhead_seconds_sum {}\n",
            sum_us as f64 / 1e6
        )));
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
