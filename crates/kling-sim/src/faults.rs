//! Deterministic fault injection. Every request gets a number in arrival order, and the faults
//! for request `k` come from a generator seeded with `(seed, k)` alone, so the same seed and
//! the same request order always give the same faults, whatever the timing.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::error::SimError;

/// Fault rates (each a probability in [0, 1]) and the seed that drives them. All rates are 0
/// by default: no fault unless asked for.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultConfig {
    /// Seed for faults and for generated ids.
    pub seed: u64,
    /// Answer 500/5000, 503/5001 or 504/5002 without doing the work.
    pub server_error_rate: f64,
    /// Delay the answer by `latency_ms`.
    pub latency_rate: f64,
    pub latency_ms: u64,
    /// Close the connection before handling the request.
    pub drop_before_rate: f64,
    /// Handle the request (a create makes its task) and then close the connection unanswered.
    pub drop_after_rate: f64,
    /// Answer HTTP 200 with code 5000 and no `data`, without doing the work.
    pub nonzero_code_rate: f64,
    /// A created task succeeds with only `watermark_url` filled and `url` absent.
    pub watermark_only_rate: f64,
    /// A created task succeeds with `url: ""`.
    pub empty_url_rate: f64,
    /// A created task succeeds with an empty `videos` (or `images`) array.
    pub empty_outputs_rate: f64,
    /// Adds `Retry-After: <secs>` to 429 answers (Kling sends none, section 11.5).
    pub retry_after_secs: Option<u32>,
}

impl FaultConfig {
    pub(crate) fn validate(&self) -> Result<(), SimError> {
        let rates = [
            ("server_error_rate", self.server_error_rate),
            ("latency_rate", self.latency_rate),
            ("drop_before_rate", self.drop_before_rate),
            ("drop_after_rate", self.drop_after_rate),
            ("nonzero_code_rate", self.nonzero_code_rate),
            ("watermark_only_rate", self.watermark_only_rate),
            ("empty_url_rate", self.empty_url_rate),
            ("empty_outputs_rate", self.empty_outputs_rate),
        ];
        for (name, rate) in rates {
            if !(0.0..=1.0).contains(&rate) {
                return Err(SimError::invalid(
                    format!("faults.{name}"),
                    "must be within [0, 1]",
                ));
            }
        }
        Ok(())
    }
}

/// Where a dropped connection is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DropPoint {
    BeforeHandling,
    AfterHandling,
}

/// Which 5xx answer is injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerFault {
    /// 500 / 5000.
    Internal,
    /// 503 / 5001.
    Unavailable,
    /// 504 / 5002.
    Timeout,
}

/// How a successful task's results are spoiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultAnomaly {
    WatermarkOnly,
    EmptyUrl,
    EmptyOutputs,
}

/// The faults chosen for one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FaultDecision {
    pub delay_ms: u64,
    pub drop: Option<DropPoint>,
    pub server_error: Option<ServerFault>,
    pub nonzero_code: bool,
    /// Applies only when the request creates a task.
    pub result: Option<ResultAnomaly>,
}

impl FaultDecision {
    /// Whether nothing is injected.
    pub fn is_clean(&self) -> bool {
        *self == FaultDecision::default()
    }
}

/// Decides faults per request number.
#[derive(Debug, Clone)]
pub struct FaultPlan {
    cfg: FaultConfig,
}

impl FaultPlan {
    pub fn new(cfg: FaultConfig) -> Self {
        Self { cfg }
    }

    /// The faults for the request numbered `request_no` (0 for the first request).
    pub fn decide(&self, request_no: u64) -> FaultDecision {
        let c = &self.cfg;
        // Mixing the request number with a large odd constant spreads neighbouring numbers
        // over unrelated seeds.
        let mut rng =
            StdRng::seed_from_u64(c.seed ^ request_no.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        // Every roll is drawn whatever the rates, so changing one rate never shifts the
        // others' outcomes.
        let mut roll = |rate: f64| rng.gen::<f64>() < rate;
        let latency = roll(c.latency_rate);
        let drop_before = roll(c.drop_before_rate);
        let drop_after = roll(c.drop_after_rate);
        let server_error = roll(c.server_error_rate);
        let nonzero = roll(c.nonzero_code_rate);
        let watermark_only = roll(c.watermark_only_rate);
        let empty_url = roll(c.empty_url_rate);
        let empty_outputs = roll(c.empty_outputs_rate);
        let which_5xx = rng.gen_range(0..3u8);

        let drop = if drop_before {
            Some(DropPoint::BeforeHandling)
        } else if drop_after {
            Some(DropPoint::AfterHandling)
        } else {
            None
        };
        let server_error = server_error.then_some(match which_5xx {
            0 => ServerFault::Internal,
            1 => ServerFault::Unavailable,
            _ => ServerFault::Timeout,
        });
        let result = if watermark_only {
            Some(ResultAnomaly::WatermarkOnly)
        } else if empty_url {
            Some(ResultAnomaly::EmptyUrl)
        } else if empty_outputs {
            Some(ResultAnomaly::EmptyOutputs)
        } else {
            None
        };
        FaultDecision {
            delay_ms: if latency { c.latency_ms } else { 0 },
            drop,
            server_error,
            nonzero_code: nonzero,
            result,
        }
    }

    /// Seconds for a `Retry-After` header on 429 answers, when configured.
    pub fn retry_after_secs(&self) -> Option<u32> {
        self.cfg.retry_after_secs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noisy(seed: u64) -> FaultPlan {
        FaultPlan::new(FaultConfig {
            seed,
            server_error_rate: 0.3,
            drop_before_rate: 0.1,
            nonzero_code_rate: 0.2,
            empty_url_rate: 0.2,
            ..FaultConfig::default()
        })
    }

    #[test]
    fn same_seed_gives_same_sequence() {
        let a: Vec<_> = (0..200).map(|k| noisy(7).decide(k)).collect();
        let b: Vec<_> = (0..200).map(|k| noisy(7).decide(k)).collect();
        assert_eq!(a, b);
        assert!(a.iter().any(|d| d.server_error.is_some()));
        assert!(a.iter().any(FaultDecision::is_clean));
    }

    #[test]
    fn different_seeds_give_different_sequences() {
        let a: Vec<_> = (0..200).map(|k| noisy(1).decide(k)).collect();
        let b: Vec<_> = (0..200).map(|k| noisy(2).decide(k)).collect();
        assert_ne!(a, b);
    }

    #[test]
    fn zero_rates_inject_nothing() {
        let plan = FaultPlan::new(FaultConfig {
            seed: 99,
            ..FaultConfig::default()
        });
        assert!((0..500).all(|k| plan.decide(k).is_clean()));
    }

    #[test]
    fn out_of_range_rates_are_rejected() {
        let cfg = FaultConfig {
            drop_after_rate: 1.5,
            ..FaultConfig::default()
        };
        assert!(cfg.validate().is_err());
        let cfg = FaultConfig {
            latency_rate: f64::NAN,
            ..FaultConfig::default()
        };
        assert!(cfg.validate().is_err());
    }
}
