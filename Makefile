# Two commands do everything: `make run` and `make test`. Both set up .venv first (idempotent).
VENV := .venv
BIN := $(VENV)/bin
BUF := $(VENV)/node/node_modules/.bin/buf

.PHONY: install run test lint protos clean bench

install:
	@bash scripts/setup.sh

run: install
	$(BIN)/multai serve

lint: install
	$(BUF) lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q

protos:
	$(BIN)/python -m multai.protogen

clean:
	rm -rf $(VENV) .cache .pytest_cache .ruff_cache .mypy_cache .hypothesis

bench: install
	$(BIN)/python -m bench.lease_bench --json bench/results/lease.json
	$(BIN)/python -m bench.audio_bench --json bench/results/audio.json
