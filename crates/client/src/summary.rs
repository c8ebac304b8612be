//! The audit summary of a request body: everything that decides price, capability and
//! identity, with free text and media reduced to commitments and hashes (kling-api.md 15).
//!
//! [`summarize_request`] works on any JSON body, typed or not, so the auditing gateway can use
//! it on bodies it only forwards. It never copies a free-text or media value into its output:
//! prompts, negative prompts, `multi_prompt[].prompt` and lip-sync text become a keyed
//! commitment plus a character count; images, video and audio become the SHA-256 of their bytes
//! (base64-decoded when they are base64) or of their URL, plus a size. Values of fields it does
//! not know are never copied either; only their names are.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use kling_api::routes::{self, ApiGeneration, Family, ModelSource, Operation};
use kling_audit_ledger::Commitments;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

/// Body fields every legacy create may carry (5.2), plus the old `model` alias (6.2).
const COMMON_FIELDS: &[&str] = &[
    "model_name",
    "model",
    "callback_url",
    "external_task_id",
    "watermark_info",
];

/// Top-level fields the docs name for a family's create body, beyond [`COMMON_FIELDS`] and the
/// route's text and media fields. `None` for families whose body the docs leave vague: their
/// unknown-field list is then only a best effort (flagged by `fields_documented: false`).
fn documented_fields(family: Family) -> Option<&'static [&'static str]> {
    Some(match family {
        Family::TextToVideo => &[
            "prompt",
            "negative_prompt",
            "cfg_scale",
            "mode",
            "sound",
            "camera_control",
            "aspect_ratio",
            "duration",
            "multi_shot",
            "shot_type",
            "multi_prompt",
            "voice_list",
        ],
        Family::ImageToVideo => &[
            "image",
            "image_tail",
            "prompt",
            "negative_prompt",
            "cfg_scale",
            "mode",
            "duration",
            "sound",
            "static_mask",
            "dynamic_masks",
            "camera_control",
            "voice_list",
            "element_list",
            "multi_shot",
            "shot_type",
            "multi_prompt",
        ],
        Family::MultiImageToVideo => &[
            "image_list",
            "prompt",
            "negative_prompt",
            "mode",
            "duration",
            "aspect_ratio",
        ],
        Family::VideoExtend => &["video_id", "prompt", "negative_prompt", "cfg_scale"],
        Family::LipSync => &["input"],
        Family::IdentifyFace => &["video_id", "video_url"],
        Family::AdvancedLipSync => &["session_id", "face_choose"],
        Family::VideoEffects => &["effect_scene", "input"],
        Family::Avatar => &["image", "audio_id", "sound_file", "prompt", "mode"],
        Family::OmniVideo => &[
            "prompt",
            "negative_prompt",
            "image_list",
            "element_list",
            "video_list",
            "sound",
            "mode",
            "aspect_ratio",
            "duration",
            "multi_shot",
            "shot_type",
            "multi_prompt",
        ],
        Family::ImageGeneration => &[
            "prompt",
            "negative_prompt",
            "image",
            "image_reference",
            "image_fidelity",
            "human_fidelity",
            "resolution",
            "n",
            "aspect_ratio",
            "element_list",
        ],
        Family::ImageExpand => &[
            "image",
            "up_expansion_ratio",
            "down_expansion_ratio",
            "left_expansion_ratio",
            "right_expansion_ratio",
            "prompt",
            "n",
        ],
        Family::MultiImageToImage => &[
            "subject_image_list",
            "scene_image",
            "style_image",
            "prompt",
            "n",
            "aspect_ratio",
        ],
        Family::VirtualTryOn => &["human_image", "cloth_image"],
        _ => return None,
    })
}

/// Fields of a new-standard create body (8.1).
const NEW_STANDARD_FIELDS: &[&str] = &["prompt", "negative_prompt", "settings", "options"];
const NEW_STANDARD_SETTINGS: &[&str] = &[
    "resolution",
    "aspect_ratio",
    "duration",
    "audio",
    "multi_shot",
];
const NEW_STANDARD_OPTIONS: &[&str] = &["callback_url", "external_task_id", "watermark_info"];

