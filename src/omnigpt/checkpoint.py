"""Checkpoints: a folder with `model.safetensors`, `config.yaml`, `tokenizer.json` and, for a training run,
what the trainer adds to resume (`train.state`). Anyone may save and load one: the trainer, inference,
evaluation, the recipes.

A checkpoint is written into a hidden temporary folder, flushed to disk, then renamed into place, so a
process killed at any moment leaves the previous checkpoint or the new one, never a half-written one.
Loading reads safetensors and YAML only: nothing is unpickled.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
from safetensors import safe_open
from safetensors.torch import load_model, save_model
from torch import nn

from .config import Config, ConfigError
from .hardware import resolve_device, resolve_dtype
from .model.omni import build_model
from .tokenizer import Tokenizer, TokenizerError

PREFIX = "step-"
FILES = ("model.safetensors", "config.yaml", "tokenizer.json")


class CheckpointError(ValueError):
    """A checkpoint folder is missing, incomplete or unreadable."""


@dataclass
class Checkpoint:
    path: Path
    config: Config
    model: nn.Module  # a GPT, or an OmniGPT when the config has a vision section
    tokenizer: Tokenizer
    step: int


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"{PREFIX}{step:08d}"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (temporary folders of an interrupted save are ignored)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX)
             and all((p / f).is_file() for f in FILES)]
    return sorted(found, key=lambda p: p.name)


def resolve(path: str | Path) -> Path:
    """A checkpoint folder, or a run folder (meaning its latest checkpoint)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if (path / "model.safetensors").is_file():
        return path
    found = list_checkpoints(path)
    if not found:
        raise CheckpointError(f"no checkpoint in {path}: expected model.safetensors there, or a run folder "
                              f"with checkpoints/{PREFIX}*/")
    return found[-1]


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    for f in folder.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    _fsync_dir(folder)


def save_checkpoint(run_dir: str | Path, step: int, model: nn.Module, config: Config, tokenizer: Tokenizer,
                    extra: Optional[Callable[[Path], None]] = None, keep: Optional[int] = None) -> Path:
    """Write checkpoint `step` of a run atomically; keep only the newest `keep` checkpoints if given."""
    final = checkpoint_dir(Path(run_dir), step)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_model(model, str(tmp / "model.safetensors"), metadata={"step": str(step)})
    config.save(tmp / "config.yaml")
    tokenizer.save(tmp / "tokenizer.json")
    if extra is not None:  # more files into the same folder, written before it is renamed into place
        extra(tmp)
    _fsync_tree(tmp)
    if final.exists():  # re-saving the same step: move the old one aside first
        old = final.parent / f".old-{final.name}-{os.getpid()}"
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old)
    else:
        tmp.rename(final)
    _fsync_dir(final.parent)
    if keep is not None:  # prune only older checkpoints, never the one just written
        older = [p for p in list_checkpoints(run_dir) if p.name < final.name]
        for stale in older[:max(0, len(older) - (keep - 1))]:
            shutil.rmtree(stale, ignore_errors=True)
    for leftover in final.parent.glob(".tmp-*"):  # from saves killed midway
        if leftover != tmp:
            shutil.rmtree(leftover, ignore_errors=True)
    return final


def load_checkpoint(path: str | Path, device: str | torch.device = "auto", dtype: str | torch.dtype = "auto"
                    ) -> Checkpoint:
    """Load a model, its config and tokenizer from a checkpoint folder or a run folder (latest checkpoint).

    device: auto (the GPU when there is one), cpu, cuda, cuda:N or mps. dtype: auto (bf16 on a GPU that has
    it, else fp32), fp32, bf16 or fp16, or a torch dtype: the model's weights are held in it, and its float
    inputs (images, log-mels) are cast to it.
    """
    device = resolve_device(device) if isinstance(device, str) else torch.device(device)
    if not isinstance(dtype, torch.dtype):
        dtype = resolve_dtype(dtype, device)
    folder = resolve(path)
    try:
        config = Config.load(folder / "config.yaml")
    except ConfigError as exc:
        raise CheckpointError(f"{folder}: unreadable config.yaml: {exc}") from None
    try:
        tokenizer = Tokenizer.load(folder / "tokenizer.json")
    except TokenizerError as exc:
        raise CheckpointError(f"{folder}: {exc}") from None
    model = build_model(config, tokenizer.image_id, tokenizer.audio_id, tokenizer)
    weights = folder / "model.safetensors"
    try:
        missing, unexpected = load_model(model, str(weights), strict=False)
    except Exception as exc:  # safetensors raises its own error types for truncated or corrupt files
        raise CheckpointError(f"{weights}: not a readable safetensors file ({exc})") from None
    if missing or unexpected:
        raise CheckpointError(f"{weights} does not match config.yaml: missing {sorted(missing)[:5]}, "
                              f"unexpected {sorted(unexpected)[:5]}")
    model.to(device=device, dtype=dtype)
    step = 0
    with safe_open(str(weights), framework="pt") as f:
        step = int((f.metadata() or {}).get("step", 0))
    return Checkpoint(folder, config, model, tokenizer, step)
