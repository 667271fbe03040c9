//! The run loops: closed (each client waits for its answer) and open (a
//! seeded Poisson schedule, latency from the intended send time).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::{LoadConfig, Mode};
use crate::error::LoadError;
use crate::http::{ensure_loopback, http_client, HttpClient, HttpTarget};
use crate::progress;
use crate::report::{Live, LoadReport, Tally};
use crate::schedule::PoissonSchedule;

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What a run sends to: one call is one request, answered with `Ok` or
/// the error kind used as a report key (`"http 503"`, `"timeout"`...).
pub trait Target: Send + Sync + 'static {
    /// Sends request number `seq` (0, 1, ...) and waits for its answer.
    fn send(&self, seq: u64) -> BoxFuture<Result<(), String>>;
}

/// Runs the load described by `config` and reports what it measured.
pub async fn run(config: &LoadConfig) -> Result<LoadReport, LoadError> {
    run_with(&http_client(config.clients().min(4096)), config).await
}

/// Like [`run`], on a given client (so runs can share warm connections).
pub async fn run_with(client: &HttpClient, config: &LoadConfig) -> Result<LoadReport, LoadError> {
    let target = Arc::new(HttpTarget::new(client.clone(), config)?);
    run_target(target, config).await
}

/// Runs `config`'s mode, duration and request budget against any target
/// (its URI, method and bodies are the target's business).
pub async fn run_target(
    target: Arc<dyn Target>,
    config: &LoadConfig,
) -> Result<LoadReport, LoadError> {
    ensure_loopback(&config.uri)?;
    let live = Arc::new(Live::default());
    let bar = config
        .progress
        .then(|| progress::Progress::start(config.duration, Arc::clone(&live)));
    let start = Instant::now();
    let mut report = LoadReport::empty(config.mode);
    match config.mode {
        Mode::Closed { concurrency } => {
            let budget = Arc::new(AtomicU64::new(0));
            let stop_at = start + config.duration;
            let mut clients = JoinSet::new();
            for _ in 0..concurrency {
                let target = Arc::clone(&target);
                let budget = Arc::clone(&budget);
                let live = Arc::clone(&live);
                let max = config.max_requests;
                clients.spawn(closed_client(target, budget, max, start, stop_at, live));
            }
            while let Some(tally) = clients.join_next().await {
                let tally =
                    tally.map_err(|e| LoadError::new(format!("a client task failed: {e}")))?;
                report.merge(tally);
            }
        }
        Mode::Open {
            rate,
            max_outstanding,
            seed,
        } => {
            let schedule = PoissonSchedule::new(rate, seed)?;
            let (tally, scheduled) =
                open_loop(target, schedule, config, max_outstanding, start, &live).await?;
            report.merge(tally);
            report.scheduled = scheduled;
        }
    }
    report.elapsed = start.elapsed();
    if let Some(bar) = bar {
        bar.finish();
    }
    Ok(report)
}

async fn closed_client(
    target: Arc<dyn Target>,
    budget: Arc<AtomicU64>,
    max_requests: Option<u64>,
    start: Instant,
    stop_at: Instant,
    live: Arc<Live>,
) -> Tally {
    let mut tally = Tally::new();
    while Instant::now() < stop_at {
        let seq = budget.fetch_add(1, Ordering::Relaxed);
        if max_requests.is_some_and(|max| seq >= max) {
            break;
        }
        let sent = Instant::now();
        let result = target.send(seq).await;
        tally.record(result, sent.elapsed(), start.elapsed(), &live);
    }
    tally
}

/// Sends each scheduled arrival at its intended time (or at once when the
/// loop is late), records latency from the intended time, and drops
/// arrivals while `max_outstanding` requests are in flight. Returns the
/// tally and the number of arrivals scheduled.
async fn open_loop(
    target: Arc<dyn Target>,
    schedule: PoissonSchedule,
    config: &LoadConfig,
    max_outstanding: usize,
    start: Instant,
    live: &Arc<Live>,
) -> Result<(Tally, u64), LoadError> {
    let stop_at = start + config.duration;
    let slots = Arc::new(Semaphore::new(max_outstanding));
    // Each request's result, latency and when it was answered.
    type Done = (Result<(), String>, Duration, Duration);
    let mut in_flight: JoinSet<Done> = JoinSet::new();
    let mut tally = Tally::new();
    let mut scheduled = 0;
    let finished = |tally: &mut Tally, done: Result<Done, _>| {
        done.map(|(result, latency, answered)| tally.record(result, latency, answered, live))
            .map_err(|e| LoadError::new(format!("a request task failed: {e}")))
    };
    for offset in schedule {
        let intended = start + offset;
        if intended >= stop_at || config.max_requests.is_some_and(|max| scheduled >= max) {
            break;
        }
        let seq = scheduled;
        scheduled += 1;
        tokio::time::sleep_until(intended).await;
        while let Some(done) = in_flight.try_join_next() {
            finished(&mut tally, done)?;
        }
        match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => {
                let request = target.send(seq);
                in_flight.spawn(async move {
                    let result = request.await;
                    drop(slot);
                    (result, intended.elapsed(), start.elapsed())
                });
            }
            Err(_) => tally.dropped(live),
        }
    }
    while let Some(done) = in_flight.join_next().await {
        finished(&mut tally, done)?;
    }
    Ok((tally, scheduled))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_non_loopback_before_sending() {
        let cfg = LoadConfig::new("http://192.0.2.1:80/".parse().unwrap());
        assert!(run(&cfg).await.is_err());
    }
}
