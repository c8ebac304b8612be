//! Queries: one task by id, a page of a family's tasks, and the three lookup forms by
//! `external_task_id` (reference section 5.3).

use std::sync::Arc;

use kling_api::codes;
use serde_json::Value;

use super::param;
use crate::config::{SimConfig, UnknownTaskAnswer};
use crate::families::Family;
use crate::reply::ApiError;
use crate::state::{lock, Shared};
use crate::tasks::Task;

fn unknown_task(cfg: &SimConfig) -> ApiError {
    match cfg.unknown_task {
        UnknownTaskAnswer::NotFound => ApiError::new(codes::RESOURCE_NOT_FOUND, "task not found"),
        UnknownTaskAnswer::InvalidParameter => {
            ApiError::invalid_param("task_id is invalid: no such task")
        }
    }
}

/// `GET /v1/<family>/{id}`: a task id, or with the configured forms an external id in the
/// same slot (form 1) or flagged by `?external_task_id=true` (form 3).
pub(crate) fn one(
    shared: &Arc<Shared>,
    family: &Family,
    id: &str,
    query: &[(String, String)],
) -> Result<Value, ApiError> {
    let lookup = &shared.cfg.lookup;
    let flagged = lookup.by_flag && param(query, "external_task_id") == Some("true");
    let store = lock(&shared.store);
    let task = if flagged {
        store.by_external_id(family, id)
    } else {
        store.by_task_id(family, id).or_else(|| {
            lookup
                .by_path
                .then(|| store.by_external_id(family, id))
                .flatten()
        })
    };
    task.map(Task::to_json)
        .ok_or_else(|| unknown_task(&shared.cfg))
}

fn page_param(
    query: &[(String, String)],
    name: &str,
    max: usize,
    default: usize,
) -> Result<usize, ApiError> {
    match param(query, name) {
        None | Some("") => Ok(default),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                ApiError::invalid_param(format!("{name} must be an integer within [1, {max}]"))
            }),
    }
}

/// `GET /v1/<family>?pageNum=&pageSize=`: newest first, as a bare array; or, with
/// `?external_task_id=<id>` (form 2), that one task.
pub(crate) fn list(
    shared: &Arc<Shared>,
    family: &Family,
    query: &[(String, String)],
) -> Result<Value, ApiError> {
    if shared.cfg.lookup.by_query {
        if let Some(ext) = param(query, "external_task_id").filter(|v| !v.is_empty()) {
            let store = lock(&shared.store);
            return store
                .by_external_id(family, ext)
                .map(Task::to_json)
                .ok_or_else(|| unknown_task(&shared.cfg));
        }
    }
    let page = page_param(query, "pageNum", 1000, 1)?;
    let size = page_param(query, "pageSize", 500, 30)?;
    Ok(Value::Array(lock(&shared.store).page(family, page, size)))
}
