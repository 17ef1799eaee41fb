"""The built-in testbed: a tiny Qwen2-style model, a character tokenizer and a
procedural multi-step arithmetic task, so that everything runs on a laptop CPU."""