/// Scalar parameters copied as they are: they are enum words or numbers chosen by the caller,
/// not free text, and they decide price and capability.
const WORD_PARAMS: &[&str] = &[
    "mode",
    "aspect_ratio",
    "resolution",
    "sound",
    "shot_type",
    "image_reference",
    "effect_scene",
    "video_id",
    "session_id",
    "audio_id",
];

/// Parameters whose JSON type is recorded with the value, since Kling's clients send them as
/// strings or numbers interchangeably (5.5).
const TYPED_PARAMS: &[&str] = &[
    "duration",
    "n",
    "cfg_scale",
    "image_fidelity",
    "human_fidelity",
    "multi_shot",
    "up_expansion_ratio",
    "down_expansion_ratio",
    "left_expansion_ratio",
    "right_expansion_ratio",
];

/// Ids inside lists and nested objects: voices, elements, lip-sync inputs.
const ID_PATHS: &[&str] = &[
    "voice_list[].voice_id",
    "element_list[].element_id",
    "input.video_id",
    "input.voice_id",
    "face_choose[].face_id",
    "face_choose[].audio_id",
];

/// Nested enum words and numbers worth keeping (lip-sync and effects inputs).
const NESTED_PARAMS: &[&str] = &[
    "input.mode",
    "input.voice_language",
    "input.voice_speed",
    "input.audio_type",
    "input.model_name",
    "input.duration",
    "watermark_info.enabled",
];

/// Longest scalar value copied into a summary; longer values are cut (these fields hold short
/// enum words and ids, so only a misbehaving caller reaches this).
const MAX_WORD_CHARS: usize = 64;

/// The JSON type name of a value.
pub fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Hex SHA-256 of some bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A scalar fit to be copied: strings cut to [`MAX_WORD_CHARS`], numbers and booleans as they
/// are; anything else is replaced by its type name.
fn word(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(s.chars().take(MAX_WORD_CHARS).collect()),
        Value::Number(_) | Value::Bool(_) => v.clone(),
        other => json!({ "json_type": json_type(other) }),
    }
}

/// The commitment of one free-text value: keyed HMAC plus its length in characters.
pub fn commit_text(field: &str, value: &Value, commitments: &Commitments) -> Value {
    match value {
        Value::String(s) => json!({
            "field": field,
            "commitment": commitments.text(s),
            "chars": s.chars().count(),
        }),
        // A non-string in a text field is committed through its JSON text, so a guessed value
        // can still be checked while nothing readable is stored.
        other => {
            let text = other.to_string();
            json!({
                "field": field,
                "json_type": json_type(other),
                "commitment": commitments.text(&text),
                "chars": text.chars().count(),
            })
        }
    }
}

/// Whether `s` is an `http://` or `https://` URL.
fn is_http_url(s: &str) -> bool {
    let lower = s.get(..8).unwrap_or(s).to_ascii_lowercase();
    lower.starts_with("https://") || lower.starts_with("http://")
}

/// Decodes base64 leniently: standard or URL-safe alphabet, padded or not, ASCII whitespace
/// ignored (clients wrap long base64 text).
fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let compact: String = s.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if compact.is_empty() {
        return None;
    }
    let normal: String = compact
        .trim_end_matches('=')
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            other => other,
        })
        .collect();
    let padded = match normal.len() % 4 {
        0 => normal,
        2 => normal + "==",
        3 => normal + "=",
        _ => return None,
    };
    STANDARD.decode(padded).ok()
}

