# Vetted — the two commands a new user needs: `make run` and `make test`.
CARGO ?= cargo
VETTED_DATA_DIR ?= ./data
VETTED_LISTEN ?= 127.0.0.1:8080

.PHONY: run test build lint fmt bench nats-server clean

## run: start the engine on the embedded sled store (data in $(VETTED_DATA_DIR))
run:
	$(CARGO) run --release --bin vetted -- serve --data-dir $(VETTED_DATA_DIR) --listen $(VETTED_LISTEN)

## test: format check, clippy, and every test (unit, contract, API, NATS, end-to-end)
test: nats-server
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) build --workspace --bins
	$(CARGO) nextest run --workspace --no-fail-fast

build:
	$(CARGO) build --workspace --all-targets

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## bench: criterion benchmarks; figures are recorded in docs/benchmarks.md
bench: nats-server
	$(CARGO) bench --workspace

## nats-server: install a nats-server when none is on PATH (tests start their own processes)
nats-server:
	@command -v nats-server >/dev/null 2>&1 || bash deploy/install-nats-server.sh

clean:
	$(CARGO) clean
