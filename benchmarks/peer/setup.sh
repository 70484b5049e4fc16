#!/usr/bin/env bash
# The peers' virtual environments for `make bench-peer`, each with its own transformers (they cannot share one):
#   .venv-peer-trl024  TRL 0.24.0, the last release with PPOTrainer (needs transformers 4.57.x, huggingface-hub < 1.0)
#   .venv-peer-trl1    the current TRL 1.x (GRPOTrainer) with transformers 5.x
# Idempotent: a venv is rebuilt only when its marker file (what was installed) differs from what is asked for.
# CPU torch, pinned, goes in first: an unpinned torch pulls a multi-GB CUDA build (pass the CPU wheels' index in
# TORCH_PIP_ARGS on a stock Linux machine, as for the Makefile's main venv).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
TORCH_PIP_ARGS=${TORCH_PIP_ARGS:-}

build() {
    local venv=$1
    shift
    local wanted="torch==$TORCH_VERSION${TORCH_PIP_ARGS:+ $TORCH_PIP_ARGS} | $*"
    if [[ -f $venv/.installed && "$(cat "$venv/.installed")" == "$wanted" ]]; then
        return
    fi
    echo "[bench-peer] building $venv: $*"
    rm -rf "$venv"
    "$PYTHON" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    # shellcheck disable=SC2086  # TORCH_PIP_ARGS is a list of options
    "$venv/bin/python" -m pip install --quiet "torch==$TORCH_VERSION" $TORCH_PIP_ARGS
    # torch pinned again so that no requirement of the peer can replace it.
    "$venv/bin/python" -m pip install --quiet "torch==$TORCH_VERSION" "$@"
    echo "$wanted" >"$venv/.installed"
}

# gguf: each venv converts the embedded GGUF model with its own transformers (a checkpoint saved by transformers 5
# is not read the same way by 4.57: the RoPE settings moved). vaderSentiment: the same reward as this package's.
build .venv-peer-trl024 trl==0.24.0 transformers==4.57.6 "huggingface-hub<1.0" accelerate gguf vaderSentiment
build .venv-peer-trl1 "trl>=1,<2" "transformers>=5,<6" accelerate gguf vaderSentiment peft
