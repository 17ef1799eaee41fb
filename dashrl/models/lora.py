"""LoRA through PEFT: adapters on the policy, merged weights for the engine and for checkpoints.

With ``model.lora.enabled`` the policy is a PEFT model whose base weights are
frozen; only the adapter matrices A (r x in) and B (out x r) train, and B
starts at zero, so training starts from the base model exactly.

Everything outside the trainer sees a plain model of the base architecture:

- the engine gets ``plain_state_dict(policy)``: base-model names, each adapted
  weight replaced by W + (alpha / r) B A. It is computed next to the policy,
  which is never merged in place, so the frozen W never drifts through
  merge/unmerge rounding;
- checkpoints write that merged model with ``save_pretrained`` (plain
  ``AutoModelForCausalLM.from_pretrained`` loads it, no peft needed), plus the
  adapter alone in PEFT's format for ``--resume``;
- the KL reference is ``AdaptersOff(policy)``: the same model with adapters
  switched off, i.e. the base weights, without loading a second copy.

Simplifications: one adapter ('default'), PEFT's LoRA layers only (no DoRA,
no ``modules_to_save``); a model with tied input/output embeddings cannot
adapt those two modules (the merged pair would no longer be tied).
"""

from __future__ import annotations

import copy
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

from dashrl.config import LoraConfig
from dashrl.errors import UserError

ADAPTER = "adapter"  # checkpoint subdirectory holding the PEFT adapter
_NAME = "default"  # PEFT's adapter name


def is_lora(model: Any) -> bool:
    """True for a PEFT model (if peft was never imported, nothing can be one)."""
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(model, peft.PeftModel)


def _peft():
    try:
        import peft
    except ImportError:
        raise UserError("model.lora.enabled needs the peft package: pip install 'dashrl[lora]'") from None
    return peft


def _tied_embedding_names(model) -> set[str]:
    if not getattr(model.config, "tie_word_embeddings", False):
        return set()
    tied = (model.get_input_embeddings(), model.get_output_embeddings())
    return {name for name, module in model.named_modules() if any(module is t for t in tied)}


def apply_lora(model, cfg: LoraConfig):
    """Wrap ``model`` with fresh LoRA adapters; only their parameters require grad."""
    peft = _peft()
    if isinstance(cfg.target_modules, list):  # 'all-linear' never includes the output head
        tied = {name for name in _tied_embedding_names(model) for t in cfg.target_modules
                if name == t or name.endswith(f".{t}")}  # PEFT's rule for a list of names
        if tied:
            raise UserError(f"model.lora.target_modules: {sorted(tied)} share tied embedding weights; "
                            "adapt other modules")
    peft_config = peft.LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                                  target_modules=cfg.target_modules, bias="none", task_type="CAUSAL_LM")
    try:
        with warnings.catch_warnings():  # peft calls a deprecated transformers property
            warnings.simplefilter("ignore", FutureWarning)
            return peft.get_peft_model(model, peft_config)
    except ValueError as exc:  # e.g. target modules not found
        raise UserError(f"model.lora: {str(exc).splitlines()[0]}") from None


def _lora_layers(model) -> list[tuple[str, Any]]:
    """(name in the base model, layer) of every LoRA-wrapped module."""
    from peft.tuners.lora import LoraLayer

    return [(name, m) for name, m in model.get_base_model().named_modules() if isinstance(m, LoraLayer)]


@torch.no_grad()
def plain_state_dict(model) -> dict[str, torch.Tensor]:
    """The weights under base-model names, with every adapter merged in: W + (alpha / r) B A.

    A plain (non-PEFT) model gives its own ``state_dict()``. The policy is not modified.
    """
    if not is_lora(model):
        return model.state_dict()
    deltas = {f"{name}.weight": layer.get_delta_weight(_NAME) for name, layer in _lora_layers(model)}
    return {key: tensor + deltas[key].to(tensor.dtype) if key in deltas else tensor
            for key, tensor in base_state_dict(model).items()}


