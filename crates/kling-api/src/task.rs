//! Task objects as Kling returns them: the legacy task (kling-api.md 7.2), the new-standard
//! task (8.4), and the judgements an auditor needs from either: did it succeed, which result
//! URLs are usable, what was charged.
//!
//! Parsing is lenient on purpose. Status words are kept verbatim (`succeed` and `succeeded`
//! both mean success, unknown words are kept), ids may arrive as numbers, `null` lists read as
//! empty, and unknown fields land in `extra`. The envelope's `code: 0` never decides success:
//! a task can sit `failed` inside a successful envelope (7.1), so [`TaskView::outcome`] looks
//! only at the task's own status.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::lenient::{null_as_default, opt_id, opt_int, NumericString};
use crate::requests::WatermarkInfo;

/// A task status word, spelled as received.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TaskStatus {
    /// `submitted`.
    Submitted,
    /// `processing`.
    Processing,
    /// `succeed`: the legacy spelling of success.
    Succeed,
    /// `succeeded`: the new-standard spelling of success.
    Succeeded,
    /// `failed`.
    Failed,
    /// Any other word, kept verbatim.
    Other(String),
}

impl TaskStatus {
    /// Reads a status word; unknown words become [`TaskStatus::Other`].
    pub fn parse(word: &str) -> Self {
        match word {
            "submitted" => Self::Submitted,
            "processing" => Self::Processing,
            "succeed" => Self::Succeed,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The word as received (and as it is written back).
    pub fn as_str(&self) -> &str {
        match self {
            Self::Submitted => "submitted",
            Self::Processing => "processing",
            Self::Succeed => "succeed",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Other(word) => word,
        }
    }

    /// Whether this status means success, in either spelling.
    pub fn is_success(&self) -> bool {
        matches!(self, Self::Succeed | Self::Succeeded)
    }

    /// Whether the task has finished (success or failure). Unknown words are not terminal,
    /// so a poller keeps asking until its deadline rather than guessing.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Succeed | Self::Succeeded | Self::Failed)
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for TaskStatus {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for TaskStatus {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let word = String::deserialize(deserializer)?;
        Ok(Self::parse(&word))
    }
}

/// What a task's own status says about its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskOutcome {
    /// Still `submitted` or `processing`.
    Pending(TaskStatus),
    /// `succeed` / `succeeded`.
    Succeeded,
    /// `failed`, with Kling's reason (`task_status_msg` or `message`, may be empty).
    Failed {
        /// The reason as given.
        reason: String,
    },
    /// No status, or a word we do not know.
    Unknown {
        /// The word, if there was one.
        status: Option<String>,
    },
}

/// Kind of a result output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputKind {
    /// A video.
    Video,
    /// An image.
    Image,
    /// An audio track.
    Audio,
    /// Anything else (new-standard voices, elements, unknown types).
    Other,
}

/// A result URL that can be fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsableUrl {
    /// What the output is.
    pub kind: OutputKind,
    /// Position among the task's outputs of this listing (images: Kling's `index` if given).
    pub index: usize,
    /// The output's id, when it has one.
    pub id: Option<String>,
    /// The URL; never empty.
    pub url: String,
    /// True when only the watermarked copy was available.
    pub watermarked: bool,
}

/// A way a **successful** task's results fall short (7.2, 16.15).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResultAnomaly {
    /// Success with no outputs at all (empty or missing `videos`/`images`/`outputs`).
    NoOutputs,
    /// An output whose `url` is missing or empty and that has no watermark URL either.
    EmptyUrl {
        /// The output's position.
        index: usize,
    },
    /// An output with only `watermark_url` filled.
    OnlyWatermarkUrl {
        /// The output's position.
        index: usize,
    },
}

