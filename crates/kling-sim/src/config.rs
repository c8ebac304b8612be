//! The simulator's configuration: credentials, timings, content rules, limits, packs, rates and
//! faults. Every behaviour the Kling docs leave open (reference section 16) is a field here, so
//! a test can pick the variant it needs instead of the simulator hard-coding a guess.
//!
//! Secrets held here (secret keys, API keys, the webhook secret) never appear in `Debug`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::billing::{AccountConfig, BillingConfig};
use crate::callbacks::CallbackConfig;
use crate::concurrency::ConcurrencyConfig;
use crate::error::SimError;
use crate::faults::FaultConfig;

/// Access key of the documented test pair, used when nothing else names credentials.
pub const TEST_ACCESS_KEY: &str = "sim-access-key-for-tests";
/// Secret key of the documented test pair. It guards nothing real: never use it elsewhere.
pub const TEST_SECRET_KEY: &str = "sim-secret-key-for-tests-only-0123456789";

/// Everything the simulator can be told. Missing TOML fields take the documented defaults;
/// unknown fields are rejected so a typo does not silently fall back to a default.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// Access/secret key pairs accepted for JWT authentication.
    pub keys: Vec<KeyPair>,
    /// Opaque API keys accepted as bearer values (section 4.2).
    pub api_keys: Vec<SecretText>,
    /// JWT checking rules.
    pub auth: AuthConfig,
    /// How long a task stays in each state.
    pub lifecycle: LifecycleConfig,
    /// Words that block a create or make a task fail.
    pub content: ContentConfig,
    /// Concurrency slots per pack type.
    pub concurrency: ConcurrencyConfig,
    /// When and how status callbacks are sent.
    pub callbacks: CallbackConfig,
    /// Webhook secret (`whsec_...`); when set, callbacks carry Standard Webhooks signatures.
    pub webhook_secret: Option<SecretText>,
    /// Resource packs of the simulated account.
    pub account: AccountConfig,
    /// Unit rates charged for finished tasks.
    pub billing: BillingConfig,
    /// Which forms of lookup by `external_task_id` are honoured (section 5.3).
    pub lookup: LookupConfig,
    /// The answer for a task id that does not exist.
    pub unknown_task: UnknownTaskAnswer,
    /// Reject type mismatches (`"n":"9"`, `duration: 5`) instead of coercing them.
    pub strict: bool,
    /// Effect scenes accepted by `/v1/videos/effects`.
    pub effects: EffectsConfig,
    /// Per-family model lists replacing the built-in ones, keyed by family path without
    /// `/v1/` (e.g. `"videos/text2video"`).
    pub models: BTreeMap<String, Vec<String>>,
    /// Deterministic fault injection.
    pub faults: FaultConfig,
}

impl SimConfig {
    /// The default configuration plus the documented test key pair.
    pub fn for_tests() -> Self {
        let mut cfg = Self::default();
        cfg.keys
            .push(KeyPair::new(TEST_ACCESS_KEY, TEST_SECRET_KEY));
        cfg
    }

    /// Parses a TOML document and checks the values.
    ///
    /// # Errors
    /// [`SimError::ParseConfig`] for bad TOML or unknown fields, [`SimError::InvalidConfig`] for
    /// values out of range.
    pub fn from_toml_str(text: &str) -> Result<Self, SimError> {
        Self::parse(text, "<string>")
    }

