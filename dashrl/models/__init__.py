"""Models: load a policy and tokenizer (``loading``), LoRA adapters on it (``lora``).

Everything the trainer, engines and evaluation need from a model goes through here:
``resolve_model_path`` -> ``load_tokenizer`` / ``load_policy`` (LoRA applied) / ``load_model``
(reference), and ``plain_state_dict`` / ``plain_copy`` for what an engine or checkpoint sees.
"""

from dashrl.models.loading import DTYPES, load_model, load_policy, load_tokenizer, resolve_model_path, split_gguf

__all__ = ["DTYPES", "load_model", "load_policy", "load_tokenizer", "resolve_model_path", "split_gguf"]
