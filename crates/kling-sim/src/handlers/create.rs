//! Creating a task, legacy or new-standard: validation, content rules, account checks, then
//! the background lifecycle. Both APIs share everything after validation.

use std::sync::Arc;

use kling_api::codes;
use serde_json::{Map, Value};

use crate::auth::Caller;
use crate::concurrency::Slots;
use crate::families::Family;
use crate::faults::FaultDecision;
use crate::lifecycle;
use crate::reply::ApiError;
use crate::state::{lock, now_ms, Shared};
use crate::tasks::{Api, Task, TaskStatus};
use crate::validate::{validate_create, validate_new_create, NewModel, TaskSpec};

/// Whether any text contains any of the words, ignoring case.
fn mentions(texts: &[String], words: &[String]) -> bool {
    let words: Vec<String> = words
        .iter()
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase())
        .collect();
    texts.iter().any(|t| {
        let t = t.to_lowercase();
        words.iter().any(|w| t.contains(w.as_str()))
    })
}

pub(crate) fn create(
    shared: &Arc<Shared>,
    family: &'static Family,
    caller: &Caller,
    body: &Map<String, Value>,
    fault: FaultDecision,
) -> Result<Value, ApiError> {
    let spec = validate_create(family, body, &shared.cfg)?;
    admit(shared, family, caller, spec, fault, Api::Legacy)
}

/// `POST /<capability>/<model-version>` (reference section 8.1).
pub(crate) fn create_new(
    shared: &Arc<Shared>,
    family: &'static Family,
    model: &NewModel,
    caller: &Caller,
    body: &Map<String, Value>,
    fault: FaultDecision,
) -> Result<Value, ApiError> {
    let spec = validate_new_create(model, body, &shared.cfg)?;
    admit(shared, family, caller, spec, fault, Api::NewStandard)
}

fn admit(
    shared: &Arc<Shared>,
    family: &'static Family,
    caller: &Caller,
    mut spec: TaskSpec,
    fault: FaultDecision,
    api: Api,
) -> Result<Value, ApiError> {
    let cfg = &shared.cfg;
    if mentions(&spec.texts, &cfg.content.blocked_words) {
        return Err(ApiError::new(
            codes::CONTENT_POLICY,
            "content security policy triggered: the input contains restricted content",
        ));
    }
    let doomed = mentions(&spec.texts, &cfg.content.fail_words);
    // The prompts were only needed for the checks above; the store keeps no free text.
    spec.texts.clear();

    let now = now_ms();
    let id = shared.numeric_id();
    let callback_url = spec.callback_url.clone();
    let task = Task {
        id: id.clone(),
        family,
        pool: Slots::pool(cfg.concurrency.scope, family.pack, &caller.0),
        spec,
        status: TaskStatus::Submitted,
        status_msg: String::new(),
        created_at: now,
        updated_at: now,
        doomed,
        anomaly: fault.result,
        result: None,
        unit_deduction: None,
        parent_video: None,
        api,
    };
    let data = lock(&shared.store).admit(task, cfg)?;
    lock(&shared.stats).creates_accepted += 1;
    tracing::debug!(target: "kling_sim::tasks", task_id = %id, family = family.path, "task created");
    lifecycle::start(Arc::clone(shared), id, callback_url);
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_matching_ignores_case_and_empty_words() {
        let texts = vec!["A calm SUNRISE".to_owned()];
        assert!(mentions(&texts, &["sunrise".to_owned()]));
        assert!(!mentions(&texts, &["sunset".to_owned()]));
        assert!(!mentions(&texts, &[String::new()]));
        assert!(!mentions(&[], &["sunrise".to_owned()]));
    }
}
