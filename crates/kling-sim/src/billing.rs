//! Resource packs and unit rates: what a finished task costs and which pack pays for it.
//!
//! Rates follow the published figures of reference section 12.4 where one applies, and
//! otherwise charge 1 unit per 5 s of video and 1 unit per image or task. Failed tasks cost
//! nothing (section 16.10).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::SimError;
use crate::families::{Family, PackType};
use crate::units::Units;

/// The simulated account's packs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccountConfig {
    pub packs: Vec<PackConfig>,
}

impl Default for AccountConfig {
    fn default() -> Self {
        let pack = |name: &str, pack_type, total| PackConfig {
            name: name.to_owned(),
            pack_type,
            total,
            remaining: None,
        };
        Self {
            packs: vec![
                pack("Simulated video pack", PackType::Video, 1000.0),
                pack("Simulated image pack", PackType::Image, 1000.0),
                pack("Simulated try-on pack", PackType::TryOn, 100.0),
                pack("Simulated audio pack", PackType::Audio, 100.0),
            ],
        }
    }
}

impl AccountConfig {
    pub(crate) fn validate(&self) -> Result<(), SimError> {
        for (i, pack) in self.packs.iter().enumerate() {
            let field = |name: &str| format!("account.packs[{i}].{name}");
            let total = Units::from_f64(pack.total).ok_or_else(|| {
                SimError::invalid(field("total"), "must be a non-negative number")
            })?;
            if let Some(remaining) = pack.remaining {
                let remaining = Units::from_f64(remaining).ok_or_else(|| {
                    SimError::invalid(field("remaining"), "must be a non-negative number")
                })?;
                if remaining > total {
                    return Err(SimError::invalid(field("remaining"), "exceeds total"));
                }
            }
        }
        Ok(())
    }
}

/// One resource pack.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackConfig {
    pub name: String,
    #[serde(rename = "type")]
    pub pack_type: PackType,
    pub total: f64,
    /// Units left at start; defaults to `total`.
    #[serde(default)]
    pub remaining: Option<f64>,
}

/// Unit rates.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BillingConfig {
    /// Video units per second when no rule matches.
    pub video_units_per_second: f64,
    /// Units per output image (image and try-on packs) when no rule matches.
    pub units_per_image: f64,
    /// Units per audio task when no rule matches.
    pub units_per_audio_task: f64,
    /// Units charged by the synchronous face scan (`identify-face`).
    pub face_scan_units: f64,
    /// Specific rates; the first matching rule wins.
    pub rules: Vec<RateRule>,
}

impl Default for BillingConfig {
    fn default() -> Self {
        let rule =
            |family: Option<&str>, model: Option<&str>, mode: &str, per_second, per_output| {
                RateRule {
                    family: family.map(str::to_owned),
                    model: model.map(str::to_owned),
                    mode: Some(mode.to_owned()),
                    per_second,
                    per_output,
                }
            };
        Self {
            video_units_per_second: 0.2,
            units_per_image: 1.0,
            units_per_audio_task: 1.0,
            face_scan_units: 0.0,
            rules: vec![
                rule(None, None, "4k", Some(3.0), None),
                // New-standard 3.0 Turbo (12.4); its resolutions map to std/pro.
                rule(None, Some("kling-3.0-turbo"), "std", Some(0.8), None),
                rule(None, Some("kling-3.0-turbo"), "pro", Some(1.0), None),
                rule(None, Some("kling-v2-5-turbo"), "std", Some(0.3), None),
                rule(None, Some("kling-v2-5-turbo"), "pro", Some(0.5), None),
                rule(Some("videos/motion-control"), None, "std", Some(0.5), None),
                rule(Some("videos/motion-control"), None, "pro", Some(0.8), None),
                RateRule {
                    family: Some("images/multi-image2image".to_owned()),
                    model: None,
                    mode: None,
                    per_second: None,
                    per_output: Some(16.0),
                },
            ],
        }
    }
}

/// A specific rate: applies when every given matcher equals the task's value.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateRule {
    /// Family path without `/v1/`.
    #[serde(default)]
    pub family: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub mode: Option<String>,
    /// Units per second of output video.
    #[serde(default)]
    pub per_second: Option<f64>,
    /// Units per output (image, or task when there is no duration).
    #[serde(default)]
    pub per_output: Option<f64>,
}

/// What a charge is computed from.
#[derive(Debug, Clone, Copy)]
pub struct ChargeBasis<'a> {
    pub family: &'a Family,
    pub model: &'a str,
    pub mode: Option<&'a str>,
    /// Requested video length in seconds, when the task makes video.
    pub duration_secs: Option<u32>,
    /// Number of outputs (`n` for images, else 1).
    pub outputs: u32,
}

