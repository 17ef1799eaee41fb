"""Weight sync into vLLM: full weights vs LoRA merged vs LoRA adapter-only, seconds per push and per sampling call.

    python benchmarks/vllm_lora_sync.py                 # SmolLM2-135M-Instruct, LoRA r=16 on all linear layers
    python benchmarks/vllm_lora_sync.py --model testbed --repeats 3

Needs vLLM. For each mode an engine is started, the trainer-side weights are
changed (adapter B matrices randomised, so the adapter is not a no-op) and pushed
``--repeats`` times with ``dashrl.rollout.factory.push_weights`` (what the
trainer's ``weight_sync`` stage runs); then one sampling call of
``--batch`` completions is timed, since adapter-only sync makes vLLM apply the
adapter with its LoRA kernels on every token. Writes OUT.json and OUT.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run(model_name: str, mode: str, repeats: int, batch: int, new_tokens: int) -> dict:
    import torch

    from dashrl.config import load_config
    from dashrl.models import load_policy, load_tokenizer, resolve_model_path
    from dashrl.models.lora import plain_state_dict
    from dashrl.rollout.engine import SamplingParams
    from dashrl.rollout.factory import close_engine, make_engine, push_weights

    lora = mode != "full"
    overrides = [f"model.path={model_name}", "rollout.engine=vllm"]
    if lora:
        overrides += ["model.lora.enabled=true", "model.lora.r=16", "model.lora.alpha=32",
                      f"rollout.lora_sync={'adapter' if mode == 'lora-adapter' else 'merged'}"]
    config = load_config(overrides=overrides)
    path = resolve_model_path(config.model.path, progress=False)
    policy, tokenizer = load_policy(path, config.model), load_tokenizer(path)
    engine = make_engine(config, path, policy, tokenizer)
    try:
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for name, p in policy.named_parameters():
                if (lora and "lora_B" in name) or (not lora and p.dim() == 2):
                    p.add_(torch.randn(p.shape, generator=gen) * 0.01)
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            push_weights(engine, policy)
            seconds.append(time.perf_counter() - start)
        prompts = [f"{i} + {i + 7} =" for i in range(max(batch // 8, 1))]
        sampling = SamplingParams(temperature=1.0, max_new_tokens=new_tokens)
        engine.generate(prompts[:1], 1, sampling)  # warm-up
        start = time.perf_counter()
        groups = engine.generate(prompts, min(batch, 8), sampling)
        gen_seconds = time.perf_counter() - start
        tokens = sum(len(c.token_ids) for g in groups for c in g)
    finally:
        close_engine(engine)
    trainable = sum(p.numel() for p in policy.parameters() if p.requires_grad)
    row = {"mode": mode, "sync_seconds_median": statistics.median(seconds), "sync_seconds": seconds,
           "pushed_parameters": trainable if mode == "lora-adapter" else sum(
               v.numel() for v in plain_state_dict(policy).values()),
           "generation_tokens_per_s": tokens / gen_seconds}
    print(f"{mode:>13}: sync {row['sync_seconds_median']:.3f} s (median of {repeats}), "
          f"generation {row['generation_tokens_per_s']:.0f} tokens/s", flush=True)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64, help="completions in the timed sampling call")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "vllm_lora_sync"))
    args = parser.parse_args()
    from dashrl.cli import _quiet_libraries
    from dashrl.rollout.vllm_engine import require_vllm

    require_vllm()
    _quiet_libraries()
    load = os.getloadavg()[0]
    rows = [run(args.model, mode, args.repeats, args.batch, args.new_tokens)
            for mode in ("full", "lora-merged", "lora-adapter")]
    result = {"model": args.model, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "note": f"vLLM CPU unless a GPU is present; shared machine, 1-min load average {load:.1f} at the "
                      f"start, {os.getloadavg()[0]:.1f} at the end", "rows": rows}
    lines = [f"{args.model}, LoRA r=16 all-linear; {result['note']}", "",
             "| mode | parameters pushed | sync s (median) | sampling tokens/s |", "|---|---|---|---|"]
    lines += [f"| {r['mode']} | {r['pushed_parameters']:,} | {r['sync_seconds_median']:.3f} | "
              f"{r['generation_tokens_per_s']:.0f} |" for r in rows]
    Path(f"{args.out}.json").write_text(json.dumps(result, indent=2) + "\n")
    Path(f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
