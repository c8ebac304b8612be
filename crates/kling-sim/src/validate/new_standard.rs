//! New-standard creates (reference section 8.1): `POST /<capability>/<model-version>` with
//! `prompt`, a `settings` object and an `options` object. The model comes from the path, so
//! only versions the reference lists are served; each has its own duration, resolution and
//! prompt rules.

use serde_json::{Map, Value};

use super::fields::{Checked, Fields};
use super::{is_http_url, Invalid, TaskSpec};
use crate::config::SimConfig;
use crate::families::{self, Family};

/// The durations a model version accepts, in whole seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durations {
    Range(u32, u32),
    OneOf(&'static [u32]),
}

/// One model version served on the new-standard API.
#[derive(Debug, PartialEq, Eq)]
pub struct NewModel {
    pub version: &'static str,
    durations: Durations,
    prompt_max_chars: usize,
    four_k: bool,
    multi_shot: bool,
    /// 2.6 makes native audio only at 1080p.
    native_audio_needs_1080p: bool,
}

const KLING_3_0_TURBO: NewModel = NewModel {
    version: "kling-3.0-turbo",
    durations: Durations::Range(3, 15),
    prompt_max_chars: 3072,
    four_k: false,
    multi_shot: true,
    native_audio_needs_1080p: false,
};
const KLING_3_0: NewModel = NewModel {
    version: "kling-3.0",
    durations: Durations::Range(3, 15),
    prompt_max_chars: 3072,
    four_k: true,
    multi_shot: true,
    native_audio_needs_1080p: false,
};
const KLING_2_6: NewModel = NewModel {
    version: "kling-2.6",
    durations: Durations::OneOf(&[5, 10]),
    prompt_max_chars: 2500,
    four_k: false,
    multi_shot: false,
    native_audio_needs_1080p: true,
};

/// Capabilities served, with the legacy family whose pack, pool and rates they share, and
/// their model versions (section 8.1's list).
const CAPABILITIES: &[(&str, &str, &[NewModel])] = &[
    (
        "text-to-video",
        "videos/text2video",
        &[KLING_3_0_TURBO, KLING_3_0, KLING_2_6],
    ),
    (
        "image-to-video",
        "videos/image2video",
        &[KLING_3_0, KLING_3_0_TURBO],
    ),
];

/// What a new-standard create path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewPath {
    /// A served capability and model version.
    Known(&'static Family, &'static NewModel),
    /// A served capability with a model version it does not have.
    UnknownModel,
}

/// Resolves `/<capability>/<model-version>` (without the leading slash); `None` when the
/// capability is not served or the path has another shape.
pub fn resolve(path: &str) -> Option<NewPath> {
    let (capability, version) = path.split_once('/')?;
    let (_, family_path, models) = CAPABILITIES.iter().find(|(c, _, _)| *c == capability)?;
    if version.is_empty() || version.contains('/') {
        return None;
    }
    let family = families::by_path(family_path)?;
    Some(match models.iter().find(|m| m.version == version) {
        Some(model) => NewPath::Known(family, model),
        None => NewPath::UnknownModel,
    })
}

/// The capability path segment served by `family` (`text-to-video`), for route labels.
pub fn capability_of(family: &Family) -> &'static str {
    CAPABILITIES
        .iter()
        .find(|(_, path, _)| *path == family.path)
        .map_or("?", |(c, _, _)| c)
}

