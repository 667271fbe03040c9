//! The immutable routing table: weights compiled into a smooth round-robin
//! sequence, cumulative weights and a sticky bucket map. A new table is
//! built on every update and swapped in whole.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::config::{PickStrategy, StickyStrategy};
use crate::error::{check_weight, ConfigError, ConfigErrorKind};
use crate::hash::{key_hash, mix64, unit};
use crate::stats::BackendStats;

/// Size of the fixed sticky bucket space (a key's bucket is the top 16 bits of its hash).
pub(crate) const BUCKETS: usize = 1 << 16;
pub(crate) const MAX_BACKENDS: usize = 4096;
/// Non-integral weights are apportioned onto this many round-robin slots.
const RESOLUTION: u64 = 10_000;

pub(crate) struct Entry<S> {
    pub(crate) id: u64,
    pub(crate) name: Arc<str>,
    pub(crate) weight: f64,
    /// Prototype cloned by each `Split` clone; never polled itself.
    pub(crate) service: Mutex<S>,
    pub(crate) stats: Arc<BackendStats>,
}

impl<S: Clone> Entry<S> {
    pub(crate) fn with_weight(&self, weight: f64) -> Self {
        Self {
            id: self.id,
            name: self.name.clone(),
            weight,
            service: Mutex::new(self.service.lock().clone()),
            stats: self.stats.clone(),
        }
    }
}

enum StickyMap {
    /// Upper bucket bound of each backend's interval, in table order.
    Intervals(Box<[u32]>),
    /// Winner of each bucket.
    Buckets(Box<[u16]>),
}

pub(crate) struct Table<S> {
    pub(crate) epoch: u64,
    pub(crate) entries: Vec<Entry<S>>,
    sequence: Box<[u16]>,
    cursor: AtomicU64,
    cumulative: Box<[f64]>,
    total: f64,
    last_positive: usize,
    pub(crate) spill_order: Box<[u16]>,
    sticky: Option<StickyMap>,
}

