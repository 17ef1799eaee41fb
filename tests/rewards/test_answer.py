"""Answer formats: what each extracts (by hand), the reason when nothing is found, regex groups, bad specs."""

import pytest

from dashrl.rewards.answer import FORMATS, answer_format


@pytest.mark.parametrize("spec, text, expected", [
    ("boxed", "so \\boxed{12} then \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),  # the last box
    ("answer_tag", "<answer> 3 </answer> no, <answer>4</answer>", "4"),
    ("answer_tag", "<answer>\nmulti\nline\n</answer>", "multi\nline"),
    ("last_number", "5 + 7 = 12. The answer is 1,234.", "1234"),  # commas dropped, trailing period ignored
    ("last_number", "It is -3.5, I think", "-3.5"),
    ("hash", "work\n#### 72\n", "72"),
    ("regex:Answer: (\\S+)", "Answer: 1 ... Answer: 2!", "2!"),  # the last match, group 1
    ("regex:\\d+", "a 1 b 22", "22"),  # no group: the whole match
])
def test_extraction(spec, text, expected):
    assert answer_format(spec).extract(text) == expected


@pytest.mark.parametrize("spec, missing", [("boxed", "no_box"), ("answer_tag", "no_answer"),
                                           ("last_number", "no_number"), ("hash", "no_hash"),
                                           ("regex:Answer: (\\d+)", "no_match")])
def test_no_answer_gives_none_and_the_format_reason(spec, missing):
    fmt = answer_format(spec)
    assert fmt.extract("I do not know.") is None
    assert fmt.missing == missing


def test_hash_needs_the_last_line():
    # a Markdown heading is not an answer
    assert answer_format("hash").extract("#### Step 1\nthen 5") is None


def test_every_built_in_format_has_an_instruction_naming_it():
    words = {"boxed": "\\boxed{}", "answer_tag": "<answer>", "last_number": "number", "hash": "####"}
    for name in FORMATS:
        assert words[name] in answer_format(name).instruction
    assert answer_format("regex:x").instruction is None


@pytest.mark.parametrize("spec, message", [("xml", "unknown answer format"), ("regex:", "needs a pattern"),
                                           ("regex:(", "not a valid regular expression")])
def test_bad_specs(spec, message):
    with pytest.raises(ValueError, match=message):
        answer_format(spec)
