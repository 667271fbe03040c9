//! The per-column drift tests, computed as Evidently computes them.
//!
//! Evidently (0.7, `evidently.legacy.calculations.stattests`) runs these on
//! scipy; the functions here follow the same definitions step by step so that
//! the statistics agree to floating-point rounding (the crate's
//! `tests/evidently.rs` checks 1e-6 relative against Evidently itself):
//!
//! | test | Evidently name | score | drifted when | default threshold |
//! |---|---|---|---|---|
//! | [`ks_2samp`] | `ks` | two-sided p-value (scipy's exact method up to 10 000 rows a side) | `p <= t` | 0.05 |
//! | [`wasserstein_norm`] | `wasserstein` | first Wasserstein distance / max(std(reference), 0.001) | `d >= t` | 0.1 |
//! | [`chisquare`] | `chisquare` | p-value of Pearson's chi-squared, expected = reference counts scaled to the current size | `p < t` | 0.05 |
//! | [`jensen_shannon`] | `jensenshannon` | Jensen–Shannon distance (natural log) of the two histograms | `d >= t` | 0.1 |
//! | [`z_test`] | `z` | two-sided p-value of the two-proportion z-test | `p < t` | 0.05 |
//!
//! The default choice ([`StatTest::default_for`]) is Evidently's
//! `_get_default_stattest`: with at most 1 000 reference rows, a numerical
//! column with more than 5 distinct values (reference and current together)
//! gets `ks`, one with 3–5 `chisquare`, one with at most 2 `z`; a categorical
//! column `chisquare` (more than 2 values) or `z`. Above 1 000 reference rows a
//! numerical column gets `wasserstein` (`jensenshannon` with at most 5
//! values) and a categorical one `jensenshannon`.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use statrs::distribution::{ChiSquared, ContinuousCDF, Normal};

/// Whether a column holds numbers or labels (Evidently's `ColumnType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnKind {
    /// Real values: KS / Wasserstein by default.
    Numerical,
    /// Labels: chi-squared / z-test / Jensen–Shannon by default.
    Categorical,
}

impl fmt::Display for ColumnKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ColumnKind::Numerical => "numerical",
            ColumnKind::Categorical => "categorical",
        })
    }
}

/// One column's values, numbers or labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ColumnValues {
    /// Numbers (non-finite values are dropped before testing, as Evidently does).
    Numerical(Vec<f64>),
    /// Labels.
    Categorical(Vec<String>),
}

impl ColumnValues {
    /// The number of values.
    pub fn len(&self) -> usize {
        match self {
            ColumnValues::Numerical(v) => v.len(),
            ColumnValues::Categorical(v) => v.len(),
        }
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The kind of values held.
    pub fn kind(&self) -> ColumnKind {
        match self {
            ColumnValues::Numerical(_) => ColumnKind::Numerical,
            ColumnValues::Categorical(_) => ColumnKind::Categorical,
        }
    }
}

/// A drift test by Evidently's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StatTest {
    /// Two-sample Kolmogorov–Smirnov, p-value (`ks`).
    #[serde(rename = "ks")]
    Ks,
    /// Wasserstein distance normed by the reference's standard deviation (`wasserstein`).
    #[serde(rename = "wasserstein")]
    Wasserstein,
    /// Pearson's chi-squared, p-value (`chisquare`).
    #[serde(rename = "chisquare")]
    ChiSquare,
    /// Jensen–Shannon distance (`jensenshannon`).
    #[serde(rename = "jensenshannon")]
    JensenShannon,
    /// Two-proportion z-test, p-value (`z`).
    #[serde(rename = "z")]
    Z,
}

/// The names [`StatTest::from_name`] accepts.
pub const STAT_TEST_NAMES: [&str; 5] = ["ks", "wasserstein", "chisquare", "jensenshannon", "z"];

/// Reference rows above which Evidently switches to distances.
pub const SMALL_REFERENCE_ROWS: usize = 1000;

impl StatTest {
    /// The test of Evidently's name, `None` for an unknown name.
    pub fn from_name(name: &str) -> Option<StatTest> {
        Some(match name {
            "ks" => StatTest::Ks,
            "wasserstein" => StatTest::Wasserstein,
            "chisquare" => StatTest::ChiSquare,
            "jensenshannon" => StatTest::JensenShannon,
            "z" => StatTest::Z,
            _ => return None,
        })
    }

