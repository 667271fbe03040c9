//! A lock-free latency histogram for the request path.
//!
//! Log-linear buckets in microseconds: exact below 128 µs, then 64 buckets
//! per power of two up to 2^32 µs (over an hour), so a bucket's midpoint is
//! within 0.8 % of any value in it (hdrhistogram at two significant digits
//! is within 1 %). Recording is one relaxed atomic add: many requests
//! record at once and none waits for another, or for the sampler. The
//! layout mirrors convoy-router's per-backend histogram (the crates do not
//! depend on each other).

use std::sync::atomic::{AtomicU64, Ordering};

const SUB_BITS: u32 = 6;
/// Values below this are their own bucket.
const EXACT: u64 = 1 << (SUB_BITS + 1);
/// Highest power of two with buckets of its own; larger values share the last.
const MAX_EXP: u32 = 31;
pub(crate) const BUCKETS: usize =
    EXACT as usize + ((MAX_EXP - SUB_BITS) as usize) * (1 << SUB_BITS);

/// The bucket of a value in µs (values beyond the range share the last).
pub(crate) fn bucket_of(us: u64) -> usize {
    if us < EXACT {
        return us as usize;
    }
    let us = us.min((1u64 << (MAX_EXP + 1)) - 1);
    let e = 63 - us.leading_zeros();
    let sub = (us >> (e - SUB_BITS)) & ((1 << SUB_BITS) - 1);
    EXACT as usize + ((e - SUB_BITS - 1) as usize) * (1 << SUB_BITS) + sub as usize
}

/// The midpoint of a bucket, in µs.
pub(crate) fn bucket_mid(idx: usize) -> u64 {
    if idx < EXACT as usize {
        return idx as u64;
    }
    let rel = idx - EXACT as usize;
    let e = (rel >> SUB_BITS) as u32 + SUB_BITS + 1;
    let sub = (rel & ((1 << SUB_BITS) - 1)) as u64;
    let width = 1u64 << (e - SUB_BITS);
    (1u64 << e) + sub * width + width / 2
}

/// Counters per bucket, recorded with relaxed atomic adds.
pub(crate) struct AtomicHistogram {
    counts: Box<[AtomicU64]>,
}

impl AtomicHistogram {
    pub(crate) fn new() -> Self {
        Self {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Records one value (µs). Lock-free.
    pub(crate) fn record(&self, us: u64) {
        self.counts[bucket_of(us)].fetch_add(1, Ordering::Relaxed);
    }

    /// Moves every count into `into` (added) and zeroes this histogram; a
    /// value recorded meanwhile lands in this drain or the next, never lost.
    pub(crate) fn drain_into(&self, into: &mut [u64]) {
        for (c, out) in self.counts.iter().zip(into.iter_mut()) {
            *out += c.swap(0, Ordering::Relaxed);
        }
    }
}

/// The value (µs, a bucket midpoint) at quantile `q` of `counts`; `None`
/// when empty.
pub(crate) fn quantile(counts: &[u64], q: f64) -> Option<u64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (idx, c) in counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return Some(bucket_mid(idx));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_midpoints_within_0_8_percent() {
        let mut last = 0;
        for us in (0..200_000u64).chain((1..40).map(|k| k * 100_000_000)) {
            let b = bucket_of(us);
            assert!(b >= last && b < BUCKETS, "{us}: {b}");
            last = b;
            let mid = bucket_mid(b) as f64;
            if us < 1u64 << (MAX_EXP + 1) {
                assert!(
                    (mid - us as f64).abs() <= 0.008 * us as f64 + 0.5,
                    "{us}: {mid}"
                );
            }
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn drain_moves_counts_and_quantiles_read_them() {
        let h = AtomicHistogram::new();
        for _ in 0..99 {
            h.record(10_000);
        }
        h.record(500_000);
        let mut counts = vec![0; BUCKETS];
        h.drain_into(&mut counts);
        let p50 = quantile(&counts, 0.5).unwrap() as f64;
        let p100 = quantile(&counts, 1.0).unwrap() as f64;
        assert!((p50 - 10_000.0).abs() < 80.0, "{p50}");
        assert!((p100 - 500_000.0).abs() < 4_000.0, "{p100}");
        let mut again = vec![0; BUCKETS];
        h.drain_into(&mut again);
        assert_eq!(quantile(&again, 0.5), None);
    }
}
