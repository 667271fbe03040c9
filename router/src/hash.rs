//! Stable key hashing and a bounded distinct-key counter.
//!
//! Sticky assignment must not change when the binary is rebuilt, moved to
//! another CPU architecture or compiled by another Rust release, so a key is
//! hashed from its canonical bytes ([`StickyKey`]) with 64-bit FNV-1a
//! followed by the SplitMix64 finaliser. std's `Hash` is not used: its
//! output depends on each type's `Hash` impl (`str` appends a `0xff`
//! terminator, integers write native-endian bytes) and is not promised to
//! stay the same between Rust releases.

use std::sync::atomic::{AtomicU8, Ordering};

/// FNV-1a 64-bit offset basis.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64-bit prime.
const FNV_PRIME: u64 = 0x0100_0000_01b3;

/// 64-bit FNV-1a over the bytes fed to it; see [`StickyKey`].
#[derive(Debug)]
pub struct KeyHasher(u64);

impl Default for KeyHasher {
    fn default() -> Self {
        Self(FNV_OFFSET)
    }
}

impl KeyHasher {
    /// Feeds `bytes`.
    pub fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(FNV_PRIME);
        }
    }

    /// The sticky hash: FNV-1a state passed through the SplitMix64 finaliser.
    fn finish(&self) -> u64 {
        mix64(self.0)
    }
}

/// A value usable as a sticky key: it feeds its canonical bytes to a
/// [`KeyHasher`], so its sticky backend is the same on every build and
/// platform.
///
/// Canonical bytes: strings and byte slices as they are (a `&str` key and a
/// header with the same text stick to the same backend); unsigned integers
/// up to 64 bits as the 8 little-endian bytes of `u64` (so `7u32` and
/// `7u64` are the same key), signed ones as those of `i64`; 128-bit
/// integers as their 16 little-endian bytes; `bool` as one byte; `char` as
/// its UTF-8 bytes. Implement it for your own key types by feeding a stable
/// encoding (not a `Debug` string that may change).
pub trait StickyKey {
    /// Feeds this key's canonical bytes to `hasher`.
    fn feed(&self, hasher: &mut KeyHasher);
}

impl<T: StickyKey + ?Sized> StickyKey for &T {
    fn feed(&self, hasher: &mut KeyHasher) {
        (**self).feed(hasher);
    }
}

impl StickyKey for str {
    fn feed(&self, hasher: &mut KeyHasher) {
        hasher.write(self.as_bytes());
    }
}

impl StickyKey for String {
    fn feed(&self, hasher: &mut KeyHasher) {
        hasher.write(self.as_bytes());
    }
}

impl StickyKey for [u8] {
    fn feed(&self, hasher: &mut KeyHasher) {
        hasher.write(self);
    }
}

impl<const N: usize> StickyKey for [u8; N] {
    fn feed(&self, hasher: &mut KeyHasher) {
        hasher.write(self);
    }
}

impl StickyKey for Vec<u8> {
    fn feed(&self, hasher: &mut KeyHasher) {
        hasher.write(self);
    }
}

impl StickyKey for http::HeaderValue {
    fn feed(&self, hasher: &mut KeyHasher) {
        hasher.write(self.as_bytes());
    }
}

impl StickyKey for bool {
    fn feed(&self, hasher: &mut KeyHasher) {
        hasher.write(&[u8::from(*self)]);
    }
}

impl StickyKey for char {
    fn feed(&self, hasher: &mut KeyHasher) {
        hasher.write(self.encode_utf8(&mut [0; 4]).as_bytes());
    }
}

macro_rules! sticky_int {
    ($wide:ty: $($t:ty),*) => {$(
        impl StickyKey for $t {
            fn feed(&self, hasher: &mut KeyHasher) {
                hasher.write(&<$wide>::from(*self).to_le_bytes());
            }
        }
    )*};
}

sticky_int!(u64: u8, u16, u32, u64);
sticky_int!(i64: i8, i16, i32, i64);
sticky_int!(u128: u128);
sticky_int!(i128: i128);

impl StickyKey for usize {
    fn feed(&self, hasher: &mut KeyHasher) {
        // usize is at most 64 bits on every supported target.
        hasher.write(&(*self as u64).to_le_bytes());
    }
}

impl StickyKey for isize {
    fn feed(&self, hasher: &mut KeyHasher) {
        hasher.write(&(*self as i64).to_le_bytes());
    }
}

/// SplitMix64 finaliser: spreads every input bit over the whole word.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Stable 64-bit hash of a sticky key.
pub(crate) fn key_hash<K: StickyKey + ?Sized>(key: &K) -> u64 {
    let mut h = KeyHasher::default();
    key.feed(&mut h);
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

    fn fnv1a(bytes: &[u8]) -> u64 {
        let mut h = KeyHasher::default();
        h.write(bytes);
        h.0
    }

    #[test]
    fn key_hasher_is_fnv1a_64() {
        // Published FNV-1a 64-bit test vectors.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn key_hash_is_pinned() {
        // Sticky assignment must survive rebuilds, Rust upgrades and other
        // CPU architectures: these literals never change.
        assert_eq!(key_hash("user-42"), 0x7a15_96f0_e94b_5793);
        assert_eq!(key_hash(&"user-42".to_owned()), 0x7a15_96f0_e94b_5793);
        assert_eq!(key_hash(b"user-42".as_slice()), 0x7a15_96f0_e94b_5793);
        assert_eq!(key_hash(&42u64), 0xe15f_07fe_f55b_9454);
        assert_eq!(key_hash(&-1i64), 0x9795_737c_4a2d_acd5);
    }

    #[test]
    fn integer_keys_do_not_depend_on_width() {
        assert_eq!(key_hash(&42u8), key_hash(&42u64));
        assert_eq!(key_hash(&42u32), key_hash(&42usize));
        assert_eq!(key_hash(&-1i32), key_hash(&-1i64));
        assert_ne!(key_hash(&42u64), key_hash(&43u64));
    }

    #[test]
    fn header_and_str_keys_agree() {
        let v = http::HeaderValue::from_static("user-42");
        assert_eq!(key_hash(&v), key_hash("user-42"));
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
