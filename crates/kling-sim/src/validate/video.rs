//! Video families: text to video, image to video, multi-image to video, extension, omni video,
//! and the loosely documented motion-control and multi-elements families.

use super::fields::{Checked, Fields, Invalid};
use super::{model, Draft};
use crate::config::SimConfig;
use crate::families::Family;

const MAX_PROMPT: usize = 2500;
const ASPECT_RATIOS: &[&str] = &["16:9", "9:16", "1:1"];
const CLASSIC_DURATIONS: &[u32] = &[5, 10];
const V3_DURATIONS: &[u32] = &[3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
const SHOT_DURATIONS: &[u32] = &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

fn is_v3(model: &str) -> bool {
    model == "kling-v3" || model == "kling-v3-omni"
}

/// `mode`: `std`/`pro`, plus `4k` on the v3 models.
fn mode(f: &Fields<'_>, model: &str, default: &str) -> Checked<String> {
    let allowed: &[&str] = if is_v3(model) {
        &["std", "pro", "4k"]
    } else {
        &["std", "pro"]
    };
    Ok(f.one_of("mode", allowed)?.unwrap_or(default).to_owned())
}

/// `duration`: `"5"`/`"10"`, or `"3"` to `"15"` on the v3 models; default 5.
fn duration(f: &Fields<'_>, model: &str) -> Checked<u32> {
    let allowed = if is_v3(model) {
        V3_DURATIONS
    } else {
        CLASSIC_DURATIONS
    };
    Ok(f.duration("duration", allowed)?.unwrap_or(5))
}

/// `camera_control`: a known type; `config` only (and then required) for `simple`, with six
/// values in [-10, 10] of which exactly one is non-zero.
fn camera_control(f: &Fields<'_>) -> Checked<()> {
    let Some(cc) = f.object("camera_control", "camera_control.")? else {
        return Ok(());
    };
    let types = [
        "simple",
        "down_back",
        "forward_up",
        "right_turn_forward",
        "left_turn_forward",
    ];
    let kind = cc
        .one_of("type", &types)?
        .ok_or_else(|| cc.missing("type"))?;
    let config = cc.object("config", "camera_control.config.")?;
    match (kind, config) {
        ("simple", None) => Err(cc.missing("config")),
        ("simple", Some(config)) => {
            let mut non_zero = 0;
            for axis in ["horizontal", "vertical", "pan", "tilt", "roll", "zoom"] {
                if config.number(axis, -10.0, 10.0)?.is_some_and(|v| v != 0.0) {
                    non_zero += 1;
                }
            }
            if non_zero == 1 {
                Ok(())
            } else {
                Err(Invalid::new(
                    "camera_control.config",
                    "camera_control.config must have exactly one non-zero value",
                ))
            }
        }
        (_, Some(_)) => Err(Invalid::new(
            "camera_control.config",
            "camera_control.config is only allowed with type simple",
        )),
        (_, None) => Ok(()),
    }
}

/// Multi-shot fields shared by text and image to video. Returns whether the prompt is
/// replaced by per-shot prompts.
fn multi_shot(f: &Fields<'_>, total: u32, draft: &mut Draft) -> Checked<bool> {
    let enabled = f.boolean("multi_shot")?.unwrap_or(false);
    let shot_type = f.one_of("shot_type", &["customize", "intelligence"])?;
    if !enabled {
        return Ok(false);
    }
    let shot_type = shot_type.ok_or_else(|| f.missing("shot_type"))?;
    if shot_type != "customize" {
        return Ok(false);
    }
    if !f.has("multi_prompt") {
        return Err(f.missing("multi_prompt"));
    }
    let mut sum = 0;
    for shot in f.objects("multi_prompt", 1, 6, "multi_prompt[].")? {
        shot.integer("index", 0, 100)?;
        let prompt = shot
            .text("prompt", 512)?
            .ok_or_else(|| shot.missing("prompt"))?;
        draft.text(Some(prompt));
        let secs = shot.duration("duration", SHOT_DURATIONS)?;
        sum += secs.ok_or_else(|| shot.missing("duration"))?;
    }
    if sum != total {
        return Err(Invalid::new(
            "multi_prompt",
            format!("multi_prompt durations add up to {sum} s, not the duration {total} s"),
        ));
    }
    Ok(true)
}

/// Prompt, negative prompt and `cfg_scale`, common to most video families.
fn prompts(f: &Fields<'_>, draft: &mut Draft, required: bool) -> Checked<()> {
    let prompt = f.text("prompt", MAX_PROMPT)?;
    if required && prompt.is_none_or(str::is_empty) {
        return Err(f.missing("prompt"));
    }
    draft.text(prompt);
    draft.text(f.text("negative_prompt", MAX_PROMPT)?);
    f.number("cfg_scale", 0.0, 1.0)?;
    Ok(())
}

pub(super) fn text_to_video(f: &Fields<'_>, family: &Family, cfg: &SimConfig) -> Checked<Draft> {
    let mut d = Draft {
        model: model(f, family, cfg)?,
        ..Draft::default()
    };
    d.mode = Some(mode(f, &d.model, "std")?);
    let secs = duration(f, &d.model)?;
    d.duration_secs = Some(secs);
    let per_shot = multi_shot(f, secs, &mut d)?;
    prompts(f, &mut d, !per_shot)?;
    f.one_of("aspect_ratio", ASPECT_RATIOS)?;
    f.one_of("sound", &["on", "off"])?;
    camera_control(f)?;
    f.array("voice_list", 0, 2)?;
    Ok(d)
}

pub(super) fn image_to_video(f: &Fields<'_>, family: &Family, cfg: &SimConfig) -> Checked<Draft> {
    let mut d = Draft {
        model: model(f, family, cfg)?,
        ..Draft::default()
    };
    let image = f.image("image")?;
    let tail = f.image("image_tail")?;
    if image.is_none() && tail.is_none() {
        return Err(f.missing("image"));
    }
    f.image("static_mask")?;
    for mask in f.objects("dynamic_masks", 1, 6, "dynamic_masks[].")? {
        mask.image("mask")?.ok_or_else(|| mask.missing("mask"))?;
        let points = mask.objects("trajectories", 2, 77, "dynamic_masks[].trajectories[].")?;
        for point in points {
            point
                .integer("x", 0, i64::from(u32::MAX))?
                .ok_or_else(|| point.missing("x"))?;
            point
                .integer("y", 0, i64::from(u32::MAX))?
                .ok_or_else(|| point.missing("y"))?;
        }
    }
    let brush = f.has("static_mask") || f.has("dynamic_masks");
    let exclusive = [tail.is_some(), brush, f.has("camera_control")];
    if exclusive.iter().filter(|x| **x).count() > 1 {
        return Err(Invalid::new(
            "image_tail",
            "only one of image_tail, the motion brush (static_mask, dynamic_masks) and camera_control may be given",
        ));
    }
    camera_control(f)?;
    d.mode = Some(mode(f, &d.model, "std")?);
    let secs = duration(f, &d.model)?;
    d.duration_secs = Some(secs);
    multi_shot(f, secs, &mut d)?;
    prompts(f, &mut d, false)?;
    f.one_of("sound", &["on", "off"])?;
    let voices = f.array("voice_list", 0, 2)?.is_some_and(|v| !v.is_empty());
    let elements = f
        .array("element_list", 0, 3)?
        .is_some_and(|v| !v.is_empty());
    if voices && elements {
        return Err(Invalid::new(
            "element_list",
            "voice_list and element_list cannot be combined",
        ));
    }
    Ok(d)
}

pub(super) fn multi_image_to_video(
    f: &Fields<'_>,
    family: &Family,
    cfg: &SimConfig,
) -> Checked<Draft> {
    let mut d = Draft {
        model: model(f, family, cfg)?,
        ..Draft::default()
    };
    if !f.has("image_list") {
        return Err(f.missing("image_list"));
    }
    for item in f.objects("image_list", 1, 4, "image_list[].")? {
        item.image("image")?.ok_or_else(|| item.missing("image"))?;
    }
    prompts(f, &mut d, true)?;
    d.mode = Some(mode(f, &d.model, "std")?);
    d.duration_secs = Some(f.duration("duration", CLASSIC_DURATIONS)?.unwrap_or(5));
    f.one_of("aspect_ratio", ASPECT_RATIOS)?;
    Ok(d)
}

pub(super) fn extend(f: &Fields<'_>) -> Checked<Draft> {
    let mut d = Draft {
        model: "kling-v1".to_owned(),
        ..Draft::default()
    };
    let id = f.required_string("video_id")?;
    d.source_video = Some(super::SourceVideo::Id(id.to_owned()));
    prompts(f, &mut d, false)?;
    // Each extension adds 4 to 5 s; the charge is that of a 5 s clip.
    d.duration_secs = Some(5);
    Ok(d)
}

pub(super) fn omni(f: &Fields<'_>, family: &Family, cfg: &SimConfig) -> Checked<Draft> {
    let mut d = Draft {
        model: model(f, family, cfg)?,
        ..Draft::default()
    };
    prompts(f, &mut d, true)?;
    d.mode = Some(mode(f, &d.model, "pro")?);
    f.one_of("aspect_ratio", ASPECT_RATIOS)?;
    f.one_of("sound", &["on", "off"])?;
    let images = f.objects("image_list", 0, 7, "image_list[].")?;
    for item in &images {
        item.image("image_url")?
            .ok_or_else(|| item.missing("image_url"))?;
        item.one_of("type", &["first_frame", "end_frame"])?;
    }
    f.objects("element_list", 0, 7, "element_list[].")?;
    for video in f.objects("video_list", 0, 1, "video_list[].")? {
        video
            .url("video_url")?
            .ok_or_else(|| video.missing("video_url"))?;
        video.one_of("refer_type", &["base", "feature"])?;
        video.one_of("keep_original_sound", &["yes", "no"])?;
    }
    let secs = f.duration("duration", V3_DURATIONS)?.unwrap_or(5);
    if d.model == "kling-video-o1" && images.is_empty() && !CLASSIC_DURATIONS.contains(&secs) {
        return Err(Invalid::new(
            "duration",
            "Duration only supports 5 or 10 seconds when no refer_image is provided",
        ));
    }
    d.duration_secs = Some(secs);
    Ok(d)
}

/// Families whose request bodies are thinly documented: only the common shapes are checked.
pub(super) fn generic(f: &Fields<'_>, family: &Family, cfg: &SimConfig) -> Checked<Draft> {
    let mut d = Draft {
        model: model(f, family, cfg)?,
        ..Draft::default()
    };
    prompts(f, &mut d, false)?;
    d.mode = Some(mode(f, &d.model, "std")?);
    d.duration_secs = Some(f.duration("duration", V3_DURATIONS)?.unwrap_or(5));
    f.image("image")?;
    f.url("video_url")?;
    Ok(d)
}
