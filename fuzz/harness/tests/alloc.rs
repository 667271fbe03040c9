//! Hostile inputs are refused before anything is allocated for what they
//! claim: a KServe shape of 10^12 elements, a BYTES count or binary size
//! past the body, an image header claiming 100000 × 100000 pixels. The
//! whole binary runs on a counting allocator; the refusals must stay far
//! below what the claims would need, while the meter does see a real
//! decode of the largest accepted image.

use std::alloc::System;
use std::path::PathBuf;

use cap::Cap;
use convoy_fuzz_harness::{image, kserve};

#[global_allocator]
static ALLOC: Cap<System> = Cap::new(System, usize::MAX);

/// What a refused input may make the process hold at its peak, beyond what
/// it held before: the body, the parsed JSON and the error.
const REFUSAL_BUDGET: usize = 8 << 20;

fn seed(target: &str, name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../seeds")
        .join(target)
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs `f` with a limit of `budget` bytes above what is allocated now
/// (past it an allocation fails and the process aborts), and returns the
/// new peak it reached above that (0 when it stayed under an earlier peak).
fn peak_of(budget: usize, f: impl FnOnce()) -> usize {
    let before = ALLOC.allocated();
    let peak_before = ALLOC.max_allocated();
    ALLOC
        .set_limit(before + budget)
        .expect("a limit above the current use");
    f();
    ALLOC.set_limit(usize::MAX).expect("no limit");
    let peak = ALLOC.max_allocated();
    if peak > peak_before {
        peak - before
    } else {
        0
    }
}

// One test: the peak is process-wide, so nothing else may run beside it.
#[test]
fn claims_are_refused_before_allocating_and_the_meter_sees_real_work() {
    // Warm up what is allocated once (runtimes, manifests, lazy statics).
    kserve::run_json(b"{}");
    image::run(b"");

    let refused = [
        ("kserve_json", "bad-shape-1e12-elements", true),
        ("kserve_json", "bad-shape-overflows", true),
        ("kserve_binary", "bad-shape-1e12-elements", false),
        ("kserve_binary", "bad-bytes-count-past-body", false),
        ("kserve_binary", "bad-binary-size-huge", false),
        ("kserve_binary", "bad-header-past-body", false),
        ("image_decode", "bad-png-claims-100000x100000", false),
        ("image_decode", "bad-jpeg-claims-65500x65500", false),
    ];
    for (target, name, json) in refused {
        let data = seed(target, name);
        let peak = peak_of(REFUSAL_BUDGET, || match target {
            "image_decode" => image::run(&data),
            _ if json => kserve::run_json(&data),
            _ => kserve::run_binary(&data),
        });
        assert!(
            peak < REFUSAL_BUDGET,
            "{target}/{name}: {peak} bytes at the peak"
        );
    }

    // A body over the limit is refused as a whole (413), not parsed.
    let mut big = b"{\"inputs\": [".to_vec();
    big.resize(kserve::LIMITS.max_body_bytes + 1024, b' ');
    big.extend_from_slice(b"]}");
    peak_of(4 * big.len() + REFUSAL_BUDGET, || kserve::run_json(&big));

    // The control: an accepted 1024 × 1024 image is decoded and resized,
    // and the meter sees at least its 3 MiB of pixels.
    let mut png = Vec::new();
    ::image::RgbImage::from_pixel(1024, 1024, ::image::Rgb([10, 200, 30]))
        .write_to(
            &mut std::io::Cursor::new(&mut png),
            ::image::ImageFormat::Png,
        )
        .expect("encodes");
    let peak = peak_of(64 << 20, || image::run(&png));
    assert!(
        peak >= 3 << 20,
        "the meter saw only {peak} bytes of a decode"
    );
}
