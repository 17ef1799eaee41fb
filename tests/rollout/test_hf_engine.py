"""The transformers engine: groups of n per prompt, completions cut at any stop token."""

from transformers import AutoModelForCausalLM, AutoTokenizer

from dashrl.rollout.engine import SamplingParams
from dashrl.rollout.hf_engine import HFEngine, stop_token_ids


def _engine(tiny_model_dir, generation_eos=None):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    if generation_eos is not None:
        model.generation_config.eos_token_id = generation_eos
    return HFEngine(model, AutoTokenizer.from_pretrained(tiny_model_dir))


def test_stop_ids_join_tokenizer_eos_and_generation_config_eos(tiny_model_dir):
    # testbed tokenizer: eos = 1; a chat model's generation config may list its end-of-turn token too
    assert stop_token_ids(*_parts(_engine(tiny_model_dir))) == {1}
    assert stop_token_ids(*_parts(_engine(tiny_model_dir, [1, 57]))) == {1, 57}
    assert stop_token_ids(*_parts(_engine(tiny_model_dir, 57))) == {1, 57}


def _parts(engine):
    return engine.model, engine.tokenizer


def test_completion_is_cut_at_the_first_stop_token(tiny_model_dir):
    engine = _engine(tiny_model_dir, [1, 57])
    cut = engine._completion((5, 6), [40, 41, 57, 42, 1, 0])
    assert cut.token_ids == (40, 41, 57) and cut.finish_reason == "stop"
    full = engine._completion((5, 6), [40, 41, 42])
    assert full.token_ids == (40, 41, 42) and full.finish_reason == "length"


def test_generate_returns_n_completions_per_prompt(tiny_model_dir):
    engine = _engine(tiny_model_dir)
    groups = engine.generate(["1+1", "22+3"], n=3, sampling=SamplingParams(max_new_tokens=4))
    assert [len(g) for g in groups] == [3, 3]
    for group in groups:
        for c in group:
            assert 1 <= len(c.token_ids) <= 4
            assert c.finish_reason == ("stop" if c.token_ids[-1] in engine.stop_ids else "length")
