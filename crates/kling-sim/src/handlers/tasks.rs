//! The new-standard task queries (reference sections 8.2 and 8.3): `GET /tasks` by ids and the
//! cursor listing `POST /tasks`. They see every task of the account, legacy ones included, in
//! the new task object shape; the reference does not say whether Kling mixes the two, and
//! `product_type: image` in its filters suggests it does.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::param;
use crate::families::PackType;
use crate::reply::ApiError;
use crate::state::{lock, now_ms, Shared};
use crate::tasks::{Task, TaskStatus};

/// Most ids one `GET /tasks` may name; the reference gives no limit.
const MAX_IDS: usize = 500;
/// The listing's default window: the last 30 days.
const DEFAULT_WINDOW_MS: i64 = 30 * 86_400_000;
const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 500;

fn id_list<'a>(name: &str, value: &'a str) -> Result<Vec<&'a str>, ApiError> {
    let ids: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if ids.is_empty() {
        return Err(ApiError::invalid_param(format!("{name} can not be null")));
    }
    if ids.len() > MAX_IDS {
        return Err(ApiError::invalid_param(format!(
            "{name} may name at most {MAX_IDS} ids"
        )));
    }
    Ok(ids)
}

/// `GET /tasks?task_ids=a,b` or `?external_task_ids=a,b`: the tasks found, in the order asked;
/// ids that match nothing are left out.
pub(crate) fn query(shared: &Arc<Shared>, query: &[(String, String)]) -> Result<Value, ApiError> {
    let present = |name| param(query, name).filter(|v| !v.is_empty());
    let store = lock(&shared.store);
    let tasks = match (present("task_ids"), present("external_task_ids")) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid_param(
                "only one of task_ids and external_task_ids may be given",
            ))
        }
        (None, None) => return Err(ApiError::invalid_param("task_ids can not be null")),
        (Some(ids), None) => store.by_ids(&id_list("task_ids", ids)?),
        (None, Some(exts)) => store.by_external_ids(&id_list("external_task_ids", exts)?),
    };
    Ok(Value::Array(
        tasks.into_iter().map(Task::new_json).collect(),
    ))
}

/// A time in ms, typed as a number (3.0 pages) or a string (2.6 page).
fn time_field(body: &Map<String, Value>, name: &str) -> Result<Option<i64>, ApiError> {
    let parsed = match body.get(name) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) if s.is_empty() => return Ok(None),
        Some(Value::String(s)) => s.trim().parse::<i64>().ok(),
        Some(_) => None,
    };
    parsed
        .filter(|t| *t >= 0)
        .map(Some)
        .ok_or_else(|| ApiError::invalid_param(format!("{name} must be a time in milliseconds")))
}

/// A listing position and the window it belongs to, carried by `next_cursor`. Opaque to
/// callers; written as `<position>.<start>.<end>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cursor {
    before: usize,
    start: i64,
    end: i64,
}

impl Cursor {
    fn encode(self) -> String {
        format!("{}.{}.{}", self.before, self.start, self.end)
    }

