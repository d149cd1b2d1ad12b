#!/usr/bin/env bash
# GPU throughput of every gradient-trained task (bf16, eager vs torch.compile); see benchmarks/gpu.py.
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
uv run python -m benchmarks.gpu "$@" | tee benchmarks/results/gpu.md
