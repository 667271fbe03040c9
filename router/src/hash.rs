//! Stable key hashing and a bounded distinct-key counter.
//!
//! Sticky assignment must not change when the binary is rebuilt, so keys are
//! hashed with FNV-1a plus a SplitMix64 finaliser rather than with std's
//! randomly keyed `RandomState`.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU8, Ordering};

/// FNV-1a, 64 bit.
#[derive(Debug)]
pub(crate) struct StableHasher(u64);

impl Default for StableHasher {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for StableHasher {
    fn finish(&self) -> u64 {
        mix64(self.0)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// SplitMix64 finaliser: spreads every input bit over the whole word.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Stable 64-bit hash of a sticky key.
pub(crate) fn key_hash<K: Hash + ?Sized>(key: &K) -> u64 {
    let mut h = StableHasher::default();
    key.hash(&mut h);
    h.finish()
}

/// Maps a hash to a float in the open interval (0, 1).
pub(crate) fn unit(h: u64) -> f64 {
    // 52 bits plus a half: exactly representable, never 0 or 1.
    ((h >> 12) as f64 + 0.5) / (1u64 << 52) as f64
}

const HLL_PRECISION: u32 = 12;
const HLL_REGISTERS: usize = 1 << HLL_PRECISION;

/// HyperLogLog distinct counter: 4 KiB, lock-free, ~1.6 % standard error,
/// never grows with the number of keys.
#[derive(Debug)]
pub(crate) struct DistinctKeys {
    registers: Box<[AtomicU8]>,
}

impl Default for DistinctKeys {
    fn default() -> Self {
        Self {
            registers: (0..HLL_REGISTERS).map(|_| AtomicU8::new(0)).collect(),
        }
    }
}

impl DistinctKeys {
    pub(crate) fn insert(&self, hash: u64) {
        // Decorrelate from the bits used for bucket selection.
        let h = mix64(hash ^ 0x9e37_79b9_7f4a_7c15);
        let idx = (h >> (64 - HLL_PRECISION)) as usize;
        let rest = (h << HLL_PRECISION) | (1 << (HLL_PRECISION - 1));
        let rank = (rest.leading_zeros() + 1) as u8;
        let reg = &self.registers[idx];
        if reg.load(Ordering::Relaxed) < rank {
            reg.fetch_max(rank, Ordering::Relaxed);
        }
    }

    pub(crate) fn estimate(&self) -> u64 {
        let m = HLL_REGISTERS as f64;
        let mut sum = 0.0;
        let mut zeros = 0u32;
        for r in self.registers.iter() {
            let r = r.load(Ordering::Relaxed);
            if r == 0 {
                zeros += 1;
            }
            sum += 1.0 / f64::from(1u32 << r.min(31));
        }
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let raw = alpha * m * m / sum;
        let est = if raw <= 2.5 * m && zeros > 0 {
            m * (m / f64::from(zeros)).ln()
        } else {
            raw
        };
        est.round() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_hash_is_stable() {
        // Pinned value: sticky assignment must survive rebuilds.
        assert_eq!(key_hash("user-42"), key_hash("user-42"));
        assert_ne!(key_hash("user-42"), key_hash("user-43"));
        let mut h = StableHasher::default();
        h.write(b"abc");
        assert_eq!(h.0, 0xe71f_a219_0541_574b);
    }

    #[test]
    fn distinct_keys_estimate_is_close() {
        for n in [0u64, 10, 1_000, 50_000] {
            let hll = DistinctKeys::default();
            for k in 0..n {
                hll.insert(key_hash(&k));
                hll.insert(key_hash(&k)); // duplicates do not count
            }
            let est = hll.estimate() as f64;
            let err = (est - n as f64).abs() / (n.max(1) as f64);
            assert!(err < 0.05, "n={n} est={est}");
        }
    }

    #[test]
    fn unit_is_open_interval() {
        assert!(unit(0) > 0.0);
        assert!(unit(u64::MAX) < 1.0);
    }
}
