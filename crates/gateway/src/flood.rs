//! How many refusals of unauthenticated requests are recorded one by one.
//!
//! A refusal of a caller who proved no identity (no token, a bad signature, an unknown callback
//! token) costs the caller nothing, and each one would otherwise be a record: a single client
//! with a few connections wrote thousands of `gateway.denied` records a second, enough to fill a
//! disk in hours and so stop every audited call. Each source address may have a burst of such
//! refusals recorded one by one, refilled at a steady rate, within a cap for all sources
//! together; the refusals beyond it are counted per source and written as one
//! `gateway.denied_summary` record per source every [`SUMMARY_INTERVAL`], so none goes
//! unrecorded, and a flood costs a record per source and interval.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// Refusals of one source recorded one by one in a burst.
pub const SOURCE_BURST: f64 = 20.0;
/// Refusals of one source recorded one by one per second, once its burst is spent.
pub const SOURCE_RATE: f64 = 10.0;
/// Refusals of all sources together recorded one by one in a burst.
pub const GLOBAL_BURST: f64 = 200.0;
/// Refusals of all sources together recorded one by one per second.
pub const GLOBAL_RATE: f64 = 100.0;
/// How often the counted refusals are written as summaries.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(10);
/// Sources tracked at once; when full, sources whose budget is whole again are forgotten, and
/// a new source finds no budget of its own until there is room.
const MAX_SOURCES: usize = 4096;
/// Sources with a summary of their own per interval; the rest are summed in one.
const MAX_SUMMARIES: usize = 256;

