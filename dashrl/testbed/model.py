"""The testbed's tokenizer and model, built from code (nothing downloaded).

The tokenizer is byte level: a BPE with the 256-symbol byte alphabet and no
merges, so every byte is one token and no input is unknown. It is built with
the `tokenizers` library and saved in the same form as Qwen2's, so that plain
``AutoTokenizer.from_pretrained`` reloads it exactly (transformers rebuilds a
Qwen2 model's tokenizer from vocab + merges). The model is a Qwen2 architecture
at toy size (~0.17M parameters) whose attention heads are ``HEAD_DIM`` = 32 wide
(vLLM's CPU attention rejects narrower heads), so the same model runs on both
engines. Both save and load with ``save_pretrained`` / ``from_pretrained``.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

PAD, EOS = "<pad>", "<eos>"
HEAD_DIM = 32  # the narrowest head vLLM's CPU attention accepts


def build_tokenizer() -> PreTrainedTokenizerFast:
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate([PAD, EOS, *alphabet])}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS, padding_side="left")


def attention_heads(hidden: int, heads: int | None = None, kv_heads: int | None = None) -> tuple[int, int]:
    """(heads, kv_heads), by default hidden // HEAD_DIM heads (at least one) and half as many key/value heads
    (grouped-query attention, at least one)."""
    heads = max(1, hidden // HEAD_DIM) if heads is None else heads
    return heads, max(1, heads // 2) if kv_heads is None else kv_heads


def testbed_config(vocab: int, hidden: int, layers: int, heads: int | None = None, kv_heads: int | None = None,
                   intermediate: int | None = None, max_positions: int = 256) -> Qwen2Config:
    """The testbed's Qwen2 config at this size (defaults: ``attention_heads``, intermediate 3 x hidden), with tied
    embeddings and the byte tokenizer's pad / eos / bos ids."""
    heads, kv_heads = attention_heads(hidden, heads, kv_heads)
    return Qwen2Config(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=hidden * 3 if intermediate is None else intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=hidden // heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=1,
    )


def build_model(vocab_size: int, seed: int, hidden: int = 128, layers: int = 4) -> Qwen2ForCausalLM:
    """A randomly initialised Qwen2 of the given width and depth (``testbed_config``)."""
    import torch

    config = testbed_config(vocab_size, hidden, layers)
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(config)
