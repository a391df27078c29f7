"""An OpenAI-compatible HTTP server with continuous batching: `omnigpt serve`, or `create_app` in Python.

Needs the `serve` extra (fastapi, uvicorn, python-multipart): importing this package without it raises
MissingExtraError.
"""
from ..extras import require

require("fastapi")
require("uvicorn")
require("python_multipart")

from .app import Limits, create_app, serve  # noqa: E402
from .engine import Engine, Job, Prompt  # noqa: E402

__all__ = ["create_app", "serve", "Limits", "Engine", "Job", "Prompt"]
