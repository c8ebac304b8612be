//! A Kling AI API simulator for tests and the `kling-audit demo`: the legacy task API (create,
//! query, list, lookup by `external_task_id`), the new-standard video API of 2026
//! (`/text-to-video/<model-version>`, `/image-to-video/<model-version>`, `GET /tasks`, the
//! cursor listing `POST /tasks`, API keys only), JWT and API-key authentication, concurrency
//! and content rules, resource packs, signed status callbacks in either API's payload, and
//! deterministic fault injection.
//!
//! Every behaviour the Kling docs leave open is a choice in [`SimConfig`]. Start one with
//! [`spawn`] (loopback, ephemeral port), [`start`], [`serve`] or [`launch`] (the CLI's entry),
//! and read back what it received through [`SimHandle::stats`].
//!
//! Known gaps: the new-standard motion-control and omni-video capabilities, the multi-shot
//! prompt syntax (`shot n, m, words;`) and image inputs of new-standard image-to-video are not
//! checked; the synchronous voice, element, TTS, image-recognize and multi-elements selection
//! calls, the cash balance (`final_balance_deduction`, cash `billing[]` entries,
//! `/account/billing/*`) and the China host are not simulated. New-standard tasks are seen only
//! through `/tasks`, which also shows legacy tasks in the new shape.

mod auth;
mod billing;
mod callbacks;
mod concurrency;
mod config;
mod error;
mod families;
mod faults;
mod handlers;
mod ids;
mod lifecycle;
mod reply;
mod routes;
mod server;
mod state;
mod stats;
mod store;
mod tasks;
mod units;
mod validate;

pub use billing::{AccountConfig, BillingConfig, PackConfig, RateRule};
pub use callbacks::CallbackConfig;
pub use concurrency::{ConcurrencyConfig, ConcurrencyScope};
pub use config::{
    AuthConfig, ContentConfig, CredentialSource, EffectsConfig, KeyPair, LifecycleConfig,
    LookupConfig, SecretText, SimConfig, UnknownTaskAnswer, TEST_ACCESS_KEY, TEST_SECRET_KEY,
};
pub use error::SimError;
pub use families::PackType;
pub use faults::{DropPoint, FaultConfig, FaultDecision, FaultPlan, ResultAnomaly, ServerFault};
pub use server::{launch, router, serve, spawn, start, RunningSim, SimHandle, SHUTDOWN_GRACE};
pub use stats::{InjectedFault, SimStats};
pub use tasks::CDN_BASE;