/// Read access shared by legacy and new-standard task objects.
pub trait TaskView {
    /// `task_id` or `id`.
    fn task_id(&self) -> Option<&str>;
    /// `task_status` or `status`.
    fn status(&self) -> Option<&TaskStatus>;
    /// `task_status_msg` or `message`.
    fn status_message(&self) -> Option<&str>;
    /// The caller's id (`task_info.external_task_id` or `external_id`).
    fn external_id(&self) -> Option<&str>;
    /// Kling's last update time, Unix ms.
    fn updated_at_ms(&self) -> Option<i64>;
    /// All outputs as (kind, id, url, watermark_url), in order.
    fn outputs(&self) -> Vec<OutputRef<'_>>;
    /// Units deducted: `final_unit_deduction`, or the sum of `billing[]` unit entries.
    fn units_deducted(&self) -> Option<f64>;
    /// Cash deducted: `final_balance_deduction.quota`, or the sum of `billing[]` cash entries.
    fn cash_deducted(&self) -> Option<f64>;

    /// Success or failure decided by the task's own status, never by the envelope.
    fn outcome(&self) -> TaskOutcome {
        match self.status() {
            Some(s) if s.is_success() => TaskOutcome::Succeeded,
            Some(TaskStatus::Failed) => TaskOutcome::Failed {
                reason: self.status_message().unwrap_or_default().to_owned(),
            },
            Some(s @ (TaskStatus::Submitted | TaskStatus::Processing)) => {
                TaskOutcome::Pending(s.clone())
            }
            Some(TaskStatus::Other(word)) => TaskOutcome::Unknown {
                status: Some(word.clone()),
            },
            Some(_) | None => TaskOutcome::Unknown { status: None },
        }
    }

    /// URLs that can be fetched: `url` when non-empty, else `watermark_url` (flagged).
    /// Outputs with neither are skipped; see [`TaskView::result_anomalies`].
    fn usable_urls(&self) -> Vec<UsableUrl> {
        self.outputs()
            .into_iter()
            .enumerate()
            .filter_map(|(i, o)| {
                let index = o.index.unwrap_or(i);
                let id = o.id.map(str::to_owned);
                match (non_empty(o.url), non_empty(o.watermark_url)) {
                    (Some(url), _) => Some(UsableUrl {
                        kind: o.kind,
                        index,
                        id,
                        url: url.to_owned(),
                        watermarked: false,
                    }),
                    (None, Some(url)) => Some(UsableUrl {
                        kind: o.kind,
                        index,
                        id,
                        url: url.to_owned(),
                        watermarked: true,
                    }),
                    (None, None) => None,
                }
            })
            .collect()
    }

    /// What is wrong with a successful task's results; empty for tasks that did not succeed.
    fn result_anomalies(&self) -> Vec<ResultAnomaly> {
        if self.outcome() != TaskOutcome::Succeeded {
            return Vec::new();
        }
        let outputs = self.outputs();
        if outputs.is_empty() {
            return vec![ResultAnomaly::NoOutputs];
        }
        outputs
            .iter()
            .enumerate()
            .filter_map(
                |(i, o)| match (non_empty(o.url), non_empty(o.watermark_url)) {
                    (Some(_), _) => None,
                    (None, Some(_)) => Some(ResultAnomaly::OnlyWatermarkUrl { index: i }),
                    (None, None) => Some(ResultAnomaly::EmptyUrl { index: i }),
                },
            )
            .collect()
    }
}

/// A borrowed view of one output, uniform across task shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputRef<'a> {
    /// What the output is.
    pub kind: OutputKind,
    /// Kling's own index (images), when given.
    pub index: Option<usize>,
    /// Output id.
    pub id: Option<&'a str>,
    /// Main URL (audio: mp3, else wav).
    pub url: Option<&'a str>,
    /// Watermarked copy.
    pub watermark_url: Option<&'a str>,
    /// Duration text (`"5.1"`).
    pub duration: Option<&'a str>,
}

fn non_empty(s: Option<&str>) -> Option<&str> {
    s.filter(|s| !s.trim().is_empty())
}