impl<S> std::fmt::Debug for Table<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("epoch", &self.epoch)
            .field(
                "weights",
                &self
                    .entries
                    .iter()
                    .map(|e| (&*e.name, e.weight))
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl<S> Table<S> {
    pub(crate) fn build(
        epoch: u64,
        entries: Vec<Entry<S>>,
        sticky: Option<StickyStrategy>,
    ) -> Result<Self, ConfigError> {
        if entries.is_empty() {
            return Err(ConfigError::new(
                ConfigErrorKind::NoBackends,
                "a split needs at least one backend",
            ));
        }
        if entries.len() > MAX_BACKENDS {
            return Err(ConfigError::new(
                ConfigErrorKind::TooManyBackends,
                format!("{} backends; at most {MAX_BACKENDS}", entries.len()),
            ));
        }
        for (i, e) in entries.iter().enumerate() {
            check_weight(&e.name, e.weight)?;
            if entries[..i].iter().any(|o| o.name == e.name) {
                return Err(ConfigError::new(
                    ConfigErrorKind::DuplicateBackend,
                    format!("backend `{}` is listed twice", e.name),
                ));
            }
        }
        let weights: Vec<f64> = entries.iter().map(|e| e.weight).collect();
        let total: f64 = weights.iter().sum();
        if total <= 0.0 || !total.is_finite() {
            return Err(ConfigError::new(
                ConfigErrorKind::AllWeightsZero,
                "all weights are zero (or their sum overflows)",
            ));
        }
        let mut cumulative = Vec::with_capacity(weights.len());
        let mut acc = 0.0;
        for w in &weights {
            acc += w;
            cumulative.push(acc);
        }
        let last_positive = weights.iter().rposition(|w| *w > 0.0).unwrap_or(0);
        let mut spill_order: Vec<u16> = (0..weights.len() as u16)
            .filter(|i| weights[*i as usize] > 0.0)
            .collect();
        spill_order.sort_by(|a, b| weights[*b as usize].total_cmp(&weights[*a as usize]));
        let sequence = smooth_sequence(&integer_weights(&weights));
        let sticky = sticky.map(|strategy| {
            let intervals = match strategy {
                StickyStrategy::Auto => weights.len() <= 2,
                StickyStrategy::Intervals => true,
                StickyStrategy::Rendezvous => false,
            };
            if intervals {
                StickyMap::Intervals(interval_bounds(&weights))
            } else {
                let names: Vec<&str> = entries.iter().map(|e| &*e.name).collect();
                StickyMap::Buckets(rendezvous_buckets(&names, &weights))
            }
        });
        Ok(Self {
            epoch,
            entries,
            sequence,
            cursor: AtomicU64::new(0),
            cumulative: cumulative.into(),
            total,
            last_positive,
            spill_order: spill_order.into(),
            sticky,
        })
    }

    pub(crate) fn pick(&self, strategy: PickStrategy) -> usize {
        match strategy {
            PickStrategy::SmoothRoundRobin => {
                let n = self.cursor.fetch_add(1, Ordering::Relaxed);
                self.sequence[(n % self.sequence.len() as u64) as usize] as usize
            }
            PickStrategy::WeightedRandom => {
                let x = rand::random::<f64>() * self.total;
                self.cumulative
                    .partition_point(|c| *c <= x)
                    .min(self.last_positive)
            }
        }
    }

    /// Backend of a sticky key hash (falls back to a weighted pick when the
    /// table was built without a sticky map).
    pub(crate) fn sticky(&self, hash: u64, strategy: PickStrategy) -> usize {
        let bucket = (hash >> 48) as usize;
        match &self.sticky {
            Some(StickyMap::Intervals(bounds)) => bounds
                .partition_point(|b| (*b as usize) <= bucket)
                .min(self.last_positive),
            Some(StickyMap::Buckets(map)) => map[bucket] as usize,
            None => self.pick(strategy),
        }
    }

    pub(crate) fn index_of(&self, name: &str) -> Option<usize> {
        self.entries.iter().position(|e| &*e.name == name)
    }
}

/// Turns weights into small integers with the same ratios: integral weights
/// summing to at most 10,000 are kept exactly; others are apportioned onto
/// 10,000 slots (largest remainder, a positive weight keeps at least one).
/// The result is divided by its gcd so the period stays short.
pub(crate) fn integer_weights(weights: &[f64]) -> Vec<u64> {
    let total: f64 = weights.iter().sum();
    let integral = weights.iter().all(|w| w.fract() == 0.0) && total <= RESOLUTION as f64;
    let mut ints: Vec<u64> = if integral {
        weights.iter().map(|w| *w as u64).collect()
    } else {
        let exact: Vec<f64> = weights
            .iter()
            .map(|w| w / total * RESOLUTION as f64)
            .collect();
        let mut ints: Vec<u64> = exact.iter().map(|x| x.floor() as u64).collect();
        let assigned: u64 = ints.iter().sum();
        let mut order: Vec<usize> = (0..weights.len()).filter(|i| weights[*i] > 0.0).collect();
        order.sort_by(|a, b| {
            (exact[*b] - exact[*b].floor()).total_cmp(&(exact[*a] - exact[*a].floor()))
        });
        for i in order
            .iter()
            .take(RESOLUTION.saturating_sub(assigned) as usize)
        {
            ints[*i] += 1;
        }
        for (i, w) in weights.iter().enumerate() {
            if *w > 0.0 && ints[i] == 0 {
                ints[i] = 1;
            }
        }
        ints
    };
    let g = ints.iter().fold(0, |g, w| gcd(g, *w));
    if g > 1 {
        for w in &mut ints {
            *w /= g;
        }
    }
    ints
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// One period of nginx's smooth weighted round-robin.
pub(crate) fn smooth_sequence(weights: &[u64]) -> Box<[u16]> {
    let total: i64 = weights.iter().sum::<u64>() as i64;
    let mut current = vec![0i64; weights.len()];
    let mut seq = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, w) in weights.iter().enumerate() {
            current[i] += *w as i64;
            if *w > 0 && (weights[best] == 0 || current[i] > current[best]) {
                best = i;
            }
        }
        current[best] -= total;
        seq.push(best as u16);
    }
    seq.into()
}

fn interval_bounds(weights: &[f64]) -> Box<[u32]> {
    let total: f64 = weights.iter().sum();
    let mut acc = 0.0;
    weights
        .iter()
        .map(|w| {
            acc += w;
            ((acc / total) * BUCKETS as f64).round() as u32
        })
        .collect()
}

fn rendezvous_buckets(names: &[&str], weights: &[f64]) -> Box<[u16]> {
    let seeds: Vec<u64> = names.iter().map(key_hash).collect();
    let live: Vec<usize> = (0..weights.len()).filter(|i| weights[*i] > 0.0).collect();
    (0..BUCKETS as u64)
        .map(|b| {
            let h = mix64(b.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5851_f42d_4c95_7f2d);
            let mut best = live[0];
            let mut best_score = f64::INFINITY;
            for &i in &live {
                // Smallest -ln(u)/w wins: backend i wins with probability w_i / Σw.
                let score = -unit(mix64(h ^ seeds[i])).ln() / weights[i];
                if score < best_score {
                    best_score = score;
                    best = i;
                }
            }
            best as u16
        })
        .collect()
}

#[cfg(test)]
mod tests;
