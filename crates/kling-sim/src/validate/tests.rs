//! Validation rules per family: each test sends one body and checks the verdict, and every
//! rejection must name the field at fault.

use serde_json::{json, Map, Value};

use super::*;
use crate::families::by_path;

const PNG_B64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";

fn body(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn check(path: &str, v: Value) -> Checked<TaskSpec> {
    validate_create(by_path(path).unwrap(), &body(v), &SimConfig::for_tests())
}

fn rejected_field(path: &str, v: Value) -> String {
    let err = check(path, v).unwrap_err();
    assert!(
        err.message.to_lowercase().contains(&err.field),
        "message {:?} does not name {:?}",
        err.message,
        err.field
    );
    err.field
}

#[test]
fn text_to_video_defaults_and_common_fields() {
    let spec = check(
        "videos/text2video",
        json!({"prompt": "a calm sea", "external_task_id": "order-1", "image_tail": null,
               "callback_url": "http://127.0.0.1:9/cb", "unknown_field": [1, 2],
               "watermark_info": {"enabled": true}}),
    )
    .unwrap();
    assert_eq!(spec.model, "kling-v1");
    assert_eq!(spec.mode.as_deref(), Some("std"));
    assert_eq!(spec.duration_secs, Some(5));
    assert_eq!(spec.external_task_id.as_deref(), Some("order-1"));
    assert!(spec.watermark);
    assert_eq!(spec.texts, vec!["a calm sea".to_owned()]);
}

#[test]
fn text_to_video_rejections_name_the_field() {
    let t2v = "videos/text2video";
    assert_eq!(rejected_field(t2v, json!({})), "prompt");
    assert_eq!(
        rejected_field(t2v, json!({"prompt": "x", "mode": "standard"})),
        "mode"
    );
    assert_eq!(
        rejected_field(t2v, json!({"prompt": "x", "duration": "7"})),
        "duration"
    );
    assert_eq!(
        rejected_field(t2v, json!({"prompt": "x", "aspect_ratio": "4:3"})),
        "aspect_ratio"
    );
    assert_eq!(
        rejected_field(t2v, json!({"prompt": "x", "cfg_scale": 1.5})),
        "cfg_scale"
    );
    assert_eq!(
        rejected_field(t2v, json!({"prompt": "x".repeat(2501)})),
        "prompt"
    );
    assert_eq!(
        rejected_field(t2v, json!({"prompt": "x", "model_name": "kling-v1-5"})),
        "model_name"
    );
    assert_eq!(
        rejected_field(t2v, json!({"prompt": "x", "callback_url": "ftp://h/cb"})),
        "callback_url"
    );
    let cam = json!({"prompt": "x", "camera_control": {"type": "simple", "config": {"pan": 1, "zoom": 2}}});
    assert_eq!(rejected_field(t2v, cam), "camera_control.config");
    let cam = json!({"prompt": "x", "camera_control": {"type": "simple", "config": {"pan": 11}}});
    assert_eq!(rejected_field(t2v, cam), "camera_control.config.pan");
}

#[test]
fn v3_models_take_4k_and_long_durations_older_ones_do_not() {
    let spec = check(
        "videos/text2video",
        json!({"prompt": "x", "model_name": "kling-v3", "mode": "4k", "duration": "12"}),
    )
    .unwrap();
    assert_eq!(spec.duration_secs, Some(12));
    assert_eq!(spec.mode.as_deref(), Some("4k"));
    let err = check(
        "videos/text2video",
        json!({"prompt": "x", "model_name": "kling-v2-6", "mode": "4k"}),
    )
    .unwrap_err();
    assert_eq!(err.field, "mode");
}

#[test]
fn multi_shot_customize_needs_shots_adding_up_to_the_duration() {
    let ok = json!({"multi_shot": true, "shot_type": "customize", "model_name": "kling-v3", "duration": "6",
                    "multi_prompt": [{"index": 1, "prompt": "a", "duration": "2"}, {"index": 2, "prompt": "b", "duration": "4"}]});
    assert!(check("videos/text2video", ok).is_ok());
    let bad = json!({"multi_shot": true, "shot_type": "customize", "model_name": "kling-v3", "duration": "6",
                     "multi_prompt": [{"index": 1, "prompt": "a", "duration": "2"}]});
    assert_eq!(rejected_field("videos/text2video", bad), "multi_prompt");
}

#[test]
fn image_to_video_rules() {
    let i2v = "videos/image2video";
    assert_eq!(rejected_field(i2v, json!({"prompt": "x"})), "image");
    assert!(check(i2v, json!({"image": PNG_B64})).is_ok());
    assert!(check(
        i2v,
        json!({"image_tail": "https://img.example.test/end.png"})
    )
    .is_ok());
    assert_eq!(
        rejected_field(
            i2v,
            json!({"image": format!("data:image/png;base64,{PNG_B64}")})
        ),
        "image"
    );
    let both =
        json!({"image": PNG_B64, "image_tail": PNG_B64, "camera_control": {"type": "down_back"}});
    assert_eq!(rejected_field(i2v, both), "image_tail");
}

#[test]
fn image_generation_rules_and_slots() {
    let gen = "images/generations";
    let spec = check(gen, json!({"prompt": "a cat", "n": "4"})).unwrap();
    assert_eq!((spec.outputs, spec.slots), (4, 4));
    assert_eq!(
        rejected_field(gen, json!({"prompt": "a cat", "n": 10})),
        "n"
    );
    assert_eq!(
        rejected_field(gen, json!({"prompt": "a cat", "aspect_ratio": "21:9"})),
        "aspect_ratio"
    );
    assert!(check(
        gen,
        json!({"prompt": "a cat", "aspect_ratio": "21:9", "model_name": "kling-v2"})
    )
    .is_ok());
    let neg = json!({"prompt": "a cat", "image": PNG_B64, "negative_prompt": "dogs"});
    assert_eq!(rejected_field(gen, neg), "negative_prompt");
    assert_eq!(
        rejected_field(
            gen,
            json!({"prompt": "a", "image": PNG_B64, "model_name": "kling-v1-5"})
        ),
        "image_reference"
    );
}

#[test]
fn strict_mode_refuses_type_mismatches_that_lenient_mode_coerces() {
    let family = by_path("images/generations").unwrap();
    let b = body(json!({"prompt": "a cat", "n": "9"}));
    let mut cfg = SimConfig::for_tests();
    assert!(validate_create(family, &b, &cfg).is_ok());
    cfg.strict = true;
    assert_eq!(validate_create(family, &b, &cfg).unwrap_err().field, "n");
}

#[test]
fn other_families() {
    assert_eq!(
        rejected_field(
            "images/kolors-virtual-try-on",
            json!({"human_image": PNG_B64})
        ),
        "cloth_image"
    );
    assert_eq!(rejected_field("videos/video-extend", json!({})), "video_id");
    assert_eq!(
        rejected_field(
            "videos/lip-sync",
            json!({"input": {"video_id": "1", "mode": "text2video", "voice_id": "v"}})
        ),
        "input.text"
    );
    let both = json!({"input": {"video_id": "1", "video_url": "https://v.example.test/a.mp4", "mode": "audio2video"}});
    assert_eq!(rejected_field("videos/lip-sync", both), "input.video_id");
    assert_eq!(
        rejected_field(
            "videos/effects",
            json!({"effect_scene": "nope", "input": {"image": PNG_B64}})
        ),
        "effect_scene"
    );
    assert_eq!(
        rejected_field(
            "videos/effects",
            json!({"effect_scene": "hug", "input": {"images": [PNG_B64]}})
        ),
        "input.images"
    );
    assert!(check("videos/effects", json!({"effect_scene": "squish", "input": {"image": PNG_B64, "model_name": "kling-v1-6", "duration": "5"}})).is_ok());
    assert_eq!(
        rejected_field(
            "images/editing/expand",
            json!({"image": PNG_B64, "up_expansion_ratio": 2, "down_expansion_ratio": 2})
        ),
        "up_expansion_ratio"
    );
    assert_eq!(
        rejected_field("videos/omni-video", json!({"prompt": "x", "duration": "7"})),
        "duration"
    );
    assert!(check(
        "videos/omni-video",
        json!({"prompt": "x", "duration": "7", "image_list": [{"image_url": PNG_B64}]})
    )
    .is_ok());
    assert_eq!(
        rejected_field("videos/advanced-lip-sync", json!({"face_choose": []})),
        "session_id"
    );
    assert_eq!(
        rejected_field(
            "videos/multi-image2video",
            json!({"prompt": "x", "image_list": []})
        ),
        "image_list"
    );
}

#[test]
fn configured_model_lists_replace_built_in_ones() {
    let mut cfg = SimConfig::for_tests();
    cfg.models
        .insert("videos/text2video".into(), vec!["kling-v9".into()]);
    let family = by_path("videos/text2video").unwrap();
    assert!(validate_create(
        family,
        &body(json!({"prompt": "x", "model_name": "kling-v9"})),
        &cfg
    )
    .is_ok());
    assert!(validate_create(
        family,
        &body(json!({"prompt": "x", "model_name": "kling-v1"})),
        &cfg
    )
    .is_err());
}

mod totality {
    use proptest::prelude::*;

    use super::*;
    use crate::families::FAMILIES;

    /// Field names the validators read, so random bodies reach deep into the rules.
    const KEYS: &[&str] = &[
        "prompt",
        "negative_prompt",
        "model_name",
        "mode",
        "duration",
        "aspect_ratio",
        "cfg_scale",
        "n",
        "image",
        "image_tail",
        "image_list",
        "input",
        "images",
        "video_id",
        "video_url",
        "multi_shot",
        "shot_type",
        "multi_prompt",
        "camera_control",
        "type",
        "config",
        "pan",
        "dynamic_masks",
        "trajectories",
        "x",
        "y",
        "mask",
        "effect_scene",
        "session_id",
        "face_choose",
        "face_id",
        "audio_id",
        "sound_file",
        "external_task_id",
        "callback_url",
        "watermark_info",
        "enabled",
        "human_image",
        "cloth_image",
        "up_expansion_ratio",
        "subject_image_list",
        "subject_image",
        "index",
        "text",
        "voice_id",
        "audio_type",
    ];

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            "[ -~]{0,12}".prop_map(Value::String),
            prop::sample::select(vec![
                "5",
                "10",
                "std",
                "pro",
                "4k",
                "kling-v3",
                "customize",
                "simple",
                "hug",
                "true",
                "https://h.test/a.png",
                "iVBORw0KGgo="
            ])
            .prop_map(|s| Value::String(s.to_owned())),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(
                    |pairs| {
                        Value::Object(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
                    }
                ),
            ]
        })
    }

    fn object() -> impl Strategy<Value = Map<String, Value>> {
        prop::collection::vec((prop::sample::select(KEYS), json_value()), 0..10)
            .prop_map(|pairs| pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }

    proptest! {
        /// Any body, however malformed, gets a verdict; an error always names a field.
        #[test]
        fn validation_never_panics(body in object(), strict in any::<bool>()) {
            let mut cfg = SimConfig::for_tests();
            cfg.strict = strict;
            for family in FAMILIES {
                if let Err(invalid) = validate_create(family, &body, &cfg) {
                    prop_assert!(!invalid.field.is_empty());
                    prop_assert!(!invalid.message.is_empty());
                }
            }
            let _ = validate_identify_face(&body, &cfg);
        }
    }
}
