"""The testbed's tokenizer and model, built from code (nothing downloaded).

The tokenizer is character level (built with the `tokenizers` library, wrapped
as a transformers fast tokenizer) plus one token for ``\\boxed{``. The model is
a Qwen2 architecture at toy size (~0.8M parameters). Both save and load with
plain ``save_pretrained`` / ``from_pretrained``.
"""

from __future__ import annotations

import string

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"
BOXED = "\\boxed{"
CHARS = string.digits + string.ascii_letters + " \n+-*/=().,?:{}\\^_#<>[]!'\"%$&|;"


def build_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {tok: i for i, tok in enumerate([PAD, EOS, UNK, BOXED, *CHARS])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    # every character is its own piece, except the whole "\boxed{" marker
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"\\boxed\{|[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, eos_token=EOS, unk_token=UNK, padding_side="left"
    )


def build_model(vocab_size: int, seed: int, hidden: int = 128, layers: int = 4) -> Qwen2ForCausalLM:
    import torch

    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 3,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=1,
    )
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(config)
