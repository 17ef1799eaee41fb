#!/usr/bin/env bash
# bash benchmarks/gpu_check.sh [OUT_DIR]
#
# What to run on a machine with CUDA GPUs (not yet run by the project: no GPU was lent
# when this was written). model.device defaults to auto, so everything below runs on the GPU.
#   1. the default suite's end-to-end tests (CLI, trainer, run budget) on the GPU
#   2. DASH on the testbed for 20 steps in bfloat16 on one GPU
#   3. with 2+ GPUs: the same with 2 processes on NCCL (one GPU each), replicated and FSDP2-sharded,
#      and the multi-process tests
# Each run's metrics.jsonl and summary.json land in OUT_DIR (default runs/gpu_check).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/gpu_check}
PY=${PYTHON:-.venv/bin/python}
GPUS=$($PY -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)")
[ "$GPUS" -ge 1 ] || { echo "gpu_check: torch sees no CUDA GPU" >&2; exit 2; }
echo "gpu_check: $GPUS GPU(s): $($PY -c 'import torch; print(torch.cuda.get_device_name(0))')"

$PY -m pytest -q tests/test_cli.py tests/train/test_trainer.py tests/train/test_run_budget.py tests/models/test_device.py

STEPS="train.steps=20 eval.num_problems=256 eval.every=0 model.dtype=bfloat16"
$PY -m dashrl train --no-progress configs/bench.yaml $STEPS log.run_dir="$OUT/1gpu"
if [ "$GPUS" -ge 2 ]; then
  $PY -m dashrl train --nproc 2 --no-progress configs/bench.yaml $STEPS log.run_dir="$OUT/2gpu"
  $PY -m dashrl train --nproc 2 --no-progress configs/bench.yaml $STEPS dist.fsdp=true log.run_dir="$OUT/2gpu_fsdp"
  $PY -m pytest -q -m dist tests/train/test_distributed.py tests/train/test_distributed_run.py
fi
for run in "$OUT"/*gpu*; do
  $PY - "$run" <<'EOF'
import json, sys
s = json.load(open(f"{sys.argv[1]}/summary.json"))
print(f"{sys.argv[1]}: {s['seconds_per_step']:.2f} s/step, {s['tokens_generated'] / s['train_seconds']:.0f} generated tok/s, "
      f"greedy pass@1 {s['before'].get('greedy/pass@1', 0):.3f} -> {s['after'].get('greedy/pass@1', 0):.3f}")
EOF
done
