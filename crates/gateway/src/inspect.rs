//! What the gateway writes about a call, computed from its request and response bodies.
//!
//! Everything here is a pure function from bytes and JSON to record fields, so the rules that
//! keep secrets out of the ledger can be tested without a server: free text (prompts, lip-sync
//! text) becomes a keyed HMAC commitment plus its length; media becomes the SHA-256 and size of
//! the decoded bytes (or of the URL text) and never the base64; a callback URL becomes its host
//! and a hash, since such URLs often carry tokens; result URLs become hashes because they
//! expire (kling-api.md 7.4, 15). Parameters that decide price are copied as scalars, with
//! strings capped so no free text can ride along in an unexpected field.

use std::borrow::Cow;
use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use kling_api::routes::{self, ApiGeneration, Operation, OperationKind};
use kling_audit_ledger::Commitments;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use sha2::{Digest as _, Sha256};

/// Longest string copied from a price parameter.
const PARAM_MAX_CHARS: usize = 64;

/// Body fields (legacy top level, effects/lip-sync `input`, new-standard `settings`) copied
/// into records because they decide price or capability (kling-api.md 15).
const PRICE_PARAMS: &[&str] = &[
    "mode",
    "duration",
    "aspect_ratio",
    "resolution",
    "sound",
    "audio",
    "n",
    "cfg_scale",
    "effect_scene",
    "video_id",
    "session_id",
    "image_reference",
    "image_fidelity",
    "human_fidelity",
    "multi_shot",
    "shot_type",
    "voice_id",
    "voice_language",
    "voice_speed",
    "audio_type",
    "audio_id",
    "up_expansion_ratio",
    "down_expansion_ratio",
    "left_expansion_ratio",
    "right_expansion_ratio",
    "series_amount",
];

/// Id lists worth keeping: they tie a task to reusable voices, elements and faces.
const ID_LISTS: &[&str] = &[
    "voice_list[].voice_id",
    "element_list[].element_id",
    "face_choose[].face_id",
    "face_choose[].audio_id",
];

/// Free text of new-standard creates (8.1), which have no legacy route entry.
const NEW_TEXT_FIELDS: &[&str] = &["prompt", "negative_prompt"];
/// Media fields a new-standard create may carry; a best guess, as the docs list few.
const NEW_MEDIA_FIELDS: &[&str] = &[
    "image",
    "image_tail",
    "image_url",
    "image_list[].image",
    "image_list[].image_url",
    "video_url",
];

/// Query parameters whose values are copied (paging and time windows); others by name only.
const QUERY_VALUES: &[&str] = &[
    "pageNum",
    "pageSize",
    "start_time",
    "end_time",
    "external_task_id",
    "task_ids",
    "external_task_ids",
];

/// The text and media fields of every known route, looked for in a body sent to a path the
/// gateway does not know: a prompt sent to a route it does not list is committed all the same,
/// so that `match-prompt` finds it.
fn any_route_fields() -> (&'static [&'static str], &'static [&'static str]) {
    type Fields = (Vec<&'static str>, Vec<&'static str>);
    static FIELDS: OnceLock<Fields> = OnceLock::new();
    let (text, media) = FIELDS.get_or_init(|| {
        let mut text = NEW_TEXT_FIELDS.to_vec();
        let mut media = NEW_MEDIA_FIELDS.to_vec();
        for route in routes::ROUTES {
            text.extend_from_slice(route.text_fields);
            media.extend_from_slice(route.media_fields);
        }
        text.sort_unstable();
        text.dedup();
        media.sort_unstable();
        media.dedup();
        (text, media)
    });
    (text, media)
}

/// Hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The longest method kept in a record or a log line; every method the Kling API uses is far
/// shorter.
pub const METHOD_MAX_CHARS: usize = 32;

/// `s` cut to at most `max` characters.
pub fn cap_chars(s: &str, max: usize) -> String {
    let mut s = s.to_owned();
    cap_in_place(&mut s, max);
    s
}

/// Cuts `s` to at most `max` characters, keeping its buffer.
pub fn cap_in_place(s: &mut String, max: usize) {
    // Fewer bytes than the cap means fewer characters too: nothing to count.
    if s.len() <= max {
        return;
    }
    if let Some((i, _)) = s.char_indices().nth(max) {
        s.truncate(i);
    }
}

fn scalar(value: &Value) -> Option<Value> {
    match value {
        Value::String(s) => Some(Value::String(cap_chars(s, PARAM_MAX_CHARS))),
        Value::Number(_) | Value::Bool(_) => Some(value.clone()),
        _ => None,
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A URL's host and the hash of the whole URL. A value that does not parse is hashed only.
pub fn url_summary(url: &str) -> Value {
    let host = reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned));
    json!({ "host": host, "sha256": sha256_hex(url.as_bytes()), "len": url.len() })
}

/// A media value: an http(s) URL is hashed as text with its host; anything else is taken as
/// base64, decoded and hashed as bytes (with the decoded size). Text that is not base64 is
/// hashed as text. The value itself is never returned.
pub fn media_summary(field: &str, value: &Value) -> Option<Value> {
    let text = value.as_str()?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Some(json!({ "field": field, "kind": "empty" }));
    }
    if trimmed.starts_with("http://") || trimmed.starts_with("https://") {
        let host = reqwest::Url::parse(trimmed)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned));
        return Some(json!({
            "field": field, "kind": "url", "host": host,
            "sha256": sha256_hex(trimmed.as_bytes()), "len": trimmed.len(),
        }));
    }
    // Kling refuses a `data:` prefix (5.4), but the hash should still be of the image bytes.
    let payload = trimmed
        .strip_prefix("data:")
        .and_then(|rest| rest.split_once(";base64,").map(|(_, b)| b))
        .unwrap_or(trimmed);
    let compact: String = payload.split_whitespace().collect();
    match STANDARD.decode(compact.as_bytes()) {
        Ok(bytes) => Some(json!({
            "field": field, "kind": "base64", "sha256": sha256_hex(&bytes), "bytes": bytes.len(),
        })),
        Err(_) => Some(json!({
            "field": field, "kind": "text", "sha256": sha256_hex(trimmed.as_bytes()),
            "len": trimmed.len(),
        })),
    }
}

