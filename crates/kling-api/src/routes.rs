//! The Kling route table and request classification.
//!
//! [`ROUTES`] lists every legacy route of kling-api.md 6.1 with what auditing needs to know
//! about its body: which fields hold free text (to be committed, never stored) and which hold
//! media (URLs or base64, up to 10 MB each). [`classify`] maps any method, path and query to an
//! [`Operation`] (API generation, family, kind, path template, model), so the gateway can record
//! every request and the simulator can route with the same rules.
//!
//! Field paths use a small notation: `a.b` descends into objects and `a[]` visits every element
//! of an array, e.g. `multi_prompt[].prompt`; [`field_values`] walks it.

use std::borrow::Cow;

use serde_json::Value;

/// Which request style a call uses (kling-api.md 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApiGeneration {
    /// `/v1/...` and `/account/...`, model in the body.
    Legacy,
    /// Root paths (`/text-to-video/kling-3.0`, `/tasks`), model in the path.
    NewStandard,
}

impl ApiGeneration {
    /// A stable lower-case name for records.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Legacy => "legacy",
            Self::NewStandard => "new",
        }
    }
}

/// Whether a create answers with a task to poll or with the result itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteMode {
    /// Answers with a task; `GET <path>/{id}` and `GET <path>` exist.
    Async,
    /// Answers at once; nothing to query afterwards.
    Sync,
}

/// The resource pack / concurrency pool a task draws on (11.5, 12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProductType {
    /// Video packs.
    Video,
    /// Image packs (`n` slots per task).
    Image,
    /// Virtual try-on packs.
    TryOn,
    /// Audio packs.
    Audio,
}

/// A task family or endpoint group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum Family {
    TextToVideo,
    ImageToVideo,
    MultiImageToVideo,
    VideoExtend,
    LipSync,
    IdentifyFace,
    AdvancedLipSync,
    VideoEffects,
    Avatar,
    OmniVideo,
    MotionControl,
    MultiElements,
    MultiElementsSelection,
    ImageRecognize,
    ImageGeneration,
    OmniImage,
    MultiImageToImage,
    ImageExpand,
    VirtualTryOn,
    TextToAudio,
    VideoToAudio,
    TextToSpeech,
    CustomVoices,
    PresetVoices,
    DeleteVoices,
    CustomElements,
    PresetElements,
    DeleteElements,
    AccountCosts,
    AccountBillingPackage,
    AccountBillingBalance,
    /// New-standard `/tasks` (query by ids, cursor listing).
    Tasks,
}

impl Family {
    /// A stable kebab-case name for records and configuration.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::TextToVideo => "text-to-video",
            Self::ImageToVideo => "image-to-video",
            Self::MultiImageToVideo => "multi-image-to-video",
            Self::VideoExtend => "video-extend",
            Self::LipSync => "lip-sync",
            Self::IdentifyFace => "identify-face",
            Self::AdvancedLipSync => "advanced-lip-sync",
            Self::VideoEffects => "video-effects",
            Self::Avatar => "avatar",
            Self::OmniVideo => "omni-video",
            Self::MotionControl => "motion-control",
            Self::MultiElements => "multi-elements",
            Self::MultiElementsSelection => "multi-elements-selection",
            Self::ImageRecognize => "image-recognize",
            Self::ImageGeneration => "image-generation",
            Self::OmniImage => "omni-image",
            Self::MultiImageToImage => "multi-image-to-image",
            Self::ImageExpand => "image-expand",
            Self::VirtualTryOn => "virtual-try-on",
            Self::TextToAudio => "text-to-audio",
            Self::VideoToAudio => "video-to-audio",
            Self::TextToSpeech => "text-to-speech",
            Self::CustomVoices => "custom-voices",
            Self::PresetVoices => "preset-voices",
            Self::DeleteVoices => "delete-voices",
            Self::CustomElements => "custom-elements",
            Self::PresetElements => "preset-elements",
            Self::DeleteElements => "delete-elements",
            Self::AccountCosts => "account-costs",
            Self::AccountBillingPackage => "account-billing-package",
            Self::AccountBillingBalance => "account-billing-balance",
            Self::Tasks => "tasks",
        }
    }

    /// The legacy route of this family, if it has one (the first one for selection calls).
    pub fn route(&self) -> Option<&'static RouteSpec> {
        ROUTES.iter().find(|r| r.family == *self)
    }
}