/// `task_info` of a legacy task.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TaskInfo {
    /// The caller's id, if one was given at create time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_task_id: Option<String>,
    /// The source video (extension, lip-sync, video to audio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_video: Option<ParentVideo>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `task_info.parent_video`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ParentVideo {
    /// Source video id.
    #[serde(
        default,
        deserialize_with = "opt_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub id: Option<String>,
    /// Source video URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Seconds, as a string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<NumericString>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A legacy video result.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct VideoResult {
    /// Video id (reusable for extension and lip-sync within 30 days).
    #[serde(
        default,
        deserialize_with = "opt_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub id: Option<String>,
    /// Result URL; may be empty (7.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Watermarked copy, when watermarking was enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark_url: Option<String>,
    /// Seconds as a string, e.g. `"5.1"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<NumericString>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A legacy image result.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ImageResult {
    /// 0 to 9.
    #[serde(
        default,
        deserialize_with = "opt_int",
        skip_serializing_if = "Option::is_none"
    )]
    pub index: Option<i64>,
    /// Result URL; may be empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Watermarked copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark_url: Option<String>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A legacy audio result (field names from Chinese doc copies).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AudioResult {
    /// Audio id.
    #[serde(
        default,
        deserialize_with = "opt_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub id: Option<String>,
    /// MP3 URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_mp3: Option<String>,
    /// WAV URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_wav: Option<String>,
    /// MP3 duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_mp3: Option<NumericString>,
    /// WAV duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_wav: Option<NumericString>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `task_result` of a legacy task.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TaskResult {
    /// Videos.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub videos: Vec<VideoResult>,
    /// Images.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub images: Vec<ImageResult>,
    /// Audio tracks.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub audios: Vec<AudioResult>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `final_balance_deduction`: a cash charge, as strings.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct BalanceDeduction {
    /// Cash charged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<NumericString>,
    /// List price before discount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list_price: Option<NumericString>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A legacy task object: query-one `data`, list items, and the bare legacy callback body.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TaskObject {
    /// Opaque id (18 digits in 2026, 22 characters before).
    #[serde(
        default,
        deserialize_with = "opt_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub task_id: Option<String>,
    /// Status word as received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_status: Option<TaskStatus>,
    /// Failure reason; `""` on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_status_msg: Option<String>,
    /// External id and parent video.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_info: Option<TaskInfo>,
    /// Results, normally only on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_result: Option<TaskResult>,
    /// `{enabled}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark_info: Option<WatermarkInfo>,
    /// Units charged, as a string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_unit_deduction: Option<NumericString>,
    /// Cash charged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_balance_deduction: Option<BalanceDeduction>,
    /// Unix ms.
    #[serde(
        default,
        deserialize_with = "opt_int",
        skip_serializing_if = "Option::is_none"
    )]
    pub created_at: Option<i64>,
    /// Unix ms.
    #[serde(
        default,
        deserialize_with = "opt_int",
        skip_serializing_if = "Option::is_none"
    )]
    pub updated_at: Option<i64>,
    /// Unknown fields, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl TaskView for TaskObject {
    fn task_id(&self) -> Option<&str> {
        self.task_id.as_deref()
    }

    fn status(&self) -> Option<&TaskStatus> {
        self.task_status.as_ref()
    }

    fn status_message(&self) -> Option<&str> {
        self.task_status_msg.as_deref()
    }

    fn external_id(&self) -> Option<&str> {
        self.task_info
            .as_ref()
            .and_then(|i| i.external_task_id.as_deref())
    }

    fn updated_at_ms(&self) -> Option<i64> {
        self.updated_at
    }

    fn outputs(&self) -> Vec<OutputRef<'_>> {
        let Some(result) = &self.task_result else {
            return Vec::new();
        };
        let videos = result.videos.iter().map(|v| OutputRef {
            kind: OutputKind::Video,
            index: None,
            id: v.id.as_deref(),
            url: v.url.as_deref(),
            watermark_url: v.watermark_url.as_deref(),
            duration: v.duration.as_ref().map(|d| d.text.as_str()),
        });
        let images = result.images.iter().map(|i| OutputRef {
            kind: OutputKind::Image,
            index: i.index.and_then(|n| usize::try_from(n).ok()),
            id: None,
            url: i.url.as_deref(),
            watermark_url: i.watermark_url.as_deref(),
            duration: None,
        });
        let audios = result.audios.iter().map(|a| OutputRef {
            kind: OutputKind::Audio,
            index: None,
            id: a.id.as_deref(),
            url: non_empty(a.url_mp3.as_deref()).or(a.url_wav.as_deref()),
            watermark_url: None,
            duration: a
                .duration_mp3
                .as_ref()
                .or(a.duration_wav.as_ref())
                .map(|d| d.text.as_str()),
        });
        videos.chain(images).chain(audios).collect()
    }

    fn units_deducted(&self) -> Option<f64> {
        self.final_unit_deduction
            .as_ref()
            .and_then(NumericString::as_f64)
    }

    fn cash_deducted(&self) -> Option<f64> {
        self.final_balance_deduction
            .as_ref()?
            .quota
            .as_ref()?
            .as_f64()
    }
}