    /// Evidently's name.
    pub fn name(self) -> &'static str {
        match self {
            StatTest::Ks => "ks",
            StatTest::Wasserstein => "wasserstein",
            StatTest::ChiSquare => "chisquare",
            StatTest::JensenShannon => "jensenshannon",
            StatTest::Z => "z",
        }
    }

    /// Evidently's display name.
    pub fn display_name(self) -> &'static str {
        match self {
            StatTest::Ks => "K-S p_value",
            StatTest::Wasserstein => "Wasserstein distance (normed)",
            StatTest::ChiSquare => "chi-square p_value",
            StatTest::JensenShannon => "Jensen-Shannon distance",
            StatTest::Z => "Z-test p_value",
        }
    }

    /// Whether the score is a p-value (drift when small) rather than a
    /// distance (drift when large).
    pub fn is_p_value(self) -> bool {
        matches!(self, StatTest::Ks | StatTest::ChiSquare | StatTest::Z)
    }

    /// Evidently's default threshold: 0.05 for p-values, 0.1 for distances.
    pub fn default_threshold(self) -> f64 {
        if self.is_p_value() {
            0.05
        } else {
            0.1
        }
    }

    /// Whether the test applies to a column of this kind (Evidently's
    /// `allowed_feature_types`; `chisquare` and `z` run on numerical columns
    /// only through the default choice for few distinct values).
    pub fn allows(self, kind: ColumnKind) -> bool {
        match self {
            StatTest::Ks | StatTest::Wasserstein => kind == ColumnKind::Numerical,
            StatTest::ChiSquare | StatTest::Z => kind == ColumnKind::Categorical,
            StatTest::JensenShannon => true,
        }
    }

    /// Evidently's default test for a column (`_get_default_stattest`), chosen
    /// from the reference's row count and the distinct values of reference and
    /// current together (both without non-finite values).
    pub fn default_for(reference: &ColumnValues, current: &ColumnValues) -> StatTest {
        let distinct = distinct_count(reference, current);
        let small = reference.len() <= SMALL_REFERENCE_ROWS;
        match (reference.kind(), small) {
            (ColumnKind::Numerical, true) if distinct > 5 => StatTest::Ks,
            (ColumnKind::Numerical, false) if distinct > 5 => StatTest::Wasserstein,
            (ColumnKind::Numerical, false) | (ColumnKind::Categorical, false) => {
                StatTest::JensenShannon
            }
            (_, true) if distinct > 2 => StatTest::ChiSquare,
            (_, true) => StatTest::Z,
        }
    }

    /// Whether `score` means drift at `threshold`, with Evidently's
    /// comparisons (`ks`: `p <= t`; `chisquare`, `z`: `p < t`; distances:
    /// `d >= t`). A NaN score is never drift.
    pub fn drifted(self, score: f64, threshold: f64) -> bool {
        match self {
            StatTest::Ks => score <= threshold,
            StatTest::ChiSquare | StatTest::Z => score < threshold,
            StatTest::Wasserstein | StatTest::JensenShannon => score >= threshold,
        }
    }

    /// Runs the test: the score (p-value or distance) of `current` against
    /// `reference`, which must be of the same kind and already cleaned of
    /// non-finite values ([`clean`]).
    pub fn score(self, reference: &ColumnValues, current: &ColumnValues) -> Result<f64, StatError> {
        if reference.is_empty() || current.is_empty() {
            return Err(StatError::Empty);
        }
        if reference.kind() != current.kind() {
            return Err(StatError::KindMismatch {
                reference: reference.kind(),
                current: current.kind(),
            });
        }
        match (self, reference, current) {
            (StatTest::Ks, ColumnValues::Numerical(r), ColumnValues::Numerical(c)) => {
                Ok(ks_2samp(r, c).p_value)
            }
            (StatTest::Wasserstein, ColumnValues::Numerical(r), ColumnValues::Numerical(c)) => {
                Ok(wasserstein_norm(r, c))
            }
            (StatTest::ChiSquare, r, c) => Ok(chisquare(&counts(r, c))),
            (StatTest::Z, r, c) => Ok(z_test(r, c)),
            (StatTest::JensenShannon, r, c) => Ok(jensen_shannon(r, c)),
            (test, r, _) => Err(StatError::NotApplicable {
                test,
                kind: r.kind(),
            }),
        }
    }
}

