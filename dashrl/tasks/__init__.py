"""Prompts and their verifiers: a task yields Problems and scores completions."""

from dashrl.tasks.base import Problem, Task
from dashrl.tasks.registry import get_task

__all__ = ["Problem", "Task", "get_task"]
