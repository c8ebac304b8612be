//! The legacy task families the simulator serves (reference section 6.1): their paths, the
//! resource pack each one draws on, and their built-in model lists.
//!
//! Synchronous calls (`identify-face`) are not families: they make no task to query.

use serde::{Deserialize, Serialize};

/// Resource pack types; each has its own concurrency pool and units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PackType {
    Video,
    Image,
    TryOn,
    Audio,
}

impl PackType {
    /// The lowercase name used in configuration and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            PackType::Video => "video",
            PackType::Image => "image",
            PackType::TryOn => "try_on",
            PackType::Audio => "audio",
        }
    }
}

/// Which validation rules and result shape a family uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FamilyKind {
    TextToVideo,
    ImageToVideo,
    MultiImageToVideo,
    VideoExtend,
    LipSync,
    AdvancedLipSync,
    Effects,
    Avatar,
    OmniVideo,
    MotionControl,
    MultiElements,
    ImageGeneration,
    OmniImage,
    MultiImageToImage,
    ImageExpand,
    TryOn,
    TextToAudio,
    VideoToAudio,
}

/// One asynchronous legacy family.
#[derive(Debug, PartialEq, Eq)]
pub struct Family {
    /// The create path without the `/v1/` prefix, e.g. `videos/text2video`.
    pub path: &'static str,
    pub kind: FamilyKind,
    pub pack: PackType,
    /// The model used when the request names none; empty when the family has no model field.
    pub default_model: &'static str,
    /// Accepted `model_name` values; empty means any string is accepted.
    pub models: &'static [&'static str],
}

impl Family {
    /// Whether results carry `parent_video` (the source video) in `task_info`.
    pub fn has_parent_video(&self) -> bool {
        matches!(
            self.kind,
            FamilyKind::VideoExtend
                | FamilyKind::LipSync
                | FamilyKind::AdvancedLipSync
                | FamilyKind::VideoToAudio
        )
    }
}

const T2V_MODELS: &[&str] = &[
    "kling-v1",
    "kling-v1-6",
    "kling-v2-master",
    "kling-v2-1-master",
    "kling-v2-5-turbo",
    "kling-v2-6",
    "kling-v3",
];
const I2V_MODELS: &[&str] = &[
    "kling-v1",
    "kling-v1-5",
    "kling-v1-6",
    "kling-v2-master",
    "kling-v2-1",
    "kling-v2-1-master",
    "kling-v2-5-turbo",
    "kling-v2-6",
    "kling-v3",
];
const IMAGE_MODELS: &[&str] = &[
    "kling-v1",
    "kling-v1-5",
    "kling-v2",
    "kling-v2-new",
    "kling-v2-1",
    "kling-v3",
];

const fn fam(
    path: &'static str,
    kind: FamilyKind,
    pack: PackType,
    default_model: &'static str,
    models: &'static [&'static str],
) -> Family {
    Family {
        path,
        kind,
        pack,
        default_model,
        models,
    }
}

