"""LoRA: low-rank adapters on chosen linear layers. The base weights stay fixed and only the adapters train.

A wrapped layer computes `base(x) + dropout(x) @ A^T @ B^T * alpha / rank`, with A (rank x in) random and B
(out x rank) zero, so training starts exactly from the base model. The layer keeps its base `weight` and
`bias` under their own names, so a checkpoint of an adapted model is the base's state dict plus `lora_a` and
`lora_b` entries. Adapters also save apart (`adapter.safetensors` with `adapter.json`: a few percent of
the base) and load onto the same base; `merge` folds B A alpha / rank into the weights and gives back a plain
model that computes the same function.

Targets are patterns over module names (`fnmatch`, e.g. `*.attn.qkv`, `gpt.blocks.*.mlp.*`): the decoder and
the encoders of a multimodal model alike.
"""
from __future__ import annotations

import json
import math
from fnmatch import fnmatch
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from ..config import ConfigError, LoraConfig

ADAPTER_WEIGHTS = "adapter.safetensors"
ADAPTER_CONFIG = "adapter.json"


class LoRALinear(nn.Module):
    """A linear layer with a trainable low-rank update beside its frozen weight."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight
        self.bias = base.bias
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        self.rank, self.scale = rank, alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, self.in_features, device=base.weight.device,
                                               dtype=base.weight.dtype))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.lora_b = nn.Parameter(torch.zeros(self.out_features, rank, device=base.weight.device,
                                               dtype=base.weight.dtype))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias) + F.linear(F.linear(self.drop(x), self.lora_a),
                                                              self.lora_b) * self.scale

    def merged(self) -> nn.Linear:
        """A plain linear layer computing the same function."""
        out = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                        device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            out.weight.copy_(self.weight + (self.lora_b @ self.lora_a) * self.scale)
            if self.bias is not None:
                out.bias.copy_(self.bias)
        return out


def _targets(model: nn.Module, patterns: Sequence[str]) -> list[str]:
    return [name for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and any(fnmatch(name, p) for p in patterns)]


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def apply_lora(model: nn.Module, cfg: LoraConfig) -> list[str]:
    """Wrap the linear layers whose names match cfg.targets, freeze every other parameter; the names wrapped.
    A ConfigError when no layer matches (naming some that exist)."""
    names = _targets(model, cfg.targets)
    if not names:
        linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        raise ConfigError(f"train.lora.targets {cfg.targets} match no linear layer of this model; some of its "
                          f"layers: {linear[:6]}")
    model.requires_grad_(False)
    for name in names:
        _replace(model, name, LoRALinear(model.get_submodule(name), cfg.rank, cfg.alpha, cfg.dropout))
    return names


def merge(model: nn.Module) -> nn.Module:
    """Fold every adapter into its layer's weight (in place); the model is then a plain one again."""
    for name, m in list(model.named_modules()):
        if isinstance(m, LoRALinear):
            _replace(model, name, m.merged())
    model.requires_grad_(True)
    return model


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapters' tensors by their names in the model."""
    return {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()
            if k.endswith((".lora_a", ".lora_b"))}


def save_adapter(model: nn.Module, cfg: LoraConfig, folder: str | Path) -> Path:
    """Write the adapters and their settings into `folder` (`adapter.safetensors`, `adapter.json`)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(adapter_state(model), str(folder / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    settings = {"rank": cfg.rank, "alpha": cfg.alpha, "dropout": cfg.dropout, "targets": list(cfg.targets)}
    (folder / ADAPTER_CONFIG).write_text(json.dumps(settings, indent=2) + "\n")
    return folder


def is_adapter_folder(folder: str | Path) -> bool:
    return (Path(folder) / ADAPTER_WEIGHTS).is_file() and (Path(folder) / ADAPTER_CONFIG).is_file()


def load_adapter(model: nn.Module, folder: str | Path) -> LoraConfig:
    """Wrap `model` as the adapters in `folder` were trained and load them; their settings."""
    folder = Path(folder)
    if not is_adapter_folder(folder):
        raise ConfigError(f"{folder} holds no adapter: expected {ADAPTER_WEIGHTS} and {ADAPTER_CONFIG} (a LoRA "
                          f"run writes them into each checkpoint)")
    try:
        settings = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8"))
        cfg = LoraConfig(**settings)
        cfg.validate()
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{folder / ADAPTER_CONFIG} is not an adapter config: {exc}") from None
    apply_lora(model, cfg)
    tensors = load_file(folder / ADAPTER_WEIGHTS)
    own = adapter_state(model)
    if set(tensors) != set(own):
        missing, unexpected = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
        raise ConfigError(f"{folder / ADAPTER_WEIGHTS} does not fit this model: missing {missing[:4]}, "
                          f"unexpected {unexpected[:4]} (an adapter loads onto the base it was trained on)")
    for name, tensor in tensors.items():
        if tuple(tensor.shape) != tuple(own[name].shape):
            raise ConfigError(f"{folder / ADAPTER_WEIGHTS}: {name} has shape {tuple(tensor.shape)}, this model "
                              f"needs {tuple(own[name].shape)}")
    model.load_state_dict(tensors, strict=False)
    return cfg