/// Names of body fields the typed request of this family does not know (5.5); `None` when
/// the family has no typed body or the body does not fit its type.
fn unknown_fields(op: &Operation, body: &Value) -> Option<Vec<String>> {
    use kling_api::requests as rq;
    use kling_api::routes::Family as F;
    fn extra<T: serde::de::DeserializeOwned>(
        body: &Value,
        get: fn(&T) -> &Map<String, Value>,
    ) -> Option<Vec<String>> {
        // Read from the borrowed value: the body is not copied whole for this.
        let typed = T::deserialize(body).ok()?;
        Some(get(&typed).keys().cloned().collect())
    }
    if op.generation == Some(ApiGeneration::NewStandard) {
        return extra::<rq::NewStandardCreateRequest>(body, |r| &r.extra);
    }
    match op.family? {
        F::TextToVideo => extra::<rq::TextToVideoRequest>(body, |r| &r.extra),
        F::ImageToVideo => extra::<rq::ImageToVideoRequest>(body, |r| &r.extra),
        F::MultiImageToVideo => extra::<rq::MultiImageToVideoRequest>(body, |r| &r.extra),
        F::VideoExtend => extra::<rq::VideoExtendRequest>(body, |r| &r.extra),
        F::LipSync => extra::<rq::LipSyncRequest>(body, |r| &r.extra),
        F::AdvancedLipSync => extra::<rq::AdvancedLipSyncRequest>(body, |r| &r.extra),
        F::VideoEffects => extra::<rq::VideoEffectsRequest>(body, |r| &r.extra),
        F::ImageGeneration => extra::<rq::ImageGenerationRequest>(body, |r| &r.extra),
        F::VirtualTryOn => extra::<rq::VirtualTryOnRequest>(body, |r| &r.extra),
        _ => None,
    }
}

/// A body field name as a record keeps it: Kling's field names are identifiers, and any other
/// key is text a caller may have put there by mistake (a prompt, a secret), so it is not kept.
pub(crate) fn recorded_field_name(name: String) -> String {
    let identifier = !name.is_empty()
        && name.len() <= PARAM_MAX_CHARS
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if identifier {
        name
    } else {
        NOT_AN_IDENTIFIER.to_owned()
    }
}

/// What a record holds in place of a body field name that is not an identifier.
const NOT_AN_IDENTIFIER: &str = "(not an identifier)";

/// The caller's `external_task_id` of a create body, read where the call's API generation
/// keeps it: the top level (legacy) or `options` (new standard); either for an unknown route.
/// An id in the other place names no task at Kling, so taking it would let a caller claim, in
/// the task book, an id that another actor then really uses.
pub fn external_task_id(generation: Option<ApiGeneration>, body: &Value) -> Option<String> {
    let top = || body.get("external_task_id");
    let options = || body.get("options").and_then(|o| o.get("external_task_id"));
    match generation {
        Some(ApiGeneration::Legacy) => top(),
        Some(ApiGeneration::NewStandard) => options(),
        None => top().or_else(options),
    }
    .and_then(Value::as_str)
    .filter(|s| !s.is_empty())
    .map(str::to_owned)
}

/// A `callback_url` of a create body.
pub struct CallbackSlot<'a> {
    pub url: &'a mut Value,
    /// Whether Kling reads this one for the call's API generation (for an unknown generation,
    /// the first found, as for `external_task_id`). Kling ignores the other: a URL there is
    /// replaced all the same, but no callback will come for it.
    pub read: bool,
}

/// Every non-empty `callback_url` of a create body, top level (legacy) and `options` (new
/// standard), the one the call's API generation reads first. All of them are replaced: were
/// only one, a URL in the place Kling reads could sit beside a decoy in the other and have
/// the callbacks bypass the gateway.
pub fn callback_url_slots(
    generation: Option<ApiGeneration>,
    body: &mut Value,
) -> Vec<CallbackSlot<'_>> {
    let Some(obj) = body.as_object_mut() else {
        return Vec::new();
    };
    let (mut top, mut options) = (None, None);
    // One pass over the entries: two `get_mut`s cannot both borrow the object.
    for (name, value) in obj.iter_mut() {
        match name.as_str() {
            "callback_url" => top = Some(value),
            "options" => options = value.get_mut("callback_url"),
            _ => {}
        }
    }
    let slots = match generation {
        Some(ApiGeneration::NewStandard) => [options, top],
        _ => [top, options],
    };
    let own_present = slots[0]
        .as_ref()
        .is_some_and(|v| v.as_str().is_some_and(|s| !s.is_empty()));
    slots
        .into_iter()
        .enumerate()
        .filter_map(|(i, v)| {
            let v = v.filter(|v| v.as_str().is_some_and(|s| !s.is_empty()))?;
            let read = i == 0 || (generation.is_none() && !own_present);
            Some(CallbackSlot { url: v, read })
        })
        .collect()
}

