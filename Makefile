# Two commands do everything: `make run` and `make test`. Both set up .venv first (idempotent).
VENV := .venv
BIN := $(VENV)/bin
BUF := $(VENV)/node/node_modules/.bin/buf

.PHONY: install run test lint protos clean bench bench-full bench-deps

install:
	@bash scripts/setup.sh

run: install
	$(BIN)/multai serve

# buf breaking: the protos of the working tree against those of the main branch (wire and JSON names).
lint: install
	$(BUF) lint
	@if git rev-parse -q --verify main >/dev/null; then $(BUF) breaking --against '.git#branch=main'; \
	else echo "buf breaking: no main branch in this clone to compare with"; fi
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python scripts/unasync_client.py --check
	$(BIN)/mypy
	$(BIN)/hadolint Containerfile

test: lint
	$(BIN)/pytest -q

protos:
	$(BIN)/python -m multai.protogen

clean:
	rm -rf $(VENV) .cache .pytest_cache .ruff_cache .mypy_cache .hypothesis

# The quick set (about 15 minutes on 2 cores, plus the guidellm runs); results and charts land in bench/results/ (not committed).
bench-deps: install
	$(BIN)/python -m pip install -q -e ".[loadgen]"
	bash scripts/build-llama-server.sh

bench: bench-deps
	$(BIN)/python -m bench.lease_bench --json bench/results/lease.json
	$(BIN)/python -m bench.audio_bench --rounds 3 --json bench/results/audio.json
	$(BIN)/python -m bench.swap_bench --rounds 3 --json bench/results/swap.json
	$(BIN)/python -m bench.soak_bench --json bench/results/soak.json
	$(BIN)/python -m bench.lora_bench --json bench/results/lora.json
	$(BIN)/python -m bench.chat_bench

bench-full: bench-deps
	$(BIN)/python -m bench.lease_bench --leases 5000 --json bench/results/lease.json
	$(BIN)/python -m bench.audio_bench --rounds 7 --json bench/results/audio.json
	$(BIN)/python -m bench.swap_bench --rounds 7 --json bench/results/swap.json
	$(BIN)/python -m bench.soak_bench --rounds 5 --json bench/results/soak.json
	$(BIN)/python -m bench.lora_bench --rounds 7 --json bench/results/lora.json
	$(BIN)/python -m bench.chat_bench --full