impl fmt::Display for StatTest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a test could not run.
#[derive(Debug, Clone, PartialEq)]
pub enum StatError {
    /// A side has no (finite) values.
    Empty,
    /// Reference and current hold different kinds of values.
    KindMismatch {
        /// The reference's kind.
        reference: ColumnKind,
        /// The current sample's kind.
        current: ColumnKind,
    },
    /// The test does not apply to the column's kind.
    NotApplicable {
        /// The test.
        test: StatTest,
        /// The column's kind.
        kind: ColumnKind,
    },
}

impl fmt::Display for StatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StatError::Empty => f.write_str("a side has no finite values"),
            StatError::KindMismatch { reference, current } => {
                write!(f, "reference is {reference} but current is {current}")
            }
            StatError::NotApplicable { test, kind } => {
                write!(f, "{test} does not apply to a {kind} column")
            }
        }
    }
}

impl std::error::Error for StatError {}

/// Drops NaN and ±inf from a numerical column (Evidently replaces infinities
/// by NaN and drops NaN before testing); labels are kept as they are.
pub fn clean(values: &ColumnValues) -> ColumnValues {
    match values {
        ColumnValues::Numerical(v) => {
            ColumnValues::Numerical(v.iter().copied().filter(|x| x.is_finite()).collect())
        }
        ColumnValues::Categorical(v) => ColumnValues::Categorical(v.clone()),
    }
}

/// A numerical value as a hashable key: +0.0 and -0.0 are one value, as in pandas.
fn num_key(x: f64) -> u64 {
    if x == 0.0 {
        0
    } else {
        x.to_bits()
    }
}

/// Distinct values of both sides together (pandas `nunique` of the concatenation).
pub fn distinct_count(a: &ColumnValues, b: &ColumnValues) -> usize {
    match (a, b) {
        (ColumnValues::Numerical(a), ColumnValues::Numerical(b)) => a
            .iter()
            .chain(b)
            .map(|&x| num_key(x))
            .collect::<HashSet<_>>()
            .len(),
        (ColumnValues::Categorical(a), ColumnValues::Categorical(b)) => {
            a.iter().chain(b).collect::<HashSet<_>>().len()
        }
        (ColumnValues::Numerical(a), ColumnValues::Categorical(b))
        | (ColumnValues::Categorical(b), ColumnValues::Numerical(a)) => {
            a.iter().map(|&x| num_key(x)).collect::<HashSet<_>>().len()
                + b.iter().collect::<HashSet<_>>().len()
        }
    }
}

/// Per distinct value (over both sides, in a fixed order): the count in the
/// reference and in the current sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Counts {
    /// Reference rows.
    pub reference_rows: usize,
    /// Current rows.
    pub current_rows: usize,
    /// `(reference count, current count)` per distinct value, ordered by value.
    pub per_value: Vec<(u64, u64)>,
}

/// Counts each distinct value on both sides (Evidently's `value_counts`
/// over the union of keys).
pub fn counts(reference: &ColumnValues, current: &ColumnValues) -> Counts {
    fn tally<K: Ord>(r: impl Iterator<Item = K>, c: impl Iterator<Item = K>) -> Vec<(u64, u64)> {
        let mut map: BTreeMap<K, (u64, u64)> = BTreeMap::new();
        for k in r {
            map.entry(k).or_default().0 += 1;
        }
        for k in c {
            map.entry(k).or_default().1 += 1;
        }
        map.into_values().collect()
    }
    let per_value = match (reference, current) {
        (ColumnValues::Numerical(r), ColumnValues::Numerical(c)) => tally(
            r.iter().map(|&x| OrdF64(if x == 0.0 { 0.0 } else { x })),
            c.iter().map(|&x| OrdF64(if x == 0.0 { 0.0 } else { x })),
        ),
        (ColumnValues::Categorical(r), ColumnValues::Categorical(c)) => {
            tally(r.iter().map(String::as_str), c.iter().map(String::as_str))
        }
        // Mixed kinds never share a value.
        (r, c) => {
            let (nr, nc) = (r.len() as u64, c.len() as u64);
            vec![(nr, 0), (0, nc)]
        }
    };
    Counts {
        reference_rows: reference.len(),
        current_rows: current.len(),
        per_value,
    }
}

