"""An in-process engine on Hugging Face transformers' ``generate``.

Prompts are left-padded into one batch and each is repeated ``n`` times; the KV
cache is on (transformers' default). Completions are cut at the first stop token:
the tokenizer's EOS or any EOS id of the model's generation config (chat models
end a turn with their own token). Each completion carries the log-prob of every
token under softmax(logits / temperature), recorded while generating (top-k /
top-p truncation is not applied to them; greedy reports temperature 1). With
``SamplingParams.lengths`` (timing runs)
a logits processor sets each completion's length instead (``LengthPlan``: drawn
uniformly per prompt and completion number, the same whatever the batching); as
in any batched ``generate``, a batch then runs until its longest row is done.

Two ways to hold the weights (``rollout.hf_share_policy``):

- shared (the default): the engine generates with the trainer's own policy
  module (with LoRA, the PEFT model with its adapters on), switched to eval
  mode for the call (no dropout) and back to the mode it was in. No copy of the
  weights and no sync: ``shares_policy`` tells the trainer to skip
  ``load_weights``, which would be a no-op.
- isolated: the engine keeps its own model object (LoRA merged in), so
  ``load_weights`` is a real copy, as it would be for an engine in another
  process.
"""

from __future__ import annotations

import random
import zlib

import torch
from transformers import LogitsProcessor, LogitsProcessorList, PreTrainedModel, PreTrainedTokenizerBase

from dashrl.rollout.engine import Completion, SamplingParams, cut_completion


class HFEngine:
    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, shared: bool = False):
        """``shared``: ``model`` is the trainer's policy, generated with as it is (see the module docstring)."""
        self.shares_policy = shared
        self.model = model if shared else model.eval()
        self.tokenizer = tokenizer
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        self.stop_ids = stop_token_ids(model, tokenizer)
        self._planned: dict[str, int] = {}  # completions given a planned length so far, per prompt (timing runs)

    def generate(self, prompts: list[str], n: int, sampling: SamplingParams) -> list[list[Completion]]:
        if not self.shares_policy:
            return self._generate(prompts, n, sampling)
        was_training = self.model.training
        self.model.eval()  # no dropout while sampling (LoRA dropout included)
        try:
            return self._generate(prompts, n, sampling)
        finally:
            self.model.train(was_training)

    @torch.no_grad()
    def _generate(self, prompts: list[str], n: int, sampling: SamplingParams) -> list[list[Completion]]:
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left")
        device = self.model.device
        input_ids = enc["input_ids"].repeat_interleave(n, dim=0).to(device)
        attention_mask = enc["attention_mask"].repeat_interleave(n, dim=0).to(device)
        kwargs = dict(do_sample=False) if sampling.greedy else dict(
            do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k
        )
        recorder = SampledLogprobs(1.0 if sampling.greedy else sampling.temperature)
        processors = [recorder]
        max_new_tokens = sampling.max_new_tokens
        if sampling.lengths is not None:
            lengths = [planned_length(self._planned, p, sampling.lengths) for p in prompts for _ in range(n)]
            plan = LengthPlan(lengths, input_ids.shape[1], self.eos_id, sorted(self.stop_ids))
            processors.insert(0, plan)
            max_new_tokens = max(sampling.lengths)
        out = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=max_new_tokens,
            eos_token_id=sorted(self.stop_ids),
            pad_token_id=self.pad_id,
            logits_processor=LogitsProcessorList(processors),
            **kwargs,
        )
        generated_ids = out[:, input_ids.shape[1] :]
        generated, logprobs = generated_ids.tolist(), recorder.result(generated_ids).tolist()
        groups: list[list[Completion]] = []
        for i, prompt_mask in enumerate(enc["attention_mask"]):
            prompt_ids = tuple(enc["input_ids"][i][prompt_mask.bool()].tolist())
            groups.append([self._completion(prompt_ids, generated[i * n + j], logprobs[i * n + j]) for j in range(n)])
        return groups

    def _completion(self, prompt_ids: tuple[int, ...], ids: list[int], logprobs: list[float] | None = None) -> Completion:
        return cut_completion(self.tokenizer, self.stop_ids, prompt_ids, ids, logprobs)

    def load_weights(self, state: dict[str, torch.Tensor]) -> None:
        if self.shares_policy:
            raise RuntimeError("a shared HF engine generates with the policy itself; there are no weights to load")
        self.model.load_state_dict(state, strict=True)


class SampledLogprobs(LogitsProcessor):
    """Records log softmax(scores / temperature) of each generated token, one step late.

    ``generate`` calls it with the scores of step t (before its own temperature and
    top-k / top-p warpers) and the ids so far, whose last column is the token of step
    t - 1; only the previous step's (B, V) log-probs are kept in memory.
    """

    def __init__(self, temperature: float):
        self.temperature = temperature
        self.previous: torch.Tensor | None = None  # (B, V) log-probs of the last step seen
        self.picked: list[torch.Tensor] = []  # (B,) per generated position

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.previous is not None:
            self.picked.append(self.previous.gather(-1, input_ids[:, -1:]).squeeze(-1))
        self.previous = torch.log_softmax(scores.float() / self.temperature, dim=-1)
        return scores

    def result(self, generated: torch.Tensor) -> torch.Tensor:
        """(B, L) log-probs of ``generated`` (B, L), the new ids ``generate`` returned."""
        if self.previous is not None and len(self.picked) < generated.shape[1]:
            self.picked.append(self.previous.gather(-1, generated[:, len(self.picked) : len(self.picked) + 1]).squeeze(-1))
            self.previous = None
        if not self.picked:
            return torch.zeros(generated.shape, dtype=torch.float32)
        return torch.stack(self.picked, dim=1).cpu()

def planned_length(counts: dict[str, int], prompt: str, bounds: tuple[int, int]) -> int:
    """Timing runs: the next planned completion length of ``prompt``; ``counts`` (per prompt, updated) makes
    the k-th completion of a prompt get the same length in every engine and schedule."""
    k = counts.get(prompt, 0)
    counts[prompt] = k + 1
    return random.Random(zlib.crc32(f"{k}:{prompt}".encode())).randint(*bounds)


class LengthPlan(LogitsProcessor):
    """Timing runs: row i ends with EOS as its ``lengths[i]``-th token; every stop token is masked before that."""

    def __init__(self, lengths: list[int], prompt_width: int, eos_id: int, stop_ids: list[int]):
        self.lengths = torch.tensor(lengths)
        self.prompt_width, self.eos_id, self.stop_ids = prompt_width, eos_id, stop_ids

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        position = input_ids.shape[1] - self.prompt_width + 1  # the token about to be chosen, counted from 1
        lengths = self.lengths.to(scores.device)
        scores[:, self.stop_ids] = torch.where((position < lengths)[:, None], float("-inf"), scores[:, self.stop_ids])
        ending = position >= lengths
        scores[ending] = float("-inf")
        scores[ending, self.eos_id] = 0.0
        return scores


def stop_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """Token ids that end a completion: the tokenizer's EOS plus the model's generation EOS ids.

    Chat models often end a turn with a token (e.g. ``<|im_end|>``) that their
    generation config lists as EOS while the tokenizer's ``eos_token`` differs.
    """
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if config_eos is not None:
        ids |= set(config_eos) if isinstance(config_eos, (list, tuple)) else {config_eos}
    return ids
