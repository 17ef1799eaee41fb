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


def test_planned_lengths_ignore_eos_and_do_not_depend_on_batching(tiny_model_dir):
    from dashrl.models import load_model, load_tokenizer

    tokenizer = load_tokenizer(str(tiny_model_dir))
    one, two = (HFEngine(load_model(str(tiny_model_dir)), tokenizer) for _ in range(2))
    params = SamplingParams(lengths=(3, 9))
    whole = one.generate(["Compute 1+2.\n", "Hi"], 4, params)  # one call of 4 completions per prompt
    halves = [two.generate(["Compute 1+2.\n", "Hi"], 2, params) for _ in range(2)]  # two calls of 2
    lengths = [[len(c.token_ids) for c in group] for group in whole]
    assert lengths == [[len(c.token_ids) for h in halves for c in h[i]] for i in range(2)]
    assert all(3 <= n <= 9 for group in lengths for n in group) and len({n for g in lengths for n in g}) > 1
    # each completion ends in EOS exactly at its planned length, and has none before
    assert all(c.token_ids[-1] == tokenizer.eos_token_id and tokenizer.eos_token_id not in c.token_ids[:-1]
               and c.finish_reason == "stop" for group in whole for c in group)
    fixed = one.generate(["Hi"], 3, SamplingParams(lengths=(5, 5), greedy=True))
    assert [len(c.token_ids) for c in fixed[0]] == [5, 5, 5]
