"""Checkpoints: a folder with `model.safetensors`, `config.yaml`, `tokenizer.json` and, for a training run,
what the trainer adds to resume (`train.state`). Anyone may save and load one: the trainer, inference,
evaluation, the recipes.

A checkpoint is written into a hidden temporary folder, flushed to disk, then renamed into place, so a
process killed at any moment leaves the previous checkpoint or the new one, never a half-written one; a
write that fails (a full disk) removes the temporary folder and raises a one-line `WriteError`.
Loading reads safetensors and YAML only: nothing is unpickled. A damaged folder (a file missing, cut short
or holding NaN weights) raises a `CheckpointError` naming the file and what is wrong.
"""
from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
from safetensors import safe_open
from safetensors.torch import load_file, load_model, save_model
from torch import nn

from .atomic import is_write_failure, write_error
from .config import Config, ConfigError
from .hardware import resolve_device, resolve_dtype
from .interop.decoder import load_pretrained
from .interop.folder import HFError, is_hf_folder
from .interop.hub import local_folder
from .model.lora import apply_lora, is_adapter_folder, load_adapter
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


def _missing_files(folder: Path) -> list[str]:
    return [f for f in FILES if not (folder / f).is_file()]


def _incomplete(folder: Path, missing: list[str]) -> CheckpointError:
    return CheckpointError(f"{folder} is an incomplete checkpoint: {' and '.join(missing)} "
                           f"{'is' if len(missing) == 1 else 'are'} missing there")