/// One legacy route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSpec {
    /// Family this route belongs to.
    pub family: Family,
    /// Method of the main call (`POST` for creates).
    pub method: &'static str,
    /// Exact path of the main call.
    pub path: &'static str,
    /// Async task or synchronous answer.
    pub mode: RouteMode,
    /// Pool the task draws on; `None` for calls that use no concurrency.
    pub product: Option<ProductType>,
    /// `model_name` the server assumes when none is given.
    pub default_model: Option<&'static str>,
    /// Body fields holding free text (commit them, never store them).
    pub text_fields: &'static [&'static str],
    /// Body fields holding media: URLs or raw base64.
    pub media_fields: &'static [&'static str],
    /// How sure the docs are about this route's body.
    pub body_documented: bool,
}

impl RouteSpec {
    /// Whether this route creates a task that can be queried afterwards.
    pub fn is_async(&self) -> bool {
        self.mode == RouteMode::Async
    }

    /// The family path without `/v1/`, e.g. `videos/text2video` (5.1).
    pub fn family_path(&self) -> &'static str {
        self.path.strip_prefix("/v1/").unwrap_or(self.path)
    }
}

const PROMPTS: &[&str] = &["prompt", "negative_prompt", "multi_prompt[].prompt"];

macro_rules! route {
    ($family:ident, $method:literal, $path:literal, $mode:ident, $product:expr, $model:expr,
     text: $text:expr, media: $media:expr, documented: $doc:literal) => {
        RouteSpec {
            family: Family::$family,
            method: $method,
            path: $path,
            mode: RouteMode::$mode,
            product: $product,
            default_model: $model,
            text_fields: $text,
            media_fields: $media,
            body_documented: $doc,
        }
    };
}

use ProductType::{Audio, Image, TryOn, Video};

