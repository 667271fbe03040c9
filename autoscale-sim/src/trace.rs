//! Load traces: an arrival rate over time, piecewise constant per step.

use std::fmt;
use std::time::Duration;

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// The largest trace the simulator accepts, in steps (about 115 days of
/// per-second rates). Keeps a bad CSV or a typo in a duration from
/// allocating without bound.
pub const MAX_TRACE_STEPS: usize = 10_000_000;

/// The longest trace the simulator accepts (about 115 days).
pub const MAX_TRACE_DURATION: Duration = Duration::from_secs(10_000_000);

/// The highest rate a trace may have, requests per second (a rate the
/// simulator could not replay in any reasonable time is an input error).
pub const MAX_RATE: f64 = 1e7;

/// An arrival-rate trace: `rates[k]` requests per second during
/// `[k·step, (k+1)·step)`.
///
/// Requests arrive as a Poisson process whose rate follows the trace (see
/// [`Simulation`](crate::Simulation)), so the trace is the *known* load an
/// offline [`Oracle`](crate::Oracle) can plan for, while arrivals are still
/// random.
///
/// ```
/// use std::time::Duration;
/// use convoy_autoscale_sim::{Spike, Trace};
///
/// let trace = Trace::spike(Spike {
///     base_rps: 100.0,
///     magnitude: 5.0,
///     start: Duration::from_secs(600),
///     ramp: Duration::from_secs(30),
///     hold: Duration::from_secs(300),
///     duration: Duration::from_secs(1800),
/// })
/// .unwrap();
/// assert_eq!(trace.rate_at(Duration::from_secs(10)), 100.0);
/// assert_eq!(trace.rate_at(Duration::from_secs(700)), 500.0);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    name: String,
    step: Duration,
    rates: Vec<f64>,
}

/// A spike: `base_rps`, then a linear ramp to `magnitude × base_rps` over
/// `ramp`, held for `hold`, then a linear ramp back down over `ramp`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spike {
    /// Rate before and after the spike, requests per second.
    pub base_rps: f64,
    /// Peak rate as a multiple of `base_rps` (the literature uses 2–10x).
    pub magnitude: f64,
    /// When the ramp up begins.
    pub start: Duration,
    /// Length of the ramp up (and of the ramp down), e.g. 10–300 s.
    pub ramp: Duration,
    /// How long the peak lasts.
    pub hold: Duration,
    /// Total trace length.
    pub duration: Duration,
}

/// A two-state Markov-modulated Poisson process (MMPP-2): the rate switches
/// between a calm and a burst level, staying in each for an exponentially
/// distributed time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Mmpp {
    /// Rate in the calm state, requests per second.
    pub base_rps: f64,
    /// Rate in the burst state as a multiple of `base_rps` (5–20x is typical).
    pub burst_factor: f64,
    /// Mean time spent in the calm state.
    pub mean_calm: Duration,
    /// Mean time spent in the burst state.
    pub mean_burst: Duration,
    /// Total trace length.
    pub duration: Duration,
    /// Seed of the state path: same seed, same trace.
    pub seed: u64,
}

/// What one CSV row counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CsvResolution {
    /// Each row is the number of requests in one second.
    PerSecond,
    /// Each row is the number of requests in one minute.
    PerMinute,
}

/// Why a trace could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TraceErrorKind {
    /// The trace has no steps (zero duration, or a CSV without rows).
    Empty,
    /// The step length is zero.
    ZeroStep,
    /// A rate or parameter is negative, NaN or infinite, or a rate is above
    /// [`MAX_RATE`].
    InvalidValue,
    /// The trace would exceed [`MAX_TRACE_STEPS`] or [`MAX_TRACE_DURATION`].
    TooLong,
    /// A CSV field is not a number.
    Parse,
}

/// A trace could not be built; [`kind`](TraceError::kind) says why and
/// [`line`](TraceError::line) where, for CSV input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceError {
    kind: TraceErrorKind,
    line: Option<usize>,
    detail: String,
}

impl TraceError {
    fn new(kind: TraceErrorKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            line: None,
            detail: detail.into(),
        }
    }

    fn at_line(mut self, line: usize) -> Self {
        self.line = Some(line);
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> TraceErrorKind {
        self.kind
    }

    /// The 1-based CSV line at fault, if the trace came from CSV.
    pub fn line(&self) -> Option<usize> {
        self.line
    }
}

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "invalid trace at line {line}: {}", self.detail),
            None => write!(f, "invalid trace: {}", self.detail),
        }
    }
}