impl BillingConfig {
    pub(crate) fn validate(&self) -> Result<(), SimError> {
        let check = |field: String, v: f64| {
            Units::from_f64(v)
                .map(|_| ())
                .ok_or_else(|| SimError::invalid(field, "must be a non-negative number"))
        };
        check(
            "billing.video_units_per_second".into(),
            self.video_units_per_second,
        )?;
        check("billing.units_per_image".into(), self.units_per_image)?;
        check(
            "billing.units_per_audio_task".into(),
            self.units_per_audio_task,
        )?;
        check("billing.face_scan_units".into(), self.face_scan_units)?;
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.per_second.is_none() && rule.per_output.is_none() {
                return Err(SimError::invalid(
                    format!("billing.rules[{i}]"),
                    "needs per_second or per_output",
                ));
            }
            for v in rule.per_second.iter().chain(rule.per_output.iter()) {
                check(format!("billing.rules[{i}]"), *v)?;
            }
        }
        Ok(())
    }

    /// Units a successful task with this basis costs.
    pub fn charge(&self, basis: &ChargeBasis<'_>) -> Units {
        let rule = self.rules.iter().find(|r| {
            r.family.as_deref().is_none_or(|f| f == basis.family.path)
                && r.model.as_deref().is_none_or(|m| m == basis.model)
                && r.mode.as_deref().is_none_or(|m| Some(m) == basis.mode)
        });
        let (per_second, per_output) = match rule {
            Some(r) => (r.per_second, r.per_output),
            None => match basis.family.pack {
                PackType::Video => (Some(self.video_units_per_second), None),
                PackType::Image | PackType::TryOn => (None, Some(self.units_per_image)),
                PackType::Audio => (None, Some(self.units_per_audio_task)),
            },
        };
        let units = |v: f64| Units::from_f64(v).unwrap_or(Units::ZERO);
        match (per_second, basis.duration_secs, per_output) {
            (Some(rate), Some(secs), _) => units(rate).scaled(u64::from(secs), 1),
            (_, _, Some(rate)) => units(rate).scaled(u64::from(basis.outputs.max(1)), 1),
            // A per-second rate for a task without a duration: charge 5 s, the common length.
            (Some(rate), None, None) => units(rate).scaled(5, 1),
            (None, _, None) => Units::ZERO,
        }
    }
}

/// A pack at run time.
#[derive(Debug, Clone)]
pub struct Pack {
    pub name: String,
    /// 32 hex characters, derived from the name so it is stable across runs.
    pub id: String,
    pub pack_type: PackType,
    pub total: Units,
    pub remaining: Units,
}

impl Pack {
    pub(crate) fn from_config(cfg: &PackConfig) -> Self {
        let total = Units::from_f64(cfg.total).unwrap_or(Units::ZERO);
        let remaining = cfg.remaining.and_then(Units::from_f64).unwrap_or(total);
        let digest = Sha256::digest(cfg.name.as_bytes());
        let id = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
        Self {
            name: cfg.name.clone(),
            id,
            pack_type: cfg.pack_type,
            total,
            remaining,
        }
    }
}

/// Units left across all packs of a type.
pub fn remaining_of(packs: &[Pack], pack_type: PackType) -> Units {
    packs
        .iter()
        .filter(|p| p.pack_type == pack_type)
        .fold(Units::ZERO, |acc, p| acc.saturating_add(p.remaining))
}

/// Takes `amount` from the packs of a type, first pack first. A shortfall is forgiven rather
/// than driving a pack negative, because the create-time check already let the task run.
pub fn deduct(packs: &mut [Pack], pack_type: PackType, amount: Units) {
    let mut left = amount;
    for pack in packs.iter_mut().filter(|p| p.pack_type == pack_type) {
        if left.is_zero() {
            break;
        }
        let take = left.min(pack.remaining);
        pack.remaining = pack.remaining.saturating_sub(take);
        left = left.saturating_sub(take);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::families::by_path;

    fn basis<'a>(
        path: &str,
        model: &'a str,
        mode: &'a str,
        secs: Option<u32>,
        n: u32,
    ) -> ChargeBasis<'a> {
        ChargeBasis {
            family: by_path(path).unwrap(),
            model,
            mode: Some(mode),
            duration_secs: secs,
            outputs: n,
        }
    }

    #[test]
    fn default_rates_follow_published_figures() {
        let cfg = BillingConfig::default();
        let t2v = "videos/text2video";
        assert_eq!(
            cfg.charge(&basis(t2v, "kling-v1", "std", Some(5), 1))
                .to_string(),
            "1"
        );
        assert_eq!(
            cfg.charge(&basis(t2v, "kling-v1", "std", Some(10), 1))
                .to_string(),
            "2"
        );
        assert_eq!(
            cfg.charge(&basis(t2v, "kling-v2-5-turbo", "std", Some(5), 1))
                .to_string(),
            "1.5"
        );
        assert_eq!(
            cfg.charge(&basis(t2v, "kling-v2-5-turbo", "pro", Some(10), 1))
                .to_string(),
            "5"
        );
        assert_eq!(
            cfg.charge(&basis(t2v, "kling-v3", "4k", Some(5), 1))
                .to_string(),
            "15"
        );
        let img = "images/generations";
        assert_eq!(
            cfg.charge(&basis(img, "kling-v1", "std", None, 4))
                .to_string(),
            "4"
        );
        let m2i = "images/multi-image2image";
        assert_eq!(
            cfg.charge(&basis(m2i, "kling-v2", "std", None, 2))
                .to_string(),
            "32"
        );
    }

    #[test]
    fn deduction_spills_over_packs_and_never_goes_negative() {
        let mut packs = vec![
            Pack::from_config(&PackConfig {
                name: "a".into(),
                pack_type: PackType::Video,
                total: 2.0,
                remaining: None,
            }),
            Pack::from_config(&PackConfig {
                name: "b".into(),
                pack_type: PackType::Video,
                total: 5.0,
                remaining: None,
            }),
        ];
        deduct(&mut packs, PackType::Video, Units::from_f64(3.5).unwrap());
        assert_eq!(packs[0].remaining, Units::ZERO);
        assert_eq!(packs[1].remaining.to_string(), "3.5");
        deduct(&mut packs, PackType::Video, Units::from_f64(100.0).unwrap());
        assert_eq!(remaining_of(&packs, PackType::Video), Units::ZERO);
        assert_eq!(packs[0].id.len(), 32);
    }
}
