//! A Kling AI API simulator for tests and the `kling-audit demo`: the legacy task API (create,
//! query, list, lookup by `external_task_id`), JWT and API-key authentication, concurrency and
//! content rules, resource packs, signed status callbacks, and deterministic fault injection.
//!
//! Every behaviour the Kling docs leave open is a choice in [`SimConfig`]. Start one with
//! [`spawn`] (loopback, ephemeral port), [`start`], [`serve`] or [`launch`] (the CLI's entry),
//! and read back what it received through [`SimHandle::stats`].
//!
//! Known gaps: the new-standard API (`/text-to-video/...`, `/tasks`), the synchronous voice,
//! element, TTS, image-recognize and multi-elements selection calls, the cash balance
//! (`final_balance_deduction`, `/account/billing/*`) and the China host are not simulated.

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
pub use server::{launch, router, serve, spawn, start, RunningSim, SimHandle};
pub use stats::{InjectedFault, SimStats};
pub use tasks::CDN_BASE;
