"""Shared by the study tests: the arguments of a tiny study and an HTML parser."""

from html.parser import HTMLParser

import pytest

FAST = ["algo.group_size=2", "algo.prompts_per_step=4", "train.micro_batch_size=4", "train.steps=2",
        "sampling.max_new_tokens=6", "eval.num_problems=4", "eval.samples=2", "eval.ks=[1,2]",
        "study.ood_problems=3", "study.ood_max_new_tokens=8", "study.passk_problems=2", "study.passk_samples=4",
        "sft.num_prompts=4", "sft.batch_size=4", "study.equal_time=[]", "study.seeds=[0]"]


class Elements(HTMLParser):
    """Collects the tags, attributes and text of an HTML page."""

    def __init__(self, page: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def all(self, tag):
        return [attrs for t, attrs in self.tags if t == tag]


@pytest.fixture
def tiny_study_args(tiny_model_dir, tmp_path):
    """`dashrl study` arguments for a 2-variant (sft_h, dash), 2-step study of the tiny model in tmp_path/study."""
    return ["study", "--no-progress", "--out", str(tmp_path / "study"), "--variants", "sft_h,dash",
            f"model.path={tiny_model_dir}", *FAST]


@pytest.fixture
def html_elements():
    return Elements
