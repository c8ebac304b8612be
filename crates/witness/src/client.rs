//! The client side of `add-checkpoint`: what the ledger and gateway call to get cosignatures.

use kling_audit_merkle::Hash;
use kling_audit_note::{AddCheckpointRequest, NoteSignature};
use reqwest::header::CONTENT_TYPE;
use reqwest::StatusCode;

use crate::{WitnessClientError, TLOG_SIZE_CONTENT_TYPE};

/// Responses above this are not read; a witness returns a few signature lines.
const RESPONSE_LIMIT: usize = 64 * 1024;

/// Every answer c2sp.org/tlog-witness defines, as the caller needs to act on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddCheckpointOutcome {
    /// 200: the cosignature lines, not yet verified; check them with the witness's
    /// `CosignatureVerifier` before relying on them.
    Cosigned(Vec<NoteSignature>),
    /// 409 with a size: the witness last cosigned `witness_size`; retry with that old size and
    /// a proof from it.
    StaleOldSize {
        /// The size the witness reported.
        witness_size: u64,
    },
    /// 409 without a size: same size as last cosigned but a different root. If the checkpoint
    /// is ours, the log has forked.
    ConflictingRoot {
        /// The witness's explanation, for the operator.
        message: String,
    },
    /// 400: the request was malformed or the old size exceeds the checkpoint size.
    BadRequest {
        /// The witness's explanation, for the operator.
        message: String,
    },
    /// 403: the witness trusts none of the note's signing keys for this origin.
    Forbidden,
    /// 404: the witness does not know this origin.
    UnknownOrigin,
    /// 422: the consistency proof did not verify.
    InconsistentProof,
}

/// Sends `POST add_checkpoint_url` (the full endpoint URL, `<prefix>/add-checkpoint`) with
/// `old <old_size>`, the proof lines and the signed checkpoint note.
pub async fn add_checkpoint(
    client: &reqwest::Client,
    add_checkpoint_url: &str,
    old_size: u64,
    proof: &[Hash],
    signed_note: &[u8],
) -> Result<AddCheckpointOutcome, WitnessClientError> {
    let url = add_checkpoint_url;
    let body = AddCheckpointRequest {
        old_size,
        proof: proof.to_vec(),
        checkpoint: signed_note.to_vec(),
    }
    .to_bytes();
    let transport = |source| WitnessClientError::Transport {
        url: url.to_string(),
        source,
    };
    let mut response = client
        .post(url)
        .body(body)
        .send()
        .await
        .map_err(transport)?;
    let status = response.status();
    let is_size = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().map(str::trim) == Some(TLOG_SIZE_CONTENT_TYPE));
    let malformed = |reason: String| WitnessClientError::MalformedResponse {
        url: url.to_string(),
        status: status.as_u16(),
        reason,
    };

    // Read a bounded body: a misbehaving witness must not make us buffer without limit.
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport)? {
        if body.len() + chunk.len() > RESPONSE_LIMIT {
            return Err(malformed(format!("body exceeds {RESPONSE_LIMIT} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    let text = || String::from_utf8_lossy(&body).trim_end().to_string();

    match status {
        StatusCode::OK => {
            let body = std::str::from_utf8(&body)
                .map_err(|_| malformed("cosignature lines are not UTF-8".into()))?;
            let lines = body
                .strip_suffix('\n')
                .ok_or_else(|| malformed("no cosignature line".into()))?;
            let sigs = lines
                .split('\n')
                .map(NoteSignature::from_line)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| malformed(e.to_string()))?;
            Ok(AddCheckpointOutcome::Cosigned(sigs))
        }
        StatusCode::CONFLICT if is_size => {
            let size = std::str::from_utf8(&body)
                .ok()
                .and_then(|s| s.strip_suffix('\n'))
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| malformed("size body is not a decimal line".into()))?;
            Ok(AddCheckpointOutcome::StaleOldSize { witness_size: size })
        }
        StatusCode::CONFLICT => Ok(AddCheckpointOutcome::ConflictingRoot { message: text() }),
        StatusCode::BAD_REQUEST => Ok(AddCheckpointOutcome::BadRequest { message: text() }),
        StatusCode::FORBIDDEN => Ok(AddCheckpointOutcome::Forbidden),
        StatusCode::NOT_FOUND => Ok(AddCheckpointOutcome::UnknownOrigin),
        StatusCode::UNPROCESSABLE_ENTITY => Ok(AddCheckpointOutcome::InconsistentProof),
        other => Err(WitnessClientError::UnexpectedStatus {
            url: url.to_string(),
            status: other.as_u16(),
        }),
    }
}
