//! One simulated task: its state and its JSON form (reference section 7.2). Results are made
//! when the task succeeds, with https-looking URLs on a reserved test domain, never fetched.

use serde_json::{json, Map, Value};

use crate::concurrency::PoolKey;
use crate::families::{Family, PackType};
use crate::faults::ResultAnomaly;
use crate::units::Units;
use crate::validate::TaskSpec;

/// Host of every generated result URL; `.test` is reserved and never resolves publicly.
pub const CDN_BASE: &str = "https://cdn.sim.klingai.test/bs2/upload-kling-api";

/// `task_status` values; success is spelled `succeed`, as Kling does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskStatus {
    Submitted,
    Processing,
    Succeed,
    Failed,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Submitted => "submitted",
            TaskStatus::Processing => "processing",
            TaskStatus::Succeed => "succeed",
            TaskStatus::Failed => "failed",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(self, TaskStatus::Succeed | TaskStatus::Failed)
    }
}

/// Which API generation made a task; it decides the task's JSON shape and which queries see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `/v1/...`, answered with `task_id`/`task_status` objects (section 7.2).
    Legacy,
    /// `/<capability>/<model-version>`, answered with `id`/`status` objects (section 8.4).
    NewStandard,
}

/// A video the simulator produced, remembered so later tasks can name it as their source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoRef {
    pub url: String,
    pub duration: String,
}

/// A task and everything needed to answer for it.
#[derive(Debug, Clone)]
pub struct Task {
    pub id: String,
    pub family: &'static Family,
    /// The validated request, with its free text removed once checked.
    pub spec: TaskSpec,
    pub status: TaskStatus,
    pub status_msg: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// Set when a fail word matched: the task ends `failed`.
    pub doomed: bool,
    pub anomaly: Option<ResultAnomaly>,
    pub result: Option<Value>,
    pub unit_deduction: Option<Units>,
    pub pool: PoolKey,
    pub parent_video: Option<Value>,
    pub api: Api,
}

impl Task {
    /// `task_info`: `{}` without an external id (section 16.12).
    fn info(&self) -> Value {
        let mut info = Map::new();
        if let Some(ext) = &self.spec.external_task_id {
            info.insert("external_task_id".into(), Value::String(ext.clone()));
        }
        if let Some(parent) = &self.parent_video {
            info.insert("parent_video".into(), parent.clone());
        }
        Value::Object(info)
    }

    /// The `data` of a create answer, in the shape of the API that made the task.
    pub fn create_json(&self) -> Value {
        if self.api == Api::NewStandard {
            let mut obj = Map::new();
            obj.insert("id".into(), json!(self.id));
            obj.insert("status".into(), json!(self.new_status()));
            obj.insert("create_time".into(), json!(self.created_at));
            obj.insert("update_time".into(), json!(self.updated_at));
            self.insert_external_id(&mut obj);
            return Value::Object(obj);
        }
        json!({
            "task_id": self.id,
            "task_status": self.status.as_str(),
            "task_info": self.info(),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        })
    }

    /// The task object of callbacks and of [`crate::SimHandle::task`]: the shape of the API
    /// that made the task.
    pub fn snapshot_json(&self) -> Value {
        match self.api {
            Api::Legacy => self.to_json(),
            Api::NewStandard => self.new_json(),
        }
    }

