//! The task store: every task of the simulated account, the `external_task_id` index, the
//! concurrency slots, the packs, face-scan sessions and produced videos. One lock guards it
//! all, so a create's checks (unique external id, units left, free slots) and its insert are
//! a single step.

use std::collections::{HashMap, HashSet};

use serde_json::{json, Value};

use crate::billing::{self, ChargeBasis, Pack};
use crate::concurrency::{PoolKey, Slots};
use crate::config::SimConfig;
use crate::families::{Family, PackType};
use crate::reply::ApiError;
use crate::tasks::{Api, Task, TaskStatus, VideoRef};
use crate::units::Units;
use crate::validate::SourceVideo;

#[derive(Debug)]
pub(crate) struct Store {
    /// Boxed: a task is large, and growing the map moves every entry at once under the lock,
    /// which with tasks inline stalled every call for milliseconds once thousands existed.
    tasks: HashMap<String, Box<Task>>,
    /// Task ids in creation order.
    order: Vec<String>,
    /// `external_task_id` to task id, account-wide.
    external: HashMap<String, String>,
    slots: Slots,
    pub packs: Vec<Pack>,
    sessions: HashSet<String>,
    videos: HashMap<String, VideoRef>,
    /// When this instance started, in Unix milliseconds.
    pub started_ms: i64,
}

impl Store {
    pub fn new(cfg: &SimConfig) -> Self {
        Self {
            tasks: HashMap::new(),
            order: Vec::new(),
            external: HashMap::new(),
            slots: Slots::default(),
            packs: cfg.account.packs.iter().map(Pack::from_config).collect(),
            sessions: HashSet::new(),
            videos: HashMap::new(),
            started_ms: crate::state::now_ms(),
        }
    }

    /// Runs a create's account-level checks and, when they pass, stores the task and takes
    /// its slots. Order of checks: external id reuse (400/1201), face session (400/1201),
    /// units left (429/1102), concurrency (429/1303).
    pub fn admit(&mut self, mut task: Task, cfg: &SimConfig) -> Result<Value, ApiError> {
        if let Some(ext) = &task.spec.external_task_id {
            if self.external.contains_key(ext) {
                return Err(ApiError::invalid_param(
                    "external_task_id is already used by another task of this account",
                ));
            }
        }
        if let Some(session) = &task.spec.session_id {
            if !self.sessions.contains(session) {
                return Err(ApiError::invalid_param("session_id is invalid or expired"));
            }
        }
        let pack = task.family.pack;
        if self.packs.iter().any(|p| p.pack_type == pack)
            && billing::remaining_of(&self.packs, pack).is_zero()
        {
            return Err(ApiError::new(
                kling_api::codes::RESOURCE_EXHAUSTED,
                "Account balance not enough",
            ));
        }
        if !self
            .slots
            .try_take(&task.pool, task.spec.slots, cfg.concurrency.capacity(pack))
        {
            return Err(ApiError::concurrency());
        }
        task.parent_video = task
            .spec
            .source_video
            .as_ref()
            .map(|s| self.parent_video(s));
        let data = task.create_json();
        if let Some(ext) = &task.spec.external_task_id {
            self.external.insert(ext.clone(), task.id.clone());
        }
        self.order.push(task.id.clone());
        self.tasks.insert(task.id.clone(), Box::new(task));
        Ok(data)
    }

    fn parent_video(&self, source: &SourceVideo) -> Value {
        match source {
            SourceVideo::Id(id) => match self.videos.get(id) {
                Some(v) => json!({ "id": id, "url": v.url, "duration": v.duration }),
                None => json!({ "id": id, "url": "", "duration": "" }),
            },
            SourceVideo::Url(url) => json!({ "id": "", "url": url, "duration": "" }),
        }
    }

    /// A legacy task of `family` by its Kling task id. New-standard tasks are only seen
    /// through `/tasks`.
    pub fn by_task_id(&self, family: &Family, id: &str) -> Option<&Task> {
        self.tasks
            .get(id)
            .map(|t| &**t)
            .filter(|t| std::ptr::eq(t.family, family) && t.api == Api::Legacy)
    }

