# convoy: the two commands are `make demo` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
EXAMPLES := examples

.PHONY: test test-root test-examples test-fuzz setup test-setup deny demo fmt bench fuzz soak sim-check profile

## The whole suite: fmt, clippy -D warnings, tests + doc tests, docs with warnings denied,
## for the root workspace and the examples workspace. `setup` (the pinned .venv, several GB
## of PyTorch wheels) goes first, while the disk holds no build output yet; then
## `test-setup`, the one serial step that installs the system packages and cargo
## tools the tests use (no test installs anything: scripts/check_installs.sh).
test: setup test-setup test-root test-examples test-fuzz deny

## `make test FREE_DISK=1` (what .ci/run does): each workspace's build output is
## removed once its checks pass, so a clean clone never holds all three at once.
FREE_DISK ?=

test-root: test-setup
	bash scripts/check_unsafe.sh --self-test
	bash scripts/check_unsafe.sh
	bash scripts/check_installs.sh --self-test
	bash scripts/check_installs.sh
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --all-features -- -D warnings
	$(CARGO) test --workspace --all-features
	# The autoscaler's verdict against Ray's default, HPA and KPA on the
	# standard traces: seconds optimised, minutes in a debug build.
	$(CARGO) test --release -p convoy-autoscale-sim --test default_policy -- --include-ignored
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps --all-features
	$(if $(FREE_DISK),$(CARGO) clean)

## The Python side the examples need (a pinned .venv with PyTorch, whose
## libtorch the model runtime links, MLflow, tritonclient) and the exported
## models: idempotent, seconds when already there.
setup:
	bash scripts/setup.sh

## Debian packages (chromium, prometheus, ...) and cargo tools (cargo-deny) the
## tests need, installed once before any test runs: idempotent, under a second
## when present. `make demo` never runs it.
test-setup:
	bash scripts/test_setup.sh

EXAMPLES_FEATURES := --features example-multi-model/kubernetes

test-examples: setup test-setup
	cd $(EXAMPLES) && $(CARGO) fmt --all --check
	# Everything with the front's Kubernetes wiring (feature kubernetes:
	# convoy-kube, tests/front_kube.rs against a fake API server on loopback)
	# in one build: the same features on every line, so the server is
	# compiled once.
	cd $(EXAMPLES) && $(CARGO) clippy --workspace --all-targets $(EXAMPLES_FEATURES) -- -D warnings
	cd $(EXAMPLES) && $(CARGO) test --workspace $(EXAMPLES_FEATURES)
	# The CUDA path (libtorch's CUDA allocator and streams inside each
	# model's tenant), built against the venv's CUDA headers; its tests
	# print "skipped: no GPU" without one (scripts/gpu_check.sh runs them on one).
	cd $(EXAMPLES) && $(CARGO) clippy -p example-models -p example-multi-model --lib --bins --tests --features example-multi-model/cuda -- -D warnings
	cd $(EXAMPLES) && $(CARGO) test -p example-models --features cuda --test hooks
	# The simulator against the real server on a 2-minute step (after a
	# 90 s warm-up): fails when a figure disagrees by more than 30 %.
	cd $(EXAMPLES) && $(CARGO) test -p example-multi-model $(EXAMPLES_FEATURES) --test sim_check -- --ignored --exact short_step_agrees_with_the_simulator
	cd $(EXAMPLES) && RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps
	$(if $(FREE_DISK),cd $(EXAMPLES) && $(CARGO) clean)

## The fuzz targets' checks on stable: every checked-in seed and a fixed set of
## pseudo-random inputs replayed as ordinary tests.
test-fuzz:
	cd fuzz && $(CARGO) fmt --all --check
	cd fuzz && $(CARGO) clippy -p convoy-fuzz-harness --all-targets -- -D warnings
	cd fuzz && $(CARGO) test -p convoy-fuzz-harness
	$(if $(FREE_DISK),cd fuzz && $(CARGO) clean)

## Each fuzz target under libFuzzer (nightly + cargo-fuzz, installed by
## scripts/test_setup.sh when missing) for FUZZ_SECS seconds (default 60). New inputs land in
## fuzz/corpus/<target>; crashes in fuzz/artifacts/<target>.
FUZZ_SECS ?= 60
FUZZ_TARGETS ?= allocator_ops batcher_ops router_ops autoscale_signals pool_ops \
	kserve_json kserve_binary image_decode text_tokenize server_config
fuzz:
	bash scripts/test_setup.sh fuzz
	@for t in $(FUZZ_TARGETS); do \
		mkdir -p fuzz/corpus/$$t && \
		(cd fuzz && $(CARGO) +nightly fuzz run $$t corpus/$$t seeds/$$t -- \
			-max_total_time=$(FUZZ_SECS) -print_final_stats=1) || exit 1; \
	done

## The server at 3x its capacity for SOAK_SECS (default 600): fails when its
## resident memory, open file descriptors or live tokio tasks grow between the
## first and the last minutes (examples/multi-model/tests/overload.rs, `soak`:
## the binary started by testkit's ServerProcess, loaded by loadgen's open loop).
SOAK_SECS ?= 600
soak:
	cd $(EXAMPLES) && SOAK_SECS=$(SOAK_SECS) $(CARGO) test -p example-multi-model --test overload -- --ignored --nocapture soak

## The autoscaling simulator against the real server (examples/multi-model/tests/sim_check.rs):
## step, spike and a 10-minute diurnal sine replayed against the multi-model binary and
## simulated with the same replica model, policy and arrivals (about 27 minutes); prints
## the measured-vs-simulated table and draws autoscale-sim/docs/sim_vs_real.svg.
sim-check:
	cd $(EXAMPLES) && $(CARGO) test -p example-multi-model --test sim_check -- --ignored --nocapture --exact full_comparison
	cd $(EXAMPLES) && $(CARGO) test -p example-multi-model --test sim_check -- --ignored --nocapture --exact plot_the_last_comparison

## Dependency policy (licenses, bans, sources; RustSec advisories when the
## database can be fetched) for the root, examples and fuzz workspaces.
deny: test-setup
	bash scripts/deny.sh

## The main job: the example server, driven by the load generator, printing what batching bought.
## `make demo REGISTRY=mlflow`: the models from an MLflow registry instead, and one promotion rolled out live.
REGISTRY ?=
demo:
	bash scripts/demo.sh $(if $(REGISTRY),--registry=$(REGISTRY))

## Where the served path spends its CPU: perf flame graphs of the release
## server under each model's load (target/profile/flame-*.svg) and the
## samples by thread group. Installs linux-perf and inferno when missing.
profile:
	bash scripts/profile.sh

fmt:
	$(CARGO) fmt --all
	cd $(EXAMPLES) && $(CARGO) fmt --all

bench:
	$(CARGO) bench -p convoy-benches