def base_state_dict(model) -> dict[str, torch.Tensor]:
    """A LoRA model's frozen base weights under base-model names (adapters left out, not merged)."""
    return {key.replace(".base_layer.", "."): tensor for key, tensor in model.get_base_model().state_dict().items()
            if ".lora_" not in key}


def plain_copy(model):
    """A separate plain model holding ``plain_state_dict(model)`` (what the engine starts from)."""
    if not is_lora(model):
        return copy.deepcopy(model)
    plain = copy.deepcopy(model).unload()  # drops the adapter layers, keeps the base weights
    plain.load_state_dict(plain_state_dict(model), strict=True)
    return plain


def save_plain(model, out_dir: Path, dtype: torch.dtype | None = None, state_dict: dict | None = None) -> None:
    """``save_pretrained`` the model as a plain one (LoRA merged in), loadable without peft.

    ``dtype``: cast the floating-point weights to it on the way out (e.g. bfloat16: half the bytes of
    float32); the model in memory is untouched and config.json records the dtype written.
    ``state_dict``: the weights to write when the model cannot give them itself (FSDP: gathered whole).
    """
    if not is_lora(model) and dtype is None and state_dict is None:
        model.save_pretrained(out_dir)
        return
    if state_dict is not None:
        state = state_dict
    else:
        state = plain_state_dict(model) if is_lora(model) else model.state_dict()
    if dtype is not None:
        cast: dict[int, torch.Tensor] = {}  # tied weights (embeddings = head) stay one tensor
        state = {k: cast.setdefault(v.data_ptr(), v.to(dtype)) if v.is_floating_point() else v
                 for k, v in state.items()}
    base = model.get_base_model() if is_lora(model) else model
    base.save_pretrained(out_dir, state_dict=state)
    if dtype is not None:
        _record_dtype(Path(out_dir) / "config.json", str(dtype).removeprefix("torch."))


def _record_dtype(config_json: Path, name: str) -> None:
    import json

    config = json.loads(config_json.read_text())
    for key in ("dtype", "torch_dtype"):
        if key in config:
            config[key] = name
    config_json.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def save_adapter(model, out_dir: Path) -> None:
    """The adapter alone, in PEFT's format (``PeftModel.from_pretrained(base, out_dir)`` loads it)."""
    model.save_pretrained(out_dir, save_embedding_layers=False)  # the vocabulary is never resized here


def load_adapter(model, adapter_dir: Path, cfg: LoraConfig) -> None:
    """Copy a saved adapter's weights into ``model``'s, for resume; its settings must match ``cfg``."""
    peft = _peft()
    from safetensors.torch import load_file

    weights, settings = adapter_dir / "adapter_model.safetensors", adapter_dir / "adapter_config.json"
    if not (weights.is_file() and settings.is_file()):
        raise UserError(f"cannot resume: {adapter_dir} lacks adapter_model.safetensors or adapter_config.json")
    saved = json.loads(settings.read_text())
    for ours, theirs in (("r", "r"), ("alpha", "lora_alpha")):
        if saved.get(theirs) != getattr(cfg, ours):
            raise UserError(f"cannot resume: the checkpoint's adapter has {ours}={saved.get(theirs)}, "
                            f"but model.lora.{ours}={getattr(cfg, ours)}")
    result = peft.set_peft_model_state_dict(model, load_file(str(weights)), adapter_name=_NAME)
    missing = [k for k in result.missing_keys if ".lora_" in k]
    if missing or result.unexpected_keys:
        raise UserError(f"cannot resume: the adapter in {adapter_dir} does not fit model.lora.target_modules "
                        f"({len(missing)} adapter weights missing, {len(result.unexpected_keys)} unexpected)")


class AdaptersOff:
    """Calls the policy with its adapters disabled and in eval mode: the base model, as KL reference."""

    def __init__(self, model):
        self.model = model

    def __call__(self, **inputs):
        was_training = self.model.training
        self.model.eval()
        try:
            with self.model.disable_adapter():
                return self.model(**inputs)
        finally:
            self.model.train(was_training)
