//! Errors of the audited client.
//!
//! Every variant that concerns a call carries its correlation id, so an operator can find the
//! call's records in the ledger.

use kling_api::KlingError;
use kling_audit_ledger::{AppendError, EntryError};
use uuid::Uuid;

/// Why an audited call did not complete as asked.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A record could not be made durable. When the record was the intent, nothing was sent
    /// to Kling (the client fails closed).
    #[error("could not record {event} for call {corr}: {source}")]
    Record {
        /// The event type that failed.
        event: &'static str,
        /// The call's correlation id.
        corr: Uuid,
        /// The ledger's refusal.
        #[source]
        source: AppendError,
    },
    /// Kling refused the call, or it failed in transport, or its answer was unusable. The
    /// ledger holds the details under `corr`.
    #[error("Kling call {corr} failed: {source}")]
    Kling {
        /// The call's correlation id.
        corr: Uuid,
        /// What went wrong.
        #[source]
        source: KlingError,
    },
    /// The request could not be turned into JSON.
    #[error("could not serialize the {family} request body")]
    Encode {
        /// The family of the request.
        family: &'static str,
        /// The serializer's error.
        #[source]
        source: serde_json::Error,
    },
    /// The client was set up or called wrongly (no create route for the family, bad actor
    /// name, unusable Kling configuration).
    #[error("audited client misconfigured: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
    /// The actor name is not acceptable in records.
    #[error("actor name refused by the ledger: {0}")]
    Actor(#[source] EntryError),
    /// The underlying Kling client could not be built.
    #[error("could not build the Kling client: {0}")]
    Client(#[source] KlingError),
}

impl ClientError {
    /// The Kling error inside, if that is what failed.
    pub fn kling(&self) -> Option<&KlingError> {
        match self {
            Self::Kling { source, .. } => Some(source),
            _ => None,
        }
    }

    /// The correlation id of the call, when the error belongs to one.
    pub fn corr(&self) -> Option<Uuid> {
        match self {
            Self::Record { corr, .. } | Self::Kling { corr, .. } => Some(*corr),
            _ => None,
        }
    }
}
