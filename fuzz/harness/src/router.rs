//! convoy-router's `Split` driven by an operation sequence: weight
//! updates (valid and invalid), sticky and keyless requests, overrides and
//! picks through clones, for two to four backends, each sticky strategy
//! and each pick strategy. After every request:
//! - a zero-weight backend is never picked except by an override, and an
//!   override always wins;
//! - with smooth round-robin, each backend's count since the last weight
//!   change stays within one request of its share for two backends (within
//!   the number of backends for more);
//! - a sticky key stays on its backend while the weights stay, and when
//!   they change it only moves towards a backend whose weight grew
//!   relative to its old one's;
//! - an invalid weight update is refused and changes nothing.

use std::collections::HashMap;

use arbitrary::{Arbitrary, Unstructured};
use convoy_router::{PickStrategy, Split, StickyStrategy};
use tower::{service_fn, BoxError, ServiceExt};

#[derive(Debug, Arbitrary)]
enum Op {
    Weights(Vec<u8>),
    Request { key: Option<u8>, pin: Option<u8> },
    Burst(u8),
}

#[derive(Debug, Arbitrary)]
struct Setup {
    backends: u8,
    weights: Vec<u8>,
    sticky: u8,
    random: bool,
    ops: Vec<Op>,
}

#[derive(Debug, Clone)]
struct Req {
    key: Option<u8>,
    pin: Option<usize>,
}

const NAMES: [&str; 4] = ["b0", "b1", "b2", "b3"];

/// Runs one input. Panics when an invariant breaks.
pub fn run(data: &[u8]) {
    let Ok(setup) = Setup::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run_case(setup));
}

fn weights_of(n: usize, raw: &[u8]) -> Vec<f64> {
    (0..n)
        .map(|i| f64::from(raw.get(i).copied().unwrap_or(1) % 11))
        .collect()
}

async fn run_case(s: Setup) {
    let n = usize::from(s.backends % 3) + 2;
    let strategy = match s.sticky % 4 {
        0 => None,
        1 => Some(StickyStrategy::Auto),
        2 if n == 2 => Some(StickyStrategy::Intervals),
        _ => Some(StickyStrategy::Rendezvous),
    };
    let mut weights = weights_of(n, &s.weights);
    let mut builder = Split::builder().pick(if s.random {
        PickStrategy::WeightedRandom
    } else {
        PickStrategy::SmoothRoundRobin
    });
    for (i, name) in NAMES.iter().take(n).enumerate() {
        let svc = service_fn(move |_: Req| async move { Ok::<_, BoxError>(i) });
        builder = builder.backend(*name, svc, weights[i]);
        builder = builder.override_when(move |r: &Req| r.pin == Some(i), *name);
    }
    if let Some(strategy) = strategy {
        builder = builder.sticky_by(|r: &Req| r.key).sticky_strategy(strategy);
    }
    let built = builder.build();
    if weights.iter().sum::<f64>() <= 0.0 {
        assert!(built.is_err(), "all-zero weights accepted");
        return;
    }
    let (split, handle) = built.expect("valid weights");

    // Picks by weight (no key, no override) since the last weight change.
    let mut counts = vec![0u64; n];
    // Where each sticky key went under the current weights.
    let mut homes: HashMap<u8, usize> = HashMap::new();
    for op in s.ops.iter().take(512) {
        let requests: Vec<Req> = match op {
            Op::Weights(raw) => {
                let new = weights_of(n, raw);
                let update = NAMES.iter().take(n).copied().zip(new.iter().copied());
                match handle.set_weights(update) {
                    Ok(()) => {
                        assert!(new.iter().sum::<f64>() > 0.0, "all-zero weights accepted");
                        // Keys may only move towards a backend that gained
                        // relative to the one they are on.
                        let old = std::mem::replace(&mut weights, new);
                        let mut moved = HashMap::new();
                        for (&key, &home) in &homes {
                            let req = Req {
                                key: Some(key),
                                pin: None,
                            };
                            let now = split.clone().oneshot(req).await.expect("backend answers");
                            if now != home {
                                let gain = |i: usize| weights[i] / old[i].max(f64::MIN_POSITIVE);
                                assert!(
                                    old[home] > 0.0 && gain(now) > gain(home),
                                    "key {key} moved {home} -> {now} with weights {old:?} -> {weights:?}"
                                );
                            }
                            moved.insert(key, now);
                        }
                        homes = moved;
                        counts = vec![0; n];
                    }
                    Err(_) => {
                        assert!(
                            new.iter().sum::<f64>() <= 0.0,
                            "valid weights {new:?} refused"
                        );
                    }
                }
                continue;
            }
            Op::Request { key, pin } => vec![Req {
                key: *key,
                pin: pin.map(|p| usize::from(p) % (n + 1)).filter(|&p| p < n),
            }],
            Op::Burst(k) => (0..(k % 32))
                .map(|_| Req {
                    key: None,
                    pin: None,
                })
                .collect(),
        };
        for req in requests {
            let (key, pin) = (req.key, req.pin);
            let got = split.clone().oneshot(req).await.expect("backend answers");
            if let Some(p) = pin {
                assert_eq!(got, p, "override to {p} went to {got}");
                continue;
            }
            assert!(weights[got] > 0.0, "zero-weight backend {got} picked");
            match (key, strategy) {
                (Some(k), Some(_)) => {
                    let home = *homes.entry(k).or_insert(got);
                    assert_eq!(got, home, "key {k} left its backend");
                }
                _ => {
                    counts[got] += 1;
                    if !s.random {
                        check_smooth(&counts, &weights);
                    }
                }
            }
        }
    }
}

fn check_smooth(counts: &[u64], weights: &[f64]) {
    let total: u64 = counts.iter().sum();
    let sum: f64 = weights.iter().sum();
    let bound = if counts.len() == 2 {
        1.0
    } else {
        counts.len() as f64
    };
    for (i, (&c, &w)) in counts.iter().zip(weights).enumerate() {
        let target = total as f64 * w / sum;
        assert!(
            (c as f64 - target).abs() <= bound + 1e-9,
            "backend {i}: {c} picks after {total}, target {target:.2} (weights {weights:?})"
        );
    }
}