    fn decode(text: &str) -> Option<Self> {
        let mut parts = text.split('.');
        let cursor = Cursor {
            before: parts.next()?.parse().ok()?,
            start: parts.next()?.parse().ok()?,
            end: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(cursor)
    }
}

/// The `filters[]` of a listing: values within a key are OR-ed, keys AND-ed.
#[derive(Debug, Default)]
struct Filters {
    statuses: Option<Vec<TaskStatus>>,
    packs: Option<Vec<PackType>>,
}

impl Filters {
    fn parse(value: Option<&Value>) -> Result<Self, ApiError> {
        let mut filters = Filters::default();
        let items = match value {
            None | Some(Value::Null) => return Ok(filters),
            Some(Value::Array(items)) => items,
            Some(_) => return Err(ApiError::invalid_param("filters must be an array")),
        };
        for item in items {
            let key = item.get("key").and_then(Value::as_str);
            let values: Vec<&str> = match item.get("values").and_then(Value::as_array) {
                Some(vs) => vs.iter().filter_map(Value::as_str).collect(),
                None => {
                    return Err(ApiError::invalid_param(
                        "filters[].values must be an array of strings",
                    ))
                }
            };
            match key {
                Some("status") => {
                    let statuses = values
                        .iter()
                        .map(|v| match *v {
                            "submitted" => Ok(TaskStatus::Submitted),
                            "processing" => Ok(TaskStatus::Processing),
                            "succeeded" => Ok(TaskStatus::Succeed),
                            "failed" => Ok(TaskStatus::Failed),
                            _ => Err(ApiError::invalid_param(
                                "filters status values must be submitted, processing, \
                                 succeeded or failed",
                            )),
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    filters
                        .statuses
                        .get_or_insert_with(Vec::new)
                        .extend(statuses);
                }
                Some("product_type") => {
                    let packs = values
                        .iter()
                        .map(|v| match *v {
                            "video" => Ok(PackType::Video),
                            "image" => Ok(PackType::Image),
                            "try_on" => Ok(PackType::TryOn),
                            _ => Err(ApiError::invalid_param(
                                "filters product_type values must be video, image or try_on",
                            )),
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    filters.packs.get_or_insert_with(Vec::new).extend(packs);
                }
                _ => {
                    return Err(ApiError::invalid_param(
                        "filters[].key must be status or product_type",
                    ))
                }
            }
        }
        Ok(filters)
    }

    fn keeps(&self, task: &Task) -> bool {
        self.statuses
            .as_ref()
            .is_none_or(|s| s.contains(&task.status))
            && self
                .packs
                .as_ref()
                .is_none_or(|p| p.contains(&task.family.pack))
    }
}

/// `POST /tasks`: newest first within `[start_time, end_time]`, `limit` at a time; a `cursor`
/// continues the listing it came from and overrides the times.
pub(crate) fn list(shared: &Arc<Shared>, body: &Map<String, Value>) -> Result<Value, ApiError> {
    let limit = match body.get("limit") {
        None | Some(Value::Null) => DEFAULT_LIMIT,
        Some(v) => v
            .as_i64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::invalid_param(format!("limit must be an integer within [1, {MAX_LIMIT}]"))
            })?,
    };
    let limit = usize::try_from(limit).unwrap_or(1);
    let filters = Filters::parse(body.get("filters"))?;
    let cursor = match body.get("cursor") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => {
            Some(Cursor::decode(s).ok_or_else(|| ApiError::invalid_param("cursor is invalid"))?)
        }
        Some(_) => return Err(ApiError::invalid_param("cursor must be a string")),
    };
    let (before, start, end) = match cursor {
        Some(c) => (Some(c.before), c.start, c.end),
        None => {
            let end = time_field(body, "end_time")?.unwrap_or_else(now_ms);
            let start = time_field(body, "start_time")?
                .unwrap_or_else(|| end.saturating_sub(DEFAULT_WINDOW_MS));
            if end < start {
                return Err(ApiError::invalid_param(
                    "end_time must not be before start_time",
                ));
            }
            (None, start, end)
        }
    };
    let store = lock(&shared.store);
    let (page, more) = store.scan(before, limit, |t| {
        (start..=end).contains(&t.created_at) && filters.keeps(t)
    });
    let next_cursor = match page.last() {
        Some((pos, _)) if more => Cursor {
            before: *pos,
            start,
            end,
        }
        .encode(),
        _ => String::new(),
    };
    let result: Vec<Value> = page.iter().map(|(_, t)| t.new_json()).collect();
    Ok(json!({
        "result": result,
        "count": result.len(),
        "next_cursor": next_cursor,
        "has_more": more,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let c = Cursor {
            before: 7,
            start: 1,
            end: 2,
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(Cursor::decode("7.1"), None);
        assert_eq!(Cursor::decode("7.1.2.3"), None);
        assert_eq!(Cursor::decode("x.1.2"), None);
    }

    #[test]
    fn filters_parse_known_keys_only() {
        let ok = json!([{"key": "status", "values": ["succeeded", "failed"]},
                        {"key": "product_type", "values": ["video"]}]);
        let f = Filters::parse(Some(&ok)).unwrap();
        assert_eq!(
            f.statuses,
            Some(vec![TaskStatus::Succeed, TaskStatus::Failed])
        );
        assert_eq!(f.packs, Some(vec![PackType::Video]));
        let bad = json!([{"key": "model", "values": ["x"]}]);
        assert!(Filters::parse(Some(&bad)).is_err());
        let bad = json!([{"key": "status", "values": ["succeed"]}]);
        assert!(Filters::parse(Some(&bad)).is_err());
    }
}