/// Every legacy route of kling-api.md 6.1. Bodies marked `documented: false` are described
/// only loosely by the docs; their field lists are a best guess (unknown fields still reach
/// the gateway as names, 5.5).
pub static ROUTES: &[RouteSpec] = &[
    route!(TextToVideo, "POST", "/v1/videos/text2video", Async, Some(Video), Some("kling-v1"),
        text: PROMPTS, media: &[], documented: true),
    route!(ImageToVideo, "POST", "/v1/videos/image2video", Async, Some(Video), Some("kling-v1"),
        text: PROMPTS,
        media: &["image", "image_tail", "static_mask", "dynamic_masks[].mask"],
        documented: true),
    route!(MultiImageToVideo, "POST", "/v1/videos/multi-image2video", Async, Some(Video),
        Some("kling-v1-6"),
        text: &["prompt", "negative_prompt"], media: &["image_list[].image"], documented: true),
    route!(VideoExtend, "POST", "/v1/videos/video-extend", Async, Some(Video), None,
        text: &["prompt", "negative_prompt"], media: &[], documented: true),
    route!(LipSync, "POST", "/v1/videos/lip-sync", Async, Some(Video), None,
        text: &["input.text"], media: &["input.video_url", "input.audio_file", "input.audio_url"],
        documented: true),
    route!(IdentifyFace, "POST", "/v1/videos/identify-face", Sync, None, None,
        text: &[], media: &["video_url"], documented: true),
    route!(AdvancedLipSync, "POST", "/v1/videos/advanced-lip-sync", Async, Some(Video), None,
        text: &[], media: &["face_choose[].sound_file"], documented: true),
    route!(VideoEffects, "POST", "/v1/videos/effects", Async, Some(Video), None,
        text: &[], media: &["input.image", "input.images[]"], documented: true),
    route!(Avatar, "POST", "/v1/videos/avatar/image2video", Async, Some(Video), None,
        text: &["prompt"], media: &["image", "sound_file"], documented: true),
    route!(OmniVideo, "POST", "/v1/videos/omni-video", Async, Some(Video), Some("kling-video-o1"),
        text: PROMPTS, media: &["image_list[].image_url", "video_list[].video_url"],
        documented: true),
    route!(MotionControl, "POST", "/v1/videos/motion-control", Async, Some(Video), None,
        text: &["prompt", "negative_prompt"], media: &["image", "image_url", "video_url"],
        documented: false),
    route!(MultiElements, "POST", "/v1/videos/multi-elements", Async, Some(Video), None,
        text: &["prompt", "negative_prompt"], media: &["video_url", "image_list[].image"],
        documented: false),
    route!(MultiElementsSelection, "POST", "/v1/videos/multi-elements/init-selection", Sync, None,
        None, text: &[], media: &["video_url"], documented: false),
    route!(MultiElementsSelection, "POST", "/v1/videos/multi-elements/add-selection", Sync, None,
        None, text: &[], media: &[], documented: false),
    route!(MultiElementsSelection, "POST", "/v1/videos/multi-elements/delete-selection", Sync,
        None, None, text: &[], media: &[], documented: false),
    route!(MultiElementsSelection, "POST", "/v1/videos/multi-elements/clear-selection", Sync,
        None, None, text: &[], media: &[], documented: false),
    route!(MultiElementsSelection, "POST", "/v1/videos/multi-elements/preview-selection", Sync,
        None, None, text: &[], media: &[], documented: false),
    route!(ImageRecognize, "POST", "/v1/videos/image-recognize", Sync, None, None,
        text: &[], media: &["image"], documented: false),
    route!(ImageGeneration, "POST", "/v1/images/generations", Async, Some(Image), Some("kling-v1"),
        text: &["prompt", "negative_prompt"], media: &["image"], documented: true),
    route!(OmniImage, "POST", "/v1/images/omni-image", Async, Some(Image), None,
        text: &["prompt"], media: &["image_list[].image", "image_list[].image_url"],
        documented: false),
    route!(MultiImageToImage, "POST", "/v1/images/multi-image2image", Async, Some(Image), None,
        text: &["prompt"],
        media: &["subject_image_list[].subject_image", "scene_image", "style_image"],
        documented: true),
    route!(ImageExpand, "POST", "/v1/images/editing/expand", Async, Some(Image), None,
        text: &["prompt"], media: &["image"], documented: true),
    route!(VirtualTryOn, "POST", "/v1/images/kolors-virtual-try-on", Async, Some(TryOn),
        Some("kolors-virtual-try-on-v1"),
        text: &[], media: &["human_image", "cloth_image"], documented: true),
    route!(TextToAudio, "POST", "/v1/audio/text-to-audio", Async, Some(Audio), None,
        text: &["prompt"], media: &[], documented: false),
    route!(VideoToAudio, "POST", "/v1/audio/video-to-audio", Async, Some(Audio), None,
        text: &["prompt", "sound_effect_prompt", "bgm_prompt"], media: &["video_url"],
        documented: false),
    route!(TextToSpeech, "POST", "/v1/audio/tts", Sync, Some(Audio), None,
        text: &["text"], media: &[], documented: false),
    route!(CustomVoices, "POST", "/v1/general/custom-voices", Async, None, None,
        text: &[], media: &["voice_url", "video_url"], documented: false),
    route!(PresetVoices, "GET", "/v1/general/presets-voices", Sync, None, None,
        text: &[], media: &[], documented: true),
    route!(DeleteVoices, "POST", "/v1/general/delete-voices", Sync, None, None,
        text: &[], media: &[], documented: true),
    route!(CustomElements, "POST", "/v1/general/advanced-custom-elements", Async, None, None,
        text: &["element_description"], media: &["element_image_list[].image"],
        documented: false),
    route!(PresetElements, "GET", "/v1/general/advanced-presets-elements", Sync, None, None,
        text: &[], media: &[], documented: true),
    route!(DeleteElements, "POST", "/v1/general/delete-elements", Sync, None, None,
        text: &[], media: &[], documented: true),
    route!(AccountCosts, "GET", "/account/costs", Sync, None, None,
        text: &[], media: &[], documented: true),
    route!(AccountBillingPackage, "POST", "/account/billing/package", Sync, None, None,
        text: &[], media: &[], documented: true),
    route!(AccountBillingBalance, "POST", "/account/billing/balance", Sync, None, None,
        text: &[], media: &[], documented: true),
];

/// Path aliases some clients use (16.14): `okaris/kling` capitalises `Identify-face`.
const ALIASES: &[(&str, &str)] = &[("/v1/videos/Identify-face", "/v1/videos/identify-face")];

/// Capabilities known to exist on the new-standard API, with the family they mirror.
const NEW_CAPABILITIES: &[(&str, Family)] = &[
    ("text-to-video", Family::TextToVideo),
    ("image-to-video", Family::ImageToVideo),
    ("motion-control", Family::MotionControl),
    ("omni-video", Family::OmniVideo),
];

/// Which of the three lookup forms of kling-api.md 5.3 a request used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LookupForm {
    /// `GET /v1/<family>/{external_task_id}` (the task-id slot).
    PathSlot,
    /// `GET /v1/<family>?external_task_id=<id>`.
    QueryParam,
    /// `GET /v1/<family>/{external_task_id}?external_task_id=true`.
    PathWithFlag,
}

impl LookupForm {
    /// A stable name for records.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::PathSlot => "path-slot",
            Self::QueryParam => "query-param",
            Self::PathWithFlag => "path-with-flag",
        }
    }
}

