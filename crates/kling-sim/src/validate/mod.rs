//! Create-request validation per family (reference sections 5 and 6). Checks are shallow on
//! purpose: field presence, types, enums, ranges and combinations, never the media itself. A
//! failure is answered as 400/1201 with a message naming the field.

mod fields;
mod image;
mod new_standard;
mod other;
mod video;

use serde_json::{Map, Value};

pub use fields::{is_http_url, Invalid};
use fields::{Checked, Fields};
pub use new_standard::{
    capability_of, resolve as resolve_new, validate_new_create, NewModel, NewPath,
};

use crate::config::SimConfig;
use crate::families::{Family, FamilyKind, PackType};

/// The parts of a valid create request that the simulator acts on.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSpec {
    pub model: String,
    pub mode: Option<String>,
    /// Video length in seconds for video tasks.
    pub duration_secs: Option<u32>,
    /// Outputs produced (`n` for images, else 1).
    pub outputs: u32,
    /// Concurrency slots held while running.
    pub slots: u32,
    /// Free text checked against blocked and fail words; never logged.
    pub texts: Vec<String>,
    pub external_task_id: Option<String>,
    pub callback_url: Option<String>,
    pub watermark: bool,
    /// The source video of extension, lip-sync and video-to-audio tasks.
    pub source_video: Option<SourceVideo>,
    /// The face-scan session an advanced lip-sync refers to.
    pub session_id: Option<String>,
}

/// A source video named by id or by URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceVideo {
    Id(String),
    Url(String),
}

/// What a family validator returns; the common fields are added by [`validate_create`].
#[derive(Debug, Default)]
struct Draft {
    model: String,
    mode: Option<String>,
    duration_secs: Option<u32>,
    outputs: u32,
    texts: Vec<String>,
    source_video: Option<SourceVideo>,
    session_id: Option<String>,
}

impl Draft {
    fn text(&mut self, text: Option<&str>) {
        if let Some(t) = text.filter(|t| !t.is_empty()) {
            self.texts.push(t.to_owned());
        }
    }
}

/// Validates a create body for `family`.
///
/// # Errors
/// The first offending field, as an [`Invalid`].
pub fn validate_create(
    family: &Family,
    body: &Map<String, Value>,
    cfg: &SimConfig,
) -> Checked<TaskSpec> {
    let f = Fields::new(body, cfg.strict);
    let draft = match family.kind {
        FamilyKind::TextToVideo => video::text_to_video(&f, family, cfg)?,
        FamilyKind::ImageToVideo => video::image_to_video(&f, family, cfg)?,
        FamilyKind::MultiImageToVideo => video::multi_image_to_video(&f, family, cfg)?,
        FamilyKind::VideoExtend => video::extend(&f)?,
        FamilyKind::OmniVideo => video::omni(&f, family, cfg)?,
        FamilyKind::MotionControl | FamilyKind::MultiElements => video::generic(&f, family, cfg)?,
        FamilyKind::LipSync => other::lip_sync(&f)?,
        FamilyKind::AdvancedLipSync => other::advanced_lip_sync(&f)?,
        FamilyKind::Effects => other::effects(&f, cfg)?,
        FamilyKind::Avatar => other::avatar(&f)?,
        FamilyKind::TextToAudio => other::text_to_audio(&f)?,
        FamilyKind::VideoToAudio => other::video_to_audio(&f)?,
        FamilyKind::ImageGeneration => image::generation(&f, family, cfg)?,
        FamilyKind::OmniImage => image::omni(&f, family, cfg)?,
        FamilyKind::MultiImageToImage => image::multi_image(&f, family, cfg)?,
        FamilyKind::ImageExpand => image::expand(&f)?,
        FamilyKind::TryOn => image::try_on(&f, family, cfg)?,
    };

    let callback_url = f.string("callback_url")?;
    if callback_url.is_some_and(|u| !is_http_url(u)) {
        return Err(Invalid::new(
            "callback_url",
            "callback_url must be an http(s) URL",
        ));
    }
    let external_task_id = f.string("external_task_id")?.filter(|s| !s.is_empty());
    let watermark = match f.object("watermark_info", "watermark_info.")? {
        Some(w) => w.boolean("enabled")?.unwrap_or(false),
        None => false,
    };
    let outputs = draft.outputs.max(1);
    let slots = if family.pack == PackType::Image {
        outputs
    } else {
        1
    };
    Ok(TaskSpec {
        model: draft.model,
        mode: draft.mode,
        duration_secs: draft.duration_secs,
        outputs,
        slots,
        texts: draft.texts,
        external_task_id: external_task_id.map(str::to_owned),
        callback_url: callback_url.map(str::to_owned),
        watermark,
        source_video: draft.source_video,
        session_id: draft.session_id,
    })
}

/// Validates an `identify-face` body: exactly one of `video_id` or `video_url`.
///
/// # Errors
/// The offending field, as an [`Invalid`].
pub fn validate_identify_face(body: &Map<String, Value>, cfg: &SimConfig) -> Checked<SourceVideo> {
    source_video(&Fields::new(body, cfg.strict))
}

/// `model_name`, checked against the family's list (or its configured replacement). The old
/// `model` field is ignored, as Kling does (section 6.2).
fn model(f: &Fields<'_>, family: &Family, cfg: &SimConfig) -> Checked<String> {
    let Some(name) = f.string("model_name")?.filter(|s| !s.is_empty()) else {
        return Ok(family.default_model.to_owned());
    };
    let allowed: Vec<&str> = match cfg.models.get(family.path) {
        Some(list) => list.iter().map(String::as_str).collect(),
        None => family.models.to_vec(),
    };
    if allowed.is_empty() || allowed.contains(&name) {
        Ok(name.to_owned())
    } else {
        Err(Invalid::new(
            f.name("model_name"),
            format!(
                "{} must be one of: {}",
                f.name("model_name"),
                allowed.join(", ")
            ),
        ))
    }
}

/// Exactly one of `video_id` and `video_url`.
fn source_video(f: &Fields<'_>) -> Checked<SourceVideo> {
    let id = f.string("video_id")?.filter(|s| !s.is_empty());
    let url = f.url("video_url")?;
    match (id, url) {
        (Some(id), None) => Ok(SourceVideo::Id(id.to_owned())),
        (None, Some(url)) => Ok(SourceVideo::Url(url.to_owned())),
        (Some(_), Some(_)) => Err(Invalid::new(
            f.name("video_id"),
            format!(
                "only one of {} and {} may be given",
                f.name("video_id"),
                f.name("video_url")
            ),
        )),
        (None, None) => Err(f.missing("video_id")),
    }
}

/// `n` in 1..=9, default 1.
fn image_count(f: &Fields<'_>) -> Checked<u32> {
    Ok(f.integer("n", 1, 9)?.map_or(1, |n| n.unsigned_abs() as u32))
}

#[cfg(test)]
mod tests;