/// A total order on finite floats for counting.
#[derive(Debug, Clone, Copy, PartialEq)]
struct OrdF64(f64);

impl Eq for OrdF64 {}

impl PartialOrd for OrdF64 {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OrdF64 {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// The result of [`ks_2samp`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KsResult {
    /// The statistic D (largest distance between the empirical CDFs).
    pub statistic: f64,
    /// The two-sided p-value.
    pub p_value: f64,
}

/// Rows a side up to which [`ks_2samp`] computes the exact p-value (scipy's `MAX_AUTO_N`).
pub const KS_EXACT_MAX_ROWS: usize = 10_000;

/// The two-sample Kolmogorov–Smirnov test, two-sided, as scipy's
/// `ks_2samp(method="auto")`: D from the empirical CDFs, the exact p-value
/// when neither side exceeds [`KS_EXACT_MAX_ROWS`] rows (Hodges' lattice-path
/// count, computed as 1 − p with Viehmann's recursion for unequal sizes and
/// the reflection sum for equal ones). Above that the asymptotic Kolmogorov
/// distribution of `sqrt(n m / (n + m)) D` is used (scipy uses the
/// finite-n Kolmogorov distribution there; the monitor never goes there, its
/// sample size is bounded by [`KS_EXACT_MAX_ROWS`]).
///
/// Both sides must be non-empty and finite.
pub fn ks_2samp(a: &[f64], b: &[f64]) -> KsResult {
    let mut x = a.to_vec();
    let mut y = b.to_vec();
    x.sort_by(f64::total_cmp);
    y.sort_by(f64::total_cmp);
    let (n1, n2) = (x.len(), y.len());
    // D = max over all observed values v of |F1(v) - F2(v)|, with F the
    // right-continuous empirical CDF (counts of values <= v).
    let (mut max_pos, mut max_neg) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    for &v in x.iter().chain(&y) {
        let c1 = x.partition_point(|&t| t <= v) as f64 / n1 as f64;
        let c2 = y.partition_point(|&t| t <= v) as f64 / n2 as f64;
        let diff = c1 - c2;
        max_pos = max_pos.max(diff);
        max_neg = max_neg.max(-diff);
    }
    let min_s = max_neg.clamp(0.0, 1.0);
    let d = if min_s > max_pos { min_s } else { max_pos };
    if n1.max(n2) <= KS_EXACT_MAX_ROWS {
        let g = gcd(n1, n2);
        let lcm = (n1 / g) * n2;
        let h = (d * lcm as f64).round_ties_even() as usize;
        let d = h as f64 / lcm as f64;
        if h == 0 {
            return KsResult {
                statistic: d,
                p_value: 1.0,
            };
        }
        let p = if n1 == n2 {
            prob_outside_square(n1, h)
        } else {
            outer_prob_inside(n1, n2, g, h)
        };
        if (0.0..=1.0).contains(&p) {
            return KsResult {
                statistic: d,
                p_value: p,
            };
        }
    }
    let (m, n) = (n1.max(n2) as f64, n1.min(n2) as f64);
    let en = m * n / (m + n);
    KsResult {
        statistic: d,
        p_value: kolmogorov_sf(en.sqrt() * d).clamp(0.0, 1.0),
    }
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The share of lattice paths from (0,0) to (n,n) that leave the band
/// |x − y| < h (equal sample sizes): the alternating reflection sum,
/// evaluated from the outermost term in.
fn prob_outside_square(n: usize, h: usize) -> f64 {
    let (nf, hf) = (n as f64, h as f64);
    let mut p = 0.0;
    let mut k = n / h;
    loop {
        let kf = k as f64;
        let mut p1 = 1.0;
        for j in 0..h {
            let jf = j as f64;
            p1 = (nf - kf * hf - jf) * p1 / (nf + kf * hf + jf + 1.0);
        }
        p = p1 * (1.0 - p);
        if k == 0 {
            break;
        }
        k -= 1;
    }
    2.0 * p
}

/// The share of lattice paths from (0,0) to (m,n) that do not stay strictly
/// inside |n x / g − m y / g| < h, computed column by column as one minus
/// the inside share, normalised at every step (Hodges 1958; Viehmann 2021,
/// "Numerically more stable computation of the p-values for the two-sample
/// Kolmogorov–Smirnov test").
fn outer_prob_inside(m: usize, n: usize, g: usize, h: usize) -> f64 {
    let (m, n) = if m < n { (n, m) } else { (m, n) };
    let (mg, ng) = ((m / g) as i64, (n / g) as i64);
    let (h, n_i) = (h as i64, n as i64);
    let ceil_div = |a: i64, b: i64| (a as f64 / b as f64).ceil() as i64;
    let floor_div = |a: i64, b: i64| (a as f64 / b as f64).floor() as i64;
    let mut minj: i64 = 0;
    let mut maxj: i64 = ceil_div(h, mg).min(n_i + 1);
    let mut curlen = maxj - minj;
    let len_a = (2 * maxj + 2).min(n_i + 1) as usize;
    let mut a = vec![1.0_f64; len_a];
    for v in a.iter_mut().take(maxj as usize) {
        *v = 0.0;
    }
    for i in 1..=(m as i64) {
        let (lastminj, lastlen) = (minj, curlen);
        minj = (floor_div(ng * i - h, mg) + 1).max(0).min(n_i);
        maxj = ceil_div(ng * i + h, mg).min(n_i + 1);
        if maxj <= minj {
            return 1.0;
        }
        let mut val = if minj == 0 { 0.0 } else { 1.0 };
        let fi = i as f64;
        for jj in 0..(maxj - minj) {
            let j = jj + minj;
            let fj = j as f64;
            val = (a[(jj + minj - lastminj) as usize] * fi + val * fj) / (fi + fj);
            a[jj as usize] = val;
        }
        curlen = maxj - minj;
        if lastlen > curlen {
            let start = (maxj - minj) as usize;
            let end = (start + (lastlen - curlen) as usize).min(a.len());
            for v in &mut a[start..end] {
                *v = 1.0;
            }
        }
    }
    a[(maxj - minj - 1) as usize]
}

/// The survival function of the Kolmogorov distribution,
/// `2 Σ (−1)^(k−1) exp(−2 k² z²)` (its limit for large samples).
fn kolmogorov_sf(z: f64) -> f64 {
    if z <= 0.0 {
        return 1.0;
    }
    if z < 0.27 {
        // The series converges slowly here, and the value is 1 to 1e-16.
        return 1.0;
    }
    let mut sum = 0.0;
    for k in 1..=100_i32 {
        let kf = f64::from(k);
        let term = (-2.0 * kf * kf * z * z).exp();
        sum += if k % 2 == 1 { term } else { -term };
        if term < 1e-18 {
            break;
        }
    }
    2.0 * sum
}

/// Mean with pairwise-free summation (the difference to numpy's pairwise sum
/// is ~n·eps relative, far below the agreement checked).
fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Population standard deviation (numpy's `np.std`, ddof = 0).
pub fn std_dev(v: &[f64]) -> f64 {
    let mu = mean(v);
    (v.iter().map(|x| (x - mu) * (x - mu)).sum::<f64>() / v.len() as f64).sqrt()
}

/// The first Wasserstein distance between the empirical distributions of `u`
/// and `v` (scipy's `wasserstein_distance`): the integral of |F_u − F_v|.
pub fn wasserstein_distance(u: &[f64], v: &[f64]) -> f64 {
    let mut us = u.to_vec();
    let mut vs = v.to_vec();
    us.sort_by(f64::total_cmp);
    vs.sort_by(f64::total_cmp);
    let mut all: Vec<f64> = us.iter().chain(&vs).copied().collect();
    all.sort_by(f64::total_cmp);
    let (nu, nv) = (us.len() as f64, vs.len() as f64);
    let (mut iu, mut iv) = (0usize, 0usize);
    let mut total = 0.0;
    for w in all.windows(2) {
        let x = w[0];
        while iu < us.len() && us[iu] <= x {
            iu += 1;
        }
        while iv < vs.len() && vs[iv] <= x {
            iv += 1;
        }
        let (cu, cv) = (iu as f64 / nu, iv as f64 / nv);
        total += (cu - cv).abs() * (w[1] - w[0]);
    }
    total
}

/// Evidently's `wasserstein`: the Wasserstein distance divided by
/// `max(std(reference), 0.001)`.
pub fn wasserstein_norm(reference: &[f64], current: &[f64]) -> f64 {
    let norm = std_dev(reference).max(0.001);
    wasserstein_distance(reference, current) / norm
}

/// Evidently's `chisquare`: Pearson's chi-squared of the current counts
/// against the reference counts scaled by `current rows / reference rows`,
/// `k − 1` degrees of freedom; the p-value. A value absent from the
/// reference makes the statistic infinite (p = 0); a single distinct value
/// has no degrees of freedom and gives p = 1.
pub fn chisquare(counts: &Counts) -> f64 {
    let k_norm = counts.current_rows as f64 / counts.reference_rows as f64;
    let mut stat = 0.0;
    for &(r, c) in &counts.per_value {
        let expected = r as f64 * k_norm;
        let observed = c as f64;
        stat += (observed - expected) * (observed - expected) / expected;
    }
    let dof = counts.per_value.len().saturating_sub(1);
    if dof == 0 {
        return 1.0;
    }
    if stat.is_infinite() {
        return 0.0;
    }
    match ChiSquared::new(dof as f64) {
        Ok(dist) => dist.sf(stat),
        Err(_) => f64::NAN,
    }
}

/// Evidently's `z`: the two-proportion z-test of the share of values other
/// than the smallest one, two-sided p-value `2 (1 − Φ(|z|))`; 1 when both
/// sides hold the same single value.
pub fn z_test(reference: &ColumnValues, current: &ColumnValues) -> f64 {
    let c = counts(reference, current);
    if c.per_value.len() == 1 {
        return 1.0;
    }
    // The first key in order is the "0" class; every other value is "1".
    let (r0, c0) = c.per_value[0];
    let (n1, n2) = (c.reference_rows as f64, c.current_rows as f64);
    let p1 = (n1 - r0 as f64) / n1;
    let p2 = (n2 - c0 as f64) / n2;
    let pooled = (p1 * n1 + p2 * n2) / (n1 + n2);
    let z = (p1 - p2) / (pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)).sqrt();
    let normal = Normal::standard();
    2.0 * (1.0 - normal.cdf(z.abs()))
}

/// The two histograms Jensen–Shannon compares (Evidently's `get_binned_data`
/// without zero filling): a numerical column with more than 20 distinct
/// reference values in Sturges bins over both sides' range (numpy's
/// `histogram_bin_edges(bins="sturges")`), anything else per distinct value;
/// each side as shares of its rows.
pub fn binned(reference: &ColumnValues, current: &ColumnValues) -> (Vec<f64>, Vec<f64>) {
    if let (ColumnValues::Numerical(r), ColumnValues::Numerical(c)) = (reference, current) {
        let ref_distinct = r.iter().map(|&x| num_key(x)).collect::<HashSet<_>>().len();
        if ref_distinct > 20 {
            let edges = sturges_edges(r, c);
            let (hr, hc) = (histogram(r, &edges), histogram(c, &edges));
            let (nr, nc) = (r.len() as f64, c.len() as f64);
            return (
                hr.iter().map(|&x| x as f64 / nr).collect(),
                hc.iter().map(|&x| x as f64 / nc).collect(),
            );
        }
    }
    let c = counts(reference, current);
    let (nr, nc) = (c.reference_rows as f64, c.current_rows as f64);
    c.per_value
        .iter()
        .map(|&(r, cur)| (r as f64 / nr, cur as f64 / nc))
        .unzip()
}

/// numpy's Sturges bin edges over the concatenation of both sides.
fn sturges_edges(a: &[f64], b: &[f64]) -> Vec<f64> {
    let all = a.iter().chain(b);
    let (lo, hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
        (lo.min(x), hi.max(x))
    });
    let size = (a.len() + b.len()) as f64;
    let ptp = hi - lo;
    let (first, last) = if lo == hi {
        (lo - 0.5, hi + 0.5)
    } else {
        (lo, hi)
    };
    let width = ptp / (size.log2() + 1.0);
    let bins = if width != 0.0 {
        ((last - first) / width).ceil() as usize
    } else {
        1
    };
    let step = (last - first) / bins as f64;
    let mut edges: Vec<f64> = (0..=bins).map(|i| i as f64 * step + first).collect();
    edges[bins] = last;
    edges
}

/// numpy's `histogram` with explicit edges: [e_i, e_i+1), the last bin closed.
fn histogram(values: &[f64], edges: &[f64]) -> Vec<u64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let bins = edges.len() - 1;
    let mut cum: Vec<usize> = edges[..bins]
        .iter()
        .map(|&e| sorted.partition_point(|&x| x < e))
        .collect();
    cum.push(sorted.partition_point(|&x| x <= edges[bins]));
    cum.windows(2).map(|w| (w[1] - w[0]) as u64).collect()
}