/// The hash of one media value: the decoded bytes for base64 (a `data:` prefix is removed
/// first, though Kling refuses it), the URL text for URLs, the raw text otherwise.
pub fn hash_media(field: &str, value: &Value) -> Value {
    let Value::String(s) = value else {
        let text = value.to_string();
        return json!({
            "field": field,
            "form": "non-string",
            "json_type": json_type(value),
            "sha256": sha256_hex(text.as_bytes()),
            "bytes": text.len(),
        });
    };
    if is_http_url(s) {
        return json!({
            "field": field,
            "form": "url",
            "sha256": sha256_hex(s.as_bytes()),
            "url_bytes": s.len(),
        });
    }
    let (form, payload) = match s
        .strip_prefix("data:")
        .and_then(|rest| rest.split_once(','))
    {
        Some((_, data)) => ("data-uri-base64", data),
        None => ("base64", s.as_str()),
    };
    match decode_base64(payload) {
        Some(bytes) => json!({
            "field": field,
            "form": form,
            "sha256": sha256_hex(&bytes),
            "bytes": bytes.len(),
        }),
        None => json!({
            "field": field,
            "form": "opaque",
            "sha256": sha256_hex(s.as_bytes()),
            "bytes": s.len(),
        }),
    }
}

/// Host (and port) of a URL, without user info, lower-cased; `None` when there is none.
pub fn url_host(url: &str) -> Option<String> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    // User info can carry credentials; keep only what follows the last '@'.
    let host = authority.rsplit('@').next().unwrap_or_default();
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// `callback_url` as host plus hash: such URLs often carry tokens in their path or query.
pub fn summarize_callback_url(value: &Value) -> Value {
    match value {
        Value::String(url) => json!({
            "host": url_host(url),
            "sha256": sha256_hex(url.as_bytes()),
        }),
        other => json!({ "json_type": json_type(other) }),
    }
}

fn model_source_name(source: ModelSource) -> &'static str {
    match source {
        ModelSource::ModelName => "model_name",
        ModelSource::LegacyModelField => "legacy model field (server uses the default)",
        ModelSource::Default => "missing (server default)",
        ModelSource::Path => "path",
    }
}

