"""Shared fixtures: a tiny random testbed-architecture model saved to disk, and the same model as a GGUF file."""

import pytest
import torch
from transformers import AutoModelForCausalLM
from transformers.utils import logging as hf_logging

from dashrl.models import load_tokenizer
from dashrl.testbed.model import build_model, build_tokenizer

hf_logging.disable_progress_bar()
hf_logging.set_verbosity_error()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A random-init model with the testbed architecture at its smallest (fast, not pretrained)."""
    path = tmp_path_factory.mktemp("tiny-model")
    tokenizer = build_tokenizer()
    build_model(len(tokenizer), seed=0, hidden=32, layers=1).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def write_gguf(model, tokenizer, path):
    """A float32 GGUF of a Qwen2 model with tied embeddings and a byte-level BPE tokenizer without merges."""
    import gguf  # optional: only the GGUF tests need it
    import numpy as np

    cfg = model.config
    writer = gguf.GGUFWriter(str(path), "qwen2")
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    tokens = [t for t, i in vocab if i < cfg.vocab_size]  # not transformers' extra <|endoftext|> on reload
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if t in tokenizer.all_special_tokens else gguf.TokenType.NORMAL
                            for t in tokens])
    writer.add_token_scores([0.0] * len(tokens))  # no merges: the loader derives none from single-byte tokens
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN2, cfg.num_hidden_layers)
    for key, tensor in model.state_dict().items():
        if key == "lm_head.weight":  # tied: no output.weight in the file means tie_word_embeddings
            continue
        module, kind = key.rsplit(".", 1)
        writer.add_tensor(f"{names.get_name(module)}.{kind}", tensor.detach().float().numpy().astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture(scope="session")
def tiny_gguf(tiny_model_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    write_gguf(AutoModelForCausalLM.from_pretrained(tiny_model_dir), load_tokenizer(str(tiny_model_dir)), path)
    return path


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Never touch the user's cache from tests."""
    monkeypatch.setenv("DASHRL_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