impl std::error::Error for TraceError {}

const SECOND: Duration = Duration::from_secs(1);

fn check_param(name: &str, value: f64) -> Result<f64, TraceError> {
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(TraceError::new(
            TraceErrorKind::InvalidValue,
            format!("{name} must be finite and non-negative, got {value}"),
        ))
    }
}

/// Number of whole seconds in `duration`, bounded.
fn seconds(duration: Duration) -> Result<usize, TraceError> {
    let secs = duration.as_secs();
    if secs == 0 {
        return Err(TraceError::new(
            TraceErrorKind::Empty,
            "duration must be at least one second",
        ));
    }
    usize::try_from(secs)
        .ok()
        .filter(|&n| n <= MAX_TRACE_STEPS)
        .ok_or_else(|| TraceError::new(TraceErrorKind::TooLong, "trace too long"))
}

impl Trace {
    /// A trace from explicit per-step rates (requests per second).
    pub fn from_rates(
        name: impl Into<String>,
        step: Duration,
        rates: Vec<f64>,
    ) -> Result<Self, TraceError> {
        if step.is_zero() {
            return Err(TraceError::new(
                TraceErrorKind::ZeroStep,
                "step must be > 0",
            ));
        }
        if rates.is_empty() {
            return Err(TraceError::new(TraceErrorKind::Empty, "no rates"));
        }
        if rates.len() > MAX_TRACE_STEPS {
            return Err(TraceError::new(TraceErrorKind::TooLong, "too many steps"));
        }
        let too_long = step
            .checked_mul(u32::try_from(rates.len()).unwrap_or(u32::MAX))
            .is_none_or(|d| d > MAX_TRACE_DURATION);
        if too_long {
            return Err(TraceError::new(TraceErrorKind::TooLong, "trace too long"));
        }
        for (k, &r) in rates.iter().enumerate() {
            check_param(&format!("rate[{k}]"), r)?;
            if r > MAX_RATE {
                return Err(TraceError::new(
                    TraceErrorKind::InvalidValue,
                    format!("rate[{k}] = {r} is above {MAX_RATE} requests/s"),
                ));
            }
        }
        Ok(Self {
            name: name.into(),
            step,
            rates,
        })
    }

    fn per_second(
        name: impl Into<String>,
        duration: Duration,
        rate: impl Fn(f64) -> f64,
    ) -> Result<Self, TraceError> {
        let n = seconds(duration)?;
        // Midpoint of each second: the mean of a linear piece.
        let rates = (0..n).map(|k| rate(k as f64 + 0.5).max(0.0)).collect();
        Self::from_rates(name, SECOND, rates)
    }

    /// The same trace with every rate multiplied by `factor` (e.g. to size
    /// it for a faster replica), under the same name.
    pub fn scaled(&self, factor: f64) -> Result<Self, TraceError> {
        let factor = check_param("factor", factor)?;
        let rates = self.rates.iter().map(|r| r * factor).collect();
        Self::from_rates(self.name.clone(), self.step, rates)
    }

