"""Collation layout and token-budget micro-batches (no sample lost or duplicated; budget respected)."""

import random

import torch

from dashrl.train.batch import Sample, collate, pack_by_tokens, padded_tokens


def _sample(i, prompt_len, completion_len):
    return Sample(f"p{i}", tuple(range(10, 10 + prompt_len)), tuple(range(50, 50 + completion_len)), 0.0, 0.0)


def test_collate_layout():
    mb = collate([_sample(0, 2, 3), _sample(1, 3, 1)], pad_id=0)
    # P = 3, C = 3: row 0 = [pad, p, p | c, c, c], row 1 = [p, p, p | c, pad, pad]
    assert mb.input_ids.tolist() == [[0, 10, 11, 50, 51, 52], [10, 11, 12, 50, 0, 0]]
    assert mb.attention_mask.tolist() == [[0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]]
    assert mb.position_ids.tolist() == [[0, 0, 1, 2, 3, 4], [0, 1, 2, 3, 3, 3]]
    assert mb.completion_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert torch.equal(mb.completion_ids, mb.input_ids[:, 3:])


def test_pack_by_tokens_keeps_every_sample_once_within_budget():
    rng = random.Random(0)
    samples = [_sample(i, rng.randint(3, 20), rng.randint(1, 60)) for i in range(200)]
    budget = 400
    batches = pack_by_tokens(samples, budget)
    ids = [s.problem_id for b in batches for s in b]
    assert sorted(ids) == sorted(s.problem_id for s in samples)  # none lost, none duplicated
    assert all(padded_tokens(b) <= budget for b in batches)
    # packing by length wastes less padding than fixed rows of the same average size
    rows = len(samples) // len(batches)
    fixed = [samples[i : i + rows] for i in range(0, len(samples), rows)]
    assert sum(map(padded_tokens, batches)) < sum(map(padded_tokens, fixed))


def test_oversized_sample_gets_its_own_batch():
    big, small = _sample(0, 10, 100), _sample(1, 2, 2)
    assert pack_by_tokens([small, big], budget=50) == [[big], [small]]


def test_hand_worked_packing():
    # widths (prompt + completion): a = 2+6 = 8, b = 2+5 = 7, c = 2+2 = 4, d = 2+1 = 3; budget 16
    a, b, c, d = _sample(0, 2, 6), _sample(1, 2, 5), _sample(2, 2, 2), _sample(3, 2, 1)
    # longest first: [a] 8 -> [a, b] 2 x 8 = 16 fits -> + c = 24 > 16 -> new batch [c, d] = 2 x 4 = 8
    assert pack_by_tokens([d, c, b, a], budget=16) == [[a, b], [c, d]]
