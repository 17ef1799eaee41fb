"""Engine selection: ``rollout.engine`` -> an ``Engine``, and the one way weights reach it.

``check_engine`` runs first (before models load or anything is written) so a
missing vLLM is a one-line error. ``make_engine`` builds the configured engine
from the trainer's policy; ``push_weights`` is the weight sync after an update:
the merged weights (W + (alpha / r) B A under LoRA), or the LoRA adapter alone
when ``rollout.lora_sync=adapter``. vLLM needs a Hugging Face model directory
to start from: a GGUF model is written once, dequantized, to a temporary one.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref

from dashrl.config import Config
from dashrl.errors import UserError
from dashrl.models.lora import base_state_dict, is_lora, plain_copy, plain_state_dict, save_plain
from dashrl.rollout.engine import Engine
from dashrl.rollout.hf_engine import HFEngine, stop_token_ids


def check_engine(config: Config) -> None:
    """Raise the UserError of an engine that cannot run here (vLLM not installed)."""
    if config.rollout.engine == "vllm":
        from dashrl.rollout.vllm_engine import require_vllm

        require_vllm()


def make_engine(config: Config, model_path: str, policy, tokenizer, resumed: bool = False, rank: int = 0,
                may_share: bool = True) -> Engine:
    """The configured engine holding ``policy``'s weights (``model_path``: the resolved path it was loaded from).

    resumed: the policy differs from ``model_path`` (a checkpoint was loaded), so vLLM gets its weights pushed.
    rank: the process's rank in a multi-process run (each samples with its own seed).
    may_share: the HF engine may sample with the policy module itself (not when it will be FSDP-sharded).
    """
    check_engine(config)
    if config.rollout.engine == "hf" and config.rollout.hf_share_policy and may_share:
        return HFEngine(policy, tokenizer, shared=True)  # the policy itself: no copy, no sync
    if config.rollout.engine == "hf":
        return HFEngine(plain_copy(policy), tokenizer)  # LoRA merged in
    import torch.distributed as tdist

    from dashrl.models.loading import split_gguf
    from dashrl.rollout.vllm_engine import VLLMEngine

    if tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1:
        raise UserError("rollout.engine=vllm runs in one training process for now (vLLM in-process would join "
                        "the trainer's process group); drop --nproc / torchrun or use rollout.engine=hf")

    source, gguf_file = split_gguf(model_path)
    owned = None
    if gguf_file is not None:  # vLLM starts from a Hugging Face directory: write the dequantized base once
        owned = tempfile.mkdtemp(prefix="dashrl-vllm-model-")
        _save_base(policy, owned)
        source = owned
    lora_rank = config.model.lora.r if config.rollout.lora_sync == "adapter" else None
    engine = VLLMEngine(source, tokenizer, stop_token_ids(policy, tokenizer), config.rollout, config.model.dtype,
                        seed=config.train.seed + rank, lora_rank=lora_rank)
    if owned is not None:
        weakref.finalize(engine, shutil.rmtree, owned, True)
    if resumed:
        push_weights(engine, policy)
    return engine


def push_weights(engine: Engine, policy, state_dict: dict | None = None) -> None:
    """Send the policy's current weights to the engine (the ``weight_sync`` stage of a step).

    state_dict: the weights to send when the policy cannot give them itself (FSDP: gathered from the shards).
    """
    if getattr(engine, "shares_policy", False):  # it generates with the policy itself
        return
    if getattr(engine, "adapter", False):
        engine.load_adapter(policy)
    else:
        engine.load_weights(state_dict if state_dict is not None else plain_state_dict(policy))


def close_engine(engine: Engine) -> None:
    """Free an engine that holds resources beyond Python objects (vLLM); a no-op for the others."""
    close = getattr(engine, "close", None)
    if close is not None:
        close()


def _save_base(policy, out_dir: str) -> None:
    """``save_pretrained`` the policy's base weights (adapters left out, not merged) as a plain model."""
    save_plain(policy, out_dir, state_dict=base_state_dict(policy) if is_lora(policy) else None)