    /// The arrival times the simulator draws for this trace with `seed`
    /// (a Poisson process whose rate follows the trace, piecewise constant
    /// per step), as offsets from the trace's start. A run with
    /// [`SimConfig::seed`](crate::SimConfig::seed) `seed` sees exactly these
    /// arrivals, so a load generator that sends them to a real server
    /// replays the simulated run's requests.
    ///
    /// ```
    /// use std::time::Duration;
    /// use convoy_autoscale_sim::Trace;
    ///
    /// let trace = Trace::constant(100.0, Duration::from_secs(60)).unwrap();
    /// let times: Vec<Duration> = trace.arrivals(7).collect();
    /// assert!(times.windows(2).all(|w| w[0] <= w[1]));
    /// assert!(times.len() > 5_000 && times.len() < 7_000);
    /// assert_eq!(times, trace.arrivals(7).collect::<Vec<_>>());
    /// ```
    pub fn arrivals(&self, seed: u64) -> Arrivals<'_> {
        Arrivals {
            rates: &self.rates,
            step: self.step.as_secs_f64(),
            k: 0,
            t: 0.0,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// A constant rate.
    pub fn constant(rps: f64, duration: Duration) -> Result<Self, TraceError> {
        let rps = check_param("rps", rps)?;
        Self::per_second("constant", duration, |_| rps)
    }

    /// `base_rps` until `at`, then `high_rps` until `duration`.
    pub fn step(
        base_rps: f64,
        high_rps: f64,
        at: Duration,
        duration: Duration,
    ) -> Result<Self, TraceError> {
        let base = check_param("base_rps", base_rps)?;
        let high = check_param("high_rps", high_rps)?;
        let at = at.as_secs_f64();
        Self::per_second("step", duration, |t| if t < at { base } else { high })
    }

    /// `from_rps` until `start`, a linear ramp to `to_rps` over `ramp`, then
    /// `to_rps` until `duration`.
    pub fn ramp(
        from_rps: f64,
        to_rps: f64,
        start: Duration,
        ramp: Duration,
        duration: Duration,
    ) -> Result<Self, TraceError> {
        let from = check_param("from_rps", from_rps)?;
        let to = check_param("to_rps", to_rps)?;
        let (start, len) = (start.as_secs_f64(), ramp.as_secs_f64());
        Self::per_second("ramp", duration, |t| {
            let x = if len == 0.0 {
                f64::from(u8::from(t >= start))
            } else {
                ((t - start) / len).clamp(0.0, 1.0)
            };
            from + (to - from) * x
        })
    }

    /// A spike; see [`Spike`].
    pub fn spike(spike: Spike) -> Result<Self, TraceError> {
        let base = check_param("base_rps", spike.base_rps)?;
        let peak = base * check_param("magnitude", spike.magnitude)?;
        let start = spike.start.as_secs_f64();
        let ramp = spike.ramp.as_secs_f64();
        let hold = spike.hold.as_secs_f64();
        Self::per_second("spike", spike.duration, |t| {
            let up = if ramp == 0.0 {
                f64::from(u8::from(t >= start))
            } else {
                ((t - start) / ramp).clamp(0.0, 1.0)
            };
            let down_start = start + ramp + hold;
            let down = if ramp == 0.0 {
                f64::from(u8::from(t >= down_start))
            } else {
                ((t - down_start) / ramp).clamp(0.0, 1.0)
            };
            base + (peak - base) * (up - down).max(0.0)
        })
    }

    /// A diurnal sine: `mean_rps · (1 + amplitude · sin(2π t / period))`,
    /// starting at the trough, `amplitude` in `[0, 1]`.
    pub fn diurnal(
        mean_rps: f64,
        amplitude: f64,
        period: Duration,
        duration: Duration,
    ) -> Result<Self, TraceError> {
        let mean = check_param("mean_rps", mean_rps)?;
        let amplitude = check_param("amplitude", amplitude)?;
        if amplitude > 1.0 {
            return Err(TraceError::new(
                TraceErrorKind::InvalidValue,
                "amplitude must be in [0, 1]",
            ));
        }
        let period = period.as_secs_f64();
        if period == 0.0 {
            return Err(TraceError::new(
                TraceErrorKind::ZeroStep,
                "period must be > 0",
            ));
        }
        Self::per_second("diurnal", duration, |t| {
            let phase = std::f64::consts::TAU * t / period - std::f64::consts::FRAC_PI_2;
            mean * (1.0 + amplitude * phase.sin())
        })
    }

    /// A bursty MMPP-2 trace; see [`Mmpp`]. It starts calm.
    pub fn mmpp(mmpp: Mmpp) -> Result<Self, TraceError> {
        let base = check_param("base_rps", mmpp.base_rps)?;
        let burst = base * check_param("burst_factor", mmpp.burst_factor)?;
        let (mean_calm, mean_burst) = (mmpp.mean_calm.as_secs_f64(), mmpp.mean_burst.as_secs_f64());
        if mean_calm == 0.0 || mean_burst == 0.0 {
            return Err(TraceError::new(
                TraceErrorKind::InvalidValue,
                "mean_calm and mean_burst must be > 0",
            ));
        }
        let n = seconds(mmpp.duration)?;
        let mut rng = ChaCha8Rng::seed_from_u64(mmpp.seed);
        let mut rates = Vec::with_capacity(n);
        let mut bursting = false;
        let mut switch_at = exp_sample(&mut rng) * mean_calm;
        for k in 0..n {
            let (lo, hi) = (k as f64, k as f64 + 1.0);
            // Rate averaged over the second, exact for the state path.
            let mut acc = 0.0;
            let mut t = lo;
            while switch_at < hi {
                acc += (switch_at - t) * if bursting { burst } else { base };
                t = switch_at;
                bursting = !bursting;
                let mean = if bursting { mean_burst } else { mean_calm };
                switch_at += exp_sample(&mut rng) * mean;
            }
            acc += (hi - t) * if bursting { burst } else { base };
            rates.push(acc);
        }
        Self::from_rates("mmpp", SECOND, rates)
    }

    /// Parses counts from CSV text: one row per second or minute, the count
    /// in the last column (so `count` and `timestamp,count` both work).
    /// Blank lines and lines starting with `#` are skipped, and so is a
    /// first row whose count is not a number (a header).
    pub fn from_csv(
        name: impl Into<String>,
        text: &str,
        resolution: CsvResolution,
    ) -> Result<Self, TraceError> {
        let step = match resolution {
            CsvResolution::PerSecond => SECOND,
            CsvResolution::PerMinute => Duration::from_secs(60),
        };
        let mut rates = Vec::new();
        let mut first = true;
        for (i, line) in text.lines().enumerate() {
            let line_no = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let field = line.rsplit(',').next().unwrap_or("").trim();
            let was_first = std::mem::replace(&mut first, false);
            let count: f64 = match field.parse() {
                Ok(v) => v,
                Err(_) if was_first && !field.is_empty() && !looks_numeric(field) => continue,
                Err(_) => {
                    return Err(TraceError::new(
                        TraceErrorKind::Parse,
                        format!("count {field:?} is not a number"),
                    )
                    .at_line(line_no))
                }
            };
            if !(count.is_finite() && count >= 0.0 && count / step.as_secs_f64() <= MAX_RATE) {
                return Err(TraceError::new(
                    TraceErrorKind::InvalidValue,
                    format!("count {count} must be finite, non-negative and at most {MAX_RATE}/s"),
                )
                .at_line(line_no));
            }
            if rates.len() == MAX_TRACE_STEPS {
                return Err(
                    TraceError::new(TraceErrorKind::TooLong, "too many rows").at_line(line_no)
                );
            }
            rates.push(count / step.as_secs_f64());
        }
        Self::from_rates(name, step, rates)
    }

    /// Renames the trace (the name appears in reports).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The trace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Length of one step.
    pub fn step_len(&self) -> Duration {
        self.step
    }

    /// Rates per step, requests per second.
    pub fn rates(&self) -> &[f64] {
        &self.rates
    }

    /// Total length.
    pub fn duration(&self) -> Duration {
        // Bounded by MAX_TRACE_DURATION at construction.
        self.step * u32::try_from(self.rates.len()).unwrap_or(u32::MAX)
    }

    /// Rate at time `t` (0 after the end).
    pub fn rate_at(&self, t: Duration) -> f64 {
        let k = t.as_nanos() / self.step.as_nanos();
        usize::try_from(k)
            .ok()
            .and_then(|k| self.rates.get(k))
            .copied()
            .unwrap_or(0.0)
    }

    /// Expected number of arrivals over the whole trace.
    pub fn expected_arrivals(&self) -> f64 {
        self.rates.iter().sum::<f64>() * self.step.as_secs_f64()
    }

    /// The highest rate in the trace.
    pub fn peak_rps(&self) -> f64 {
        self.rates.iter().copied().fold(0.0, f64::max)
    }
}

fn looks_numeric(field: &str) -> bool {
    field
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_digit() || c == '-' || c == '+' || c == '.')
}

