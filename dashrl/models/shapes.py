"""Randomly initialised models of a given shape, for timing runs (``dashrl bench`` with ``bench.model_shape``).

A shape is one of:

- a preset name: ``testbed`` (the built-in model's shape, ~0.17M parameters),
  ``qwen2.5-0.5b`` / ``qwen2.5-1.5b`` (those models' config.json, written
  into ``SHAPE_PRESETS``: nothing is downloaded);
- a path to a transformers ``config.json`` (any causal-LM architecture
  transformers knows, named by its ``model_type``);
- a mapping of Qwen2 sizes: ``{hidden: 256, layers: 8}`` plus optionally
  ``heads`` (default hidden // 32), ``kv_heads`` (default heads // 2),
  ``intermediate`` (default 3 x hidden) and ``vocab`` (default: the testbed's
  byte tokenizer, 258).

The model is built with random weights (``torch.manual_seed(seed)``) and saved
with the testbed's byte-level tokenizer under ``$DASHRL_CACHE/shape-<hash>``
(atomically, reused when present). Token ids beyond the tokenizer's 258 decode
to nothing, which does not matter: a timing run ignores the text.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from dashrl.errors import UserError

# config.json of the Qwen2.5 base models (hub: Qwen/Qwen2.5-0.5B, Qwen/Qwen2.5-1.5B), the fields that set the shape
SHAPE_PRESETS: dict[str, dict] = {
    "qwen2.5-0.5b": {"model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
                     "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936,
                     "max_position_embeddings": 32768, "rope_theta": 1000000.0, "rms_norm_eps": 1e-06,
                     "tie_word_embeddings": True, "hidden_act": "silu"},
    "qwen2.5-1.5b": {"model_type": "qwen2", "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
                     "num_attention_heads": 12, "num_key_value_heads": 2, "vocab_size": 151936,
                     "max_position_embeddings": 131072, "rope_theta": 1000000.0, "rms_norm_eps": 1e-06,
                     "tie_word_embeddings": True, "hidden_act": "silu"},
}
_SIZE_KEYS = {"hidden", "layers", "heads", "kv_heads", "intermediate", "vocab"}


def shape_config(shape: str | dict, vocab_size: int):
    """The transformers config of ``shape`` (see the module docstring); raises UserError on a bad shape."""
    from transformers import AutoConfig

    from dashrl.testbed.model import attention_heads, testbed_config

    if isinstance(shape, dict):
        unknown = sorted(set(shape) - _SIZE_KEYS)
        if unknown or not {"hidden", "layers"} <= set(shape):
            raise UserError(f"bench.model_shape: needs hidden and layers, may have {', '.join(sorted(_SIZE_KEYS))}"
                            + (f"; unknown: {unknown[0]}" if unknown else ""))
        sizes = {key: int(value) for key, value in shape.items()}
        hidden = sizes["hidden"]
        heads, kv = attention_heads(hidden, sizes.get("heads"), sizes.get("kv_heads"))
        if hidden % heads or heads % kv:
            raise UserError(f"bench.model_shape: hidden ({hidden}) must divide by heads ({heads}), "
                            f"and heads by kv_heads ({kv})")
        return testbed_config(sizes.get("vocab", vocab_size), hidden, sizes["layers"], heads, kv,
                              sizes.get("intermediate"), max_positions=4096)
    if shape == "testbed":
        from dashrl.testbed.pretrain import PretrainSpec

        spec = PretrainSpec()
        return shape_config({"hidden": spec.hidden, "layers": spec.layers}, vocab_size)
    if shape in SHAPE_PRESETS:
        fields = dict(SHAPE_PRESETS[shape])
    else:
        path = Path(shape).expanduser()
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise UserError(f"bench.model_shape: '{shape}' is neither a preset ({', '.join(['testbed', *SHAPE_PRESETS])}) "
                            "nor a config.json file")
        try:
            fields = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise UserError(f"bench.model_shape: cannot read {path}: {exc}") from None
    model_type = fields.pop("model_type", None)
    if model_type is None:
        raise UserError(f"bench.model_shape: '{shape}' has no model_type")
    try:
        config = AutoConfig.for_model(model_type, **fields)
    except (ValueError, KeyError) as exc:
        raise UserError(f"bench.model_shape: {exc}") from None
    config.pad_token_id, config.eos_token_id, config.bos_token_id = 0, 1, 1  # the byte tokenizer's ids
    return config


def count_parameters(config) -> int:
    """Parameters of a model of this config (built on the meta device: no memory, no time)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def ensure_shape_model(shape: str | dict, seed: int = 0) -> Path:
    """Directory of a random-init model of ``shape`` with the byte tokenizer (built once, cached)."""
    import torch
    from transformers import AutoModelForCausalLM

    from dashrl.testbed.model import build_tokenizer
    from dashrl.testbed.pretrain import build_once, cache_root

    tokenizer = build_tokenizer()
    config = shape_config(shape, len(tokenizer))
    key = hashlib.sha1(json.dumps([config.to_dict(), seed], sort_keys=True, default=str).encode()).hexdigest()[:10]
    def write(tmp: Path) -> None:
        torch.manual_seed(seed)
        AutoModelForCausalLM.from_config(config).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return build_once(cache_root() / f"shape-{key}", write)
