"""Progress bars and quiet: one switch (``log.progress`` / ``--no-progress``) for every bar.

``progress_bar`` is the one way dashrl draws a bar (tqdm on stderr, off when
progress is off). ``set_library_progress`` applies the switch to the
libraries that draw their own: transformers' bars ("Loading weights",
"Writing model shards") through its logging utilities, the Hugging Face hub's
download bars through ``HF_HUB_DISABLE_PROGRESS_BARS`` and its
``disable_progress_bars``, and the GGUF loader's "Converting and de-quantizing
GGUF tensors" bar, which uses tqdm directly, by swapping that module's
``tqdm`` for a disabled one. transformers' per-call bars stay off even when
progress is on: dashrl's own bar covers the stage.

``resolve`` is how the CLI and the Python API agree: an explicit argument
wins, else ``log.progress``.

Simplification: the switch is process-wide (library state, an environment
variable), as the libraries offer no per-call setting.
"""

from __future__ import annotations

import functools
import os

from tqdm.auto import tqdm as _tqdm


def resolve(progress: bool | None, log_progress: bool) -> bool:
    """An explicit ``progress`` (CLI flag, API argument) if given, else the config's ``log.progress``."""
    return log_progress if progress is None else bool(progress)


def progress_bar(total: float | None = None, desc: str = "", enabled: bool = True, **kwargs) -> _tqdm:
    """A tqdm bar on stderr, silent when ``enabled`` is False (it still counts, so code stays the same)."""
    return _tqdm(total=total, desc=desc, disable=not enabled, dynamic_ncols=True, **kwargs)


_LIBRARY_BARS = True  # the last set_library_progress switch, for libraries that take it per call (vLLM)


def library_bars() -> bool:
    """Whether libraries may draw their own bars (False after ``set_library_progress(False)``)."""
    return _LIBRARY_BARS


def set_library_progress(enabled: bool) -> None:
    """Silence (or allow) the bars that transformers, the hub, the GGUF loader and vLLM draw themselves."""
    global _LIBRARY_BARS
    from transformers.utils import logging as hf_logging

    _LIBRARY_BARS = bool(enabled)

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # dashrl's own bar covers the stage
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "0" if enabled else "1"
    try:
        from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

        (enable_progress_bars if enabled else disable_progress_bars)()
    except ImportError:  # an old hub without the switch: the environment variable alone
        pass
    try:
        from transformers import modeling_gguf_pytorch_utils as gguf
    except ImportError:
        return
    gguf.tqdm = _tqdm if enabled else functools.partial(_tqdm, disable=True)