/// Record fields describing a request body: model, price parameters, committed free text,
/// hashed media, unknown field names, callback URL summary and external id.
pub fn body_fields(
    op: &Operation,
    body: &Value,
    commitments: &Commitments,
    out: &mut Map<String, Value>,
) {
    let choice = routes::model_choice(op, body);
    // Kling's model names are short; a longer one is the caller's text, capped like any
    // parameter so it cannot make the record too large.
    out.insert(
        "model".into(),
        json!(choice.name.map(|n| cap_chars(&n, PARAM_MAX_CHARS))),
    );
    out.insert(
        "model_source".into(),
        json!(match choice.source {
            routes::ModelSource::ModelName => "model_name",
            routes::ModelSource::LegacyModelField => "legacy-model-field",
            routes::ModelSource::Default => "default",
            routes::ModelSource::Path => "path",
        }),
    );
    out.insert(
        "model_missing".into(),
        json!(matches!(
            choice.source,
            routes::ModelSource::Default | routes::ModelSource::LegacyModelField
        )),
    );
    if let Some(legacy) = &choice.legacy_field {
        out.insert(
            "legacy_model_field".into(),
            json!(cap_chars(legacy, PARAM_MAX_CHARS)),
        );
    }

    let mut params = Map::new();
    for scope in [None, Some("input"), Some("settings")] {
        let holder = match scope {
            None => Some(body),
            Some(name) => body.get(name),
        };
        let Some(obj) = holder.and_then(Value::as_object) else {
            continue;
        };
        for name in PRICE_PARAMS {
            let Some(v) = obj.get(*name).filter(|v| !v.is_null()) else {
                continue;
            };
            let key = match scope {
                None => (*name).to_owned(),
                Some(s) => format!("{s}.{name}"),
            };
            if let Some(s) = scalar(v) {
                params.insert(key.clone(), s);
            }
            if *name == "duration" {
                params.insert(format!("{key}_type"), json!(json_type(v)));
            }
        }
    }
    if let Some(cc) = body.get("camera_control").filter(|v| v.is_object()) {
        let mut summary = Map::new();
        if let Some(kind) = cc.get("type").and_then(scalar) {
            summary.insert("type".into(), kind);
        }
        if let Some(cfg) = cc.get("config").and_then(Value::as_object) {
            // Kling's camera config has six keys; a caller's thousands are not all kept.
            for (k, v) in cfg.iter().take(MAX_RECORDED_IDS) {
                if let (true, Some(s)) = (k.len() <= 16, scalar(v)) {
                    summary.insert(format!("config.{k}"), s);
                }
            }
        }
        params.insert("camera_control".into(), Value::Object(summary));
    }
    let watermark = body
        .get("watermark_info")
        .or_else(|| body.get("options").and_then(|o| o.get("watermark_info")))
        .and_then(|w| w.get("enabled"))
        .and_then(scalar);
    if let Some(w) = watermark {
        params.insert("watermark".into(), w);
    }
    for list in ID_LISTS {
        let ids: Vec<Value> = routes::field_values(body, list)
            .into_iter()
            .filter_map(|(_, v)| scalar(v))
            .collect();
        if !ids.is_empty() {
            let (ids, omitted) = first_recorded(ids);
            params.insert((*list).to_owned(), Value::Array(ids));
            if omitted > 0 {
                params.insert(format!("{list}_omitted"), json!(omitted));
            }
        }
    }
    if let Some(items) = body.get("multi_prompt").and_then(Value::as_array) {
        params.insert("multi_prompt_items".into(), json!(items.len()));
    }
    out.insert("params".into(), Value::Object(params));

    let (text_fields, media_fields): (&[&str], &[&str]) = match op.route {
        Some(route) => (route.text_fields, route.media_fields),
        None if op.generation == Some(ApiGeneration::NewStandard) => {
            (NEW_TEXT_FIELDS, NEW_MEDIA_FIELDS)
        }
        None => any_route_fields(),
    };
    let mut prompts = Vec::new();
    for field in text_fields {
        for (path, value) in routes::field_values(body, field) {
            if let Some(text) = value.as_str() {
                prompts.push(json!({
                    "field": path,
                    "hmac": commitments.text(text),
                    "chars": text.chars().count(),
                }));
            }
        }
    }
    insert_capped(out, "prompts", prompts);
    let mut media = Vec::new();
    for field in media_fields {
        for (path, value) in routes::field_values(body, field) {
            if let Some(summary) = media_summary(&path, value) {
                media.push(summary);
            }
        }
    }
    insert_capped(out, "media", media);
    let unknown = unknown_fields(op, body);
    let omitted = unknown
        .as_ref()
        .map_or(0, |names| names.len().saturating_sub(MAX_RECORDED_IDS));
    let unknown = unknown.map(|names| {
        names
            .into_iter()
            .take(MAX_RECORDED_IDS)
            .map(recorded_field_name)
            .collect::<Vec<_>>()
    });
    out.insert("unknown_fields".into(), json!(unknown));
    if omitted > 0 {
        out.insert("unknown_fields_omitted".into(), json!(omitted));
    }
    // A longer id is refused before the record is written (see `EXTERNAL_ID_MAX_CHARS`); the
    // cap only keeps this function's output bounded on its own.
    out.insert(
        "external_task_id".into(),
        json!(external_task_id(op.generation, body).map(|id| cap_chars(&id, EXTERNAL_ID_MAX_CHARS))),
    );
}

/// The first [`MAX_RECORDED_IDS`] entries of a list a record keeps, and how many were left out.
fn first_recorded(mut items: Vec<Value>) -> (Vec<Value>, usize) {
    let omitted = items.len().saturating_sub(MAX_RECORDED_IDS);
    items.truncate(MAX_RECORDED_IDS);
    (items, omitted)
}

/// Inserts `name` with the first [`MAX_RECORDED_IDS`] entries of `items`, and `<name>_omitted`
/// when there were more: a body of thousands of prompts or images would otherwise make a record
/// over the ledger's size limit. A real Kling request has a handful.
fn insert_capped(out: &mut Map<String, Value>, name: &str, items: Vec<Value>) {
    let (kept, omitted) = first_recorded(items);
    out.insert(name.into(), Value::Array(kept));
    if omitted > 0 {
        out.insert(format!("{name}_omitted"), json!(omitted));
    }
}

/// Longest id a record keeps, in characters (task ids, external ids, request ids); longer ones
/// are cut. Kling's own ids are 18 digits; a caller's are order numbers or UUIDs.
pub const ID_MAX_CHARS: usize = 128;

/// Longest `external_task_id` the gateway forwards, in characters: the cap of every id a
/// record keeps, so an id it accepts is always recorded whole, and a lookup by it finds the
/// same text.
pub const EXTERNAL_ID_MAX_CHARS: usize = ID_MAX_CHARS;

/// Most fields kept of one small object of an answer (a billing entry, the balance deduction),
/// which has three or four.
const MAX_RECORDED_KEYS: usize = 16;

/// What a record keeps of a query string: values of the paging/time/id parameters, and the
/// names of the others, borrowed from the query where nothing was decoded or capped.
pub struct QuerySummary<'a> {
    /// `query`: the kept values by parameter name, in byte order of the names, each name once
    /// (the last value wins when a name repeats), as a JSON object holds them.
    pub values: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    /// `query_other_names`: names of the other parameters, in order, at most
    /// [`MAX_RECORDED_IDS`]; empty when there are none.
    pub other_names: Vec<Cow<'a, str>>,
    /// `query_other_names_omitted`: names left out past that many.
    pub other_omitted: usize,
    /// Whether some value sent is not in `values` as sent: a parameter kept by name only, a
    /// kept name given more than once (only the last value is kept), or a kept value capped
    /// or not decodable as UTF-8. The record then commits the whole query (`query_hmac`).
    pub unrecorded_values: bool,
}

/// The summary of a query string's decoded pairs ([`routes::query_pairs_borrowed`]), or `None`
/// when it has none.
pub fn query_summary<'a>(pairs: Vec<(Cow<'a, str>, Cow<'a, str>)>) -> Option<QuerySummary<'a>> {
    if pairs.is_empty() {
        return None;
    }
    let mut values: Vec<(Cow<'a, str>, Cow<'a, str>)> = Vec::new();
    let mut other_names = Vec::new();
    let mut other_omitted = 0;
    let mut unrecorded_values = false;
    for (mut k, mut v) in pairs {
        if QUERY_VALUES.contains(&k.as_ref()) {
            // Decoding replaces bytes that are not UTF-8 with U+FFFD, so the value kept would
            // not be the value sent; only a decoded (owned) value can have been through that.
            unrecorded_values |= cap_cow(&mut v, 256)
                || matches!(&v, Cow::Owned(decoded) if decoded.contains('\u{FFFD}'));
            match values.binary_search_by(|(name, _)| name.as_ref().cmp(k.as_ref())) {
                Ok(i) => {
                    values[i].1 = v;
                    unrecorded_values = true;
                }
                Err(i) => values.insert(i, (k, v)),
            }
        } else {
            unrecorded_values = true;
            if other_names.len() < MAX_RECORDED_IDS {
                cap_cow(&mut k, 64);
                other_names.push(k);
            } else {
                other_omitted += 1;
            }
        }
    }
    Some(QuerySummary {
        values,
        other_names,
        other_omitted,
        unrecorded_values,
    })
}

