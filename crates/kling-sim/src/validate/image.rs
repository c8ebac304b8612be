//! Image families: generation, omni image, multi-image to image, expansion and virtual try-on.

use super::fields::{Checked, Fields, Invalid};
use super::{image_count, model, Draft};
use crate::config::SimConfig;
use crate::families::Family;

const MAX_PROMPT: usize = 2500;
const ASPECT_RATIOS: &[&str] = &["16:9", "9:16", "1:1", "4:3", "3:4", "3:2", "2:3", "21:9"];

fn aspect_ratio(f: &Fields<'_>, model: &str) -> Checked<()> {
    if f.one_of("aspect_ratio", ASPECT_RATIOS)? == Some("21:9") && model == "kling-v1" {
        return Err(Invalid::new(
            "aspect_ratio",
            "aspect_ratio 21:9 is not supported by kling-v1",
        ));
    }
    Ok(())
}

pub(super) fn generation(f: &Fields<'_>, family: &Family, cfg: &SimConfig) -> Checked<Draft> {
    let mut d = Draft {
        model: model(f, family, cfg)?,
        ..Draft::default()
    };
    let prompt = f.text("prompt", MAX_PROMPT)?.filter(|p| !p.is_empty());
    d.text(Some(prompt.ok_or_else(|| f.missing("prompt"))?));
    let image = f.image("image")?;
    let negative = f.text("negative_prompt", MAX_PROMPT)?;
    if image.is_some() && negative.is_some() {
        return Err(Invalid::new(
            "negative_prompt",
            "negative_prompt is not supported together with image",
        ));
    }
    d.text(negative);
    let reference = f.one_of("image_reference", &["subject", "face"])?;
    if image.is_some() && reference.is_none() && d.model == "kling-v1-5" {
        return Err(f.missing("image_reference"));
    }
    f.number("image_fidelity", 0.0, 1.0)?;
    f.number("human_fidelity", 0.0, 1.0)?;
    if f.one_of("resolution", &["1k", "2k"])? == Some("2k")
        && (d.model != "kling-v2" || image.is_some())
    {
        return Err(Invalid::new(
            "resolution",
            "resolution 2k is only supported by kling-v2 text to image",
        ));
    }
    aspect_ratio(f, &d.model)?;
    d.outputs = image_count(f)?;
    Ok(d)
}

pub(super) fn omni(f: &Fields<'_>, family: &Family, cfg: &SimConfig) -> Checked<Draft> {
    let mut d = Draft {
        model: model(f, family, cfg)?,
        ..Draft::default()
    };
    let prompt = f.text("prompt", MAX_PROMPT)?.filter(|p| !p.is_empty());
    d.text(Some(prompt.ok_or_else(|| f.missing("prompt"))?));
    for item in f.objects("image_list", 0, 10, "image_list[].")? {
        item.image("image")?.ok_or_else(|| item.missing("image"))?;
    }
    aspect_ratio(f, &d.model)?;
    d.outputs = image_count(f)?;
    Ok(d)
}

pub(super) fn multi_image(f: &Fields<'_>, family: &Family, cfg: &SimConfig) -> Checked<Draft> {
    let mut d = Draft {
        model: model(f, family, cfg)?,
        ..Draft::default()
    };
    if !f.has("subject_image_list") {
        return Err(f.missing("subject_image_list"));
    }
    for item in f.objects("subject_image_list", 1, 4, "subject_image_list[].")? {
        item.image("subject_image")?
            .ok_or_else(|| item.missing("subject_image"))?;
    }
    f.image("scene_image")?;
    f.image("style_image")?;
    d.text(f.text("prompt", MAX_PROMPT)?);
    aspect_ratio(f, &d.model)?;
    d.outputs = image_count(f)?;
    Ok(d)
}

pub(super) fn expand(f: &Fields<'_>) -> Checked<Draft> {
    let mut d = Draft::default();
    f.image("image")?.ok_or_else(|| f.missing("image"))?;
    let ratio = |name: &str| Ok::<f64, Invalid>(f.number(name, 0.0, 2.0)?.unwrap_or(0.0));
    let (up, down) = (ratio("up_expansion_ratio")?, ratio("down_expansion_ratio")?);
    let (left, right) = (
        ratio("left_expansion_ratio")?,
        ratio("right_expansion_ratio")?,
    );
    // The canvas grows by the ratios on each side; the new area may be at most 3 times the
    // original picture, so the whole canvas at most 4 times.
    if (1.0 + left + right) * (1.0 + up + down) > 4.0 {
        return Err(Invalid::new(
            "up_expansion_ratio",
            "up_expansion_ratio, down_expansion_ratio, left_expansion_ratio and right_expansion_ratio may add at most 3 times the image area",
        ));
    }
    d.text(f.text("prompt", MAX_PROMPT)?);
    d.outputs = image_count(f)?;
    Ok(d)
}

pub(super) fn try_on(f: &Fields<'_>, family: &Family, cfg: &SimConfig) -> Checked<Draft> {
    let d = Draft {
        model: model(f, family, cfg)?,
        outputs: 1,
        ..Draft::default()
    };
    f.image("human_image")?
        .ok_or_else(|| f.missing("human_image"))?;
    f.image("cloth_image")?
        .ok_or_else(|| f.missing("cloth_image"))?;
    Ok(d)
}
