# convoy: the two commands are `make demo` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
EXAMPLES := examples

.PHONY: test test-root test-examples demo fmt bench

## The whole suite: fmt, clippy -D warnings, tests + doc tests, docs with warnings denied,
## for the root workspace and the examples workspace.
test: test-root test-examples

test-root:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --all-features -- -D warnings
	$(CARGO) test --workspace --all-features
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps --all-features

test-examples:
	cd $(EXAMPLES) && $(CARGO) fmt --all --check
	cd $(EXAMPLES) && $(CARGO) clippy --workspace --all-targets -- -D warnings
	cd $(EXAMPLES) && $(CARGO) test --workspace
	cd $(EXAMPLES) && RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps

## The main job: the example server, driven by the load generator, printing what batching bought.
demo:
	bash scripts/demo.sh

fmt:
	$(CARGO) fmt --all
	cd $(EXAMPLES) && $(CARGO) fmt --all

bench:
	$(CARGO) bench -p convoy-benches
