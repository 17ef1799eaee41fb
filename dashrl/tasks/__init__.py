"""Prompts and their verifiers: a task yields Problems and scores completions.

base.py (the Problem type and Task contract), registry.py (task config -> task),
records.py and dataset.py (tasks over files and hub datasets), reasoning_gym.py
(rg:NAME tasks), math.py and code.py (benchmark records), testbed.py (the
built-in arithmetic task), prompts.py (Problem -> the string the engine sees).
"""

from dashrl.tasks.base import Problem, Task
from dashrl.tasks.registry import get_task

__all__ = ["Problem", "Task", "get_task"]
