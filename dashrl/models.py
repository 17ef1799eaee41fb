"""Load a policy and its tokenizer from 'testbed', a local directory or a hub id."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from dashrl.errors import UserError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_model_path(path: str, progress: bool = True) -> str:
    """'testbed' -> the cached base checkpoint (built on first use); else ``path`` checked."""
    if path == "testbed":
        from dashrl.testbed.pretrain import ensure_base_checkpoint

        return str(ensure_base_checkpoint(progress=progress))
    local = Path(path).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise UserError(f"model path {path} has no config.json (not a Hugging Face model directory)")
        return str(local)
    if path.startswith((".", "/", "~")) or path.count("/") != 1:
        raise UserError(f"model path does not exist: {path}")
    return path  # a hub id such as "Qwen/Qwen2.5-0.5B"


def load_tokenizer(path: str):
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(path: str, dtype: str = "float32"):
    try:
        return AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype])
    except OSError as exc:
        raise UserError(f"could not load model '{path}': {str(exc).splitlines()[0]}") from None