/// Cuts `s` to at most `max` characters, copying it only when it is cut. Returns whether it
/// was cut.
fn cap_cow(s: &mut Cow<'_, str>, max: usize) -> bool {
    if s.len() > max && s.chars().nth(max).is_some() {
        cap_in_place(s.to_mut(), max);
        return true;
    }
    false
}

/// Query-string fields ([`query_summary`]) added to `out`.
pub fn query_fields(query: Option<&str>, out: &mut Map<String, Value>) {
    let Some(summary) = query_summary(routes::query_pairs_borrowed(query)) else {
        return;
    };
    let values = summary
        .values
        .into_iter()
        .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
        .collect();
    out.insert("query".into(), Value::Object(values));
    if !summary.other_names.is_empty() {
        out.insert(
            "query_other_names".into(),
            summary
                .other_names
                .into_iter()
                .map(|n| Value::String(n.into_owned()))
                .collect(),
        );
    }
    if summary.other_omitted > 0 {
        out.insert(
            "query_other_names_omitted".into(),
            json!(summary.other_omitted),
        );
    }
}

/// Record fields describing the operation itself.
pub fn operation_fields(op: &Operation, method: &str, out: &mut Map<String, Value>) {
    // Capped: a refused request's method is whatever token the caller sent, and even an
    // unauthenticated caller would otherwise write one of several hundred kilobytes into the
    // ledger with each request.
    out.insert("method".into(), json!(cap_chars(method, METHOD_MAX_CHARS)));
    out.insert("route".into(), json!(route_label(op)));
    out.insert(
        "generation".into(),
        json!(op.generation.map(|g| g.as_str())),
    );
    out.insert("family".into(), json!(op.family.map(|f| f.as_str())));
    out.insert("operation".into(), json!(op.kind.as_str()));
    if let Some(route) = op.route {
        out.insert("sync".into(), json!(!route.is_async()));
    }
    match &op.kind {
        OperationKind::QueryOne { task_id } => {
            out.insert("task_id".into(), json!(cap_chars(task_id, ID_MAX_CHARS)));
        }
        OperationKind::LookupByExternalId {
            external_task_id,
            form,
        } => {
            out.insert(
                "external_task_id".into(),
                json!(cap_chars(external_task_id, ID_MAX_CHARS)),
            );
            out.insert("lookup_form".into(), json!(form.as_str()));
        }
        OperationKind::QueryTasks {
            task_ids,
            external_task_ids,
        } => {
            for (name, ids) in [
                ("task_ids", task_ids),
                ("external_task_ids", external_task_ids),
            ] {
                let (kept, omitted) = recorded_ids(ids);
                out.insert(name.into(), json!(kept));
                if omitted > 0 {
                    out.insert(format!("{name}_omitted"), json!(omitted));
                }
            }
        }
        _ => {}
    }
}

/// Ids a query names, and names of other query parameters, that a record keeps: a query can
/// hold thousands, and a caller (even one refused) must not be able to write a record of any
/// length.
pub const MAX_RECORDED_IDS: usize = 100;

/// The ids a record keeps (the first [`MAX_RECORDED_IDS`], each capped at 128 characters) and
/// how many it leaves out.
pub fn recorded_ids(ids: &[String]) -> (Vec<String>, usize) {
    let kept = ids
        .iter()
        .take(MAX_RECORDED_IDS)
        .map(|id| cap_chars(id, ID_MAX_CHARS))
        .collect();
    (kept, ids.len().saturating_sub(MAX_RECORDED_IDS))
}

/// The route label for records and metrics: the path template for known routes, a fixed
/// word for unknown ones so that arbitrary paths cannot grow the metric set.
pub fn route_label(op: &Operation) -> &str {
    if op.kind == OperationKind::Unknown {
        return "other";
    }
    &op.path_template
}

/// The business fields of a Kling answer: `code`, `message` (capped), `request_id`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Answer {
    /// `code`, when the body was a JSON object with one.
    pub code: Option<i64>,
    /// `message`, capped.
    pub message: Option<String>,
    /// Upstream `request_id`.
    pub request_id: Option<String>,
    /// Whether the body was JSON.
    pub json: bool,
    /// The parsed body, when it was JSON and asked for.
    pub body: Option<Value>,
}

/// The top-level fields every answer is read for, left unparsed.
#[derive(Deserialize)]
struct AnswerHead<'a> {
    #[serde(default, borrow)]
    code: Option<&'a RawValue>,
    #[serde(default, borrow)]
    message: Option<&'a RawValue>,
    #[serde(default, borrow)]
    request_id: Option<&'a RawValue>,
}

/// Parses an upstream answer; a body that is not JSON yields an empty [`Answer`]. With
/// `whole` false the body is checked and its business fields read without building it as a
/// value: an account answer, which nothing else reads, can be large. The one difference: a
/// number beyond the range of a double in a field that is not read is valid JSON to this
/// check, while building a value refuses the whole body.
pub fn parse_answer(bytes: &[u8], message_max_chars: usize, whole: bool) -> Answer {
    if !whole {
        // A body this cannot read (a repeated key, say) takes the general path. Two checks
        // come first: fields skipped unparsed are not checked for UTF-8, which the general
        // path requires, and a derived struct would also read a JSON array by position.
        let head = std::str::from_utf8(bytes)
            .ok()
            .filter(|text| text.trim_start().starts_with('{'))
            .and_then(|text| serde_json::from_str::<AnswerHead<'_>>(text).ok());
        if let Some(head) = head {
            // Read as the types wanted, as `Value::as_i64` and `as_str` would take them: a
            // number that is not an integer, or text that is not a string, reads as absent.
            let text = |raw: Option<&RawValue>, max: usize| {
                let mut s = serde_json::from_str::<String>(raw?.get()).ok()?;
                cap_in_place(&mut s, max);
                Some(s)
            };
            return Answer {
                code: head
                    .code
                    .and_then(|r| serde_json::from_str::<i64>(r.get()).ok()),
                message: text(head.message, message_max_chars),
                request_id: text(head.request_id, ID_MAX_CHARS),
                json: true,
                body: None,
            };
        }
    }
    let Ok(body) = serde_json::from_slice::<Value>(bytes) else {
        return Answer::default();
    };
    Answer {
        code: body.get("code").and_then(Value::as_i64),
        message: body
            .get("message")
            .and_then(Value::as_str)
            .map(|m| cap_chars(m, message_max_chars)),
        request_id: body
            .get("request_id")
            .and_then(Value::as_str)
            .map(|s| cap_chars(s, ID_MAX_CHARS)),
        json: true,
        body: whole.then_some(body),
    }
}

/// One task object as seen in an answer or callback, legacy or new-standard shape.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskView<'a> {
    /// `task_id` or `id`.
    pub task_id: String,
    /// `task_status` or `status`, as sent.
    pub status: Option<String>,
    /// `task_info.external_task_id` or `external_id`.
    pub external_task_id: Option<String>,
    /// The object itself.
    pub raw: &'a Value,
}