/// What a request does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperationKind {
    /// Create a task (async routes) or make a synchronous call (sync routes; see
    /// [`Operation::route`]'s `mode`). New-standard creates too.
    Create,
    /// `GET /v1/<family>/{task_id}`. The id may still be an external id (the path-slot form
    /// cannot be told apart by syntax when the id looks like a Kling task id, see
    /// [`looks_like_task_id`]); servers should fall back to an external-id lookup.
    QueryOne {
        /// The id from the path.
        task_id: String,
    },
    /// A list: legacy `GET /v1/<family>` (pageNum/pageSize), a GET-only listing route, or the
    /// new-standard cursor listing `POST /tasks`.
    QueryList,
    /// A lookup by the caller's own id, legacy style.
    LookupByExternalId {
        /// The caller's id.
        external_task_id: String,
        /// Which request form carried it.
        form: LookupForm,
    },
    /// New-standard `GET /tasks?task_ids=..` or `?external_task_ids=..` (comma lists).
    QueryTasks {
        /// Kling task ids asked for.
        task_ids: Vec<String>,
        /// Caller ids asked for.
        external_task_ids: Vec<String>,
    },
    /// Account APIs (`/account/...`).
    Account,
    /// Nothing in the table matches (wrong method or unknown path).
    Unknown,
}

impl OperationKind {
    /// A stable name for records.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::QueryOne { .. } => "query-one",
            Self::QueryList => "query-list",
            Self::LookupByExternalId { .. } => "lookup-external-id",
            Self::QueryTasks { .. } => "query-tasks",
            Self::Account => "account",
            Self::Unknown => "unknown",
        }
    }
}

/// The classification of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// Legacy or new standard; `None` when the path matches neither.
    pub generation: Option<ApiGeneration>,
    /// The family, when known.
    pub family: Option<Family>,
    /// What the request does.
    pub kind: OperationKind,
    /// The path with ids replaced by placeholders (`{task_id}`, `{external_task_id}`,
    /// `{model}`); for unknown requests, the path as received.
    pub path_template: String,
    /// The model version taken from a new-standard create path.
    pub model: Option<String>,
    /// The new-standard capability segment (`text-to-video`), even when not in our list.
    pub capability: Option<String>,
    /// The legacy route matched, when there is one.
    pub route: Option<&'static RouteSpec>,
}

impl Operation {
    fn unknown(generation: Option<ApiGeneration>, path: &str) -> Self {
        Self {
            generation,
            family: None,
            kind: OperationKind::Unknown,
            path_template: path.to_owned(),
            model: None,
            capability: None,
            route: None,
        }
    }

    fn legacy(route: &'static RouteSpec, kind: OperationKind, template: String) -> Self {
        Self {
            generation: Some(ApiGeneration::Legacy),
            family: Some(route.family),
            kind,
            path_template: template,
            model: None,
            capability: None,
            route: Some(route),
        }
    }
}

/// Whether `id` has the shape of a Kling task id: 15 to 20 digits (2026) or 22 base64url
/// characters (2024-25). Used to tell the path-slot lookup form from a task-id query.
pub fn looks_like_task_id(id: &str) -> bool {
    let digits = (15..=20).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_digit());
    let legacy = id.len() == 22
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && id.bytes().any(|b| b.is_ascii_uppercase());
    digits || legacy
}

/// Decodes `%XX` escapes and `+` in a query component. Invalid escapes are kept as text.
fn percent_decode(s: &str) -> Cow<'_, str> {
    // Most names and values have nothing to decode: borrowed, no byte loop.
    if !s.contains(['%', '+']) {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' if i + 2 < bytes.len()
                && bytes[i + 1].is_ascii_hexdigit()
                && bytes[i + 2].is_ascii_hexdigit() =>
            {
                out.push(hex_value(bytes[i + 1]) * 16 + hex_value(bytes[i + 2]));
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Cow::Owned(
        String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
    )
}

fn hex_value(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        b'A'..=b'F' => b - b'A' + 10,
        _ => 0,
    }
}

/// All `(name, value)` pairs of a query string, percent-decoded, in order.
pub fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query_pairs_borrowed(query)
        .into_iter()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// [`query_pairs`], borrowing from `query` every name and value that has nothing to decode.
pub fn query_pairs_borrowed(query: Option<&str>) -> Vec<(Cow<'_, str>, Cow<'_, str>)> {
    let Some(query) = query else {
        return Vec::new();
    };
    query
        .trim_start_matches('?')
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(pair), Cow::Borrowed("")),
        })
        .collect()
}

/// The first value of query parameter `name`, percent-decoded.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query_pairs(query)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