def resolve(path: str | Path) -> Path:
    """A checkpoint folder, or a run folder (meaning its latest checkpoint); CheckpointError when it has no
    complete checkpoint, or its latest one lacks a file."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not path.is_dir():
        raise CheckpointError(f"{path} is a file: give a checkpoint folder (with model.safetensors, config.yaml "
                              f"and tokenizer.json) or a run folder")
    if (path / "model.safetensors").exists():
        missing = _missing_files(path)
        if missing:
            raise _incomplete(path, missing)
        return path
    root = path / "checkpoints"
    saved = sorted((p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX)),
                   key=lambda p: p.name) if root.is_dir() else []
    if saved and _missing_files(saved[-1]):
        older = "delete it to use the one before" if len(saved) > 1 else "the run has no other checkpoint"
        raise CheckpointError(f"{_incomplete(saved[-1], _missing_files(saved[-1]))} ({older})")
    if not saved:
        raise CheckpointError(f"no checkpoint in {path}: expected model.safetensors there, or a run folder "
                              f"with checkpoints/{PREFIX}*/")
    return saved[-1]


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


def _move_into_place(tmp: Path, final: Path) -> None:
    """Rename the assembled folder to `final`; an older folder of that name is moved aside first, and back
    if the rename fails."""
    if not final.exists():
        tmp.rename(final)
        return
    old = final.parent / f".old-{final.name}-{os.getpid()}"
    final.rename(old)
    try:
        tmp.rename(final)
    except BaseException:
        old.rename(final)
        raise
    shutil.rmtree(old, ignore_errors=True)


def save_checkpoint(run_dir: str | Path, step: int, model: nn.Module, config: Config, tokenizer: Tokenizer,
                    extra: Optional[Callable[[Path], None]] = None, keep: Optional[int] = None) -> Path:
    """Write checkpoint `step` of a run atomically; keep only the newest `keep` checkpoints if given.

    A failure of the file system (a full disk, a read-only folder, a run folder under a file) raises a
    `WriteError` naming the checkpoint, leaves no temporary folder behind and the earlier checkpoints as
    they were."""
    final = checkpoint_dir(Path(run_dir), step)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        save_model(model, str(tmp / "model.safetensors"), metadata={"step": str(step)})
        config.save(tmp / "config.yaml")
        tokenizer.save(tmp / "tokenizer.json")
        if extra is not None:  # more files into the same folder, written before it is renamed into place
            extra(tmp)
        _fsync_tree(tmp)
        _move_into_place(tmp, final)
        _fsync_dir(final.parent)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_write_failure(exc):
            raise write_error("the checkpoint", final, exc) from exc
        raise
    if keep is not None:  # prune only older checkpoints, never the one just written
        older = [p for p in list_checkpoints(run_dir) if p.name < final.name]
        for stale in older[:max(0, len(older) - (keep - 1))]:
            shutil.rmtree(stale, ignore_errors=True)
    for pattern in (".tmp-*", ".old-*"):  # from saves killed midway
        for leftover in final.parent.glob(pattern):
            shutil.rmtree(leftover, ignore_errors=True)
    return final


def _named(weights: Path) -> str:
    return f"{weights.name} in {weights.parent}"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text.removeprefix("Error while deserializing header: ")


def weight_shapes(weights: str | Path) -> dict[str, tuple[int, ...]]:
    """The tensor names and shapes of a model.safetensors, read from its header (no tensor is loaded);
    CheckpointError naming the file when it is cut short, not safetensors, or its metadata is wrong."""
    return _header(Path(weights))[0]


def _header(weights: Path) -> tuple[dict[str, tuple[int, ...]], int]:
    """The tensor shapes and the step of a model.safetensors."""
    if not weights.is_file():
        raise CheckpointError(f"{weights} not found")
    try:
        with safe_open(str(weights), framework="pt") as f:
            meta = f.metadata() or {}
            shapes = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    except Exception as exc:  # safetensors raises its own error type for a truncated or corrupt file
        raise CheckpointError(f"{_named(weights)} is not a readable safetensors file ({_one_line(exc)}): "
                              f"it may be cut short or damaged") from None
    step = meta.get("step", "0")
    if not isinstance(step, str) or not re.fullmatch(r"[0-9]{1,18}", step):
        raise CheckpointError(f"{_named(weights)} has a wrong step in its metadata: {step!r} (a whole number "
                              f">= 0 is expected)")
    return shapes, int(step)


def _check_finite(weights: Path, tensors: dict[str, torch.Tensor]) -> None:
    for name, value in tensors.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"{_named(weights)} holds non-finite values in {name}")


def read_weights(weights: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a model.safetensors (on the CPU), checked: CheckpointError naming the file when it
    is unreadable or holds NaN or infinite values."""
    weights = Path(weights)
    _header(weights)
    try:
        tensors = load_file(str(weights))
    except Exception as exc:  # safetensors' own error type
        raise CheckpointError(f"{_named(weights)} is not a readable safetensors file ({_one_line(exc)})") from None
    _check_finite(weights, tensors)
    return tensors


def load_weights(model: nn.Module, weights: str | Path, strict: bool = True,
                 device: str | torch.device = "cpu") -> tuple[list[str], list[str]]:
    """Load a model.safetensors into `model` (tensors go to `device`); returns the names missing from the
    file and those the model lacks (both empty when `strict`, which refuses them). Anything wrong with the
    file raises a CheckpointError naming it: unreadable or cut short, wrong metadata, a tensor whose shape
    does not fit, NaN or infinite values."""
    weights = Path(weights)
    shapes, _ = _header(weights)
    own = model.state_dict()
    for name, shape in shapes.items():
        if name in own and tuple(own[name].shape) != shape:
            raise CheckpointError(f"{_named(weights)} does not fit the model: {name} is {list(shape)} there, "
                                  f"{list(own[name].shape)} in the model")
    try:
        missing, unexpected = load_model(model, str(weights), strict=False, device=str(device))
    except Exception as exc:  # safetensors' own error type, or torch's for a tensor it cannot copy
        raise CheckpointError(f"{_named(weights)} could not be loaded ({_one_line(exc)})") from None
    if strict and (missing or unexpected):
        raise CheckpointError(f"{_named(weights)} does not fit the model: missing {sorted(missing)[:5]}, "
                              f"unexpected {sorted(unexpected)[:5]}")
    own = model.state_dict()
    _check_finite(weights, {name: own[name] for name in shapes if name in own})
    return list(missing), list(unexpected)


