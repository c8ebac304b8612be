//! Typed request bodies for the legacy create calls (kling-api.md 6) and the new-standard
//! create (8.1), plus the `/account/costs` query.
//!
//! Every optional field is an `Option` (JSON `null` reads as absent, 5.5), numbers and
//! booleans accept their string forms through [`crate::lenient`], and fields the type does not
//! name are kept in `extra` so a body read here and written back loses nothing. Values are not
//! range-checked: that is the server's (and the simulator's) job.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::lenient::{LenientBool, LenientFloat, LenientInt, NumericString};
use crate::routes::Family;

/// A typed create body: which family it belongs to and the caller's id, if any.
pub trait CreateRequest: Serialize {
    /// The family whose create path takes this body.
    const FAMILY: Family;

    /// The caller's `external_task_id`, if set.
    fn external_task_id(&self) -> Option<&str>;
}

macro_rules! create_request {
    ($ty:ty, $family:ident) => {
        impl CreateRequest for $ty {
            const FAMILY: Family = Family::$family;
            fn external_task_id(&self) -> Option<&str> {
                self.external_task_id.as_deref()
            }
        }
    };
}

create_request!(TextToVideoRequest, TextToVideo);
create_request!(ImageToVideoRequest, ImageToVideo);
create_request!(MultiImageToVideoRequest, MultiImageToVideo);
create_request!(VideoExtendRequest, VideoExtend);
create_request!(LipSyncRequest, LipSync);
create_request!(AdvancedLipSyncRequest, AdvancedLipSync);
create_request!(VideoEffectsRequest, VideoEffects);
create_request!(ImageGenerationRequest, ImageGeneration);
create_request!(VirtualTryOnRequest, VirtualTryOn);

/// Which of the two effects `input` shapes a request used (6.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EffectsShape {
    /// `input.image`: a single-image scene.
    SingleImage,
    /// `input.images`: a dual-image scene.
    DualImage,
    /// Both fields set: ambiguous, a server should refuse it.
    Both,
    /// Neither field set.
    Missing,
}

impl EffectsInput {
    /// The input shape; an empty string or empty list counts as absent.
    pub fn shape(&self) -> EffectsShape {
        let single = self.image.as_deref().is_some_and(|s| !s.is_empty());
        let dual = self.images.as_ref().is_some_and(|v| !v.is_empty());
        match (single, dual) {
            (true, true) => EffectsShape::Both,
            (true, false) => EffectsShape::SingleImage,
            (false, true) => EffectsShape::DualImage,
            (false, false) => EffectsShape::Missing,
        }
    }
}

impl ImageGenerationRequest {
    /// Concurrency slots the task holds: `n`, default 1 (11.5).
    pub fn slots(&self) -> i64 {
        self.n.map_or(1, |n| n.value)
    }
}

impl TextToVideoRequest {
    /// A request with just a prompt; everything else left to the server's defaults.
    pub fn with_prompt(prompt: impl Into<String>) -> Self {
        Self {
            prompt: Some(prompt.into()),
            ..Self::default()
        }
    }
}

/// Query of `GET /account/costs` (12.2): a time window in ms and an optional pack name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountCostsQuery {
    /// Window start, Unix ms (required).
    pub start_time: i64,
    /// Window end, Unix ms (required).
    pub end_time: i64,
    /// Exact pack name to filter on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_pack_name: Option<String>,
}

impl AccountCostsQuery {
    /// The query string without a leading `?`.
    pub fn to_query(&self) -> String {
        let mut q = format!("start_time={}&end_time={}", self.start_time, self.end_time);
        if let Some(name) = &self.resource_pack_name {
            q.push_str("&resource_pack_name=");
            q.push_str(&encode_component(name));
        }
        q
    }
}