    /// Reads and parses a TOML file.
    ///
    /// # Errors
    /// [`SimError::ReadConfig`] when the file cannot be read, otherwise as
    /// [`SimConfig::from_toml_str`].
    pub fn from_file(path: &Path) -> Result<Self, SimError> {
        let text = std::fs::read_to_string(path).map_err(|source| SimError::ReadConfig {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    fn parse(text: &str, origin: &str) -> Result<Self, SimError> {
        let cfg: Self = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            let line = text.get(..offset).map_or(0, |t| t.matches('\n').count()) + 1;
            SimError::ParseConfig {
                origin: origin.to_owned(),
                line,
                message: e.message().to_owned(),
            }
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Whether any key pair or API key is configured.
    pub fn has_credentials(&self) -> bool {
        !self.keys.is_empty() || !self.api_keys.is_empty()
    }

    /// Makes sure some credential exists: when the configuration names none, adds `fallback`
    /// (for the CLI, the pair from `KLING_ACCESS_KEY`/`KLING_SECRET_KEY`) or else the test pair.
    pub fn ensure_credentials(&mut self, fallback: Option<KeyPair>) -> CredentialSource {
        if self.has_credentials() {
            return CredentialSource::Config;
        }
        match fallback {
            Some(pair) => {
                self.keys.push(pair);
                CredentialSource::Fallback
            }
            None => {
                self.keys
                    .push(KeyPair::new(TEST_ACCESS_KEY, TEST_SECRET_KEY));
                CredentialSource::TestPair
            }
        }
    }

    /// Checks ranges and cross-field rules.
    ///
    /// # Errors
    /// [`SimError::InvalidConfig`] naming the first offending field.
    pub fn validate(&self) -> Result<(), SimError> {
        for (i, pair) in self.keys.iter().enumerate() {
            if pair.access_key.is_empty() || pair.secret_key.expose().is_empty() {
                return Err(SimError::invalid(
                    format!("keys[{i}]"),
                    "access and secret key must be non-empty",
                ));
            }
        }
        if self.auth.leeway_secs < 0 {
            return Err(SimError::invalid(
                "auth.leeway_secs",
                "must not be negative",
            ));
        }
        if matches!(self.auth.max_lifetime_secs, Some(v) if v <= 0) {
            return Err(SimError::invalid(
                "auth.max_lifetime_secs",
                "must be positive",
            ));
        }
        if let Some(secret) = &self.webhook_secret {
            if secret.expose().trim_start_matches("whsec_").is_empty() {
                return Err(SimError::invalid("webhook_secret", "must not be empty"));
            }
        }
        self.concurrency.validate()?;
        self.callbacks.validate()?;
        self.account.validate()?;
        self.billing.validate()?;
        self.faults.validate()?;
        Ok(())
    }
}

/// Where the credentials came from after [`SimConfig::ensure_credentials`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialSource {
    /// The configuration named credentials.
    Config,
    /// The caller's fallback pair was added.
    Fallback,
    /// The documented test pair ([`TEST_ACCESS_KEY`]) was added.
    TestPair,
}

/// One access/secret key pair; the access key is the JWT `iss`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyPair {
    pub access_key: String,
    pub secret_key: SecretText,
}

impl KeyPair {
    /// A pair from its two parts.
    pub fn new(access_key: impl Into<String>, secret_key: impl Into<String>) -> Self {
        Self {
            access_key: access_key.into(),
            secret_key: SecretText(secret_key.into()),
        }
    }
}

/// Text that is a credential: serialised as is, but never shown by `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretText(String);

impl SecretText {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; every use is a place to review.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretText(<redacted>)")
    }
}

/// JWT rules (section 16.7).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Clock skew tolerated on `nbf` and `exp`, in seconds.
    pub leeway_secs: i64,
    /// Longest accepted `exp - nbf` (or `exp - iat`); `None` means no limit.
    pub max_lifetime_secs: Option<i64>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            leeway_secs: 10,
            max_lifetime_secs: None,
        }
    }
}

/// Time spent in each state; real Kling takes minutes, tests want milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LifecycleConfig {
    /// From `submitted` to `processing`.
    pub to_processing_ms: u64,
    /// From `processing` to `succeed` or `failed`.
    pub to_final_ms: u64,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        Self {
            to_processing_ms: 300,
            to_final_ms: 1200,
        }
    }
}

/// Content rules, matched case-insensitively against the prompts and other free text.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContentConfig {
    /// A create containing one of these is refused with 400/1301 and makes no task.
    pub blocked_words: Vec<String>,
    /// A task containing one of these is accepted but ends `failed`.
    pub fail_words: Vec<String>,
    /// The `task_status_msg` of such a failed task.
    pub fail_message: String,
}

impl Default for ContentConfig {
    fn default() -> Self {
        Self {
            blocked_words: vec!["sim-blocked".to_owned()],
            fail_words: vec!["sim-fail".to_owned()],
            fail_message: "generation stopped by the content risk control system".to_owned(),
        }
    }
}

/// Which of the three lookup forms of section 5.3 are honoured.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LookupConfig {
    /// Form 1: `GET /v1/<family>/{external_task_id}`.
    pub by_path: bool,
    /// Form 2: `GET /v1/<family>?external_task_id=<id>`.
    pub by_query: bool,
    /// Form 3: `GET /v1/<family>/{external_task_id}?external_task_id=true`.
    pub by_flag: bool,
}

impl Default for LookupConfig {
    fn default() -> Self {
        Self {
            by_path: true,
            by_query: true,
            by_flag: true,
        }
    }
}

/// The answer for an unknown task id (section 16.3).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownTaskAnswer {
    /// HTTP 404 with code 1203.
    #[default]
    NotFound,
    /// HTTP 400 with code 1201.
    InvalidParameter,
}

/// Effect scenes (section 6.7); Kling changes them weekly, so they are configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EffectsConfig {
    /// Scenes taking one image (`input.image`).
    pub single_image_scenes: Vec<String>,
    /// Scenes taking exactly two images (`input.images`).
    pub dual_image_scenes: Vec<String>,
    /// Accept scenes in neither list, as single-image scenes.
    pub allow_unknown_scenes: bool,
}