/// Validates a new-standard create body for `model`.
///
/// # Errors
/// The first offending field, as an [`Invalid`].
pub fn validate_new_create(
    model: &NewModel,
    body: &Map<String, Value>,
    cfg: &SimConfig,
) -> Checked<TaskSpec> {
    let f = Fields::new(body, cfg.strict);
    let prompt = f.required_string("prompt")?;
    f.text("prompt", model.prompt_max_chars)?;

    let empty = Map::new();
    let none = Fields::new(&empty, cfg.strict);
    let settings = f.object("settings", "settings.")?.unwrap_or(none);
    let resolutions: &[&str] = if model.four_k {
        &["720p", "1080p", "4k"]
    } else {
        &["720p", "1080p"]
    };
    let resolution = settings
        .one_of("resolution", resolutions)?
        .unwrap_or("720p");
    settings.one_of("aspect_ratio", &["16:9", "9:16", "1:1"])?;
    let duration = match model.durations {
        Durations::Range(lo, hi) => settings.integer("duration", lo.into(), hi.into())?,
        Durations::OneOf(allowed) => {
            let d = settings.integer("duration", 1, 3600)?;
            if d.is_some_and(|d| !allowed.iter().any(|a| i64::from(*a) == d)) {
                let list: Vec<String> = allowed.iter().map(u32::to_string).collect();
                let name = settings.name("duration");
                return Err(Invalid::new(
                    name.clone(),
                    format!("{name} must be one of: {}", list.join(", ")),
                ));
            }
            d
        }
    };
    let duration_secs = duration.map_or(5, |d| u32::try_from(d).unwrap_or(5));
    let audio = settings.one_of("audio", &["native", "off"])?;
    if audio == Some("native") && model.native_audio_needs_1080p && resolution != "1080p" {
        let name = settings.name("audio");
        return Err(Invalid::new(
            name.clone(),
            format!("{name} native requires settings.resolution 1080p on this model"),
        ));
    }
    if settings.boolean("multi_shot")? == Some(true) && !model.multi_shot {
        let name = settings.name("multi_shot");
        return Err(Invalid::new(
            name.clone(),
            format!("{name} is not supported by this model"),
        ));
    }

    let options = f.object("options", "options.")?.unwrap_or(none);
    let callback_url = options.string("callback_url")?;
    if callback_url.is_some_and(|u| !is_http_url(u)) {
        let name = options.name("callback_url");
        return Err(Invalid::new(
            name.clone(),
            format!("{name} must be an http(s) URL"),
        ));
    }
    let external_task_id = options
        .string("external_task_id")?
        .filter(|s| !s.is_empty());
    let watermark = match options.object("watermark_info", "options.watermark_info.")? {
        Some(w) => w.boolean("enabled")?.unwrap_or(false),
        None => false,
    };
    // The legacy rate rules know modes, not resolutions; 12.3 maps std to 720p, pro to 1080p.
    let mode = match resolution {
        "1080p" => "pro",
        "4k" => "4k",
        _ => "std",
    };
    Ok(TaskSpec {
        model: model.version.to_owned(),
        mode: Some(mode.to_owned()),
        duration_secs: Some(duration_secs),
        outputs: 1,
        slots: 1,
        texts: vec![prompt.to_owned()],
        external_task_id: external_task_id.map(str::to_owned),
        callback_url: callback_url.map(str::to_owned),
        watermark,
        source_video: None,
        session_id: None,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check(path: &str, body: Value) -> Checked<TaskSpec> {
        let Some(NewPath::Known(_, model)) = resolve(path) else {
            panic!("{path} does not resolve");
        };
        let Value::Object(map) = body else {
            panic!("body must be an object");
        };
        validate_new_create(model, &map, &SimConfig::for_tests())
    }

    #[test]
    fn resolves_served_versions_only() {
        assert!(matches!(
            resolve("text-to-video/kling-2.6"),
            Some(NewPath::Known(f, m)) if f.path == "videos/text2video" && m.version == "kling-2.6"
        ));
        assert!(matches!(
            resolve("image-to-video/kling-3.0-turbo"),
            Some(NewPath::Known(f, _)) if f.path == "videos/image2video"
        ));
        assert_eq!(
            resolve("image-to-video/kling-2.6"),
            Some(NewPath::UnknownModel)
        );
        assert_eq!(resolve("text-to-image/kling-3.0"), None);
        let f = families::by_path("videos/image2video").unwrap();
        assert_eq!(capability_of(f), "image-to-video");
        assert_eq!(resolve("text-to-video"), None);
        assert_eq!(resolve("text-to-video/kling-3.0/x"), None);
    }

    #[test]
    fn defaults_and_options_are_read() {
        let spec = check(
            "text-to-video/kling-3.0",
            json!({"prompt": "a fox", "options": {"external_task_id": "e1",
                "callback_url": "http://127.0.0.1:1/cb", "watermark_info": {"enabled": true}}}),
        )
        .unwrap();
        assert_eq!(spec.duration_secs, Some(5));
        assert_eq!(spec.mode.as_deref(), Some("std"));
        assert_eq!(spec.external_task_id.as_deref(), Some("e1"));
        assert!(spec.watermark);
        assert_eq!(spec.texts, vec!["a fox".to_owned()]);
    }

    #[test]
    fn durations_follow_the_model() {
        let with =
            |path: &str, d: Value| check(path, json!({"prompt": "p", "settings": {"duration": d}}));
        assert_eq!(
            with("text-to-video/kling-3.0", json!(15))
                .unwrap()
                .duration_secs,
            Some(15)
        );
        assert_eq!(
            with("text-to-video/kling-3.0", json!(2)).unwrap_err().field,
            "settings.duration"
        );
        assert!(with("text-to-video/kling-2.6", json!(10)).is_ok());
        assert_eq!(
            with("text-to-video/kling-2.6", json!(7)).unwrap_err().field,
            "settings.duration"
        );
        assert!(with("text-to-video/kling-3.0", json!(5.5)).is_err());
    }

    #[test]
    fn model_specific_settings_are_refused_elsewhere() {
        let err = |path: &str, settings: Value| {
            check(path, json!({"prompt": "p", "settings": settings}))
                .unwrap_err()
                .field
        };
        assert_eq!(
            err("text-to-video/kling-2.6", json!({"resolution": "4k"})),
            "settings.resolution"
        );
        assert!(check(
            "text-to-video/kling-3.0",
            json!({"prompt": "p", "settings": {"resolution": "4k"}})
        )
        .is_ok());
        assert_eq!(
            err("text-to-video/kling-2.6", json!({"audio": "native"})),
            "settings.audio"
        );
        assert!(check(
            "text-to-video/kling-2.6",
            json!({"prompt": "p", "settings": {"audio": "native", "resolution": "1080p"}})
        )
        .is_ok());
        assert_eq!(
            err("text-to-video/kling-2.6", json!({"multi_shot": true})),
            "settings.multi_shot"
        );
    }

    #[test]
    fn prompt_is_required_and_capped() {
        assert_eq!(
            check("text-to-video/kling-3.0", json!({}))
                .unwrap_err()
                .field,
            "prompt"
        );
        let long = "x".repeat(2501);
        assert!(check("text-to-video/kling-3.0", json!({"prompt": long})).is_ok());
        assert_eq!(
            check("text-to-video/kling-2.6", json!({"prompt": long}))
                .unwrap_err()
                .field,
            "prompt"
        );
    }
}