/// One `outputs[]` item of a new-standard task; the fields of every output type in one
/// struct, selected by `type` (8.4).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TaskOutput {
    /// `video`, `image`, `audio`, `voice`, `element`, or another word.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Output id.
    #[serde(
        default,
        deserialize_with = "opt_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub id: Option<String>,
    /// Main URL (video, image, voice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Watermarked copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark_url: Option<String>,
    /// Video duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<NumericString>,
    /// Image group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<NumericString>,
    /// Audio MP3 URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mp3_url: Option<String>,
    /// Audio WAV URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wav_url: Option<String>,
    /// Audio MP3 duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mp3_duration: Option<NumericString>,
    /// Audio WAV duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wav_duration: Option<NumericString>,
    /// Voice or element name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Voice or element status (`succeeded`, `deleted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl TaskOutput {
    fn output_kind(&self) -> OutputKind {
        match self.kind.as_deref() {
            Some("video") => OutputKind::Video,
            Some("image") => OutputKind::Image,
            Some("audio") => OutputKind::Audio,
            _ => OutputKind::Other,
        }
    }
}

/// One `billing[]` charge (12.1).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct BillingEntry {
    /// `unit` (resource pack) or `cash` (balance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charge_type: Option<String>,
    /// `balance` or `test_balance`; cash only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cash_type: Option<String>,
    /// Decimal string: units, or cash after discount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<NumericString>,
    /// `CNY` or `USD`; cash only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// `video`, `image`, `audio`; unit only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package_type: Option<String>,
    /// Cash list price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list_price: Option<NumericString>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A new-standard task object (8.4): create `data`, `/tasks` items, new-standard callbacks.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NewTaskObject {
    /// Task id.
    #[serde(
        default,
        deserialize_with = "opt_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub id: Option<String>,
    /// Status word as received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<TaskStatus>,
    /// Failure reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Unix ms.
    #[serde(
        default,
        deserialize_with = "opt_int",
        skip_serializing_if = "Option::is_none"
    )]
    pub create_time: Option<i64>,
    /// Unix ms.
    #[serde(
        default,
        deserialize_with = "opt_int",
        skip_serializing_if = "Option::is_none"
    )]
    pub update_time: Option<i64>,
    /// The caller's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// Typed results.
    #[serde(default, deserialize_with = "null_as_default")]
    pub outputs: Vec<TaskOutput>,
    /// Charges.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub billing: Vec<BillingEntry>,
    /// Unknown fields, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn sum_billing(entries: &[BillingEntry], charge_type: &str) -> Option<f64> {
    let amounts: Vec<f64> = entries
        .iter()
        .filter(|e| e.charge_type.as_deref() == Some(charge_type))
        .filter_map(|e| e.amount.as_ref().and_then(NumericString::as_f64))
        .collect();
    (!amounts.is_empty()).then(|| amounts.iter().sum())
}

impl TaskView for NewTaskObject {
    fn task_id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    fn status(&self) -> Option<&TaskStatus> {
        self.status.as_ref()
    }

    fn status_message(&self) -> Option<&str> {
        self.message.as_deref()
    }

    fn external_id(&self) -> Option<&str> {
        self.external_id.as_deref()
    }

    fn updated_at_ms(&self) -> Option<i64> {
        self.update_time
    }

    fn outputs(&self) -> Vec<OutputRef<'_>> {
        self.outputs
            .iter()
            .map(|o| OutputRef {
                kind: o.output_kind(),
                index: None,
                id: o.id.as_deref(),
                url: non_empty(o.url.as_deref())
                    .or(non_empty(o.mp3_url.as_deref()))
                    .or(o.wav_url.as_deref()),
                watermark_url: o.watermark_url.as_deref(),
                duration: o
                    .duration
                    .as_ref()
                    .or(o.mp3_duration.as_ref())
                    .or(o.wav_duration.as_ref())
                    .map(|d| d.text.as_str()),
            })
            .collect()
    }

    fn units_deducted(&self) -> Option<f64> {
        sum_billing(&self.billing, "unit")
    }

    fn cash_deducted(&self) -> Option<f64> {
        sum_billing(&self.billing, "cash")
    }
}