/// Uniform in (0, 1].
pub(crate) fn unit_open(rng: &mut ChaCha8Rng) -> f64 {
    // 53 random bits; +1 keeps it away from zero so ln() is finite.
    ((rng.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Exponential with mean 1.
/// Arrival times of a [`Trace`] (see [`Trace::arrivals`]): offsets from
/// the trace's start, in order, ending with the trace.
#[derive(Debug, Clone)]
pub struct Arrivals<'a> {
    rates: &'a [f64],
    step: f64,
    k: usize,
    t: f64,
    rng: ChaCha8Rng,
}

impl Arrivals<'_> {
    /// The next arrival, nanoseconds from the start.
    pub(crate) fn next_nanos(&mut self) -> Option<u64> {
        loop {
            let rate = *self.rates.get(self.k)?;
            let end = (self.k + 1) as f64 * self.step;
            if rate > 0.0 {
                let t = self.t + exp_sample(&mut self.rng) / rate;
                if t < end {
                    self.t = t;
                    return Some((t * 1e9) as u64);
                }
            }
            // Memoryless: restart the draw at the next step's rate.
            self.t = end;
            self.k += 1;
        }
    }
}

impl Iterator for Arrivals<'_> {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        self.next_nanos().map(Duration::from_nanos)
    }
}

pub(crate) fn exp_sample(rng: &mut ChaCha8Rng) -> f64 {
    -unit_open(rng).ln()
}
