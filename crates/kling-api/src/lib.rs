//! Typed access to the Kling AI HTTP API, shared by the audited client, the auditing gateway
//! and the simulator.
//!
//! - [`auth`]: JWT signing, caching and verification; bearer parsing; credential fingerprints.
//! - [`webhook`]: Standard Webhooks signatures on callbacks; [`callback`] parses their bodies.
//! - [`codes`], [`envelope`]: business codes and the `{code, message, request_id, data}`
//!   wrapper.
//! - [`routes`]: the route table and [`routes::classify`], which names every request.
//! - [`requests`], [`task`], [`account`]: typed bodies and answers, lenient where Kling's
//!   clients are ([`lenient`]).
//! - [`client`]: the reqwest client with safe retries, observers and polling; [`error`] holds
//!   its errors.
//!
//! Everything that touches secrets keeps them in [`SecretString`], whose `Debug` prints
//! nothing secret. Times come from [`clock::Clock`] so tests can move them by hand.

pub mod account;
pub mod auth;
pub mod callback;
pub mod client;
pub mod clock;
pub mod codes;
pub mod envelope;
pub mod error;
pub mod lenient;
pub mod requests;
pub mod routes;
pub mod secret;
pub mod task;
pub mod webhook;

pub use client::{ClientConfig, KlingClient};
pub use envelope::Envelope;
pub use error::KlingError;
pub use secret::SecretString;
pub use task::{AnyTask, TaskObject, TaskView};
