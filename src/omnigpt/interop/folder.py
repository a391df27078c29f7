"""A local Hugging Face model folder: `config.json` and the weights, as one `model.safetensors`, shards listed in
`model.safetensors.index.json`, or a `pytorch_model.bin` that loads without unpickling code
(`torch.load(weights_only=True)`)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file


class HFError(ValueError):
    """A Hugging Face folder omnigpt cannot read: missing files, an unsupported architecture, wrong tensors."""


def is_hf_folder(path: str | Path) -> bool:
    path = Path(path)
    return (path / "config.json").is_file() and any(
        (path / f).is_file() for f in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"))


def read_config(path: str | Path) -> dict:
    """config.json as a dict."""
    cfg = read_json(path, "config.json")
    if cfg is None:
        raise HFError(f"{path} is not a Hugging Face model folder: it has no config.json")
    return cfg


def read_json(folder: str | Path, name: str) -> Optional[dict]:
    """The JSON object in the folder's file `name` (config.json, preprocessor_config.json ...), None when the
    folder has no such file."""
    file = Path(folder) / name
    if not file.is_file():
        return None
    try:
        value = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HFError(f"{file}: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise HFError(f"{file}: expected a JSON object, got {type(value).__name__}")
    return value


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of the folder by its Hugging Face name."""
    path = Path(path)
    index = path / "model.safetensors.index.json"
    try:
        if (path / "model.safetensors").is_file():
            return load_file(path / "model.safetensors")
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
            weights: dict[str, torch.Tensor] = {}
            for shard in shards:
                weights.update(load_file(path / shard))
            return weights
    except (SafetensorError, OSError, ValueError, KeyError, RuntimeError) as exc:
        raise HFError(f"{path}: the safetensors weights are unreadable ({type(exc).__name__}: {exc})") from None
    if (path / "pytorch_model.bin").is_file():
        try:
            state = torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises UnpicklingError and others for what it will not load safely
            raise HFError(f"{path / 'pytorch_model.bin'} does not load as plain tensors (weights_only=True: "
                          f"{str(exc).splitlines()[0]}); omnigpt never unpickles code: convert it to "
                          f"safetensors") from None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise HFError(f"{path / 'pytorch_model.bin'} holds no state dict of tensors")
        return state
    raise HFError(f"{path} has no weights: expected model.safetensors, model.safetensors.index.json or "
                  f"pytorch_model.bin")
