//! `GET /account/costs` (reference section 12.2): the account's packs with their remaining
//! units, updated as soon as a task is charged (Kling may lag up to 12 hours; not modelled).

use std::sync::Arc;

use serde_json::{json, Value};

use super::param;
use crate::reply::ApiError;
use crate::state::{lock, Shared};

/// A pack is shown as bought one day before the simulator started and valid for a year.
const DAY_MS: i64 = 86_400_000;

fn time_param(query: &[(String, String)], name: &str) -> Result<i64, ApiError> {
    match param(query, name) {
        None | Some("") => Err(ApiError::invalid_param(format!("{name} can not be null"))),
        Some(v) => v.parse::<i64>().ok().filter(|t| *t >= 0).ok_or_else(|| {
            ApiError::invalid_param(format!("{name} must be a time in milliseconds"))
        }),
    }
}

pub(crate) fn costs(shared: &Arc<Shared>, query: &[(String, String)]) -> Result<Value, ApiError> {
    let start = time_param(query, "start_time")?;
    let end = time_param(query, "end_time")?;
    if end < start {
        return Err(ApiError::invalid_param(
            "end_time must not be before start_time",
        ));
    }
    let name = param(query, "resource_pack_name").filter(|n| !n.is_empty());
    let store = lock(&shared.store);
    let started = store.started_ms;
    let infos: Vec<Value> = store
        .packs
        .iter()
        .filter(|p| name.is_none_or(|n| n == p.name))
        .map(|p| {
            json!({
                "resource_pack_name": p.name,
                "resource_pack_id": p.id,
                "resource_pack_type": "decreasing_total",
                "total_quantity": p.total.as_f64(),
                "remaining_quantity": p.remaining.as_f64(),
                "purchase_time": started - DAY_MS,
                "effective_time": started - DAY_MS,
                "invalid_time": started + 365 * DAY_MS,
                "status": if p.remaining.is_zero() { "runOut" } else { "online" },
            })
        })
        .collect();
    Ok(json!({ "code": 0, "msg": "success", "resource_pack_subscribe_infos": infos }))
}