impl Default for EffectsConfig {
    fn default() -> Self {
        let single = [
            "fuzzyfuzzy",
            "squish",
            "expansion",
            "bloombloom",
            "dizzydizzy",
        ];
        let dual = [
            "hug",
            "kiss",
            "heart_gesture",
            "pet_skateboard",
            "daily_ootd",
            "toss_run",
            "switch_to_silk",
            "studio_look",
            "french_elegance",
            "finger_swipe",
            "smooth_transition",
            "kiss_pro",
            "snow_night_kiss",
            "eternal_kiss",
            "cheers_2026",
            "fight_pro",
            "hug_pro",
            "heart_gesture_pro",
        ];
        Self {
            single_image_scenes: single.iter().map(|s| (*s).to_owned()).collect(),
            dual_image_scenes: dual.iter().map(|s| (*s).to_owned()).collect(),
            allow_unknown_scenes: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_file_parses_with_its_values() {
        let cfg = SimConfig::from_toml_str(include_str!("../sim.example.toml")).unwrap();
        assert_eq!(cfg.keys.len(), 1);
        assert_eq!(cfg.keys[0].access_key, "example-access-key");
        assert_eq!(cfg.lifecycle.to_final_ms, 1200);
        assert_eq!(cfg.account.packs[1].remaining, Some(250.0));
        assert_eq!(cfg.billing.rules.len(), 1);
        assert_eq!(cfg.models["videos/text2video"].len(), 4);
    }

    #[test]
    fn empty_document_gives_defaults_without_credentials() {
        let cfg = SimConfig::from_toml_str("").unwrap();
        assert!(!cfg.has_credentials());
        assert_eq!(cfg.auth.leeway_secs, 10);
        assert_eq!(cfg.unknown_task, UnknownTaskAnswer::NotFound);
        assert!(cfg.lookup.by_path && cfg.lookup.by_query && cfg.lookup.by_flag);
    }

    #[test]
    fn unknown_fields_and_bad_values_are_rejected() {
        assert!(matches!(
            SimConfig::from_toml_str("lifecycle = { to_final = 5 }"),
            Err(SimError::ParseConfig { .. })
        ));
        let err = SimConfig::from_toml_str("[faults]\nserver_error_rate = 2.0").unwrap_err();
        assert!(err.to_string().contains("faults.server_error_rate"));
        let err = SimConfig::from_toml_str("[concurrency]\nvideo = 0").unwrap_err();
        assert!(err.to_string().contains("concurrency.video"));
        let err = SimConfig::from_toml_str(
            "[[account.packs]]\nname='a'\ntype='video'\ntotal=1.0\nremaining=2.0",
        )
        .unwrap_err();
        assert!(err.to_string().contains("remaining"));
    }

    #[test]
    fn credentials_fall_back_to_caller_pair_then_test_pair() {
        let mut cfg = SimConfig::default();
        assert_eq!(
            cfg.ensure_credentials(Some(KeyPair::new("env-ak", "env-sk"))),
            CredentialSource::Fallback
        );
        assert_eq!(cfg.keys[0].access_key, "env-ak");
        let mut cfg = SimConfig::default();
        assert_eq!(cfg.ensure_credentials(None), CredentialSource::TestPair);
        assert_eq!(cfg.keys[0].access_key, TEST_ACCESS_KEY);
        let mut cfg = SimConfig::for_tests();
        assert_eq!(
            cfg.ensure_credentials(Some(KeyPair::new("x", "y"))),
            CredentialSource::Config
        );
        assert_eq!(cfg.keys.len(), 1);
    }

    #[test]
    fn parse_errors_give_the_line_but_never_quote_it() {
        let text = "api_keys = [\"sk-live-secret\"]\n[auth]\nleeway_secs = \"x\"\n";
        let err = SimConfig::from_toml_str(text).unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(
            matches!(err, SimError::ParseConfig { line: 3, .. }),
            "{shown}"
        );
        assert!(!shown.contains("sk-live-secret"));
    }

    #[test]
    fn debug_output_hides_secrets() {
        let mut cfg = SimConfig::for_tests();
        cfg.webhook_secret = Some(SecretText::new("whsec_c2VjcmV0"));
        let shown = format!("{cfg:?}");
        assert!(!shown.contains(TEST_SECRET_KEY));
        assert!(!shown.contains("c2VjcmV0"));
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = SimConfig::from_file(Path::new("no-such-dir/sim.toml")).unwrap_err();
        assert!(err.to_string().contains("no-such-dir/sim.toml"));
    }
}
