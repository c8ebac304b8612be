//! Concurrency slots (reference section 11.5): a task holds its slots from `submitted` until it
//! ends, an image task holds `n` of them, and a create that would exceed the pool's capacity is
//! refused with 429/1303.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::SimError;
use crate::families::PackType;

/// Who shares a pool of slots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConcurrencyScope {
    /// One pool per pack type for the whole account, shared by every key (Kling's documented
    /// rule).
    #[default]
    Account,
    /// One pool per pack type for each credential.
    Key,
}

/// Capacity per pack type.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConcurrencyConfig {
    pub scope: ConcurrencyScope,
    pub video: u32,
    /// Large enough by default for one `n = 9` image task.
    pub image: u32,
    pub try_on: u32,
    pub audio: u32,
}

impl Default for ConcurrencyConfig {
    fn default() -> Self {
        Self {
            scope: ConcurrencyScope::Account,
            video: 5,
            image: 9,
            try_on: 5,
            audio: 5,
        }
    }
}

impl ConcurrencyConfig {
    pub(crate) fn validate(&self) -> Result<(), SimError> {
        for (name, v) in [
            ("video", self.video),
            ("image", self.image),
            ("try_on", self.try_on),
            ("audio", self.audio),
        ] {
            if v == 0 {
                return Err(SimError::invalid(
                    format!("concurrency.{name}"),
                    "must be at least 1",
                ));
            }
        }
        Ok(())
    }

    /// Slots available to one pool of this pack type.
    pub fn capacity(&self, pack: PackType) -> u32 {
        match pack {
            PackType::Video => self.video,
            PackType::Image => self.image,
            PackType::TryOn => self.try_on,
            PackType::Audio => self.audio,
        }
    }
}

/// Identifies one pool: the pack type and, with [`ConcurrencyScope::Key`], the credential.
pub type PoolKey = (PackType, Option<String>);

/// Slots in use per pool.
#[derive(Debug, Default)]
pub struct Slots {
    used: BTreeMap<PoolKey, u32>,
}

impl Slots {
    /// The pool a caller's task draws on.
    pub fn pool(scope: ConcurrencyScope, pack: PackType, caller: &str) -> PoolKey {
        match scope {
            ConcurrencyScope::Account => (pack, None),
            ConcurrencyScope::Key => (pack, Some(caller.to_owned())),
        }
    }

    /// Takes `count` slots when they fit under `capacity`; returns whether it did.
    pub fn try_take(&mut self, pool: &PoolKey, count: u32, capacity: u32) -> bool {
        let used = self.used.get(pool).copied().unwrap_or(0);
        if used.saturating_add(count) > capacity {
            return false;
        }
        self.used.insert(pool.clone(), used + count);
        true
    }

    /// Gives `count` slots back.
    pub fn release(&mut self, pool: &PoolKey, count: u32) {
        if let Some(used) = self.used.get_mut(pool) {
            *used = used.saturating_sub(count);
        }
    }

    /// Slots in use in a pool.
    #[cfg(test)]
    pub fn in_use(&self, pool: &PoolKey) -> u32 {
        self.used.get(pool).copied().unwrap_or(0)
    }

    /// Slots in use over every pool of a pack type.
    pub fn in_use_of(&self, pack: PackType) -> u32 {
        self.used
            .iter()
            .filter(|((p, _), _)| *p == pack)
            .map(|(_, n)| *n)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_tasks_take_n_slots_and_release_them() {
        let mut slots = Slots::default();
        let pool = Slots::pool(ConcurrencyScope::Account, PackType::Image, "ak");
        assert!(slots.try_take(&pool, 6, 9));
        assert!(!slots.try_take(&pool, 4, 9));
        assert!(slots.try_take(&pool, 3, 9));
        slots.release(&pool, 6);
        assert_eq!(slots.in_use(&pool), 3);
        assert!(slots.try_take(&pool, 6, 9));
    }

    #[test]
    fn key_scope_separates_pools_and_account_scope_shares_them() {
        let mut slots = Slots::default();
        let a = Slots::pool(ConcurrencyScope::Key, PackType::Video, "a");
        let b = Slots::pool(ConcurrencyScope::Key, PackType::Video, "b");
        assert!(slots.try_take(&a, 1, 1));
        assert!(slots.try_take(&b, 1, 1));
        let shared_a = Slots::pool(ConcurrencyScope::Account, PackType::Video, "a");
        let shared_b = Slots::pool(ConcurrencyScope::Account, PackType::Video, "b");
        assert_eq!(shared_a, shared_b);
    }
}