/// Either task shape, for code that handles both generations (callbacks, the gateway).
#[derive(Debug, Clone, PartialEq)]
pub enum AnyTask {
    /// A legacy task object (boxed: it is several times larger than the new shape).
    Legacy(Box<TaskObject>),
    /// A new-standard task object.
    NewStandard(NewTaskObject),
}

impl AnyTask {
    fn view(&self) -> &dyn TaskView {
        match self {
            Self::Legacy(t) => t.as_ref(),
            Self::NewStandard(t) => t,
        }
    }
}

impl TaskView for AnyTask {
    fn task_id(&self) -> Option<&str> {
        self.view().task_id()
    }

    fn status(&self) -> Option<&TaskStatus> {
        self.view().status()
    }

    fn status_message(&self) -> Option<&str> {
        self.view().status_message()
    }

    fn external_id(&self) -> Option<&str> {
        self.view().external_id()
    }

    fn updated_at_ms(&self) -> Option<i64> {
        self.view().updated_at_ms()
    }

    fn outputs(&self) -> Vec<OutputRef<'_>> {
        self.view().outputs()
    }

    fn units_deducted(&self) -> Option<f64> {
        self.view().units_deducted()
    }

    fn cash_deducted(&self) -> Option<f64> {
        self.view().cash_deducted()
    }
}

/// A filter of the cursor listing and the billing exports: values OR-ed, keys AND-ed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Filter {
    /// Filter key (`status`, `product_type`, `api_key_name`, ...).
    pub key: String,
    /// Accepted values.
    #[serde(default)]
    pub values: Vec<String>,
}

/// Body of the new-standard cursor listing `POST /tasks` (8.3).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TasksCursorQuery {
    /// Window start, Unix ms (some pages type it as a string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<NumericString>,
    /// Window end, Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<NumericString>,
    /// From the previous page; overrides the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Page size, default 100, at most 500.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<crate::lenient::LenientInt>,
    /// `status` or `product_type` filters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<Filter>,
}