fn comma_list(value: Option<String>) -> Vec<String> {
    value
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Classifies a request by method, path (without query) and query string.
///
/// Legacy paths match exactly (plus the aliases of 16.14); a path one segment below an async
/// create path is a query by id. The three lookup forms of 5.3 are told apart as documented on
/// [`LookupForm`]; a bare path-slot id is a [`OperationKind::QueryOne`] when it looks like a
/// Kling task id and a path-slot lookup otherwise. Method names are case-insensitive.
pub fn classify(method: &str, path: &str, query: Option<&str>) -> Operation {
    let method = method.to_ascii_uppercase();
    let path = ALIASES
        .iter()
        .find(|(alias, _)| *alias == path)
        .map_or(path, |(_, real)| real);

    if path.starts_with("/v1/") || path.starts_with("/account/") {
        return classify_legacy(&method, path, query);
    }
    classify_new(&method, path, query)
}

fn classify_legacy(method: &str, path: &str, query: Option<&str>) -> Operation {
    if let Some(route) = ROUTES.iter().find(|r| r.path == path) {
        let is_account = path.starts_with("/account/");
        if method == route.method {
            let kind = match (is_account, route.method) {
                (true, _) => OperationKind::Account,
                (false, "GET") => OperationKind::QueryList,
                _ => OperationKind::Create,
            };
            return Operation::legacy(route, kind, route.path.to_owned());
        }
        if method == "GET" && route.is_async() {
            let kind = match query_param(query, "external_task_id") {
                Some(ext) if !ext.is_empty() => OperationKind::LookupByExternalId {
                    external_task_id: ext,
                    form: LookupForm::QueryParam,
                },
                _ => OperationKind::QueryList,
            };
            return Operation::legacy(route, kind, route.path.to_owned());
        }
        return Operation::unknown(Some(ApiGeneration::Legacy), path);
    }
    if method != "GET" {
        return Operation::unknown(Some(ApiGeneration::Legacy), path);
    }
    let Some((parent, id)) = path.rsplit_once('/') else {
        return Operation::unknown(Some(ApiGeneration::Legacy), path);
    };
    let route = ROUTES.iter().find(|r| r.path == parent && r.is_async());
    let (Some(route), false) = (route, id.is_empty()) else {
        return Operation::unknown(Some(ApiGeneration::Legacy), path);
    };
    let flag = query_param(query, "external_task_id");
    let flagged = match flag.as_deref() {
        None => None,
        Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => Some(false),
        Some(_) => Some(true),
    };
    let (kind, slot) = match flagged {
        Some(true) => (
            OperationKind::LookupByExternalId {
                external_task_id: id.to_owned(),
                form: LookupForm::PathWithFlag,
            },
            "{external_task_id}",
        ),
        Some(false) => (
            OperationKind::QueryOne {
                task_id: id.to_owned(),
            },
            "{task_id}",
        ),
        None if looks_like_task_id(id) => (
            OperationKind::QueryOne {
                task_id: id.to_owned(),
            },
            "{task_id}",
        ),
        None => (
            OperationKind::LookupByExternalId {
                external_task_id: id.to_owned(),
                form: LookupForm::PathSlot,
            },
            "{external_task_id}",
        ),
    };
    Operation::legacy(route, kind, format!("{}/{slot}", route.path))
}

fn classify_new(method: &str, path: &str, query: Option<&str>) -> Operation {
    if path == "/tasks" {
        let kind = match method {
            "GET" => OperationKind::QueryTasks {
                task_ids: comma_list(query_param(query, "task_ids")),
                external_task_ids: comma_list(query_param(query, "external_task_ids")),
            },
            "POST" => OperationKind::QueryList,
            _ => return Operation::unknown(Some(ApiGeneration::NewStandard), path),
        };
        return Operation {
            generation: Some(ApiGeneration::NewStandard),
            family: Some(Family::Tasks),
            kind,
            path_template: "/tasks".to_owned(),
            model: None,
            capability: None,
            route: None,
        };
    }
    let mut segments = path.strip_prefix('/').unwrap_or(path).split('/');
    let (Some(capability), Some(model), None) = (segments.next(), segments.next(), segments.next())
    else {
        return Operation::unknown(None, path);
    };
    let capability_ok = !capability.is_empty()
        && capability
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !capability_ok || !model.starts_with("kling-") || method != "POST" {
        return Operation::unknown(None, path);
    }
    let family = NEW_CAPABILITIES
        .iter()
        .find(|(c, _)| *c == capability)
        .map(|(_, f)| *f);
    Operation {
        generation: Some(ApiGeneration::NewStandard),
        family,
        kind: OperationKind::Create,
        path_template: format!("/{capability}/{{model}}"),
        model: Some(model.to_owned()),
        capability: Some(capability.to_owned()),
        route: None,
    }
}

/// Every value at `field_path` in `body`, with its concrete path (`multi_prompt[1].prompt`).
/// Missing fields and `null` values are skipped; paths that run into a non-object or
/// non-array are simply not found.
pub fn field_values<'a>(body: &'a Value, field_path: &str) -> Vec<(String, &'a Value)> {
    let mut current: Vec<(String, &'a Value)> = vec![(String::new(), body)];
    for step in field_path.split('.') {
        let (name, each) = match step.strip_suffix("[]") {
            Some(name) => (name, true),
            None => (step, false),
        };
        let mut next = Vec::new();
        for (prefix, value) in current {
            let joined = if prefix.is_empty() {
                name.to_owned()
            } else {
                format!("{prefix}.{name}")
            };
            let Some(child) = value.as_object().and_then(|o| o.get(name)) else {
                continue;
            };
            if each {
                if let Some(items) = child.as_array() {
                    for (i, item) in items.iter().enumerate() {
                        next.push((format!("{joined}[{i}]"), item));
                    }
                }
            } else {
                next.push((joined, child));
            }
        }
        current = next;
    }
    current.retain(|(_, v)| !v.is_null());
    current
}

/// Where the model of a create came from (15: "note when the legacy `model` field was used or
/// the field was missing").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModelSource {
    /// `model_name` in the body.
    ModelName,
    /// Only the old `model` field was sent; Kling then uses the default model.
    LegacyModelField,
    /// Nothing sent; the family default applies.
    Default,
    /// The model version in a new-standard path.
    Path,
}