/// Reads a task object; `None` for anything without a task id.
pub fn task_view(value: &Value) -> Option<TaskView<'_>> {
    let obj = value.as_object()?;
    let task_id = obj
        .get("task_id")
        .or_else(|| obj.get("id"))
        .and_then(|v| match v {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })?;
    let status = obj
        .get("task_status")
        .or_else(|| obj.get("status"))
        .and_then(Value::as_str)
        .map(|s| cap_chars(s, 32));
    let external_task_id = obj
        .get("task_info")
        .and_then(|i| i.get("external_task_id"))
        .or_else(|| obj.get("external_id"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    Some(TaskView {
        task_id: cap_chars(&task_id, ID_MAX_CHARS),
        status,
        external_task_id,
        raw: value,
    })
}

/// Where the task objects of an answer's `data` sit: one object, a bare array (legacy lists,
/// `GET /tasks`), or `{result: [...]}` (`POST /tasks`).
pub fn data_tasks(data: &Value) -> Vec<TaskView<'_>> {
    match data {
        Value::Array(items) => items.iter().filter_map(task_view).collect(),
        Value::Object(obj) => match obj.get("result") {
            Some(Value::Array(items)) => items.iter().filter_map(task_view).collect(),
            _ => task_view(data).into_iter().collect(),
        },
        _ => Vec::new(),
    }
}

/// Whether a status is final (`succeed`/`succeeded`/`failed`).
pub fn is_final(status: &str) -> bool {
    matches!(status, "succeed" | "succeeded" | "failed")
}

fn is_success(status: &str) -> bool {
    matches!(status, "succeed" | "succeeded")
}

fn url_hash(item: &Value, key: &str) -> Option<Value> {
    item.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(|s| json!(sha256_hex(s.as_bytes())))
}

fn output_summary(item: &Value, kind: &str) -> Value {
    let mut out = Map::new();
    out.insert("type".into(), json!(kind));
    for key in ["id", "index", "duration", "mp3_duration", "wav_duration"] {
        if let Some(v) = item.get(key).and_then(scalar) {
            out.insert(key.into(), v);
        }
    }
    for key in [
        "url",
        "watermark_url",
        "url_mp3",
        "url_wav",
        "mp3_url",
        "wav_url",
    ] {
        if let Some(h) = url_hash(item, key) {
            out.insert(format!("{key}_sha256"), h);
        }
    }
    Value::Object(out)
}

fn has_usable_url(item: &Value) -> bool {
    ["url", "url_mp3", "url_wav", "mp3_url", "wav_url"]
        .iter()
        .any(|k| {
            item.get(*k)
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty())
        })
}

/// Result metadata of a finished task (kling-api.md 15, "Results" and "Units and cost"):
/// outputs with ids, durations and URL hashes, units deducted, cash charge, and an anomaly
/// flag for a success without a usable URL.
pub fn result_fields(task: &Value, message_max_chars: usize) -> Map<String, Value> {
    let mut out = Map::new();
    let mut outputs = Vec::new();
    if let Some(result) = task.get("task_result").and_then(Value::as_object) {
        for (key, kind) in [
            ("videos", "video"),
            ("images", "image"),
            ("audios", "audio"),
        ] {
            if let Some(items) = result.get(key).and_then(Value::as_array) {
                outputs.extend(items.iter().map(|i| (kind.to_owned(), i)));
            }
        }
    }
    if let Some(items) = task.get("outputs").and_then(Value::as_array) {
        for item in items {
            let kind = item
                .get("type")
                .and_then(Value::as_str)
                .map_or("unknown".to_owned(), |s| cap_chars(s, 16));
            outputs.push((kind, item));
        }
    }
    // The lists and maps of an answer or a callback (up to 1 MiB) are kept to their first
    // entries, so that a huge one cannot make the `task.status` record too large to write.
    out.insert("outputs_count".into(), json!(outputs.len()));
    out.insert(
        "outputs".into(),
        outputs
            .iter()
            .take(MAX_RECORDED_IDS)
            .map(|(k, i)| output_summary(i, k))
            .collect(),
    );
    if outputs.len() > MAX_RECORDED_IDS {
        out.insert(
            "outputs_omitted".into(),
            json!(outputs.len() - MAX_RECORDED_IDS),
        );
    }
    if let Some(parent) = task.get("task_info").and_then(|i| i.get("parent_video")) {
        if let Some(id) = parent.get("id").and_then(scalar) {
            out.insert("parent_video_id".into(), id);
        }
    }
    if let Some(units) = task.get("final_unit_deduction").and_then(scalar) {
        out.insert("final_unit_deduction".into(), units);
    }
    if let Some(cash) = task
        .get("final_balance_deduction")
        .and_then(Value::as_object)
    {
        let copy: Map<String, Value> = cash
            .iter()
            .filter_map(|(k, v)| scalar(v).map(|s| (cap_chars(k, 32), s)))
            .take(MAX_RECORDED_KEYS)
            .collect();
        out.insert("final_balance_deduction".into(), Value::Object(copy));
    }
    if let Some(billing) = task.get("billing").and_then(Value::as_array) {
        let entries: Vec<Value> = billing
            .iter()
            .filter_map(Value::as_object)
            .map(|e| {
                Value::Object(
                    e.iter()
                        .filter_map(|(k, v)| scalar(v).map(|s| (cap_chars(k, 32), s)))
                        .take(MAX_RECORDED_KEYS)
                        .collect(),
                )
            })
            .collect();
        insert_capped(&mut out, "billing", entries);
    }
    if let Some(units) = units_deducted(task) {
        out.insert("units_deducted".into(), json!(units));
    }
    let status = task
        .get("task_status")
        .or_else(|| task.get("status"))
        .and_then(Value::as_str)
        .unwrap_or("");
    if is_success(status) && !outputs.iter().any(|(_, i)| has_usable_url(i)) {
        out.insert("anomaly".into(), json!("success-without-usable-url"));
    }
    if status == "failed" {
        let msg = task
            .get("task_status_msg")
            .or_else(|| task.get("message"))
            .and_then(Value::as_str)
            .unwrap_or("");
        out.insert(
            "status_msg".into(),
            json!(cap_chars(msg, message_max_chars)),
        );
    }
    out
}