    /// Tasks of either API by Kling task id, in the order asked; unknown ids are skipped.
    pub fn by_ids<'a>(&'a self, ids: &[&str]) -> Vec<&'a Task> {
        ids.iter()
            .filter_map(|id| self.tasks.get(*id).map(|t| &**t))
            .collect()
    }

    /// Tasks of either API by `external_task_id`, in the order asked; unknown ids are skipped.
    pub fn by_external_ids<'a>(&'a self, exts: &[&str]) -> Vec<&'a Task> {
        exts.iter()
            .filter_map(|e| self.external.get(*e))
            .filter_map(|id| self.tasks.get(id).map(|t| &**t))
            .collect()
    }

    /// A cursor page over all tasks, newest first: tasks created before position `before`
    /// (in creation order; `None` starts at the newest) that `keep` accepts, at most `limit`.
    /// Returns the tasks with their positions, and whether more would follow.
    pub fn scan(
        &self,
        before: Option<usize>,
        limit: usize,
        keep: impl Fn(&Task) -> bool,
    ) -> (Vec<(usize, &Task)>, bool) {
        let end = before.unwrap_or(self.order.len()).min(self.order.len());
        let mut matching = self.order[..end]
            .iter()
            .enumerate()
            .rev()
            .filter_map(|(pos, id)| self.tasks.get(id).map(|t| (pos, &**t)))
            .filter(|(_, t)| keep(t));
        let page: Vec<(usize, &Task)> = matching.by_ref().take(limit).collect();
        let more = matching.next().is_some();
        (page, more)
    }

    /// A task of `family` by the caller's `external_task_id`.
    pub fn by_external_id(&self, family: &Family, ext: &str) -> Option<&Task> {
        let id = self.external.get(ext)?;
        self.by_task_id(family, id)
    }

    /// One page of a family's tasks, newest first; `page` counts from 1.
    pub fn page(&self, family: &Family, page: usize, size: usize) -> Vec<Value> {
        self.order
            .iter()
            .rev()
            .filter_map(|id| self.tasks.get(id).map(|t| &**t))
            .filter(|t| std::ptr::eq(t.family, family) && t.api == Api::Legacy)
            .skip(page.saturating_sub(1).saturating_mul(size))
            .take(size)
            .map(Task::to_json)
            .collect()
    }

    /// The task's current JSON in its own API's shape, for callbacks.
    pub fn snapshot(&self, id: &str) -> Option<Value> {
        self.tasks.get(id).map(|t| t.snapshot_json())
    }

    /// Moves a submitted task to `processing`.
    pub fn start(&mut self, id: &str, now_ms: i64) -> Option<Value> {
        let task = self.tasks.get_mut(id)?;
        if task.status != TaskStatus::Submitted {
            return None;
        }
        task.status = TaskStatus::Processing;
        task.updated_at = now_ms.max(task.updated_at);
        Some(task.snapshot_json())
    }

    /// Ends a task: `failed` (charged 0) when a fail word matched, else `succeed` with results
    /// and its charge taken from the packs. Frees its slots either way.
    pub fn finish(
        &mut self,
        id: &str,
        now_ms: i64,
        cfg: &SimConfig,
        mut new_id: impl FnMut() -> String,
    ) -> Option<Value> {
        let task = self.tasks.get_mut(id)?;
        if task.status.is_final() {
            return None;
        }
        task.updated_at = now_ms.max(task.updated_at);
        if task.doomed {
            task.status = TaskStatus::Failed;
            task.status_msg = cfg.content.fail_message.clone();
            task.unit_deduction = Some(Units::ZERO);
        } else {
            let basis = ChargeBasis {
                family: task.family,
                model: &task.spec.model,
                mode: task.spec.mode.as_deref(),
                duration_secs: task.spec.duration_secs,
                outputs: task.spec.outputs,
            };
            let charge = cfg.billing.charge(&basis);
            let (result, videos) = task.build_result(&mut new_id);
            task.status = TaskStatus::Succeed;
            task.result = Some(result);
            task.unit_deduction = Some(charge);
            billing::deduct(&mut self.packs, task.family.pack, charge);
            self.videos.extend(videos);
        }
        let (pool, slots): (PoolKey, u32) = (task.pool.clone(), task.spec.slots);
        let json = task.snapshot_json();
        self.slots.release(&pool, slots);
        Some(json)
    }

    /// Slots held by running tasks of a pack type.
    pub fn slots_in_use(&self, pack: PackType) -> u32 {
        self.slots.in_use_of(pack)
    }

    /// Remembers a face-scan session for a later advanced lip-sync.
    pub fn add_session(&mut self, session_id: String) {
        self.sessions.insert(session_id);
    }

    /// Charges a synchronous call (the face scan) to the video packs.
    pub fn charge_now(&mut self, pack: PackType, amount: Units) {
        billing::deduct(&mut self.packs, pack, amount);
    }
}
