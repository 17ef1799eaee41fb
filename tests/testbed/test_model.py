"""The testbed tokenizer round-trips text, and through save/AutoTokenizer reload."""

from transformers import AutoTokenizer

from dashrl.testbed.model import build_model, build_tokenizer


def test_tokenizer_is_byte_level_and_lossless():
    tok = build_tokenizer()
    text = "Compute 7+5*8-5.\n7+5*8-5\n=7+40-5\n\\boxed{42} ü"
    ids = tok(text)["input_ids"]
    assert len(ids) == len(text.encode())  # one token per byte ("ü" is two bytes)
    assert tok.decode(ids) == text


def test_saved_testbed_model_reloads_with_plain_auto_classes(tmp_path):
    tok = build_tokenizer()
    build_model(len(tok), seed=0, hidden=16, layers=1).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "Compute 3*4-2.\n"
    assert reloaded(text)["input_ids"] == tok(text)["input_ids"]
    assert (reloaded.eos_token_id, reloaded.pad_token_id) == (tok.eos_token_id, tok.pad_token_id)