/// Extracts the audit summary of a request body.
///
/// `operation` is the request's classification ([`routes::classify`]); for a create it names
/// the family and route whose text and media fields are committed or hashed. The result is a
/// JSON object with these keys (absent ones are omitted, see docs/events.md):
/// `api`, `family`, `kind`, `path_template`, `model` (`name`, `source`, `legacy_field`),
/// `params` (scalar parameters; typed ones as `{value, json_type}`), `camera_control`
/// (`type`, `has_config`), `callback` (`host`, `sha256`), `external_task_id`, `ids`,
/// `unknown_fields`, `fields_documented`, `text` (commitments), `media` (hashes), and
/// `body_json_type` when the body is not an object.
pub fn summarize_request(operation: &Operation, body: &Value, commitments: &Commitments) -> Value {
    let mut out = Map::new();
    out.insert(
        "api".into(),
        json!(operation.generation.map(|g| g.as_str())),
    );
    out.insert("family".into(), json!(operation.family.map(|f| f.as_str())));
    out.insert("kind".into(), json!(operation.kind.as_str()));
    out.insert("path_template".into(), json!(operation.path_template));
    let Value::Object(obj) = body else {
        out.insert("body_json_type".into(), json!(json_type(body)));
        return Value::Object(out);
    };

    let choice = routes::model_choice(operation, body);
    let mut model = Map::new();
    model.insert("name".into(), json!(choice.name));
    model.insert("source".into(), json!(model_source_name(choice.source)));
    if let Some(legacy) = &choice.legacy_field {
        model.insert(
            "legacy_field".into(),
            Value::String(legacy.chars().take(MAX_WORD_CHARS).collect()),
        );
    }
    out.insert("model".into(), Value::Object(model));

    let new_standard = operation.generation == Some(ApiGeneration::NewStandard);
    let settings = obj.get("settings").and_then(Value::as_object);
    let options = obj.get("options").and_then(Value::as_object);
    // New-standard bodies keep their parameters in `settings` and `options` (8.1).
    let lookup = |name: &str| -> Option<&Value> {
        obj.get(name)
            .or_else(|| settings.and_then(|s| s.get(name)))
            .or_else(|| options.and_then(|o| o.get(name)))
            .filter(|v| !v.is_null())
    };

    let mut params = Map::new();
    for name in WORD_PARAMS.iter().chain(["audio"].iter()) {
        if let Some(v) = lookup(name) {
            params.insert((*name).to_owned(), word(v));
        }
    }
    for name in TYPED_PARAMS {
        if let Some(v) = lookup(name) {
            params.insert(
                (*name).to_owned(),
                json!({ "value": word(v), "json_type": json_type(v) }),
            );
        }
    }
    for path in NESTED_PARAMS {
        if let Some((_, v)) = routes::field_values(body, path).into_iter().next() {
            params.insert(
                (*path).to_owned(),
                json!({ "value": word(v), "json_type": json_type(v) }),
            );
        }
    }
    if let Some(list) = obj.get("multi_prompt").and_then(Value::as_array) {
        params.insert("multi_prompt_items".into(), json!(list.len()));
    }
    out.insert("params".into(), Value::Object(params));

    if let Some(cc) = lookup("camera_control") {
        out.insert(
            "camera_control".into(),
            json!({
                "type": cc.get("type").map(word),
                "has_config": cc.get("config").is_some_and(|c| !c.is_null()),
            }),
        );
    }
    if let Some(url) = lookup("callback_url") {
        out.insert("callback".into(), summarize_callback_url(url));
    }
    if let Some(ext) = lookup("external_task_id") {
        out.insert("external_task_id".into(), word(ext));
    }

    let mut ids = Vec::new();
    for path in ID_PATHS {
        for (field, v) in routes::field_values(body, path) {
            ids.push(json!({ "field": field, "value": word(v) }));
        }
    }
    if !ids.is_empty() {
        out.insert("ids".into(), Value::Array(ids));
    }

    let route = operation.route;
    let (text_fields, media_fields): (&[&str], &[&str]) = match route {
        Some(r) => (r.text_fields, r.media_fields),
        None if new_standard => (
            &["prompt", "negative_prompt"],
            &[
                "image",
                "image_tail",
                "settings.image",
                "settings.image_tail",
            ],
        ),
        None => (&["prompt", "negative_prompt"], &[]),
    };

    let known: Option<Vec<&str>> = if new_standard {
        Some(NEW_STANDARD_FIELDS.to_vec())
    } else {
        operation.family.and_then(documented_fields).map(|f| {
            f.iter()
                .chain(COMMON_FIELDS)
                .copied()
                .collect::<Vec<&str>>()
        })
    };
    let documented = known.is_some();
    let known: Vec<&str> = known.unwrap_or_else(|| {
        // Best effort for loosely documented bodies: the route's own fields count as known.
        text_fields
            .iter()
            .chain(media_fields)
            .map(|p| top_level(p))
            .chain(COMMON_FIELDS.iter().copied())
            .collect()
    });
    let mut unknown: Vec<String> = obj
        .keys()
        .filter(|k| !known.contains(&k.as_str()))
        .map(|k| k.chars().take(MAX_WORD_CHARS).collect())
        .collect();
    if new_standard {
        unknown.extend(unknown_keys(settings, NEW_STANDARD_SETTINGS, "settings."));
        unknown.extend(unknown_keys(options, NEW_STANDARD_OPTIONS, "options."));
    }
    out.insert("unknown_fields".into(), json!(unknown));
    out.insert("fields_documented".into(), json!(documented));

    let mut texts = Vec::new();
    for path in text_fields {
        for (field, v) in routes::field_values(body, path) {
            texts.push(commit_text(&field, v, commitments));
        }
    }
    out.insert("text".into(), Value::Array(texts));

    let mut media = Vec::new();
    for path in media_fields {
        for (field, v) in routes::field_values(body, path) {
            media.push(hash_media(&field, v));
        }
    }
    out.insert("media".into(), Value::Array(media));
    Value::Object(out)
}