def is_pretrained_folder(path: str | Path) -> bool:
    """A Hugging Face model folder (config.json, weights, no omnigpt config.yaml): loadable as a checkpoint,
    and usable as train.init_from."""
    return is_hf_folder(path) and not (Path(path) / "config.yaml").is_file()


def load_checkpoint(path: str | Path, device: str | torch.device = "auto", dtype: str | torch.dtype = "auto",
                    adapter: Optional[str | Path] = None) -> Checkpoint:
    """Load a model, its config and tokenizer from a checkpoint folder or a run folder (latest checkpoint), a
    Hugging Face model folder, or `hf:ORG/NAME[@REVISION]` (see `interop.hub`).

    device: auto (the GPU when there is one), cpu, cuda, cuda:N or mps. dtype: auto (bf16 on a GPU that has
    it, else fp32), fp32, bf16 or fp16, or a torch dtype: the model's weights are held in it, and its float
    inputs (images, log-mels) are cast to it.

    adapter: a folder of LoRA adapters (`adapter.safetensors`, `adapter.json`: a LoRA run's checkpoint) put
    onto this model, which must be the base they were trained on. A LoRA run's own checkpoint loads with its
    adapters unmerged (`model.lora.merge` folds them in).

    A damaged folder raises a CheckpointError naming the file and what is wrong with it (see `load_weights`).
    """
    device = resolve_device(device) if isinstance(device, str) else torch.device(device)
    if not isinstance(dtype, torch.dtype):
        dtype = resolve_dtype(dtype, device)
    try:
        path = local_folder(path)  # hf:ORG/NAME: fetched into the Hugging Face cache first
    except HFError as exc:
        raise CheckpointError(str(exc)) from None
    if is_pretrained_folder(path):
        try:
            config, model, tokenizer = load_pretrained(path)
        except (HFError, TokenizerError) as exc:
            raise CheckpointError(_one_line(exc)) from None
        if adapter is not None:
            _put_adapter(model, adapter)
        return Checkpoint(Path(path), config, model.to(device=device, dtype=dtype).eval(), tokenizer, 0)
    folder = resolve(path)
    try:
        config = Config.load(folder / "config.yaml")
    except (ConfigError, ValueError, OSError) as exc:  # the config's message starts with the file's path
        reason = _one_line(exc).removeprefix(f"{folder / 'config.yaml'}: ")
        raise CheckpointError(f"config.yaml in {folder} is unreadable: {reason}") from None
    try:
        tokenizer = Tokenizer.load(folder / "tokenizer.json")
    except TokenizerError as exc:  # its message names the file
        raise CheckpointError(_one_line(exc)) from None
    weights = folder / "model.safetensors"
    _, step = _header(weights)
    model = build_model(config, tokenizer.image_id, tokenizer.audio_id, tokenizer)
    if config.train.lora is not None:  # a LoRA run: its base weights and its adapters
        apply_lora(model, config.train.lora)
    missing, unexpected = load_weights(model, weights, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{_named(weights)} does not match config.yaml: missing {sorted(missing)[:5]}, "
                              f"unexpected {sorted(unexpected)[:5]}")
    if adapter is not None:
        _put_adapter(model, adapter)
    model.to(device=device, dtype=dtype).eval()  # for inference: dropout off (a trainer calls .train())
    return Checkpoint(folder, config, model, tokenizer, step)


def _put_adapter(model: nn.Module, adapter: str | Path) -> None:
    """LoRA adapters from a folder (or a LoRA run, meaning its latest checkpoint) onto `model`."""
    folder = Path(adapter)
    if not is_adapter_folder(folder):
        folder = resolve(folder)
    try:
        load_adapter(model, folder)
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from None