/// Percent-encodes a query component (RFC 3986 unreserved characters stay as they are).
pub fn encode_component(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `watermark_info` object.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct WatermarkInfo {
    /// Whether to produce a watermarked copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<LenientBool>,
    /// Fields this type does not name, kept so nothing is lost (5.5).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Camera movement (6.2).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CameraControl {
    /// `simple`, `down_back`, `forward_up`, `right_turn_forward`, `left_turn_forward`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Required for `simple`, absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<CameraConfig>,
    /// Fields this type does not name, kept so nothing is lost (5.5).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Six movement values in [-10, 10], exactly one non-zero.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CameraConfig {
    /// `horizontal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub horizontal: Option<LenientFloat>,
    /// `vertical`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vertical: Option<LenientFloat>,
    /// `pan`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pan: Option<LenientFloat>,
    /// `tilt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tilt: Option<LenientFloat>,
    /// `roll`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roll: Option<LenientFloat>,
    /// `zoom`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zoom: Option<LenientFloat>,
    /// Fields this type does not name, kept so nothing is lost (5.5).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One shot of a multi-shot request.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MultiPrompt {
    /// Shot number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<LenientInt>,
    /// Shot text (free text, at most 512 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Shot length in seconds, as a string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<NumericString>,
    /// Fields this type does not name, kept so nothing is lost (5.5).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A voice cited in the prompt as `<<<voice_n>>>`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct VoiceRef {
    /// Voice id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice_id: Option<String>,
    /// Fields this type does not name, kept so nothing is lost (5.5).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An element reference.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ElementRef {
    /// Element id (an integer in the docs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub element_id: Option<NumericString>,
    /// Fields this type does not name, kept so nothing is lost (5.5).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An item of `image_list` (multi-image to video).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ImageItem {
    /// URL or raw base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Fields this type does not name, kept so nothing is lost (5.5).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A motion-brush point; origin at the image's bottom-left.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TrajectoryPoint {
    /// Horizontal pixel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<LenientInt>,
    /// Vertical pixel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<LenientInt>,
    /// Fields this type does not name, kept so nothing is lost (5.5).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A motion-brush mask with its path.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DynamicMask {
    /// Mask image (URL or base64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask: Option<String>,
    /// 2 to 77 points for 5 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trajectories: Option<Vec<TrajectoryPoint>>,
    /// Fields this type does not name, kept so nothing is lost (5.5).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `POST /v1/videos/text2video` (6.2).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TextToVideoRequest {
    /// Model; `kling-v1` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_name: Option<String>,
    /// Old field; Kling treats it as if `model_name` were empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Free text, at most 2500 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Free text, at most 2500 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negative_prompt: Option<String>,
    /// [0, 1]; not for `kling-v2*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cfg_scale: Option<LenientFloat>,
    /// `std`, `pro` (`4k` on `kling-v3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// `on` or `off`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sound: Option<String>,
    /// Camera movement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub camera_control: Option<CameraControl>,
    /// `16:9`, `9:16`, `1:1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aspect_ratio: Option<String>,
    /// Seconds as a string (`"5"`); a number is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<NumericString>,
    /// Multi-shot generation (v3); `"true"` accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi_shot: Option<LenientBool>,
    /// `customize` or `intelligence`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shot_type: Option<String>,
    /// Per-shot prompts for `customize` (free text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi_prompt: Option<Vec<MultiPrompt>>,
    /// Voices cited in the prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice_list: Option<Vec<VoiceRef>>,
    /// `{enabled}`; results then also carry `watermark_url` (5.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark_info: Option<WatermarkInfo>,
    /// Where Kling posts status changes (10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    /// The caller's own id, unique per account (5.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_task_id: Option<String>,
    /// Fields this type does not name, kept so nothing is lost (5.5).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `POST /v1/videos/image2video` (6.3). No `aspect_ratio`: clients that send one keep it in `extra`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ImageToVideoRequest {
    /// Model; `kling-v1` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_name: Option<String>,
    /// Old field; Kling treats it as if `model_name` were empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Start frame: URL or raw base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// End frame: URL or raw base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_tail: Option<String>,
    /// Free text, at most 2500 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Free text, at most 2500 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negative_prompt: Option<String>,
    /// [0, 1]; not for v2.x.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cfg_scale: Option<LenientFloat>,
    /// `std` or `pro`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Seconds as a string; a number is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<NumericString>,
    /// `on` or `off`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sound: Option<String>,
    /// Motion-brush static area (image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub static_mask: Option<String>,
    /// Up to 6 motion-brush masks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dynamic_masks: Option<Vec<DynamicMask>>,
    /// Camera movement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub camera_control: Option<CameraControl>,
    /// Up to 2 voices; only with `sound: on`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice_list: Option<Vec<VoiceRef>>,
    /// Up to 3 elements; not with `voice_list`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub element_list: Option<Vec<ElementRef>>,
    /// Multi-shot generation (v3); `"true"` accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi_shot: Option<LenientBool>,
    /// `customize` or `intelligence`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shot_type: Option<String>,
    /// Per-shot prompts for `customize` (free text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi_prompt: Option<Vec<MultiPrompt>>,
    /// `{enabled}`; results then also carry `watermark_url` (5.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark_info: Option<WatermarkInfo>,
    /// Where Kling posts status changes (10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    /// The caller's own id, unique per account (5.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_task_id: Option<String>,
    /// Fields this type does not name, kept so nothing is lost (5.5).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `POST /v1/videos/multi-image2video` (6.4).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MultiImageToVideoRequest {
    /// Only `kling-v1-6` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_name: Option<String>,
    /// 1 to 4 images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_list: Option<Vec<ImageItem>>,
    /// Free text, required, at most 2500 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negative_prompt: Option<String>,
    /// `std` or `pro`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// `"5"` or `"10"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<NumericString>,
    /// `16:9`, `9:16`, `1:1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aspect_ratio: Option<String>,
    /// `{enabled}`; results then also carry `watermark_url` (5.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark_info: Option<WatermarkInfo>,
    /// Where Kling posts status changes (10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    /// The caller's own id, unique per account (5.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_task_id: Option<String>,
    /// Fields this type does not name, kept so nothing is lost (5.5).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `POST /v1/videos/video-extend` (6.5); model and mode come from the source video.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct VideoExtendRequest {
    /// The video to extend (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video_id: Option<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negative_prompt: Option<String>,
    /// [0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cfg_scale: Option<LenientFloat>,
    /// `{enabled}`; results then also carry `watermark_url` (5.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark_info: Option<WatermarkInfo>,
    /// Where Kling posts status changes (10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    /// The caller's own id, unique per account (5.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_task_id: Option<String>,
    /// Fields this type does not name, kept so nothing is lost (5.5).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The `input` object of legacy lip-sync (6.6).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct LipSyncInput {
    /// A Kling video id (exactly one of `video_id`, `video_url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video_id: Option<String>,
    /// An uploaded video.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video_url: Option<String>,
    /// `text2video` or `audio2video`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Free text to speak (text2video), at most 120 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Voice for text2video.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice_id: Option<String>,
    /// `zh` or `en`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice_language: Option<String>,
    /// 0.8 to 2.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice_speed: Option<LenientFloat>,
    /// `file` or `url` (audio2video).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_type: Option<String>,
    /// Raw base64 audio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_file: Option<String>,
    /// Audio URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_url: Option<String>,
    /// Fields this type does not name, kept so nothing is lost (5.5).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `POST /v1/videos/lip-sync` (6.6, legacy route).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct LipSyncRequest {
    /// What to sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<LipSyncInput>,
    /// `{enabled}`; results then also carry `watermark_url` (5.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark_info: Option<WatermarkInfo>,
    /// Where Kling posts status changes (10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    /// The caller's own id, unique per account (5.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_task_id: Option<String>,
    /// Fields this type does not name, kept so nothing is lost (5.5).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `POST /v1/videos/identify-face` (synchronous face scan).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct IdentifyFaceRequest {
    /// A Kling video id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video_id: Option<String>,
    /// An uploaded video, 2 to 60 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video_url: Option<String>,
    /// Fields this type does not name, kept so nothing is lost (5.5).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One face found by the scan.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct FaceData {
    /// Id to choose in advanced lip-sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub face_id: Option<String>,
    /// Preview image URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub face_image: Option<String>,
    /// Ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<LenientInt>,
    /// Ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<LenientInt>,
    /// Fields this type does not name, kept so nothing is lost (5.5).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `data` of the face scan.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct IdentifyFaceResponse {
    /// Session for the advanced lip-sync call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Units charged for the scan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_unit_deduction: Option<NumericString>,
    /// Faces found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub face_data: Option<Vec<FaceData>>,
    /// Fields this type does not name, kept so nothing is lost (5.5).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One `face_choose` entry of advanced lip-sync.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct FaceChoice {
    /// Face from the scan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub face_id: Option<String>,
    /// A generated audio id (or `sound_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_id: Option<String>,
    /// Raw base64 audio or URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sound_file: Option<String>,
    /// Ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sound_start_time: Option<LenientInt>,
    /// Ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sound_end_time: Option<LenientInt>,
    /// Ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sound_insert_time: Option<LenientInt>,
    /// 0 to 2, default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sound_volume: Option<LenientFloat>,
    /// 0 to 2, default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_audio_volume: Option<LenientFloat>,
    /// Fields this type does not name, kept so nothing is lost (5.5).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `POST /v1/videos/advanced-lip-sync` (6.6).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AdvancedLipSyncRequest {
    /// From the face scan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// One face per task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub face_choose: Option<Vec<FaceChoice>>,
    /// `{enabled}`; results then also carry `watermark_url` (5.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark_info: Option<WatermarkInfo>,
    /// Where Kling posts status changes (10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    /// The caller's own id, unique per account (5.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_task_id: Option<String>,
    /// Fields this type does not name, kept so nothing is lost (5.5).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The `input` of video effects: `image` for single-image scenes, `images` (2) for dual-image scenes; older clients add `model_name`, `mode`, `duration`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct EffectsInput {
    /// Single-image scenes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Dual-image scenes: left then right.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<Vec<String>>,
    /// Older clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_name: Option<String>,
    /// Older clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Older clients: `"5"` or `"10"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<NumericString>,
    /// Fields this type does not name, kept so nothing is lost (5.5).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `POST /v1/videos/effects` (6.7).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct VideoEffectsRequest {
    /// Scene name; an open list that changes weekly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect_scene: Option<String>,
    /// Scene inputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<EffectsInput>,
    /// `{enabled}`; results then also carry `watermark_url` (5.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark_info: Option<WatermarkInfo>,
    /// Where Kling posts status changes (10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    /// The caller's own id, unique per account (5.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_task_id: Option<String>,
    /// Fields this type does not name, kept so nothing is lost (5.5).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `POST /v1/images/generations` (6.8).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ImageGenerationRequest {
    /// Model; `kling-v1` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_name: Option<String>,
    /// Old field, still honoured for images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Free text, required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Free text; not with `image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negative_prompt: Option<String>,
    /// Reference image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// `subject` or `face`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_reference: Option<String>,
    /// [0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_fidelity: Option<LenientFloat>,
    /// [0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub human_fidelity: Option<LenientFloat>,
    /// `1k` or `2k`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
    /// 1 to 9 images; also the concurrency slots held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<LenientInt>,
    /// Output shape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aspect_ratio: Option<String>,
    /// Newer models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub element_list: Option<Vec<ElementRef>>,
    /// `{enabled}`; results then also carry `watermark_url` (5.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark_info: Option<WatermarkInfo>,
    /// Where Kling posts status changes (10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    /// The caller's own id, unique per account (5.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_task_id: Option<String>,
    /// Fields this type does not name, kept so nothing is lost (5.5).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `POST /v1/images/kolors-virtual-try-on` (6.9).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct VirtualTryOnRequest {
    /// `kolors-virtual-try-on-v1` (default) or `-v1-5`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_name: Option<String>,
    /// Person image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub human_image: Option<String>,
    /// Garment image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloth_image: Option<String>,
    /// `{enabled}`; results then also carry `watermark_url` (5.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark_info: Option<WatermarkInfo>,
    /// Where Kling posts status changes (10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    /// The caller's own id, unique per account (5.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_task_id: Option<String>,
    /// Fields this type does not name, kept so nothing is lost (5.5).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `settings` of a new-standard create (8.1).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NewStandardSettings {
    /// `720p`, `1080p`, `4k`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
    /// `16:9`, `9:16`, `1:1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aspect_ratio: Option<String>,
    /// Seconds as an integer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<LenientInt>,
    /// `native` or `off`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<String>,
    /// 3.0 models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi_shot: Option<LenientBool>,
    /// Fields this type does not name, kept so nothing is lost (5.5).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `options` of a new-standard create (8.1).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NewStandardOptions {
    /// Callback target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    /// Caller id, unique per account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_task_id: Option<String>,
    /// `{enabled}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark_info: Option<WatermarkInfo>,
    /// Fields this type does not name, kept so nothing is lost (5.5).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `POST /<capability>/<model-version>` (8.1).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NewStandardCreateRequest {
    /// Free text, required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Output settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<NewStandardSettings>,
    /// Callback, external id, watermark.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<NewStandardOptions>,
    /// Fields this type does not name, kept so nothing is lost (5.5).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_to_video_accepts_loose_types_and_keeps_unknown_fields() {
        let body = json!({
            "model_name": "kling-v3", "prompt": "A calm sunrise", "duration": 5,
            "multi_shot": "true", "cfg_scale": "0.5", "image_tail": null,
            "multi_prompt": [{"index": 1, "prompt": "shot one", "duration": "2"}],
            "camera_control": {"type": "simple", "config": {"zoom": 5, "pan": 0}},
            "watermark_info": {"enabled": true}, "external_task_id": "order-42",
            "surprise": {"nested": 1}
        });
        let req: TextToVideoRequest = serde_json::from_value(body.clone()).unwrap();
        assert_eq!(req.duration.as_ref().unwrap().as_i64(), Some(5));
        assert!(req.duration.as_ref().unwrap().sent_as_number);
        assert!(req.multi_shot.unwrap().value && req.multi_shot.unwrap().sent_as_string);
        assert_eq!(req.cfg_scale.unwrap().value, 0.5);
        assert_eq!(
            req.multi_prompt.as_ref().unwrap()[0].prompt.as_deref(),
            Some("shot one")
        );
        assert_eq!(
            req.camera_control.as_ref().unwrap().kind.as_deref(),
            Some("simple")
        );
        assert_eq!(req.extra.get("surprise"), Some(&json!({"nested": 1})));
        // Text to video has no `image_tail`, so even its `null` is kept as an unknown field.
        assert_eq!(req.extra.get("image_tail"), Some(&Value::Null));
        assert_eq!(CreateRequest::external_task_id(&req), Some("order-42"));
        // Writing back keeps every field in its original JSON type.
        assert_eq!(serde_json::to_value(&req).unwrap(), body);
        // A known field sent as `null` reads as absent.
        let req: TextToVideoRequest =
            serde_json::from_value(json!({"prompt": null, "mode": "std"})).unwrap();
        assert!(req.prompt.is_none() && req.extra.is_empty());
    }

    #[test]
    fn minimal_request_serializes_only_set_fields() {
        let req = TextToVideoRequest::with_prompt("hi");
        assert_eq!(serde_json::to_value(&req).unwrap(), json!({"prompt": "hi"}));
        assert_eq!(
            <TextToVideoRequest as CreateRequest>::FAMILY,
            Family::TextToVideo
        );
    }

    #[test]
    fn wrong_types_are_errors_not_panics() {
        assert!(serde_json::from_value::<TextToVideoRequest>(json!({"prompt": 5})).is_err());
        assert!(serde_json::from_value::<TextToVideoRequest>(json!({"duration": [5]})).is_err());
        assert!(serde_json::from_value::<ImageGenerationRequest>(json!({"n": "many"})).is_err());
        assert!(serde_json::from_value::<TextToVideoRequest>(json!([1, 2])).is_err());
    }

    #[test]
    fn image_to_video_with_motion_brush() {
        let req: ImageToVideoRequest = serde_json::from_value(json!({
            "image": "https://example.invalid/a.png", "aspect_ratio": "16:9",
            "dynamic_masks": [{"mask": "bWFzaw==", "trajectories": [{"x": 1, "y": "2"}]}]
        }))
        .unwrap();
        let mask = &req.dynamic_masks.as_ref().unwrap()[0];
        assert_eq!(mask.trajectories.as_ref().unwrap()[0].y.unwrap().value, 2);
        assert_eq!(req.extra.get("aspect_ratio"), Some(&json!("16:9")));
    }

    #[test]
    fn effects_both_input_shapes() {
        let single: VideoEffectsRequest = serde_json::from_value(
            json!({"effect_scene": "squish", "input": {"image": "x", "model_name": "kling-v1-6", "duration": "5"}}),
        )
        .unwrap();
        assert_eq!(
            single.input.as_ref().unwrap().shape(),
            EffectsShape::SingleImage
        );
        let dual: VideoEffectsRequest = serde_json::from_value(
            json!({"effect_scene": "hug_pro", "input": {"images": ["a", "b"]}}),
        )
        .unwrap();
        assert_eq!(
            dual.input.as_ref().unwrap().shape(),
            EffectsShape::DualImage
        );
        let both = EffectsInput {
            image: Some("a".into()),
            images: Some(vec!["b".into()]),
            ..EffectsInput::default()
        };
        assert_eq!(both.shape(), EffectsShape::Both);
        assert_eq!(EffectsInput::default().shape(), EffectsShape::Missing);
    }

    #[test]
    fn lip_sync_and_advanced() {
        let req: LipSyncRequest = serde_json::from_value(json!({"input": {
            "video_id": "v1", "mode": "text2video", "text": "hello", "voice_id": "oversea_male1",
            "voice_speed": "1.0"}}))
        .unwrap();
        assert_eq!(req.input.as_ref().unwrap().voice_speed.unwrap().value, 1.0);
        let adv: AdvancedLipSyncRequest = serde_json::from_value(json!({
            "session_id": "s", "face_choose": [{"face_id": "0", "sound_file": "AAAA",
            "sound_start_time": 0, "sound_end_time": "3000", "sound_volume": 1}]}))
        .unwrap();
        assert_eq!(
            adv.face_choose.as_ref().unwrap()[0]
                .sound_end_time
                .unwrap()
                .value,
            3000
        );
        let scan: IdentifyFaceResponse = serde_json::from_value(json!({
            "session_id": "s", "final_unit_deduction": "0.2",
            "face_data": [{"face_id": "0", "face_image": "u", "start_time": 0, "end_time": 5200}]}))
        .unwrap();
        assert_eq!(scan.final_unit_deduction.unwrap().as_f64(), Some(0.2));
    }

    #[test]
    fn image_generation_slots() {
        let req: ImageGenerationRequest =
            serde_json::from_value(json!({"prompt": "cat", "n": "9"})).unwrap();
        assert_eq!(req.slots(), 9);
        assert_eq!(ImageGenerationRequest::default().slots(), 1);
        let tryon: VirtualTryOnRequest =
            serde_json::from_value(json!({"human_image": "h", "cloth_image": "c"})).unwrap();
        assert_eq!(tryon.cloth_image.as_deref(), Some("c"));
    }

    #[test]
    fn new_standard_create_body() {
        let req: NewStandardCreateRequest = serde_json::from_value(json!({
            "prompt": "p", "settings": {"duration": 5, "resolution": "1080p", "audio": "native"},
            "options": {"external_task_id": "e1", "callback_url": "https://cb.invalid/x"}}))
        .unwrap();
        assert_eq!(req.settings.as_ref().unwrap().duration.unwrap().value, 5);
        assert_eq!(
            req.options.as_ref().unwrap().external_task_id.as_deref(),
            Some("e1")
        );
    }

    #[test]
    fn account_costs_query_string() {
        let q = AccountCostsQuery {
            start_time: 1,
            end_time: 2,
            resource_pack_name: Some("Video pack & more".into()),
        };
        assert_eq!(
            q.to_query(),
            "start_time=1&end_time=2&resource_pack_name=Video%20pack%20%26%20more"
        );
        let decoded = crate::routes::query_param(Some(&q.to_query()), "resource_pack_name");
        assert_eq!(decoded.as_deref(), Some("Video pack & more"));
    }
}