/// The first segment of a field path (`image_list[].image` -> `image_list`).
fn top_level(path: &str) -> &str {
    let first = path.split('.').next().unwrap_or(path);
    first.strip_suffix("[]").unwrap_or(first)
}

fn unknown_keys(obj: Option<&Map<String, Value>>, known: &[&str], prefix: &str) -> Vec<String> {
    obj.map(|o| {
        o.keys()
            .filter(|k| !known.contains(&k.as_str()))
            .map(|k| {
                format!(
                    "{prefix}{}",
                    k.chars().take(MAX_WORD_CHARS).collect::<String>()
                )
            })
            .collect()
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use kling_api::routes::classify;

    fn commitments() -> Commitments {
        Commitments::new([7; 32])
    }

    fn create(path: &str) -> Operation {
        classify("POST", path, None)
    }

    #[test]
    fn text_to_video_summary_keeps_parameters_and_commits_text() {
        let c = commitments();
        let body = json!({
            "prompt": "a red fox at dawn", "negative_prompt": "blurry",
            "multi_prompt": [{"index": 1, "prompt": "shot one", "duration": "2"}],
            "duration": 5, "mode": "pro", "aspect_ratio": "9:16", "cfg_scale": "0.4",
            "camera_control": {"type": "simple", "config": {"zoom": 5}},
            "callback_url": "https://user:tok@Hooks.Example.test:8443/cb?t=secret",
            "external_task_id": "order-7", "surprise": {"x": "hidden value"}
        });
        let s = summarize_request(&create("/v1/videos/text2video"), &body, &c);
        assert_eq!(s["family"], "text-to-video");
        assert_eq!(s["model"]["name"], "kling-v1");
        assert_eq!(s["model"]["source"], "missing (server default)");
        assert_eq!(
            s["params"]["duration"],
            json!({"value": 5, "json_type": "number"})
        );
        assert_eq!(s["params"]["cfg_scale"]["json_type"], "string");
        assert_eq!(s["params"]["mode"], "pro");
        assert_eq!(s["params"]["multi_prompt_items"], 1);
        assert_eq!(
            s["camera_control"],
            json!({"type": "simple", "has_config": true})
        );
        assert_eq!(s["callback"]["host"], "hooks.example.test:8443");
        assert_eq!(s["external_task_id"], "order-7");
        assert_eq!(s["unknown_fields"], json!(["surprise"]));
        let texts = s["text"].as_array().unwrap();
        let fields: Vec<&str> = texts.iter().map(|t| t["field"].as_str().unwrap()).collect();
        assert_eq!(
            fields,
            ["prompt", "negative_prompt", "multi_prompt[0].prompt"]
        );
        assert_eq!(texts[0]["commitment"], c.text("a red fox at dawn"));
        assert_eq!(texts[0]["chars"], 17);
        let printed = s.to_string();
        for secret in [
            "red fox",
            "blurry",
            "shot one",
            "tok@",
            "t=secret",
            "hidden value",
        ] {
            assert!(!printed.contains(secret), "{secret} leaked: {printed}");
        }
    }

    #[test]
    fn media_is_hashed_from_decoded_bytes_or_url() {
        let bytes = b"\x89PNG fake image bytes";
        let b64 = STANDARD.encode(bytes);
        let body = json!({
            "model_name": "kling-v1-6", "image": b64,
            "image_tail": "https://img.example.test/end.png",
            "dynamic_masks": [{"mask": URL_SAFE_NO_PAD.encode(bytes), "trajectories": []}],
            "static_mask": "not base64 at all!"
        });
        let s = summarize_request(&create("/v1/videos/image2video"), &body, &commitments());
        let media = s["media"].as_array().unwrap();
        assert_eq!(media.len(), 4);
        assert_eq!(media[0]["form"], "base64");
        assert_eq!(media[0]["sha256"], sha256_hex(bytes));
        assert_eq!(media[0]["bytes"], bytes.len());
        assert_eq!(media[1]["form"], "url");
        assert_eq!(
            media[1]["sha256"],
            sha256_hex(b"https://img.example.test/end.png")
        );
        assert_eq!(media[2]["form"], "opaque");
        assert_eq!(media[3]["field"], "dynamic_masks[0].mask");
        assert_eq!(media[3]["sha256"], sha256_hex(bytes));
        assert!(!s.to_string().contains(&b64));
        assert_eq!(s["model"]["source"], "model_name");
    }

    #[test]
    fn lip_sync_text_and_new_standard_bodies() {
        let c = commitments();
        let body = json!({"input": {"video_id": "v1", "mode": "text2video", "text": "hello",
            "voice_id": "oversea_male1", "voice_speed": 1.2}});
        let s = summarize_request(&create("/v1/videos/lip-sync"), &body, &c);
        assert_eq!(s["text"][0]["field"], "input.text");
        assert_eq!(s["text"][0]["commitment"], c.text("hello"));
        assert_eq!(s["params"]["input.voice_speed"]["value"], 1.2);
        assert_eq!(s["ids"].as_array().unwrap().len(), 2);

        let body = json!({"prompt": "city at night",
            "settings": {"duration": 5, "resolution": "1080p", "turbo": true},
            "options": {"external_task_id": "e-1"}});
        let s = summarize_request(&create("/text-to-video/kling-3.0"), &body, &c);
        assert_eq!(s["api"], "new");
        assert_eq!(s["model"]["name"], "kling-3.0");
        assert_eq!(s["params"]["duration"]["json_type"], "number");
        assert_eq!(s["params"]["resolution"], "1080p");
        assert_eq!(s["external_task_id"], "e-1");
        assert_eq!(s["unknown_fields"], json!(["settings.turbo"]));
        assert!(!s.to_string().contains("city at night"));
    }

    #[test]
    fn odd_bodies_do_not_panic() {
        let c = commitments();
        for body in [
            json!(null),
            json!([1, 2]),
            json!("x"),
            json!({"prompt": 42}),
            json!({"multi_prompt": "nope", "image": {"a": 1}, "camera_control": 3}),
        ] {
            for path in [
                "/v1/videos/text2video",
                "/v1/videos/image2video",
                "/nope",
                "/tasks",
            ] {
                let s = summarize_request(&create(path), &body, &c);
                assert!(s.is_object());
            }
        }
        let s = summarize_request(&create("/v1/videos/text2video"), &json!({"prompt": 42}), &c);
        assert_eq!(s["text"][0]["json_type"], "number");
        assert_eq!(s["text"][0]["commitment"], c.text("42"));
    }

    #[test]
    fn url_hosts_drop_user_info() {
        assert_eq!(
            url_host("https://a:b@Host.test/x").as_deref(),
            Some("host.test")
        );
        assert_eq!(url_host("http://h:81?q").as_deref(), Some("h:81"));
        assert_eq!(url_host("no scheme"), None);
        assert_eq!(url_host("https://"), None);
    }

    proptest::proptest! {
        #[test]
        fn base64_in_any_alphabet_hashes_to_the_bytes(bytes in proptest::collection::vec(
            proptest::prelude::any::<u8>(), 1..64)) {
            let want = sha256_hex(&bytes);
            for text in [STANDARD.encode(&bytes), URL_SAFE_NO_PAD.encode(&bytes)] {
                let h = hash_media("image", &Value::String(text));
                proptest::prop_assert_eq!(h["sha256"].as_str(), Some(want.as_str()));
                proptest::prop_assert_eq!(h["bytes"].as_u64(), Some(bytes.len() as u64));
            }
        }

        #[test]
        fn summaries_never_contain_text_values(prompt in "[a-z]{12,40}") {
            let body = json!({"prompt": prompt.clone(), "negative_prompt": prompt.clone(),
                "unknown": prompt.clone()});
            let s = summarize_request(&create("/v1/videos/text2video"), &body, &commitments());
            proptest::prop_assert!(!s.to_string().contains(&prompt));
        }
    }
}
