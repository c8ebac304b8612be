//! Generated identifiers in Kling's 2026 shapes (reference section 7.4): 18-digit numeric task
//! and video ids, UUIDv4 request ids. They come from a seeded generator, so a run with a fixed
//! seed and request order repeats its ids.

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

/// The id generator; callers share it behind a lock.
#[derive(Debug)]
pub struct IdGen {
    rng: StdRng,
}

const EIGHTEEN_DIGITS: std::ops::Range<u64> = 100_000_000_000_000_000..1_000_000_000_000_000_000;

impl IdGen {
    pub fn new(seed: u64) -> Self {
        // A different stream from fault decisions, which use the same configured seed.
        Self {
            rng: StdRng::seed_from_u64(seed ^ 0x6B6C_696E_6773_696D),
        }
    }

    /// An 18-digit numeric string.
    pub fn numeric_id(&mut self) -> String {
        self.rng.gen_range(EIGHTEEN_DIGITS).to_string()
    }

    /// A UUIDv4 built from the generator's bytes.
    pub fn request_id(&mut self) -> String {
        let mut bytes = [0u8; 16];
        self.rng.fill_bytes(&mut bytes);
        uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_kling_shapes() {
        let mut ids = IdGen::new(1);
        for _ in 0..100 {
            let id = ids.numeric_id();
            assert_eq!(id.len(), 18);
            assert!(id.bytes().all(|b| b.is_ascii_digit()));
            let rid = uuid::Uuid::parse_str(&ids.request_id()).unwrap();
            assert_eq!(rid.get_version_num(), 4);
        }
    }

    #[test]
    fn same_seed_repeats_ids() {
        let (mut a, mut b) = (IdGen::new(5), IdGen::new(5));
        assert_eq!(a.numeric_id(), b.numeric_id());
        assert_eq!(a.request_id(), b.request_id());
    }
}
