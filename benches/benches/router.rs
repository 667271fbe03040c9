//! convoy-router: per-request decision cost and split accuracy, with peers.
//!
//! Run with `cargo bench -p convoy-benches --bench router`.
//!
//! Each measured iteration is one whole request through the router:
//! `poll_ready` + `call` + polling the (immediately ready) response future,
//! against a trivial always-ready backend, so the figure is the router's own
//! per-request cost. Peers in the same run:
//! * `tower::steer::Steer` with a weighted-random picker (it polls every
//!   backend in `poll_ready`);
//! * the hand-rolled `if rand::random::<f64>() < 0.1` split (cumulative
//!   weights for 10 backends).
//!
//! Before the timings it prints the split error of smooth weighted
//! round-robin vs i.i.d. random after 100 / 1,000 / 10,000 requests.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll};
use std::time::Duration;

use convoy_router::{Split, StickyStrategy};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use tower::steer::Steer;
use tower::Service;

/// Always ready; answers with its index.
#[derive(Clone, Copy)]
struct Backend(usize);

impl Service<u64> for Backend {
    type Response = usize;
    type Error = Infallible;
    type Future = Ready<Result<usize, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: u64) -> Self::Future {
        ready(Ok(self.0))
    }
}

/// Canary weights: 10 % to the last backend, the rest spread evenly.
fn weights(n: usize) -> Vec<f64> {
    let mut w = vec![90.0 / (n - 1) as f64; n];
    w[n - 1] = 10.0;
    w
}

fn cumulative(w: &[f64]) -> Vec<f64> {
    let total: f64 = w.iter().sum();
    let mut acc = 0.0;
    w.iter()
        .map(|x| {
            acc += x / total;
            acc
        })
        .collect()
}

fn random_pick(cum: &[f64]) -> usize {
    let x = rand::random::<f64>();
    cum.iter().position(|c| x < *c).unwrap_or(cum.len() - 1)
}

/// One request through `svc`, driven by hand with a no-op waker.
fn one<S: Service<u64, Response = usize>>(svc: &mut S, cx: &mut Context<'_>, req: u64) -> usize {
    match svc.poll_ready(cx) {
        Poll::Ready(Ok(())) => {}
        _ => unreachable!("always ready"),
    }
    let fut = pin!(svc.call(req));
    match fut.poll(cx) {
        Poll::Ready(Ok(x)) => x,
        _ => unreachable!("immediately ready"),
    }
}

fn split(n: usize, sticky: bool) -> Split<Backend, u64> {
    split_with(n, sticky, true)
}

fn split_with(n: usize, sticky: bool, record_latency: bool) -> Split<Backend, u64> {
    let mut b = Split::builder()
        .name(format!("bench{n}"))
        .record_latency(record_latency);
    for (i, w) in weights(n).into_iter().enumerate() {
        b = b.backend(format!("v{i}"), Backend(i), w);
    }
    if sticky {
        b = b
            .sticky_by(|user: &u64| Some(*user))
            .sticky_strategy(StickyStrategy::Auto);
    }
    b.build().expect("valid weights").0
}

fn decision_cost(c: &mut Criterion) {
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let mut group = c.benchmark_group("router_decision");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for n in [2usize, 10] {
        let mut plain = split(n, false);
        group.bench_function(BenchmarkId::new("convoy_split_swrr", n), |b| {
            let mut req = 0u64;
            b.iter(|| {
                req += 1;
                black_box(one(&mut plain, &mut cx, req))
            })
        });
        let mut untimed = split_with(n, false, false);
        group.bench_function(BenchmarkId::new("convoy_split_swrr_untimed", n), |b| {
            let mut req = 0u64;
            b.iter(|| {
                req += 1;
                black_box(one(&mut untimed, &mut cx, req))
            })
        });
        let mut sticky_untimed = split_with(n, true, false);
        group.bench_function(BenchmarkId::new("convoy_split_sticky_untimed", n), |b| {
            let mut user = 0u64;
            b.iter(|| {
                user = user.wrapping_add(0x9e37_79b9);
                black_box(one(&mut sticky_untimed, &mut cx, user))
            })
        });
        let proto = split(n, false);
        group.bench_function(
            BenchmarkId::new("convoy_split_swrr_clone_per_request", n),
            |b| {
                let mut req = 0u64;
                b.iter(|| {
                    req += 1;
                    let mut s = proto.clone();
                    black_box(one(&mut s, &mut cx, req))
                })
            },
        );
        let mut sticky = split(n, true);
        group.bench_function(BenchmarkId::new("convoy_split_sticky", n), |b| {
            let mut user = 0u64;
            b.iter(|| {
                user = user.wrapping_add(0x9e37_79b9);
                black_box(one(&mut sticky, &mut cx, user))
            })
        });
        let cum = cumulative(&weights(n));
        let services: Vec<Backend> = (0..n).map(Backend).collect();
        let picker_cum = cum.clone();
        let mut steer = Steer::new(services, move |_: &u64, _: &[Backend]| {
            random_pick(&picker_cum)
        });
        group.bench_function(BenchmarkId::new("tower_steer_random", n), |b| {
            let mut req = 0u64;
            b.iter(|| {
                req += 1;
                black_box(one(&mut steer, &mut cx, req))
            })
        });
        let mut backends: Vec<Backend> = (0..n).map(Backend).collect();
        group.bench_function(BenchmarkId::new("random_lt_0_1", n), |b| {
            let mut req = 0u64;
            b.iter(|| {
                req += 1;
                let i = if n == 2 {
                    usize::from(rand::random::<f64>() < 0.1)
                } else {
                    random_pick(&cum)
                };
                black_box(one(&mut backends[i], &mut cx, req))
            })
        });
    }
    group.finish();
}

/// |observed canary count - n·p| after n requests.
fn split_error(c: &mut Criterion) {
    let _ = c;
    let p = 0.1;
    let trials = 2_000;
    println!("\nsplit error for a {:.0}% canary (|canary count - n*p|), {trials} trials of i.i.d. random:", p * 100.0);
    println!(
        "{:>8} {:>12} {:>14} {:>14} {:>14}",
        "n", "swrr (max)", "random mean", "random p99", "random max"
    );
    for n in [100usize, 1_000, 10_000] {
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        // SWRR: worst error over every prefix up to n, with a fresh split.
        let mut s = split(2, false);
        let (mut canary, mut worst) = (0usize, 0.0f64);
        for i in 1..=n {
            canary += usize::from(one(&mut s, &mut cx, i as u64) == 1);
            worst = worst.max((canary as f64 - i as f64 * p).abs());
        }
        let mut errs: Vec<f64> = (0..trials)
            .map(|_| {
                let c = (0..n).filter(|_| rand::random::<f64>() < p).count();
                (c as f64 - n as f64 * p).abs()
            })
            .collect();
        errs.sort_by(f64::total_cmp);
        let mean = errs.iter().sum::<f64>() / errs.len() as f64;
        println!(
            "{n:>8} {worst:>12.2} {mean:>14.2} {:>14.2} {:>14.2}",
            errs[errs.len() * 99 / 100],
            errs[errs.len() - 1]
        );
    }
    println!();
}

criterion_group!(benches, split_error, decision_cost);
criterion_main!(benches);