/// A token bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Self {
        Bucket {
            tokens: burst,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant, burst: f64, rate: f64) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.at = now;
    }

    fn take(&mut self, now: Instant, burst: f64, rate: f64) -> bool {
        self.refill(now, burst, rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The refusals of one source (or of the sources without a summary of their own) counted
/// since the last summary.
#[derive(Debug, Clone, Default, PartialEq)]
struct Counted {
    refusals: u64,
    first_unix_ms: u64,
    last_unix_ms: u64,
    reasons: BTreeMap<&'static str, u64>,
}

impl Counted {
    fn add(&mut self, reason: &'static str, now_ms: u64) {
        if self.refusals == 0 {
            self.first_unix_ms = now_ms;
        }
        self.refusals += 1;
        self.last_unix_ms = now_ms;
        *self.reasons.entry(reason).or_default() += 1;
    }
}

#[derive(Debug)]
struct Inner {
    global: Bucket,
    sources: HashMap<IpAddr, Bucket>,
    counted: HashMap<IpAddr, Counted>,
    others: Counted,
}

/// The budget of refusals recorded one by one, and the count of the others.
#[derive(Debug)]
pub struct DenialBudget {
    inner: Mutex<Inner>,
}

impl Default for DenialBudget {
    fn default() -> Self {
        DenialBudget::new(Instant::now())
    }
}

/// One `gateway.denied_summary` record's details.
pub type Summary = Value;

impl DenialBudget {
    fn new(now: Instant) -> Self {
        DenialBudget {
            inner: Mutex::new(Inner {
                global: Bucket::full(GLOBAL_BURST, now),
                sources: HashMap::new(),
                counted: HashMap::new(),
                others: Counted::default(),
            }),
        }
    }

    /// Whether a refusal of an unauthenticated request from `source` is recorded on its own;
    /// when not, it is counted for the next summary.
    pub fn admit(&self, source: IpAddr, reason: &'static str) -> bool {
        self.admit_at(source, reason, Instant::now(), unix_ms())
    }

    fn admit_at(&self, source: IpAddr, reason: &'static str, now: Instant, now_ms: u64) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let inner = &mut *inner;
        if !inner.sources.contains_key(&source) && inner.sources.len() >= MAX_SOURCES {
            // Forget the sources whose budget has refilled: they would start whole anyway.
            inner.sources.retain(|_, bucket| {
                bucket.refill(now, SOURCE_BURST, SOURCE_RATE);
                bucket.tokens < SOURCE_BURST
            });
        }
        let own = if let Some(bucket) = inner.sources.get_mut(&source) {
            bucket.take(now, SOURCE_BURST, SOURCE_RATE)
        } else if inner.sources.len() < MAX_SOURCES {
            let mut bucket = Bucket::full(SOURCE_BURST, now);
            let taken = bucket.take(now, SOURCE_BURST, SOURCE_RATE);
            inner.sources.insert(source, bucket);
            taken
        } else {
            false
        };
        // The global budget is spent only by refusals their source's budget admits.
        if own && inner.global.take(now, GLOBAL_BURST, GLOBAL_RATE) {
            return true;
        }
        let room = inner.counted.len() < MAX_SUMMARIES || inner.counted.contains_key(&source);
        let counted = if room {
            inner.counted.entry(source).or_default()
        } else {
            &mut inner.others
        };
        counted.add(reason, now_ms);
        false
    }

    /// Takes the counts since the last call, as the details of one summary record per
    /// source (and one for the sources without a summary of their own).
    pub fn take_summaries(&self) -> Vec<Summary> {
        let (counted, others) = {
            let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            let others = std::mem::take(&mut inner.others);
            (std::mem::take(&mut inner.counted), others)
        };
        let mut counted: Vec<(Option<IpAddr>, Counted)> =
            counted.into_iter().map(|(ip, c)| (Some(ip), c)).collect();
        counted.sort_by_key(|(ip, _)| *ip);
        if others.refusals > 0 {
            counted.push((None, others));
        }
        counted
            .into_iter()
            .map(|(source, c)| {
                // A null source stands for the sources past the summaries' cap, summed.
                json!({
                    "source_ip": source.map(|ip| ip.to_string()),
                    "refusals": c.refusals,
                    "reasons": c.reasons,
                    "first_unix_ms": c.first_unix_ms,
                    "last_unix_ms": c.last_unix_ms,
                    "recorded_one_by_one": format!(
                        "{SOURCE_BURST} at once and {SOURCE_RATE}/s per source, \
                         {GLOBAL_BURST} at once and {GLOBAL_RATE}/s in all"
                    ),
                })
            })
            .collect()
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn a_source_has_its_burst_recorded_then_its_rate_and_the_rest_counted() {
        let start = Instant::now();
        let budget = DenialBudget::new(start);
        let admitted = (0..50)
            .filter(|_| budget.admit_at(ip(1), "no-token", start, 1_000))
            .count();
        assert_eq!(admitted, SOURCE_BURST as usize);
        // A second later the source has its rate's worth again.
        let later = start + Duration::from_secs(1);
        let admitted = (0..50)
            .filter(|_| budget.admit_at(ip(1), "bad-signature", later, 2_000))
            .count();
        assert_eq!(admitted, SOURCE_RATE as usize);
        let summaries = budget.take_summaries();
        assert_eq!(summaries.len(), 1);
        let s = &summaries[0];
        assert_eq!(s["source_ip"], "10.0.0.1");
        assert_eq!(s["refusals"], 100 - 30);
        assert_eq!(s["reasons"]["no-token"], 30);
        assert_eq!(s["reasons"]["bad-signature"], 40);
        assert_eq!(s["first_unix_ms"], 1_000);
        assert_eq!(s["last_unix_ms"], 2_000);
        assert!(budget.take_summaries().is_empty(), "taken once");
    }

    #[test]
    fn other_sources_keep_their_own_budget_within_the_global_one() {
        let now = Instant::now();
        let budget = DenialBudget::new(now);
        for _ in 0..100 {
            budget.admit_at(ip(1), "no-token", now, 0);
        }
        assert!(
            budget.admit_at(ip(2), "no-token", now, 0),
            "a flood of one spares another"
        );
        // Many sources: the global burst bounds them all together.
        let admitted = (0..=255u8)
            .flat_map(|a| (0..4u8).map(move |b| IpAddr::from([10, 1, a, b])))
            .filter(|source| budget.admit_at(*source, "no-token", now, 0))
            .count();
        assert_eq!(admitted, GLOBAL_BURST as usize - SOURCE_BURST as usize - 1);
        let summaries = budget.take_summaries();
        let total: u64 = summaries
            .iter()
            .map(|s| s["refusals"].as_u64().unwrap())
            .sum();
        assert_eq!(total, 80 + 1024 - admitted as u64);
        assert_eq!(summaries.len(), MAX_SUMMARIES + 1, "the rest summed in one");
        let others = summaries.last().unwrap();
        assert_eq!(others["source_ip"], Value::Null);
        assert!(others["refusals"].as_u64().unwrap() > 1);
    }

    #[test]
    fn sources_whose_budget_refilled_make_room_for_new_ones() {
        let now = Instant::now();
        let budget = DenialBudget::new(now);
        for n in 0..MAX_SOURCES as u32 {
            let [a, b, c, d] = n.to_be_bytes();
            budget.admit_at(IpAddr::from([11, b, c, d ^ a]), "no-token", now, 0);
        }
        let later = now + Duration::from_secs(5);
        assert!(budget.admit_at(ip(9), "no-token", later, 0));
    }
}
