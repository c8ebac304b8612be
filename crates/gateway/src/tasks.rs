//! Task ownership and last-seen status: which actor created each task, and which status the
//! gateway last recorded for it, so polls write `task.status` only on a change.
//!
//! The book is not persisted on its own: at start it is rebuilt from the ledger, which already
//! holds every fact it needs (`gateway.response` records of creates carry the task id, the
//! external id and the actor; `task.status` records carry each change). One source of truth
//! means the map can never disagree with the audit trail. Reading the whole ledger at start
//! costs time proportional to its size; the map grows with every task ever created, which is
//! a known limit for very long-lived deployments.

use std::collections::HashMap;
use std::hash::{BuildHasher as _, RandomState};
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

/// Why the book could not be rebuilt.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    /// A segment could not be listed or read.
    #[error("cannot read ledger segment {path}: {source}")]
    Io {
        /// The file or directory.
        path: std::path::PathBuf,
        /// The I/O failure.
        source: std::io::Error,
    },
}

/// What the gateway knows about one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskEntry {
    /// The actor that created it.
    pub owner: String,
    /// The family name (`text-to-video`), when known.
    pub family: Option<String>,
    /// The last status recorded.
    pub status: Option<String>,
    /// The gateway request id of the create that made it, when known: callback tokens name
    /// the create they were issued for, so a token drives only that create's task.
    pub created_by: Option<String>,
}

/// Number of independently locked parts of the book. A map grows by rehashing every entry at
/// once; split in parts, each growth moves a small share of the tasks and holds up only the
/// calls that need that part, instead of every call, for a time that grows with the book.
const SHARDS: usize = 64;

#[derive(Debug, Default)]
struct Shard {
    tasks: HashMap<String, TaskEntry>,
    /// External id to owner; ids are unique per account (5.2). Sharded by the external id.
    external: HashMap<String, String>,
}

/// What [`TaskBook::observe`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// A new status; `previous` is the one recorded before (`None` for the first).
    Changed {
        /// The status recorded before.
        previous: Option<String>,
    },
    /// The same status as last recorded.
    Unchanged,
    /// The task is not in the book.
    UnknownTask,
}

/// What [`TaskBook::observe_callback`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallbackObserved {
    /// A new status, now recorded in the book; `entry` is the task as it was before.
    Changed {
        /// The task before the change (its `status` is the previous one).
        entry: TaskEntry,
    },
    /// The same status as last recorded.
    Unchanged,
    /// The recorded status is final: a callback does not move it.
    AlreadyFinal,
    /// The task is not in the book, or is not the task of the token's actor and create.
    NotTokensTask,
}

/// Counts from a rebuild, for the `gateway.start` record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RebuildStats {
    /// Records read.
    pub records: u64,
    /// Tasks known afterwards.
    pub tasks: u64,
    /// Lines that did not parse (a torn tail is quarantined by the ledger before this runs).
    pub unreadable_lines: u64,
}

/// The shared task book. Its locks are never held across an await.
#[derive(Debug)]
pub struct TaskBook {
    shards: Box<[Mutex<Shard>]>,
    /// Picks the shard of an id.
    hasher: RandomState,
}