/// `data` of the cursor listing.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TasksPage {
    /// Tasks of this page.
    #[serde(default, deserialize_with = "null_as_default")]
    pub result: Vec<NewTaskObject>,
    /// Count reported by Kling.
    #[serde(
        default,
        deserialize_with = "opt_int",
        skip_serializing_if = "Option::is_none"
    )]
    pub count: Option<i64>,
    /// Cursor of the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// Whether more pages follow.
    #[serde(default)]
    pub has_more: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Envelope;
    use serde_json::json;

    #[test]
    fn documented_success_example_parses() {
        let env: Envelope<TaskObject> = serde_json::from_value(json!({
            "code": 0, "message": "SUCCEED", "request_id": "7d2e",
            "data": { "task_id": "866889456698785798", "task_status": "succeed",
              "task_status_msg": "", "task_info": { "external_task_id": "order-42" },
              "task_result": { "videos": [ { "id": "743211632612511839",
                "url": "https://cdn.klingai.com/bs2/upload-kling-api/x.mp4", "duration": "5.1" } ] },
              "watermark_info": { "enabled": false }, "final_unit_deduction": "1",
              "created_at": 1774711071284_i64, "updated_at": 1774711310000_i64 } }))
        .unwrap();
        let task = env.data.unwrap();
        assert_eq!(task.outcome(), TaskOutcome::Succeeded);
        assert_eq!(task.external_id(), Some("order-42"));
        assert_eq!(task.units_deducted(), Some(1.0));
        let urls = task.usable_urls();
        assert_eq!(urls.len(), 1);
        assert_eq!(urls[0].id.as_deref(), Some("743211632612511839"));
        assert!(!urls[0].watermarked);
        assert!(task.result_anomalies().is_empty());
        assert_eq!(task.outputs()[0].duration, Some("5.1"));
        assert!(task.extra.is_empty());
    }

    #[test]
    fn status_spellings() {
        for (word, success, terminal) in [
            ("succeed", true, true),
            ("succeeded", true, true),
            ("failed", false, true),
            ("submitted", false, false),
            ("processing", false, false),
            ("queued", false, false),
        ] {
            let s: TaskStatus = serde_json::from_value(json!(word)).unwrap();
            assert_eq!(
                (s.is_success(), s.is_terminal()),
                (success, terminal),
                "{word}"
            );
            assert_eq!(
                serde_json::to_value(&s).unwrap(),
                json!(word),
                "spelling is kept"
            );
        }
        let t: TaskObject = serde_json::from_value(json!({"task_status": "queued"})).unwrap();
        assert_eq!(
            t.outcome(),
            TaskOutcome::Unknown {
                status: Some("queued".into())
            }
        );
        let n: NewTaskObject = serde_json::from_value(json!({"status": "succeeded"})).unwrap();
        assert_eq!(n.outcome(), TaskOutcome::Succeeded);
        assert_eq!(
            TaskObject::default().outcome(),
            TaskOutcome::Unknown { status: None }
        );
        assert!(serde_json::from_value::<TaskObject>(json!({"task_status": 3})).is_err());
    }

    #[test]
    fn failed_task_inside_code_zero_envelope_is_a_failure() {
        let env: Envelope<TaskObject> = serde_json::from_value(json!({
            "code": 0, "message": "SUCCEED", "request_id": "r",
            "data": {"task_id": "1", "task_status": "failed",
                     "task_status_msg": "content risk control", "task_result": null,
                     "final_unit_deduction": "0"}}))
        .unwrap();
        assert!(env.is_success());
        let task = env.data.unwrap();
        assert_eq!(
            task.outcome(),
            TaskOutcome::Failed {
                reason: "content risk control".into()
            }
        );
        assert!(task.usable_urls().is_empty());
        assert!(
            task.result_anomalies().is_empty(),
            "anomalies are only for successes"
        );
        assert_eq!(task.units_deducted(), Some(0.0));
    }

    #[test]
    fn success_with_only_watermark_or_empty_results() {
        let only_wm: TaskObject = serde_json::from_value(json!({
            "task_status": "succeed",
            "task_result": {"videos": [{"id": "v", "url": "", "watermark_url": "https://w/1.mp4"}]}}))
        .unwrap();
        let urls = only_wm.usable_urls();
        assert_eq!(urls.len(), 1);
        assert!(urls[0].watermarked);
        assert_eq!(urls[0].url, "https://w/1.mp4");
        assert_eq!(
            only_wm.result_anomalies(),
            vec![ResultAnomaly::OnlyWatermarkUrl { index: 0 }]
        );

        let empty_url: TaskObject = serde_json::from_value(json!({
            "task_status": "succeed", "task_result": {"videos": [{"id": "v"}, {"url": "  "}]}}))
        .unwrap();
        assert!(empty_url.usable_urls().is_empty());
        assert_eq!(
            empty_url.result_anomalies(),
            vec![
                ResultAnomaly::EmptyUrl { index: 0 },
                ResultAnomaly::EmptyUrl { index: 1 }
            ]
        );

        for result in [
            json!({"videos": []}),
            json!({"videos": null}),
            json!(null),
            json!({}),
        ] {
            let t: TaskObject =
                serde_json::from_value(json!({"task_status": "succeed", "task_result": result}))
                    .unwrap();
            assert!(t.usable_urls().is_empty());
            assert_eq!(
                t.result_anomalies(),
                vec![ResultAnomaly::NoOutputs],
                "{result}"
            );
        }
    }

    #[test]
    fn images_and_audio_results() {
        let t: TaskObject = serde_json::from_value(json!({
            "task_status": "succeed", "task_result": {
                "images": [{"index": 3, "url": "https://i/3.png"}, {"index": "1", "url": "https://i/1.png"}],
                "audios": [{"id": 7, "url_mp3": "", "url_wav": "https://a/7.wav", "duration_mp3": "3.2"}]}}))
        .unwrap();
        let urls = t.usable_urls();
        assert_eq!(
            urls.iter().map(|u| u.index).collect::<Vec<_>>(),
            vec![3, 1, 2]
        );
        assert_eq!(urls[2].kind, OutputKind::Audio);
        assert_eq!(urls[2].url, "https://a/7.wav");
        assert_eq!(urls[2].id.as_deref(), Some("7"));
    }

    #[test]
    fn unknown_fields_are_kept_and_written_back() {
        let body = json!({"task_id": "1", "task_status": "processing", "new_field": {"a": 1},
            "task_info": {"parent_video": {"id": "p", "url": "u", "duration": "5"}, "x": 2},
            "final_balance_deduction": {"quota": "1.25", "list_price": "2.50"}});
        let t: TaskObject = serde_json::from_value(body.clone()).unwrap();
        assert_eq!(t.extra.get("new_field"), Some(&json!({"a": 1})));
        assert_eq!(t.cash_deducted(), Some(1.25));
        assert_eq!(t.outcome(), TaskOutcome::Pending(TaskStatus::Processing));
        assert_eq!(serde_json::to_value(&t).unwrap(), body);
    }

    #[test]
    fn billing_shapes() {
        let t: NewTaskObject = serde_json::from_value(json!({
        "id": 913827032734642185_u64, "status": "succeeded", "message": "",
        "outputs": [{"type": "video", "id": "v", "url": "https://v/1.mp4", "duration": "5"}],
        "billing": [
            {"charge_type": "unit", "amount": "1.5", "package_type": "video"},
            {"charge_type": "unit", "amount": "0.5", "package_type": "video"},
            {"charge_type": "cash", "cash_type": "balance", "amount": "0.30",
             "currency": "USD", "list_price": "0.40"},
            {"charge_type": "unit", "amount": "n/a"}
        ]}))
        .unwrap();
        assert_eq!(t.task_id(), Some("913827032734642185"));
        assert_eq!(t.units_deducted(), Some(2.0));
        assert_eq!(t.cash_deducted(), Some(0.30));
        assert_eq!(t.usable_urls()[0].kind, OutputKind::Video);
        let none: NewTaskObject =
            serde_json::from_value(json!({"id": "1", "status": "failed", "billing": null}))
                .unwrap();
        assert_eq!((none.units_deducted(), none.cash_deducted()), (None, None));
        let cash_only: NewTaskObject =
            serde_json::from_value(json!({"billing": [{"charge_type": "cash", "amount": "2"}]}))
                .unwrap();
        assert_eq!(
            (cash_only.units_deducted(), cash_only.cash_deducted()),
            (None, Some(2.0))
        );
        let legacy: TaskObject =
            serde_json::from_value(json!({"final_unit_deduction": 3})).unwrap();
        assert_eq!(legacy.units_deducted(), Some(3.0));
    }

    #[test]
    fn new_standard_outputs_of_every_type() {
        let t: NewTaskObject = serde_json::from_value(json!({
        "id": "1", "status": "succeeded", "outputs": [
            {"type": "image", "url": "", "watermark_url": "https://w/i.png", "group_id": 4},
            {"type": "audio", "id": "a", "mp3_url": "https://a.mp3", "mp3_duration": "3"},
            {"type": "voice", "id": "vo", "name": "n", "url": "https://vo", "status": "succeeded"},
            {"type": "hologram"}
        ]}))
        .unwrap();
        let kinds: Vec<OutputKind> = t.outputs().iter().map(|o| o.kind).collect();
        assert_eq!(
            kinds,
            vec![
                OutputKind::Image,
                OutputKind::Audio,
                OutputKind::Other,
                OutputKind::Other
            ]
        );
        assert_eq!(t.usable_urls().len(), 3);
        assert_eq!(
            t.result_anomalies(),
            vec![
                ResultAnomaly::OnlyWatermarkUrl { index: 0 },
                ResultAnomaly::EmptyUrl { index: 3 }
            ]
        );
        let any = AnyTask::NewStandard(t.clone());
        assert_eq!(any.usable_urls(), t.usable_urls());
    }

    #[test]
    fn tasks_page_parses() {
        let page: TasksPage = serde_json::from_value(json!({
            "result": [{"id": "1", "status": "submitted"}], "count": 1,
            "next_cursor": "abc", "has_more": true}))
        .unwrap();
        assert_eq!(page.result.len(), 1);
        assert!(page.has_more);
    }
}
