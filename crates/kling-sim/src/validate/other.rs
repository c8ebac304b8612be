//! Lip-sync (legacy and advanced), effects, avatar and the audio families.

use super::fields::{Checked, Fields, Invalid};
use super::{source_video, Draft};
use crate::config::SimConfig;

const MAX_PROMPT: usize = 2500;

pub(super) fn lip_sync(f: &Fields<'_>) -> Checked<Draft> {
    let mut d = Draft::default();
    let input = f
        .object("input", "input.")?
        .ok_or_else(|| f.missing("input"))?;
    d.source_video = Some(source_video(&input)?);
    let mode = input.one_of("mode", &["text2video", "audio2video"])?;
    match mode.ok_or_else(|| input.missing("mode"))? {
        "text2video" => {
            let text = input.text("text", 120)?.filter(|t| !t.is_empty());
            d.text(Some(text.ok_or_else(|| input.missing("text"))?));
            input.required_string("voice_id")?;
            input.one_of("voice_language", &["zh", "en"])?;
            input.number("voice_speed", 0.8, 2.0)?;
        }
        _ => match input.one_of("audio_type", &["file", "url"])? {
            Some("file") => {
                input
                    .image("audio_file")?
                    .ok_or_else(|| input.missing("audio_file"))?;
            }
            Some(_) => {
                input
                    .url("audio_url")?
                    .ok_or_else(|| input.missing("audio_url"))?;
            }
            None => return Err(input.missing("audio_type")),
        },
    }
    d.duration_secs = Some(5);
    Ok(d)
}

pub(super) fn advanced_lip_sync(f: &Fields<'_>) -> Checked<Draft> {
    let d = Draft {
        session_id: Some(f.required_string("session_id")?.to_owned()),
        duration_secs: Some(5),
        ..Draft::default()
    };
    if !f.has("face_choose") {
        return Err(f.missing("face_choose"));
    }
    for face in f.objects("face_choose", 1, 1, "face_choose[].")? {
        face.required_string("face_id")?;
        let audio_id = face.string("audio_id")?.filter(|s| !s.is_empty());
        let sound = face.image("sound_file")?;
        if audio_id.is_some() == sound.is_some() {
            return Err(Invalid::new(
                "face_choose[].audio_id",
                "exactly one of face_choose[].audio_id and face_choose[].sound_file is required",
            ));
        }
        for time in ["sound_start_time", "sound_end_time", "sound_insert_time"] {
            face.integer(time, 0, i64::MAX)?;
        }
        face.number("sound_volume", 0.0, 2.0)?;
        face.number("original_audio_volume", 0.0, 2.0)?;
    }
    Ok(d)
}

pub(super) fn effects(f: &Fields<'_>, cfg: &SimConfig) -> Checked<Draft> {
    let scene = f.required_string("effect_scene")?;
    let dual = cfg.effects.dual_image_scenes.iter().any(|s| s == scene);
    let single = cfg.effects.single_image_scenes.iter().any(|s| s == scene);
    if !dual && !single && !cfg.effects.allow_unknown_scenes {
        return Err(Invalid::new(
            "effect_scene",
            format!("effect_scene {scene:?} is not supported"),
        ));
    }
    let input = f
        .object("input", "input.")?
        .ok_or_else(|| f.missing("input"))?;
    if dual {
        if !input.has("images") {
            return Err(input.missing("images"));
        }
        let images = input.array("images", 2, 2)?.unwrap_or_default();
        for (i, image) in images.iter().enumerate() {
            let ok = image
                .as_str()
                .is_some_and(|s| super::fields::is_http_url(s) || super::fields::is_bare_base64(s));
            if !ok {
                return Err(Invalid::new(
                    format!("input.images[{i}]"),
                    format!("input.images[{i}]: File is not in a valid base64 format"),
                ));
            }
        }
    } else {
        input
            .image("image")?
            .ok_or_else(|| input.missing("image"))?;
    }
    // The older request shape carries model, mode and duration inside `input`.
    let model = input.one_of("model_name", &["kling-v1", "kling-v1-5", "kling-v1-6"])?;
    let mode = input.one_of("mode", &["std", "pro"])?;
    let secs = input.duration("duration", &[5, 10])?.unwrap_or(5);
    Ok(Draft {
        model: model.unwrap_or("kling-v1").to_owned(),
        mode: Some(mode.unwrap_or("std").to_owned()),
        duration_secs: Some(secs),
        ..Draft::default()
    })
}

pub(super) fn avatar(f: &Fields<'_>) -> Checked<Draft> {
    let mut d = Draft::default();
    f.image("image")?.ok_or_else(|| f.missing("image"))?;
    let audio_id = f.string("audio_id")?.filter(|s| !s.is_empty());
    let sound = f.image("sound_file")?;
    if audio_id.is_some() == sound.is_some() {
        return Err(Invalid::new(
            "audio_id",
            "exactly one of audio_id and sound_file is required",
        ));
    }
    d.text(f.text("prompt", MAX_PROMPT)?);
    d.mode = Some(
        f.one_of("mode", &["std", "pro"])?
            .unwrap_or("std")
            .to_owned(),
    );
    d.duration_secs = Some(5);
    Ok(d)
}

pub(super) fn text_to_audio(f: &Fields<'_>) -> Checked<Draft> {
    let mut d = Draft::default();
    let prompt = f.text("prompt", MAX_PROMPT)?.filter(|p| !p.is_empty());
    d.text(Some(prompt.ok_or_else(|| f.missing("prompt"))?));
    f.number("duration", 1.0, 300.0)?;
    Ok(d)
}

pub(super) fn video_to_audio(f: &Fields<'_>) -> Checked<Draft> {
    let mut d = Draft {
        source_video: Some(source_video(f)?),
        ..Draft::default()
    };
    d.text(f.text("sound_effect_prompt", MAX_PROMPT)?);
    d.text(f.text("bgm_prompt", MAX_PROMPT)?);
    Ok(d)
}