impl Default for TaskBook {
    fn default() -> Self {
        TaskBook {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl TaskBook {
    /// The part of the book that holds `id` (a task id, or an external id).
    fn shard(&self, id: &str) -> std::sync::MutexGuard<'_, Shard> {
        let i = (self.hasher.hash_one(id) % SHARDS as u64) as usize;
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn shards(&self) -> impl Iterator<Item = std::sync::MutexGuard<'_, Shard>> {
        self.shards
            .iter()
            .map(|m| m.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The owner of a task id.
    pub fn owner(&self, task_id: &str) -> Option<String> {
        self.shard(task_id)
            .tasks
            .get(task_id)
            .map(|t| t.owner.clone())
    }

    /// The owner of a caller's external id.
    pub fn external_owner(&self, external_task_id: &str) -> Option<String> {
        self.shard(external_task_id)
            .external
            .get(external_task_id)
            .cloned()
    }

    /// A snapshot of one task.
    pub fn get(&self, task_id: &str) -> Option<TaskEntry> {
        self.shard(task_id).tasks.get(task_id).cloned()
    }

    /// Binds a new task to its creator. An existing binding is kept: a task id never changes
    /// hands.
    pub fn bind(
        &self,
        task_id: &str,
        owner: &str,
        family: Option<&str>,
        external_task_id: Option<&str>,
        created_by: Option<&str>,
    ) {
        self.shard(task_id)
            .tasks
            .entry(task_id.to_owned())
            .or_insert_with(|| TaskEntry {
                owner: owner.to_owned(),
                family: family.map(str::to_owned),
                status: None,
                created_by: created_by.map(str::to_owned),
            });
        if let Some(ext) = external_task_id {
            self.shard(ext)
                .external
                .entry(ext.to_owned())
                .or_insert_with(|| owner.to_owned());
        }
    }

    /// Notes a status seen for a task and says whether it is a change worth recording.
    pub fn observe(&self, task_id: &str, status: &str) -> Observed {
        let mut shard = self.shard(task_id);
        let Some(entry) = shard.tasks.get_mut(task_id) else {
            return Observed::UnknownTask;
        };
        if entry
            .status
            .as_deref()
            .is_some_and(|s| same_status(s, status))
        {
            return Observed::Unchanged;
        }
        Observed::Changed {
            previous: entry.status.replace(status.to_owned()),
        }
    }

    /// Notes a status a callback reported, under the same lock as the checks, so a poll cannot
    /// slip in between: the task must be `owner`'s and, when the book knows its create, made
    /// by `create_request_id`; a final recorded status is never moved by a callback (Kling does
    /// not leave a final state, so a later callback saying otherwise is stale or forged).
    pub fn observe_callback(
        &self,
        task_id: &str,
        owner: &str,
        create_request_id: &str,
        status: &str,
    ) -> CallbackObserved {
        let mut shard = self.shard(task_id);
        let Some(entry) = shard.tasks.get_mut(task_id) else {
            return CallbackObserved::NotTokensTask;
        };
        let other_create = entry
            .created_by
            .as_deref()
            .is_some_and(|c| c != create_request_id);
        if entry.owner != owner || other_create {
            return CallbackObserved::NotTokensTask;
        }
        match entry.status.as_deref() {
            Some(s) if same_status(s, status) => CallbackObserved::Unchanged,
            Some(s) if crate::inspect::is_final(s) => CallbackObserved::AlreadyFinal,
            _ => {
                let before = entry.clone();
                entry.status = Some(status.to_owned());
                CallbackObserved::Changed { entry: before }
            }
        }
    }

    /// Puts back the previous status after a `task.status` record could not be written, so the
    /// next poll tries again.
    pub fn revert(&self, task_id: &str, status: &str, previous: Option<String>) {
        if let Some(entry) = self.shard(task_id).tasks.get_mut(task_id) {
            if entry.status.as_deref() == Some(status) {
                entry.status = previous;
            }
        }
    }

    /// Number of tasks known.
    pub fn len(&self) -> usize {
        self.shards().map(|s| s.tasks.len()).sum()
    }

    /// Whether no task is known.
    pub fn is_empty(&self) -> bool {
        self.shards().all(|s| s.tasks.is_empty())
    }

    /// Applies one ledger record (type, actor, and the JSON text of its details) to the book.
    pub fn apply_record(&self, kind: &str, actor: &str, details: &str) {
        if kind != "gateway.response" && kind != "task.status" {
            return;
        }
        // A derived struct also takes a JSON array, field by field; details are objects.
        if !details.trim_start().starts_with('{') {
            return;
        }
        let Ok(fields) = serde_json::from_str::<BookFields<'_>>(details) else {
            return;
        };
        let task_id = text(fields.task_id);
        match kind {
            "gateway.response" => {
                let is_create = text(fields.operation).as_deref() == Some("create");
                if let (true, Some(task_id)) = (is_create, task_id) {
                    self.bind(
                        &task_id,
                        actor,
                        text(fields.family).as_deref(),
                        text(fields.external_task_id).as_deref(),
                        text(fields.request_id).as_deref(),
                    );
                    if let Some(status) = text(fields.task_status) {
                        let _ = self.observe(&task_id, &status);
                    }
                }
            }
            _ => {
                if let (Some(task_id), Some(to)) = (task_id, text(fields.to)) {
                    let _ = self.observe(&task_id, &to);
                }
            }
        }
    }

    /// Rebuilds the book from every segment of the ledger in `dir`, oldest first.
    ///
    /// # Errors
    /// [`RebuildError::Io`] when a segment cannot be read.
    pub fn rebuild(dir: &Path) -> Result<(Self, RebuildStats), RebuildError> {
        let book = Self::default();
        let mut stats = RebuildStats::default();
        let (segments, _) =
            kling_audit_ledger::segment::list_segments(dir).map_err(|source| RebuildError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        for segment in segments {
            let bytes =
                kling_audit_ledger::segment::read_segment(&segment.path).map_err(|source| {
                    RebuildError::Io {
                        path: segment.path.clone(),
                        source,
                    }
                })?;
            for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                // Fields skipped unparsed are not checked for UTF-8, so the line is checked
                // whole first: a line that is not JSON stays unreadable.
                let record = std::str::from_utf8(line)
                    .ok()
                    .filter(|text| text.trim_start().starts_with('{'))
                    .and_then(|text| serde_json::from_str::<LineFields<'_>>(text).ok());
                let Some(record) = record else {
                    stats.unreadable_lines += 1;
                    continue;
                };
                stats.records += 1;
                if let Some(details) = record.details {
                    book.apply_record(&record.kind, &record.actor, details.get());
                }
            }
        }
        stats.tasks = book.len() as u64;
        Ok((book, stats))
    }
}

/// Whether two status words name the same state: the classic API spells success `succeed`,
/// the new-standard one `succeeded`, and one task can be polled through both.
fn same_status(a: &str, b: &str) -> bool {
    let word = |s| if s == "succeeded" { "succeed" } else { s };
    word(a) == word(b)
}

/// What the rebuild reads of a ledger line; the other fields are skipped, not parsed into
/// values, since a gateway that restarts reads every record of its ledger.
#[derive(Deserialize)]
struct LineFields<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    actor: Cow<'a, str>,
    #[serde(default, borrow)]
    details: Option<&'a RawValue>,
}

/// The details fields the book reads, kept raw: a field of an unexpected type is ignored
/// alone instead of making the record unreadable.
#[derive(Deserialize)]
struct BookFields<'a> {
    #[serde(default, borrow)]
    operation: Option<&'a RawValue>,
    #[serde(default, borrow)]
    task_id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    family: Option<&'a RawValue>,
    #[serde(default, borrow)]
    external_task_id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    task_status: Option<&'a RawValue>,
    #[serde(default, borrow)]
    to: Option<&'a RawValue>,
    #[serde(default, borrow)]
    request_id: Option<&'a RawValue>,
}

/// The string a raw field holds, if it holds one.
fn text(raw: Option<&RawValue>) -> Option<Cow<'_, str>> {
    raw.filter(|r| r.get().starts_with('"'))
        .and_then(|r| serde_json::from_str::<Cow<'_, str>>(r.get()).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tasks_spread_over_every_part_of_the_book_are_all_found_and_counted() {
        let book = TaskBook::default();
        assert!(book.is_empty());
        let n = 40 * SHARDS;
        for i in 0..n {
            let owner = if i % 2 == 0 { "alice" } else { "bob" };
            book.bind(
                &format!("task-{i}"),
                owner,
                None,
                Some(&format!("ext-{i}")),
                None,
            );
        }
        assert_eq!(book.len(), n);
        for (i, shard) in book.shards().enumerate() {
            assert!(!shard.tasks.is_empty(), "part {i} holds no task");
        }
        for i in 0..n {
            let owner = if i % 2 == 0 { "alice" } else { "bob" };
            assert_eq!(book.owner(&format!("task-{i}")).as_deref(), Some(owner));
            assert_eq!(
                book.external_owner(&format!("ext-{i}")).as_deref(),
                Some(owner)
            );
        }
        assert_eq!(book.owner("task-missing"), None);
    }

    #[test]
    fn binding_is_first_come_and_status_changes_once() {
        let book = TaskBook::default();
        book.bind("t1", "alice", Some("text-to-video"), Some("ext-1"), None);
        book.bind("t1", "mallory", None, Some("ext-1"), None);
        assert_eq!(book.owner("t1").as_deref(), Some("alice"));
        assert_eq!(book.external_owner("ext-1").as_deref(), Some("alice"));
        assert_eq!(
            book.observe("t1", "submitted"),
            Observed::Changed { previous: None }
        );
        assert_eq!(book.observe("t1", "submitted"), Observed::Unchanged);
        assert_eq!(
            book.observe("t1", "processing"),
            Observed::Changed {
                previous: Some("submitted".into())
            }
        );
        assert_eq!(book.observe("nope", "processing"), Observed::UnknownTask);
        book.revert("t1", "processing", Some("submitted".into()));
        assert_eq!(book.get("t1").unwrap().status.as_deref(), Some("submitted"));
    }

    #[test]
    fn a_success_seen_in_both_api_spellings_is_recorded_once() {
        let book = TaskBook::default();
        book.bind("t1", "alice", None, None, None);
        assert!(matches!(
            book.observe("t1", "succeed"),
            Observed::Changed { .. }
        ));
        assert_eq!(book.observe("t1", "succeeded"), Observed::Unchanged);
        assert_eq!(book.observe("t1", "succeed"), Observed::Unchanged);
        assert_eq!(book.get("t1").unwrap().status.as_deref(), Some("succeed"));
    }

    #[test]
    fn a_callback_moves_only_its_own_creates_task_and_never_a_final_status() {
        let book = TaskBook::default();
        book.bind("t1", "alice", None, None, Some("req-1"));
        book.bind("t2", "alice", None, None, Some("req-2"));
        assert_eq!(
            book.observe_callback("t1", "bob", "req-1", "processing"),
            CallbackObserved::NotTokensTask
        );
        assert_eq!(
            book.observe_callback("t2", "alice", "req-1", "processing"),
            CallbackObserved::NotTokensTask
        );
        assert_eq!(
            book.observe_callback("t9", "alice", "req-1", "processing"),
            CallbackObserved::NotTokensTask
        );
        assert!(matches!(
            book.observe_callback("t1", "alice", "req-1", "processing"),
            CallbackObserved::Changed { entry } if entry.status.is_none()
        ));
        assert_eq!(
            book.observe_callback("t1", "alice", "req-1", "processing"),
            CallbackObserved::Unchanged
        );
        assert!(matches!(
            book.observe_callback("t1", "alice", "req-1", "failed"),
            CallbackObserved::Changed { .. }
        ));
        for later in ["succeed", "processing", "submitted"] {
            assert_eq!(
                book.observe_callback("t1", "alice", "req-1", later),
                CallbackObserved::AlreadyFinal
            );
        }
        assert_eq!(book.get("t1").unwrap().status.as_deref(), Some("failed"));
        assert_eq!(book.get("t2").unwrap().status, None);
    }

    #[test]
    fn a_field_of_an_unexpected_type_is_ignored_alone_and_escapes_are_read() {
        let book = TaskBook::default();
        book.apply_record(
            "gateway.response",
            "alice",
            &json!({"operation": "create", "task_id": "t\"1", "family": 7,
                    "external_task_id": null, "task_status": {"odd": true}, "extra": [1, 2]})
            .to_string(),
        );
        let t = book.get("t\"1").unwrap();
        assert_eq!((t.owner.as_str(), t.family.as_deref()), ("alice", None));
        assert_eq!(t.status, None);
        book.apply_record(
            "task.status",
            "alice",
            r#"{"task_id":"t\"1","to":"succeed"}"#,
        );
        assert_eq!(book.get("t\"1").unwrap().status.as_deref(), Some("succeed"));
        // Not JSON, an array read by position, or not a type the book reads: nothing happens.
        book.apply_record("task.status", "alice", "{");
        book.apply_record("gateway.response", "alice", r#"["create", "t3"]"#);
        book.apply_record("gateway.request", "alice", r#"{"task_id":"t2","to":"x"}"#);
        assert_eq!(book.len(), 1);
    }

    #[test]
    fn records_rebuild_the_book() {
        let book = TaskBook::default();
        book.apply_record(
            "gateway.response",
            "alice",
            &json!({"operation": "create", "task_id": "t1", "family": "text-to-video",
                    "external_task_id": "e1", "task_status": "submitted", "request_id": "req-1"})
            .to_string(),
        );
        book.apply_record(
            "gateway.response",
            "bob",
            &json!({"operation": "query-one", "task_id": "t1"}).to_string(),
        );
        book.apply_record(
            "task.status",
            "alice",
            &json!({"task_id": "t1", "to": "succeed"}).to_string(),
        );
        let t = book.get("t1").unwrap();
        assert_eq!(
            (t.owner.as_str(), t.status.as_deref()),
            ("alice", Some("succeed"))
        );
        assert_eq!(book.external_owner("e1").as_deref(), Some("alice"));
        assert_eq!(t.created_by.as_deref(), Some("req-1"));
        assert_eq!(book.len(), 1);
    }

    #[test]
    fn rebuild_reads_segments_and_skips_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let lines = [
            json!({"type": "gateway.response", "actor": "alice",
                   "details": {"operation": "create", "task_id": "t9"}})
            .to_string(),
            "{torn".to_owned(),
            json!({"type": "task.status", "actor": "alice",
                   "details": {"task_id": "t9", "to": "processing"}})
            .to_string(),
        ];
        let mut bytes = (lines.join("\n") + "\n").into_bytes();
        // Not UTF-8, though only in a field the rebuild does not read.
        bytes.extend_from_slice(b"{\"type\":\"task.status\",\"ts\":\"\xee\",\"details\":{\"task_id\":\"t9\",\"to\":\"failed\"}}\n");
        std::fs::write(
            dir.path()
                .join(kling_audit_ledger::segment::segment_name(0, "20260101")),
            bytes,
        )
        .unwrap();
        let (book, stats) = TaskBook::rebuild(dir.path()).unwrap();
        assert_eq!(
            stats,
            RebuildStats {
                records: 2,
                tasks: 1,
                unreadable_lines: 2
            }
        );
        assert_eq!(
            book.get("t9").unwrap().status.as_deref(),
            Some("processing")
        );
    }
}