/// Evidently's `jensenshannon`: scipy's Jensen–Shannon distance (natural
/// logarithm) between the two histograms of [`binned`].
pub fn jensen_shannon(reference: &ColumnValues, current: &ColumnValues) -> f64 {
    let (p, q) = binned(reference, current);
    jensen_shannon_distance(&p, &q)
}

/// scipy's `spatial.distance.jensenshannon(p, q)`: both normalised to sum 1,
/// `sqrt((KL(p‖m) + KL(q‖m)) / 2)` with `m = (p + q) / 2`.
pub fn jensen_shannon_distance(p: &[f64], q: &[f64]) -> f64 {
    let (sp, sq) = (p.iter().sum::<f64>(), q.iter().sum::<f64>());
    let rel_entr = |x: f64, y: f64| {
        if x > 0.0 && y > 0.0 {
            x * (x / y).ln()
        } else if x == 0.0 && y >= 0.0 {
            0.0
        } else {
            f64::INFINITY
        }
    };
    let mut left = 0.0;
    let mut right = 0.0;
    for (&a, &b) in p.iter().zip(q) {
        let (a, b) = (a / sp, b / sq);
        let m = (a + b) / 2.0;
        left += rel_entr(a, m);
        right += rel_entr(b, m);
    }
    ((left + right) / 2.0).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(v: &[f64]) -> ColumnValues {
        ColumnValues::Numerical(v.to_vec())
    }

    fn cat(v: &[&str]) -> ColumnValues {
        ColumnValues::Categorical(v.iter().map(|s| s.to_string()).collect())
    }

    // Values from scipy 1.17.1 (the pinned venv).
    #[test]
    fn ks_matches_scipy_on_small_samples() {
        // ks_2samp([1,2,3,4,5], [3,4,5,6,7,8]) -> D=0.5, p=0.35714285714285715
        let r = ks_2samp(&[1.0, 2.0, 3.0, 4.0, 5.0], &[3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
        assert!((r.statistic - 0.5).abs() < 1e-15, "{r:?}");
        assert!(
            (r.p_value - 0.357_142_857_142_857_15).abs() < 1e-15,
            "{r:?}"
        );
        // Equal sizes: ks_2samp([1,2,3,4], [5,6,7,8]) -> D=1, p=0.028571428571428577
        let r = ks_2samp(&[1.0, 2.0, 3.0, 4.0], &[5.0, 6.0, 7.0, 8.0]);
        assert_eq!(r.statistic, 1.0);
        assert!(
            (r.p_value - 0.028_571_428_571_428_577).abs() < 1e-12,
            "{r:?}"
        );
    }

    #[test]
    fn identical_samples_have_p_one() {
        let v: Vec<f64> = (0..50).map(f64::from).collect();
        let r = ks_2samp(&v, &v);
        assert_eq!((r.statistic, r.p_value), (0.0, 1.0));
        assert_eq!(wasserstein_norm(&v, &v), 0.0);
        assert_eq!(jensen_shannon(&num(&v), &num(&v)), 0.0);
    }

    #[test]
    fn wasserstein_of_a_shift_is_the_shift() {
        let u: Vec<f64> = (0..100).map(f64::from).collect();
        let v: Vec<f64> = u.iter().map(|x| x + 3.0).collect();
        assert!((wasserstein_distance(&u, &v) - 3.0).abs() < 1e-12);
        let norm = wasserstein_norm(&u, &v);
        assert!((norm - 3.0 / std_dev(&u)).abs() < 1e-12);
    }

    #[test]
    fn chisquare_of_a_new_value_is_zero_and_of_the_same_shares_one() {
        let r = cat(&["a", "b", "c", "a"]);
        assert_eq!(chisquare(&counts(&r, &cat(&["a", "d", "b"]))), 0.0);
        let same = chisquare(&counts(&r, &cat(&["a", "b", "c", "a", "a", "b", "c", "a"])));
        assert!((same - 1.0).abs() < 1e-12, "{same}");
    }

    #[test]
    fn z_test_of_one_shared_value_is_one() {
        assert_eq!(z_test(&cat(&["x", "x"]), &cat(&["x"])), 1.0);
        let p = z_test(&cat(&["x"; 100]), &cat(&["y"; 100]));
        assert!(p < 1e-10, "{p}");
    }

    #[test]
    fn default_choice_follows_evidently() {
        let many: Vec<f64> = (0..100).map(f64::from).collect();
        let big: Vec<f64> = (0..2000).map(f64::from).collect();
        assert_eq!(
            StatTest::default_for(&num(&many), &num(&many)),
            StatTest::Ks
        );
        assert_eq!(
            StatTest::default_for(&num(&big), &num(&many)),
            StatTest::Wasserstein
        );
        assert_eq!(
            StatTest::default_for(&num(&[1.0, 2.0, 3.0]), &num(&[1.0])),
            StatTest::ChiSquare
        );
        assert_eq!(
            StatTest::default_for(&num(&[1.0, 2.0]), &num(&[1.0])),
            StatTest::Z
        );
        let few_big: Vec<f64> = (0..2000).map(|i| f64::from(i % 4)).collect();
        assert_eq!(
            StatTest::default_for(&num(&few_big), &num(&many)),
            StatTest::Wasserstein
        );
        let few_big_cur: Vec<f64> = (0..10).map(|i| f64::from(i % 4)).collect();
        assert_eq!(
            StatTest::default_for(&num(&few_big), &num(&few_big_cur)),
            StatTest::JensenShannon
        );
        assert_eq!(
            StatTest::default_for(&cat(&["a", "b", "c"]), &cat(&["a"])),
            StatTest::ChiSquare
        );
        let cats: Vec<&str> = ["a", "b"].repeat(600);
        assert_eq!(
            StatTest::default_for(&cat(&cats), &cat(&["a"])),
            StatTest::JensenShannon
        );
    }

    #[test]
    fn score_rejects_kind_mismatches() {
        assert!(matches!(
            StatTest::Ks.score(&num(&[1.0]), &cat(&["a"])),
            Err(StatError::KindMismatch { .. })
        ));
        assert!(matches!(
            StatTest::Wasserstein.score(&cat(&["a"]), &cat(&["a"])),
            Err(StatError::NotApplicable { .. })
        ));
        assert_eq!(
            StatTest::Ks.score(&num(&[]), &num(&[1.0])),
            Err(StatError::Empty)
        );
    }

    #[test]
    fn sturges_edges_match_numpy() {
        // np.histogram_bin_edges(np.arange(100.0), bins="sturges") has 9
        // edges (ceil(log2(100) + 1) = 8 bins) from 0 to 99.
        let v: Vec<f64> = (0..100).map(f64::from).collect();
        let e = sturges_edges(&v[..50], &v[50..]);
        assert_eq!(e.len(), 9);
        assert_eq!((e[0], e[8]), (0.0, 99.0));
        let h = histogram(&v, &e);
        assert_eq!(h.iter().sum::<u64>(), 100);
    }
}
