"""``dashrl study``: the paper's comparison (SFT vs RL, PG vs PPO, KL vs no KL, GRPO vs DASH) as one command.

presets.py  the variants as overrides of one base config, and the run plan
runner.py   train and evaluate every run (resumable)
findings.py verdicts on the paper's four findings from the study's numbers
report.py   report.md / report.html / report.json from the runs' logs
plots.py    the PNG plots
"""
