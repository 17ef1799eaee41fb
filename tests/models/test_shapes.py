"""Model shapes for timing runs: presets, config files and size mappings, built with random weights."""

import json

import pytest
from transformers import AutoModelForCausalLM

from dashrl.errors import UserError
from dashrl.models.shapes import count_parameters, ensure_shape_model, shape_config


def test_size_mapping_counts_parameters_by_hand():
    config = shape_config({"hidden": 64, "layers": 1, "heads": 2, "kv_heads": 1, "intermediate": 192}, 258)
    # embeddings 258 x 64 = 16512 (tied output head); one layer: q 64x64 + 64 bias = 4160, k and v 64x32 + 32 =
    # 2080 each, o 64x64 = 4096, MLP 3 x 64 x 192 = 36864, two norms 128 -> 49408; final norm 64
    assert count_parameters(config) == 16512 + 49408 + 64
    assert (config.head_dim, config.num_key_value_heads) == (32, 1)


def test_presets_and_config_files(tmp_path):
    assert count_parameters(shape_config("qwen2.5-0.5b", 258)) == 494_032_768  # Qwen2.5-0.5B's published count
    assert count_parameters(shape_config("testbed", 258)) < 200_000
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "llama", "hidden_size": 32, "intermediate_size": 64,
                                "num_hidden_layers": 1, "num_attention_heads": 1, "vocab_size": 300}))
    assert shape_config(str(path), 258).model_type == "llama"
    for bad, message in [({"hidden": 64}, "needs hidden and layers"), ({"hidden": 64, "layers": 1, "width": 3}, "unknown: width"),
                         ({"hidden": 64, "layers": 1, "heads": 3}, "must divide"), ("nope", "neither a preset")]:
        with pytest.raises(UserError, match=message):
            shape_config(bad, 258)


def test_shape_model_is_built_once_with_random_weights():
    path = ensure_shape_model({"hidden": 32, "layers": 1}, seed=0)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.config.hidden_size == 32 and (path / "tokenizer.json").is_file()
    assert ensure_shape_model({"hidden": 32, "layers": 1}, seed=0) == path
    assert ensure_shape_model({"hidden": 32, "layers": 1}, seed=1) != path