/// Every asynchronous legacy family, in the order of the reference's inventory.
pub static FAMILIES: &[Family] = &[
    fam(
        "videos/text2video",
        FamilyKind::TextToVideo,
        PackType::Video,
        "kling-v1",
        T2V_MODELS,
    ),
    fam(
        "videos/image2video",
        FamilyKind::ImageToVideo,
        PackType::Video,
        "kling-v1",
        I2V_MODELS,
    ),
    fam(
        "videos/multi-image2video",
        FamilyKind::MultiImageToVideo,
        PackType::Video,
        "kling-v1-6",
        &["kling-v1-6"],
    ),
    fam(
        "videos/video-extend",
        FamilyKind::VideoExtend,
        PackType::Video,
        "kling-v1",
        &[],
    ),
    fam(
        "videos/lip-sync",
        FamilyKind::LipSync,
        PackType::Video,
        "",
        &[],
    ),
    fam(
        "videos/advanced-lip-sync",
        FamilyKind::AdvancedLipSync,
        PackType::Video,
        "",
        &[],
    ),
    fam(
        "videos/effects",
        FamilyKind::Effects,
        PackType::Video,
        "kling-v1",
        &["kling-v1", "kling-v1-5", "kling-v1-6"],
    ),
    fam(
        "videos/avatar/image2video",
        FamilyKind::Avatar,
        PackType::Video,
        "",
        &[],
    ),
    fam(
        "videos/omni-video",
        FamilyKind::OmniVideo,
        PackType::Video,
        "kling-video-o1",
        &["kling-video-o1", "kling-v3-omni"],
    ),
    fam(
        "videos/motion-control",
        FamilyKind::MotionControl,
        PackType::Video,
        "",
        &[],
    ),
    fam(
        "videos/multi-elements",
        FamilyKind::MultiElements,
        PackType::Video,
        "",
        &[],
    ),
    fam(
        "images/generations",
        FamilyKind::ImageGeneration,
        PackType::Image,
        "kling-v1",
        IMAGE_MODELS,
    ),
    fam(
        "images/omni-image",
        FamilyKind::OmniImage,
        PackType::Image,
        "",
        &[],
    ),
    fam(
        "images/multi-image2image",
        FamilyKind::MultiImageToImage,
        PackType::Image,
        "kling-v2",
        &["kling-v2", "kling-v2-1"],
    ),
    fam(
        "images/editing/expand",
        FamilyKind::ImageExpand,
        PackType::Image,
        "",
        &[],
    ),
    fam(
        "images/kolors-virtual-try-on",
        FamilyKind::TryOn,
        PackType::TryOn,
        "kolors-virtual-try-on-v1",
        &["kolors-virtual-try-on-v1", "kolors-virtual-try-on-v1-5"],
    ),
    fam(
        "audio/text-to-audio",
        FamilyKind::TextToAudio,
        PackType::Audio,
        "",
        &[],
    ),
    fam(
        "audio/video-to-audio",
        FamilyKind::VideoToAudio,
        PackType::Audio,
        "",
        &[],
    ),
];

/// Where a `/v1/...` path points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FamilyPath<'a> {
    /// The collection: create (POST) or list (GET).
    Collection(&'static Family),
    /// One task: `<family>/{id}`.
    Item(&'static Family, &'a str),
}

/// Resolves the part of a path after `/v1/` to a family, with exact, case-sensitive matching.
pub fn resolve(rest: &str) -> Option<FamilyPath<'_>> {
    FAMILIES.iter().find_map(|family| {
        let tail = rest.strip_prefix(family.path)?;
        if tail.is_empty() {
            return Some(FamilyPath::Collection(family));
        }
        let id = tail.strip_prefix('/')?;
        (!id.is_empty() && !id.contains('/')).then_some(FamilyPath::Item(family, id))
    })
}

/// Looks a family up by its path, e.g. `videos/text2video`.
pub fn by_path(path: &str) -> Option<&'static Family> {
    FAMILIES.iter().find(|f| f.path == path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_collections_items_and_nested_paths() {
        assert!(
            matches!(resolve("videos/text2video"), Some(FamilyPath::Collection(f)) if f.path == "videos/text2video")
        );
        assert!(
            matches!(resolve("videos/avatar/image2video/42"), Some(FamilyPath::Item(f, "42")) if f.kind == FamilyKind::Avatar)
        );
        assert!(
            matches!(resolve("videos/multi-image2video"), Some(FamilyPath::Collection(f)) if f.kind == FamilyKind::MultiImageToVideo)
        );
        assert!(
            matches!(resolve("images/editing/expand/7"), Some(FamilyPath::Item(f, "7")) if f.kind == FamilyKind::ImageExpand)
        );
    }

    #[test]
    fn rejects_unknown_and_malformed_paths() {
        assert_eq!(resolve("videos/text2videos"), None);
        assert_eq!(resolve("videos/text2video/"), None);
        assert_eq!(resolve("videos/text2video/1/2"), None);
        assert_eq!(resolve("Videos/text2video"), None);
        assert_eq!(resolve(""), None);
    }

    #[test]
    fn family_paths_are_unique() {
        for (i, a) in FAMILIES.iter().enumerate() {
            for b in &FAMILIES[i + 1..] {
                assert_ne!(a.path, b.path);
            }
        }
    }
}
