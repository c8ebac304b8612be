//! The audited Kling client: every call leaves a complete, privacy-preserving trail in the
//! kling-audit ledger.
//!
//! - [`AuditedClient`] wraps [`kling_api::KlingClient`]: intent before the request leaves,
//!   then acceptance or refusal, status changes, the outcome, transport failures, timeouts,
//!   token issuance and callbacks, all sharing one correlation id per task.
//! - [`summary::summarize_request`] reduces any request body to what an auditor needs, with
//!   free text as keyed commitments and media as hashes; the gateway reuses it.
//! - [`events`] names every record type and builds its details (see docs/events.md).
//!
//! Nothing secret or free-form enters a record: no secret key, JWT, `Authorization` header,
//! API key or Webhook Secret; no prompt, negative prompt or lip-sync text (commitments only);
//! no base64 media (hashes only); no result URL (hashes only); the access key only as a keyed
//! fingerprint.

mod client;
mod error;
pub mod events;
mod recorder;
pub mod summary;

pub use client::{AuditedClient, CallbackDelivery, CallbackReport, SignatureCheck, Submitted};
pub use error::ClientError;
pub use summary::summarize_request;