/// Units charged: `final_unit_deduction` (legacy) or the sum of `billing[]` unit entries
/// (new standard), as a decimal string exactly as received when there is one entry.
pub fn units_deducted(task: &Value) -> Option<String> {
    if let Some(v) = task.get("final_unit_deduction") {
        return match v {
            Value::String(s) => Some(cap_chars(s, 32)),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
    }
    let billing = task.get("billing")?.as_array()?;
    let units: Vec<&str> = billing
        .iter()
        .filter(|e| e.get("charge_type").and_then(Value::as_str) == Some("unit"))
        .filter_map(|e| e.get("amount").and_then(Value::as_str))
        .collect();
    match units.as_slice() {
        [] => None,
        [one] => Some(cap_chars(one, 32)),
        many => {
            let total: f64 = many.iter().filter_map(|s| s.parse::<f64>().ok()).sum();
            Some(format!("{total}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commitments() -> Commitments {
        Commitments::new([7; 32])
    }

    #[test]
    fn external_ids_and_callback_urls_are_read_where_the_api_generation_reads_them() {
        use ApiGeneration::{Legacy, NewStandard};
        let both = json!({
            "external_task_id": "top", "callback_url": "http://a.example/top",
            "options": {"external_task_id": "opt", "callback_url": "http://a.example/options"},
        });
        assert_eq!(
            external_task_id(Some(Legacy), &both).as_deref(),
            Some("top")
        );
        assert_eq!(
            external_task_id(Some(NewStandard), &both).as_deref(),
            Some("opt")
        );
        assert_eq!(external_task_id(None, &both).as_deref(), Some("top"));
        let only_options = json!({"options": {"external_task_id": "opt"}});
        assert_eq!(external_task_id(Some(Legacy), &only_options), None);
        let only_top = json!({"external_task_id": "top"});
        assert_eq!(external_task_id(Some(NewStandard), &only_top), None);

        // Every callback URL is handed out, the generation's own first and the only one read.
        for (generation, first) in [(Legacy, "top"), (NewStandard, "options")] {
            let mut body = both.clone();
            let slots = callback_url_slots(Some(generation), &mut body);
            let urls: Vec<(&str, bool)> = slots
                .iter()
                .filter_map(|s| Some((s.url.as_str()?, s.read)))
                .collect();
            assert_eq!(urls.len(), 2, "{generation:?}");
            assert_eq!(
                urls[0],
                (format!("http://a.example/{first}").as_str(), true)
            );
            assert!(!urls[1].1, "{generation:?}");
        }
        // A URL only where the generation does not look is replaced, but not read.
        let mut only_options = json!({"options": {"callback_url": "http://a.example/opt"}});
        let slots = callback_url_slots(Some(Legacy), &mut only_options);
        assert_eq!(slots.len(), 1);
        assert!(!slots[0].read);
        let mut only_top = json!({"callback_url": "http://a.example/top"});
        assert!(!callback_url_slots(Some(NewStandard), &mut only_top)[0].read);
        assert!(callback_url_slots(None, &mut only_options)[0].read);
        let mut empty = json!({"callback_url": "", "options": {"callback_url": 5}});
        assert!(callback_url_slots(Some(Legacy), &mut empty).is_empty());
        assert!(callback_url_slots(Some(Legacy), &mut json!([1])).is_empty());
    }

    #[test]
    fn unknown_body_fields_are_recorded_as_identifiers_only_and_at_most_a_hundred() {
        let op = routes::classify("POST", "/v1/videos/text2video", None);
        let mut body = json!({"prompt": "p", "a secret plan for the launch": 1, "ok_name": 2});
        let mut out = Map::new();
        body_fields(&op, &body, &commitments(), &mut out);
        assert!(!Value::Object(out.clone())
            .to_string()
            .contains("secret plan"));
        assert_eq!(
            out["unknown_fields"],
            json!(["(not an identifier)", "ok_name"])
        );
        assert!(out.get("unknown_fields_omitted").is_none());
        for i in 0..250 {
            body[format!("extra_{i:03}")] = json!(i);
        }
        let mut out = Map::new();
        body_fields(&op, &body, &commitments(), &mut out);
        assert_eq!(
            out["unknown_fields"].as_array().unwrap().len(),
            MAX_RECORDED_IDS
        );
        assert_eq!(out["unknown_fields_omitted"], 252 - MAX_RECORDED_IDS);
    }

    #[test]
    fn create_body_commits_prompts_and_hashes_media() {
        let image = STANDARD.encode(b"\x89PNG fake image bytes");
        let body = json!({
            "model_name": "kling-v2-6", "prompt": "a secret prompt", "negative_prompt": "blur",
            "mode": "pro", "duration": "10", "image": image, "sound": "on",
            "callback_url": "https://hooks.example/cb?token=abc", "external_task_id": "order-1",
            "made_up_field": 1,
        });
        let op = routes::classify("POST", "/v1/videos/image2video", None);
        let mut out = Map::new();
        body_fields(&op, &body, &commitments(), &mut out);
        let text = Value::Object(out.clone()).to_string();
        assert!(!text.contains("a secret prompt"));
        assert!(!text.contains(&image));
        assert!(!text.contains("token=abc"));
        assert_eq!(out["model"], "kling-v2-6");
        assert_eq!(out["model_missing"], false);
        assert_eq!(out["params"]["mode"], "pro");
        assert_eq!(out["params"]["duration"], "10");
        assert_eq!(out["params"]["duration_type"], "string");
        assert_eq!(out["external_task_id"], "order-1");
        assert_eq!(out["unknown_fields"], json!(["made_up_field"]));
        let prompts = out["prompts"].as_array().unwrap();
        assert_eq!(prompts.len(), 2);
        assert_eq!(prompts[0]["field"], "prompt");
        assert_eq!(prompts[0]["chars"], 15);
        assert_eq!(prompts[0]["hmac"], commitments().text("a secret prompt"));
        let media = out["media"].as_array().unwrap();
        assert_eq!(media.len(), 1);
        assert_eq!(media[0]["kind"], "base64");
        assert_eq!(media[0]["bytes"], 21);
        assert_eq!(media[0]["sha256"], sha256_hex(b"\x89PNG fake image bytes"));
    }

    #[test]
    fn missing_model_is_flagged() {
        let op = routes::classify("POST", "/v1/videos/text2video", None);
        let mut out = Map::new();
        body_fields(
            &op,
            &json!({"prompt": "x", "model": "kling-v2"}),
            &commitments(),
            &mut out,
        );
        assert_eq!(out["model"], "kling-v1");
        assert_eq!(out["model_source"], "legacy-model-field");
        assert_eq!(out["model_missing"], true);
        let op = routes::classify("POST", "/text-to-video/kling-3.0", None);
        let mut out = Map::new();
        body_fields(
            &op,
            &json!({"prompt": "p", "settings": {"duration": 7}}),
            &commitments(),
            &mut out,
        );
        assert_eq!(out["model"], "kling-3.0");
        assert_eq!(out["params"]["settings.duration"], 7);
        assert_eq!(out["params"]["settings.duration_type"], "number");
        assert_eq!(out["prompts"][0]["chars"], 1);
    }

    #[test]
    fn caller_lists_and_names_in_a_body_are_kept_bounded() {
        let op = routes::classify("POST", "/v1/videos/text2video", None);
        let config: Map<String, Value> = (0..5000).map(|i| (format!("k{i}"), json!(i))).collect();
        let body = json!({
            "model_name": "m".repeat(100_000),
            "camera_control": {"type": "simple", "config": config},
            "element_list": (0..300).map(|i| json!({"element_id": i})).collect::<Vec<_>>(),
        });
        let mut out = Map::new();
        body_fields(&op, &body, &commitments(), &mut out);
        assert_eq!(out["model"].as_str().unwrap().len(), PARAM_MAX_CHARS);
        let camera = out["params"]["camera_control"].as_object().unwrap();
        assert_eq!(
            camera.len(),
            1 + MAX_RECORDED_IDS,
            "type and the first config keys"
        );
        let ids = out["params"]["element_list[].element_id"]
            .as_array()
            .unwrap();
        assert_eq!(ids.len(), MAX_RECORDED_IDS);
        assert_eq!(out["params"]["element_list[].element_id_omitted"], 200);
        assert!(out.get("prompts_omitted").is_none());
        assert!(Value::Object(out).to_string().len() < 20_000);
    }

    #[test]
    fn a_final_task_with_thousands_of_outputs_keeps_the_first_hundred() {
        let videos: Vec<Value> = (0..5000)
            .map(|i| json!({"id": i, "url": format!("https://cdn.example/{i}.mp4")}))
            .collect();
        let billing: Vec<Value> = (0..500)
            .map(|i| {
                let e: Map<String, Value> = (0..100).map(|k| (format!("k{k}"), json!(i))).collect();
                Value::Object(e)
            })
            .collect();
        let task = json!({"task_status": "succeed", "task_result": {"videos": videos},
                          "billing": billing});
        let out = result_fields(&task, 256);
        assert_eq!(out["outputs_count"], 5000);
        assert_eq!(out["outputs"].as_array().unwrap().len(), MAX_RECORDED_IDS);
        assert_eq!(out["outputs_omitted"], 5000 - MAX_RECORDED_IDS);
        let billing = out["billing"].as_array().unwrap();
        assert_eq!(billing.len(), MAX_RECORDED_IDS);
        assert_eq!(billing[0].as_object().unwrap().len(), MAX_RECORDED_KEYS);
        assert_eq!(out["billing_omitted"], 400);
        assert!(Value::Object(out).to_string().len() < 100_000);
    }

    #[test]
    fn multi_prompt_and_lip_sync_text_are_committed() {
        let op = routes::classify("POST", "/v1/videos/text2video", None);
        let body = json!({"multi_shot": true, "multi_prompt": [
            {"index": 1, "prompt": "first shot", "duration": "2"},
            {"index": 2, "prompt": "second shot", "duration": "3"}]});
        let mut out = Map::new();
        body_fields(&op, &body, &commitments(), &mut out);
        let fields: Vec<_> = out["prompts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["field"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(fields, ["multi_prompt[0].prompt", "multi_prompt[1].prompt"]);
        let text = Value::Object(out).to_string();
        assert!(!text.contains("first shot") && !text.contains("second shot"));
        let op = routes::classify("POST", "/v1/videos/lip-sync", None);
        let mut out = Map::new();
        let body =
            json!({"input": {"mode": "text2video", "text": "hello there", "video_id": "v1"}});
        body_fields(&op, &body, &commitments(), &mut out);
        assert_eq!(out["prompts"][0]["field"], "input.text");
        assert!(!Value::Object(out).to_string().contains("hello there"));
    }

    #[test]
    fn media_kinds() {
        let url = media_summary("image", &json!("https://cdn.example/a.png?sig=1")).unwrap();
        assert_eq!(url["kind"], "url");
        assert_eq!(url["host"], "cdn.example");
        assert!(!url.to_string().contains("sig=1"));
        let prefixed = format!("data:image/png;base64,{}", STANDARD.encode(b"abc"));
        let b = media_summary("image", &json!(prefixed)).unwrap();
        assert_eq!(
            (b["kind"].as_str(), b["bytes"].as_u64()),
            (Some("base64"), Some(3))
        );
        let t = media_summary("image", &json!("not base64 !!")).unwrap();
        assert_eq!(t["kind"], "text");
        assert!(media_summary("image", &json!(5)).is_none());
    }

    #[test]
    fn price_strings_are_capped() {
        let op = routes::classify("POST", "/v1/videos/text2video", None);
        let long = "m".repeat(500);
        let mut out = Map::new();
        body_fields(&op, &json!({"mode": long}), &commitments(), &mut out);
        assert_eq!(
            out["params"]["mode"].as_str().unwrap().len(),
            PARAM_MAX_CHARS
        );
    }

    #[test]
    fn reading_only_the_business_fields_agrees_with_reading_the_whole_answer() {
        for body in [
            r#"{"code":0,"message":"SUCCEED","request_id":"r-1","data":{"a":[1,2,{"b":null}]}}"#,
            r#"{"code":"0","message":7,"request_id":null}"#,
            r#"{"code":1.5,"message":"caf\u00e9 \"q\"","extra":{"code":9}}"#,
            r#"{"code":-3,"message":"ééééééééééééééééé","request_id":"r-ééééé"}"#,
            r#"{"code":1,"code":2,"message":"repeated key: the last one counts"}"#,
            r#"[{"code":1}]"#,
            r#""just a string""#,
            r#"{"code":1"#,
            "",
        ]
        .map(|b| b.as_bytes().to_vec())
        .into_iter()
        // Found by fuzzing: bytes that are not UTF-8 inside a field nobody reads, and an array
        // that a derived struct would read by position.
        .chain([
            b"{\"code\":0,\"data\":{\"duratio\xee\":\"5\"}}".to_vec(),
            b" [1, \"m\", \"r\"]".to_vec(),
        ]) {
            let whole = parse_answer(&body, 12, true);
            let head = parse_answer(&body, 12, false);
            let text = String::from_utf8_lossy(&body);
            assert_eq!(
                head,
                Answer {
                    body: None,
                    ..whole
                },
                "{text}"
            );
        }
    }

    #[test]
    fn a_number_beyond_a_double_where_nothing_reads_it_is_json_to_the_business_fields() {
        let body = br#"{"code":0,"message":"ok","data":{"n":1e999}}"#;
        assert_eq!(parse_answer(body, 12, true), Answer::default());
        let head = parse_answer(body, 12, false);
        assert_eq!((head.code, head.json), (Some(0), true));
    }

    #[test]
    fn answers_and_task_views() {
        let a = parse_answer(
            br#"{"code":1303,"message":"parallel task over resource pack limit","request_id":"r"}"#,
            8,
            true,
        );
        assert_eq!(a.code, Some(1303));
        assert_eq!(a.message.as_deref(), Some("parallel"));
        assert_eq!(parse_answer(b"<html>", 8, true), Answer::default());
        assert_eq!(parse_answer(b"<html>", 8, false), Answer::default());

        let legacy = json!({"task_id": "866889456698785798", "task_status": "succeed",
            "task_info": {"external_task_id": "order-42"}});
        let v = task_view(&legacy).unwrap();
        assert_eq!(v.status.as_deref(), Some("succeed"));
        assert_eq!(v.external_task_id.as_deref(), Some("order-42"));
        let new = json!({"id": "893605946402811985", "status": "processing", "external_id": "e"});
        assert_eq!(task_view(&new).unwrap().task_id, "893605946402811985");
        assert_eq!(data_tasks(&json!([legacy, new])).len(), 2);
        assert_eq!(
            data_tasks(&json!({"result": [new], "has_more": false})).len(),
            1
        );
        assert!(data_tasks(&json!("x")).is_empty());
    }

    #[test]
    fn results_hash_urls_and_count_units() {
        let task = json!({"task_id": "1", "task_status": "succeed", "final_unit_deduction": "1.5",
            "task_result": {"videos": [{"id": "v9", "url": "https://cdn/x.mp4", "duration": "5.1"}]}});
        let r = result_fields(&task, 64);
        assert_eq!(r["outputs_count"], 1);
        assert_eq!(r["outputs"][0]["id"], "v9");
        assert_eq!(r["outputs"][0]["duration"], "5.1");
        assert_eq!(
            r["outputs"][0]["url_sha256"],
            sha256_hex(b"https://cdn/x.mp4")
        );
        assert_eq!(r["units_deducted"], "1.5");
        assert!(r.get("anomaly").is_none());
        assert!(!Value::Object(r).to_string().contains("cdn/x.mp4"));

        let bad = json!({"task_id": "1", "task_status": "succeed",
            "task_result": {"videos": [{"id": "v9", "url": "", "watermark_url": "https://w"}]}});
        assert_eq!(
            result_fields(&bad, 64)["anomaly"],
            "success-without-usable-url"
        );

        let new = json!({"id": "2", "status": "succeeded", "outputs": [{"type": "video", "id": "o", "url": "https://u"}],
            "billing": [{"charge_type": "unit", "amount": "4", "package_type": "video"},
                        {"charge_type": "unit", "amount": "0.5"}]});
        let r = result_fields(&new, 64);
        assert_eq!(r["units_deducted"], "4.5");
        assert_eq!(r["billing"].as_array().unwrap().len(), 2);
        let failed =
            json!({"task_id": "3", "task_status": "failed", "task_status_msg": "risk control"});
        assert_eq!(result_fields(&failed, 4)["status_msg"], "risk");
    }

    #[test]
    fn text_is_cut_at_a_character_count_never_inside_a_character() {
        let mut s = "é".repeat(17);
        cap_in_place(&mut s, 12);
        assert_eq!(s, "é".repeat(12));
        let mut short = "abc".to_owned();
        cap_in_place(&mut short, 3);
        assert_eq!(short, "abc");
        cap_in_place(&mut short, 0);
        assert_eq!(short, "");
        assert_eq!(cap_chars("日本語テキスト", 3), "日本語");
    }

    #[test]
    fn query_values_and_names() {
        let mut out = Map::new();
        query_fields(Some("pageNum=1&pageSize=30&secret=zzz"), &mut out);
        assert_eq!(out["query"]["pageSize"], "30");
        assert_eq!(out["query_other_names"], json!(["secret"]));
        assert!(!Value::Object(out).to_string().contains("zzz"));
    }

    proptest::proptest! {
        #[test]
        fn answer_and_task_parsing_are_total(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let a = parse_answer(&bytes, 16, true);
            // Reading only the business fields gives the same fields.
            let head = parse_answer(&bytes, 16, false);
            proptest::prop_assert_eq!(&head, &Answer { body: None, ..a.clone() });
            if let Some(body) = &a.body {
                let _ = data_tasks(body);
                let _ = result_fields(body, 16);
                let _ = units_deducted(body);
            }
        }

        #[test]
        fn body_inspection_is_total_and_never_copies_long_text(text in "[a-zA-Z ]{80,120}") {
            let body = json!({"prompt": text, "mode": text, "image": text,
                "multi_prompt": [{"prompt": text}], "input": {"text": text, "mode": text}});
            for path in ["/v1/videos/text2video", "/v1/videos/image2video", "/v1/videos/lip-sync"] {
                let op = routes::classify("POST", path, None);
                let mut out = Map::new();
                body_fields(&op, &body, &commitments(), &mut out);
                proptest::prop_assert!(!Value::Object(out).to_string().contains(&text));
            }
        }
    }

    #[test]
    fn a_query_with_many_other_names_keeps_the_first_hundred() {
        let query = (0..130)
            .map(|i| format!("n{i}=1"))
            .collect::<Vec<_>>()
            .join("&");
        let summary = query_summary(routes::query_pairs_borrowed(Some(&query))).unwrap();
        assert_eq!(summary.other_names.len(), MAX_RECORDED_IDS);
        assert_eq!(summary.other_names[99], "n99");
        assert_eq!(summary.other_omitted, 30);
        assert!(summary.unrecorded_values);
    }

    #[test]
    fn a_query_has_unrecorded_values_only_when_the_record_cannot_hold_each_value_sent() {
        let unrecorded = |query: &str| {
            query_summary(routes::query_pairs_borrowed(Some(query)))
                .unwrap()
                .unrecorded_values
        };
        // Every value kept as sent (decoded): nothing to commit.
        for query in [
            "pageNum=1&pageSize=30",
            "start_time=1&end_time=2&external_task_id=a%20b",
            "task_ids=1,2&external_task_ids=x",
            "pageNum=%C3%A9",
        ] {
            assert!(!unrecorded(query), "{query}");
        }
        let long = format!("pageNum={}", "9".repeat(257));
        for query in [
            // A value kept by name only.
            "pageNum=1&secret=zzz",
            "flag",
            // A kept name given twice: the first value is not kept.
            "pageNum=1&pageNum=2",
            // A value capped, or not UTF-8 once decoded.
            long.as_str(),
            "pageNum=%FF",
        ] {
            assert!(unrecorded(query), "{query}");
        }
    }
}