    /// `status` in the new-standard spelling (`succeeded`).
    fn new_status(&self) -> &'static str {
        match self.status {
            TaskStatus::Succeed => "succeeded",
            other => other.as_str(),
        }
    }

    fn insert_external_id(&self, obj: &mut Map<String, Value>) {
        if let Some(ext) = &self.spec.external_task_id {
            obj.insert("external_id".into(), json!(ext));
        }
    }

    /// The new-standard task object (section 8.4), used by `/tasks` for tasks of either API.
    pub fn new_json(&self) -> Value {
        let mut obj = Map::new();
        obj.insert("id".into(), json!(self.id));
        obj.insert("status".into(), json!(self.new_status()));
        obj.insert("message".into(), json!(self.status_msg));
        obj.insert("create_time".into(), json!(self.created_at));
        obj.insert("update_time".into(), json!(self.updated_at));
        self.insert_external_id(&mut obj);
        obj.insert("outputs".into(), Value::Array(self.outputs()));
        obj.insert("billing".into(), Value::Array(self.billing()));
        Value::Object(obj)
    }

    /// `outputs[]`, typed, translated from the legacy `task_result` the lifecycle built.
    fn outputs(&self) -> Vec<Value> {
        let Some(result) = &self.result else {
            return Vec::new();
        };
        let items = |key: &str| {
            result
                .get(key)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        let mut out = Vec::new();
        for v in items("videos") {
            let mut o =
                json!({ "type": "video", "id": v.get("id"), "duration": v.get("duration") });
            // A result anomaly may have removed `url`; it stays absent here too.
            if let Some(url) = v.get("url") {
                o["url"] = url.clone();
            }
            o["watermark_url"] = v.get("watermark_url").cloned().unwrap_or(json!(""));
            out.push(o);
        }
        for v in items("images") {
            let mut o = json!({ "type": "image" });
            if let Some(url) = v.get("url") {
                o["url"] = url.clone();
            }
            o["watermark_url"] = v.get("watermark_url").cloned().unwrap_or(json!(""));
            out.push(o);
        }
        for v in items("audios") {
            out.push(json!({
                "type": "audio",
                "id": v.get("id"),
                "mp3_url": v.get("url_mp3"),
                "wav_url": v.get("url_wav"),
                "mp3_duration": v.get("duration_mp3"),
                "wav_duration": v.get("duration_wav"),
            }));
        }
        out
    }

    /// `billing[]` (section 12.1): one unit charge once the task is charged; none for an
    /// uncharged (failed or unfinished) task.
    fn billing(&self) -> Vec<Value> {
        match self.unit_deduction {
            Some(units) if !units.is_zero() => vec![json!({
                "charge_type": "unit",
                "amount": units.to_string(),
                "package_type": self.family.pack.as_str(),
            })],
            _ => Vec::new(),
        }
    }

    /// The legacy task object of legacy queries, lists and callbacks.
    pub fn to_json(&self) -> Value {
        let mut obj = Map::new();
        obj.insert("task_id".into(), json!(self.id));
        obj.insert("task_status".into(), json!(self.status.as_str()));
        obj.insert("task_status_msg".into(), json!(self.status_msg));
        obj.insert("task_info".into(), self.info());
        if let Some(result) = &self.result {
            obj.insert("task_result".into(), result.clone());
        }
        obj.insert(
            "watermark_info".into(),
            json!({ "enabled": self.spec.watermark }),
        );
        if let Some(units) = self.unit_deduction {
            obj.insert("final_unit_deduction".into(), json!(units.to_string()));
        }
        obj.insert("created_at".into(), json!(self.created_at));
        obj.insert("updated_at".into(), json!(self.updated_at));
        Value::Object(obj)
    }

    fn url(&self, index: u32, stem: &str, ext: &str) -> String {
        let folder = self
            .family
            .path
            .rsplit('/')
            .next()
            .unwrap_or(self.family.path);
        let secs = self.created_at / 1000;
        format!(
            "{CDN_BASE}/{secs}/{folder}/{}-{index}_{stem}.{ext}",
            self.id
        )
    }

    /// Builds `task_result` for a successful task; returns the videos made, for later reuse
    /// as sources. `video_ids` supplies one fresh id per video.
    pub fn build_result(
        &self,
        mut video_ids: impl FnMut() -> String,
    ) -> (Value, Vec<(String, VideoRef)>) {
        let duration = format!("{}.1", self.spec.duration_secs.unwrap_or(5));
        let mut made = Vec::new();
        let (key, mut items): (&str, Vec<Value>) = match self.family.pack {
            PackType::Video => {
                let id = video_ids();
                let url = self.url(0, "raw_video_1", "mp4");
                made.push((
                    id.clone(),
                    VideoRef {
                        url: url.clone(),
                        duration: duration.clone(),
                    },
                ));
                let mut v = json!({ "id": id, "url": url, "duration": duration });
                if self.spec.watermark {
                    v["watermark_url"] = json!(self.url(0, "raw_video_1_watermark", "mp4"));
                }
                ("videos", vec![v])
            }
            PackType::Image | PackType::TryOn => {
                let images = (0..self.spec.outputs.max(1))
                    .map(|i| {
                        let mut v = json!({ "index": i, "url": self.url(i, "raw_image", "png") });
                        if self.spec.watermark {
                            v["watermark_url"] = json!(self.url(i, "raw_image_watermark", "png"));
                        }
                        v
                    })
                    .collect();
                ("images", images)
            }
            PackType::Audio => {
                let audio = json!({
                    "id": video_ids(),
                    "url_mp3": self.url(0, "raw_audio", "mp3"),
                    "url_wav": self.url(0, "raw_audio", "wav"),
                    "duration_mp3": duration,
                    "duration_wav": duration,
                });
                ("audios", vec![audio])
            }
        };
        let ext = match self.family.pack {
            PackType::Video => "mp4",
            PackType::Image | PackType::TryOn => "png",
            PackType::Audio => "mp3",
        };
        match self.anomaly {
            Some(ResultAnomaly::EmptyOutputs) => items.clear(),
            Some(ResultAnomaly::EmptyUrl) => {
                for item in &mut items {
                    item["url"] = json!("");
                }
            }
            Some(ResultAnomaly::WatermarkOnly) => {
                for (i, item) in items.iter_mut().enumerate() {
                    if let Some(obj) = item.as_object_mut() {
                        obj.remove("url");
                        let index = u32::try_from(i).unwrap_or(0);
                        obj.insert(
                            "watermark_url".into(),
                            json!(self.url(index, "raw_watermark", ext)),
                        );
                    }
                }
            }
            None => {}
        }
        (json!({ key: items }), made)
    }
}
