#!/usr/bin/env bash
# DASH's time ratio against model size on one GPU: configs/scaling.yaml's bench (standard GRPO at the paper's
# micro-batch 4, GRPO at micro-batch 16, preemptive sampling, DASH; 20% of groups filtered; planned completion
# lengths, EOS ignored) on randomly initialised models up to Qwen2.5-0.5B's shape, in bf16, in one run.
#
#   bash benchmarks/scaling_gpu.sh            # -> runs/scaling_gpu/scaling.json, scaling.md
#   SHAPES="[testbed, qwen2.5-0.5b, qwen2.5-1.5b]" STEPS=2 bash benchmarks/scaling_gpu.sh
#
# Nothing is downloaded: the shapes are presets written into dashrl/models/shapes.py (Qwen2.5's config.json
# fields) and the weights are random. Runs on a machine with torch + CUDA and transformers 5.x and no network
# (pydantic, pyyaml, tokenizers, tqdm, safetensors and matplotlib are needed too; no vLLM). The models go to the
# GPU through model.device (default auto: the GPU when one is visible); without it they would run on the CPU,
# and the script stops rather than time the wrong device.
#
# Sized for a 10-minute device slot (about 5-8 min on one H200): 16 prompts x 4 completions per step, completions
# of 32-256 tokens, 2 steps per variant. The paper's step is 64 x 4 with up to 2048 tokens: PROMPTS=64
# TOKENS="[256,2048]" gets closer, at about 30x the time for standard GRPO.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/scaling_gpu}
SHAPES=${SHAPES:-"[testbed, {hidden: 512, layers: 10}, qwen2.5-0.5b]"}
STEPS=${STEPS:-2}
PROMPTS=${PROMPTS:-16}
TOKENS=${TOKENS:-"[32,256]"}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" DASHRL_CACHE=${DASHRL_CACHE:-$OUT/cache}

python - <<'PY'
import sys
import torch
from dashrl.config import ModelConfig
if not torch.cuda.is_available():
    sys.exit("scaling_gpu.sh: no CUDA device visible; for the CPU run use: dashrl bench configs/scaling.yaml")
if "device" not in ModelConfig.model_fields:
    sys.exit("scaling_gpu.sh: this dashrl has no model.device (device placement), so models would stay on the CPU")
print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}", flush=True)
PY

python -m dashrl bench configs/scaling.yaml --out "$OUT" --no-progress \
    "bench.model_shape=$SHAPES" "bench.completion_tokens=$TOKENS" "algo.prompts_per_step=$PROMPTS" \
    "train.steps=$STEPS" model.dtype=bfloat16 model.device=auto
cat "$OUT/scaling.md"
