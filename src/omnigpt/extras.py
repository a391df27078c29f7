"""Optional dependencies, imported on first use, so that a text-only install (`pip install omnigpt`) stays light.

A module that needs an optional package names it once at the top, `sf = optional("soundfile")`, and uses it
as if imported. The import happens at the first attribute access; where the package is missing, that access
raises `MissingExtraError` naming the pip extra that installs it.
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

# The top-level package of each optional dependency -> (its name on PyPI, the extra of omnigpt that brings it)
EXTRAS = {
    "soundfile": ("soundfile", "audio"),
    "soxr": ("soxr", "audio"),
    "espeakng_loader": ("espeakng-loader", "audio"),
    "PIL": ("pillow", "vision"),
    "sacrebleu": ("sacrebleu", "eval"),
    "jiwer": ("jiwer", "eval"),
    "rouge_score": ("rouge-score", "eval"),
    "matplotlib": ("matplotlib", "plots"),
    "huggingface_hub": ("huggingface_hub", "hub"),
    "datasets": ("datasets", "datasets"),
    "fastapi": ("fastapi", "serve"),
    "uvicorn": ("uvicorn", "serve"),
    "python_multipart": ("python-multipart", "serve"),  # the forms of /v1/audio/transcriptions
}


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the extra that installs it."""


def require(module: str) -> ModuleType:
    """Import `module` (e.g. "PIL.Image"), or raise MissingExtraError naming the pip extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        if top not in EXTRAS or isinstance(exc, MissingExtraError):
            raise
        package, extra = EXTRAS[top]
        raise MissingExtraError(f"this needs the optional package {package} ({exc}): install it with "
                                f"pip install 'omnigpt[{extra}]' (or omnigpt[all])") from None


class optional:
    """A module imported on first attribute access: `Image = optional("PIL.Image")`, then `Image.open(...)`."""

    def __init__(self, module: str):
        self._name = module
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):  # copy, pickle and inspection probe dunders: not a reason to import
            raise AttributeError(attr)
        if self._module is None:
            self._module = require(self._name)
        return getattr(self._module, attr)

    def __repr__(self) -> str:
        return f"<optional module {self._name}>"
