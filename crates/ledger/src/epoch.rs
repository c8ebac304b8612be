//! Forward-secure MAC keys: one key per epoch, each derived one way from the one before.
//!
//! `K(e+1) = SHA-256("kling-audit/epoch/v1" || K(e))`. The writer holds only the current key;
//! once it moves on, the old key is wiped from memory and the file that held it is replaced,
//! so a thief who takes the host later cannot MAC records of earlier epochs. An auditor who
//! kept `K(0)` offline derives every epoch key and checks every record.

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

const EVOLVE_LABEL: &[u8] = b"kling-audit/epoch/v1";

/// An epoch number and its MAC key.
pub struct EpochKey {
    epoch: u64,
    key: Zeroizing<[u8; 32]>,
}

impl EpochKey {
    /// Epoch 0, from the root key.
    pub fn root(key: [u8; 32]) -> Self {
        EpochKey {
            epoch: 0,
            key: Zeroizing::new(key),
        }
    }

    /// A stored key for a given epoch.
    pub fn at(epoch: u64, key: [u8; 32]) -> Self {
        EpochKey {
            epoch,
            key: Zeroizing::new(key),
        }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn key(&self) -> &[u8; 32] {
        &self.key
    }

    /// Moves to the next epoch, wiping the current key.
    pub fn advance(&mut self) {
        let next: [u8; 32] = Sha256::new()
            .chain_update(EVOLVE_LABEL)
            .chain_update(*self.key)
            .finalize()
            .into();
        *self.key = next;
        self.epoch += 1;
    }

    /// Advances until `epoch`; returns `false` if `epoch` is behind this key, which can never
    /// be reached (keys only move forward).
    pub fn advance_to(&mut self, epoch: u64) -> bool {
        if epoch < self.epoch {
            return false;
        }
        while self.epoch < epoch {
            self.advance();
        }
        true
    }
}

impl std::fmt::Debug for EpochKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EpochKey(epoch {})", self.epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advancing_is_deterministic_and_one_way() {
        let mut a = EpochKey::root([7; 32]);
        let mut b = EpochKey::root([7; 32]);
        a.advance();
        a.advance();
        assert!(b.advance_to(2));
        assert_eq!(a.key(), b.key());
        assert_ne!(a.key(), &[7; 32]);
        assert!(!b.advance_to(1), "an older epoch must be unreachable");
    }

    #[test]
    fn known_answer() {
        let mut k = EpochKey::root([0; 32]);
        k.advance();
        let expected: [u8; 32] = Sha256::new()
            .chain_update(EVOLVE_LABEL)
            .chain_update([0u8; 32])
            .finalize()
            .into();
        assert_eq!(k.key(), &expected);
        assert_eq!(k.epoch(), 1);
    }
}