/// The model a create asked for, as the server will understand it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelChoice {
    /// The effective model name, `None` when the family has no default and none was sent.
    pub name: Option<String>,
    /// Where it came from.
    pub source: ModelSource,
    /// The value of the legacy `model` field, when one was sent.
    pub legacy_field: Option<String>,
}

/// Works out the model of a create from its operation and JSON body.
pub fn model_choice(operation: &Operation, body: &Value) -> ModelChoice {
    let legacy_field = body.get("model").and_then(Value::as_str).map(str::to_owned);
    if let Some(model) = &operation.model {
        return ModelChoice {
            name: Some(model.clone()),
            source: ModelSource::Path,
            legacy_field,
        };
    }
    // Effects carry the model inside `input` in older clients.
    let named = body
        .get("model_name")
        .or_else(|| body.get("input").and_then(|i| i.get("model_name")))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    let default = operation
        .route
        .and_then(|r| r.default_model)
        .map(str::to_owned);
    match named {
        Some(name) => ModelChoice {
            name: Some(name.to_owned()),
            source: ModelSource::ModelName,
            legacy_field,
        },
        None if legacy_field.is_some() => ModelChoice {
            name: default,
            source: ModelSource::LegacyModelField,
            legacy_field,
        },
        None => ModelChoice {
            name: default,
            source: ModelSource::Default,
            legacy_field,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_route_path_is_unique_and_classifies_to_itself() {
        for (i, route) in ROUTES.iter().enumerate() {
            assert!(
                ROUTES[i + 1..].iter().all(|r| r.path != route.path),
                "{}",
                route.path
            );
            let op = classify(route.method, route.path, None);
            assert_eq!(op.route, Some(route), "{}", route.path);
            assert_eq!(op.family, Some(route.family));
            assert_eq!(op.generation, Some(ApiGeneration::Legacy));
            assert_ne!(op.kind, OperationKind::Unknown);
        }
    }

    #[test]
    fn legacy_create_query_and_list() {
        let op = classify("POST", "/v1/videos/text2video", None);
        assert_eq!(
            (op.kind, op.family),
            (OperationKind::Create, Some(Family::TextToVideo))
        );
        let op = classify("get", "/v1/videos/text2video/866889456698785798", None);
        assert_eq!(
            op.kind,
            OperationKind::QueryOne {
                task_id: "866889456698785798".into()
            }
        );
        assert_eq!(op.path_template, "/v1/videos/text2video/{task_id}");
        let op = classify("GET", "/v1/images/generations/CjI17WevH1IAAAAAAHmgsw", None);
        assert_eq!(
            op.kind,
            OperationKind::QueryOne {
                task_id: "CjI17WevH1IAAAAAAHmgsw".into()
            }
        );
        let op = classify(
            "GET",
            "/v1/videos/image2video",
            Some("pageNum=1&pageSize=30"),
        );
        assert_eq!(op.kind, OperationKind::QueryList);
        let op = classify("POST", "/v1/images/kolors-virtual-try-on", None);
        assert_eq!(op.route.and_then(|r| r.product), Some(ProductType::TryOn));
    }

    #[test]
    fn three_lookup_forms() {
        let op = classify("GET", "/v1/videos/text2video/order-42", None);
        assert_eq!(
            op.kind,
            OperationKind::LookupByExternalId {
                external_task_id: "order-42".into(),
                form: LookupForm::PathSlot
            }
        );
        assert_eq!(op.path_template, "/v1/videos/text2video/{external_task_id}");
        let op = classify(
            "GET",
            "/v1/videos/text2video",
            Some("external_task_id=order%2042"),
        );
        assert_eq!(
            op.kind,
            OperationKind::LookupByExternalId {
                external_task_id: "order 42".into(),
                form: LookupForm::QueryParam
            }
        );
        assert_eq!(op.path_template, "/v1/videos/text2video");
        let op = classify(
            "GET",
            "/v1/videos/text2video/866889456698785798",
            Some("external_task_id=true"),
        );
        assert_eq!(
            op.kind,
            OperationKind::LookupByExternalId {
                external_task_id: "866889456698785798".into(),
                form: LookupForm::PathWithFlag
            }
        );
        let op = classify(
            "GET",
            "/v1/videos/text2video/order-42",
            Some("external_task_id=false"),
        );
        assert_eq!(
            op.kind,
            OperationKind::QueryOne {
                task_id: "order-42".into()
            }
        );
        // An empty query value is no lookup.
        let op = classify("GET", "/v1/videos/text2video", Some("external_task_id="));
        assert_eq!(op.kind, OperationKind::QueryList);
    }

    #[test]
    fn sync_routes_aliases_and_wrong_methods() {
        let op = classify("POST", "/v1/videos/Identify-face", None);
        assert_eq!(op.family, Some(Family::IdentifyFace));
        assert_eq!(op.route.map(|r| r.mode), Some(RouteMode::Sync));
        // Sync routes have no per-task query.
        assert_eq!(
            classify("GET", "/v1/videos/identify-face/123456789012345678", None).kind,
            OperationKind::Unknown
        );
        assert_eq!(
            classify("GET", "/v1/videos/identify-face", None).kind,
            OperationKind::Unknown
        );
        assert_eq!(
            classify("DELETE", "/v1/videos/text2video", None).kind,
            OperationKind::Unknown
        );
        assert_eq!(
            classify("POST", "/v1/videos/text2video/1", None).kind,
            OperationKind::Unknown
        );
        assert_eq!(
            classify("GET", "/v1/videos/text2video/", None).kind,
            OperationKind::Unknown
        );
        assert_eq!(
            classify("GET", "/v1/videos/TEXT2VIDEO", None).kind,
            OperationKind::Unknown
        );
        let op = classify("POST", "/v1/videos/multi-elements/add-selection", None);
        assert_eq!(
            (op.family, op.kind),
            (Some(Family::MultiElementsSelection), OperationKind::Create)
        );
        let op = classify("GET", "/v1/general/presets-voices", Some("pageNum=1"));
        assert_eq!(op.kind, OperationKind::QueryList);
        let op = classify("GET", "/v1/general/custom-voices/123456789012345678", None);
        assert!(matches!(op.kind, OperationKind::QueryOne { .. }));
    }

    #[test]
    fn account_routes() {
        let op = classify("GET", "/account/costs", Some("start_time=1&end_time=2"));
        assert_eq!(
            (op.kind, op.family),
            (OperationKind::Account, Some(Family::AccountCosts))
        );
        let op = classify("POST", "/account/billing/balance", None);
        assert_eq!(op.kind, OperationKind::Account);
        assert_eq!(
            classify("POST", "/account/costs", None).kind,
            OperationKind::Unknown
        );
    }

    #[test]
    fn new_standard_routes() {
        let op = classify("POST", "/text-to-video/kling-3.0-turbo", None);
        assert_eq!(op.generation, Some(ApiGeneration::NewStandard));
        assert_eq!(op.family, Some(Family::TextToVideo));
        assert_eq!(op.kind, OperationKind::Create);
        assert_eq!(op.model.as_deref(), Some("kling-3.0-turbo"));
        assert_eq!(op.path_template, "/text-to-video/{model}");
        let op = classify("POST", "/lip-sync/kling-9.9", None);
        assert_eq!(
            (op.family, op.capability.as_deref()),
            (None, Some("lip-sync"))
        );
        let op = classify(
            "GET",
            "/tasks",
            Some("task_ids=1,2,%203&external_task_ids="),
        );
        assert_eq!(
            op.kind,
            OperationKind::QueryTasks {
                task_ids: vec!["1".into(), "2".into(), "3".into()],
                external_task_ids: vec![]
            }
        );
        assert_eq!(
            classify("POST", "/tasks", None).kind,
            OperationKind::QueryList
        );
        assert_eq!(
            classify("GET", "/text-to-video/kling-3.0", None).kind,
            OperationKind::Unknown
        );
        assert_eq!(classify("POST", "/healthz", None).generation, None);
        assert_eq!(
            classify("POST", "/a/b/c", None).kind,
            OperationKind::Unknown
        );
    }

    #[test]
    fn task_id_shapes() {
        assert!(looks_like_task_id("866889456698785798"));
        assert!(looks_like_task_id("CjI17WevH1IAAAAAAHmgsw"));
        assert!(!looks_like_task_id("order-42"));
        assert!(!looks_like_task_id("12345"));
        assert!(!looks_like_task_id("abcdefghijklmnopqrstuv"));
    }

    #[test]
    fn field_paths_walk_objects_and_arrays() {
        let body = json!({
            "prompt": "p", "negative_prompt": null,
            "multi_prompt": [{"prompt": "a"}, {"index": 2}, {"prompt": "c"}],
            "dynamic_masks": [{"mask": "m0"}], "input": {"images": ["x", "y"], "text": 5},
        });
        let got: Vec<String> = field_values(&body, "multi_prompt[].prompt")
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        assert_eq!(
            got,
            vec!["multi_prompt[0].prompt", "multi_prompt[2].prompt"]
        );
        assert!(field_values(&body, "negative_prompt").is_empty());
        assert_eq!(field_values(&body, "input.images[]").len(), 2);
        assert_eq!(field_values(&body, "input.text")[0].1, &json!(5));
        assert!(field_values(&body, "prompt.deeper").is_empty());
        assert!(field_values(&json!([1]), "prompt").is_empty());
        assert!(field_values(&body, "input[]").is_empty());
    }

    #[test]
    fn route_field_lists_cover_documented_fields() {
        let i2v = Family::ImageToVideo.route().unwrap();
        for f in ["image", "image_tail", "static_mask", "dynamic_masks[].mask"] {
            assert!(i2v.media_fields.contains(&f));
        }
        assert!(Family::LipSync
            .route()
            .unwrap()
            .text_fields
            .contains(&"input.text"));
        assert!(Family::TextToVideo
            .route()
            .unwrap()
            .text_fields
            .contains(&"multi_prompt[].prompt"));
        assert_eq!(
            Family::ImageGeneration.route().unwrap().family_path(),
            "images/generations"
        );
    }

    #[test]
    fn model_choice_sources() {
        let t2v = classify("POST", "/v1/videos/text2video", None);
        let c = model_choice(&t2v, &json!({"model_name": "kling-v2-6"}));
        assert_eq!(
            (c.name.as_deref(), c.source),
            (Some("kling-v2-6"), ModelSource::ModelName)
        );
        let c = model_choice(&t2v, &json!({"model": "kling-v2-6"}));
        assert_eq!(
            (c.name.as_deref(), c.source),
            (Some("kling-v1"), ModelSource::LegacyModelField)
        );
        assert_eq!(c.legacy_field.as_deref(), Some("kling-v2-6"));
        let c = model_choice(&t2v, &json!({"model_name": ""}));
        assert_eq!(
            (c.name.as_deref(), c.source),
            (Some("kling-v1"), ModelSource::Default)
        );
        let fx = classify("POST", "/v1/videos/effects", None);
        let c = model_choice(&fx, &json!({"input": {"model_name": "kling-v1-6"}}));
        assert_eq!(c.name.as_deref(), Some("kling-v1-6"));
        let c = model_choice(&fx, &json!({}));
        assert_eq!((c.name, c.source), (None, ModelSource::Default));
        let new = classify("POST", "/image-to-video/kling-3.0", None);
        assert_eq!(model_choice(&new, &json!({})).source, ModelSource::Path);
    }

    #[test]
    fn query_decoding_is_total() {
        assert_eq!(query_param(Some("a=%zz&b=%4"), "a").as_deref(), Some("%zz"));
        assert_eq!(query_param(Some("a=%zz&b=%4"), "b").as_deref(), Some("%4"));
        assert_eq!(query_param(Some("a=%+f"), "a").as_deref(), Some("% f"));
        assert_eq!(query_param(Some("?x=1+2"), "x").as_deref(), Some("1 2"));
        assert_eq!(query_param(Some("flag"), "flag").as_deref(), Some(""));
        assert_eq!(
            query_param(Some("%E2%82%AC=%FF"), "€").as_deref(),
            Some("\u{FFFD}")
        );
        assert_eq!(query_param(None, "x"), None);
    }
}
