"""The optimizer (AdamW, or Muon with AdamW, see `muon`) with decay / no-decay parameter groups, and the
learning-rate schedule."""
from __future__ import annotations

import math
from typing import Iterable, Optional

import torch
from torch import nn

from ..config import TrainConfig
from .muon import MuonAdamW, hidden_matrices


def param_groups(params: Iterable[nn.Parameter], weight_decay: float) -> list[dict]:
    """Matrices (linear and embedding weights) get weight decay; biases and norm gains do not."""
    decay, no_decay = [], []
    seen: set[int] = set()
    for p in params:
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer over the trainable parameters (train.optimizer: AdamW, or Muon for the hidden matrices
    with AdamW for the rest); each part named in cfg.lr_scale gets its own groups, whose `lr_scale`
    multiplies the scheduled rate (see `set_learning_rate`)."""
    muon = hidden_matrices(model) if cfg.optimizer == "muon" else set()
    muon &= {id(p) for p in model.parameters() if p.requires_grad}  # none under LoRA: then AdamW, fused

    def split(params: list[nn.Parameter]) -> list[dict]:
        own = [p for p in params if p.requires_grad]
        groups = param_groups([p for p in own if id(p) not in muon], cfg.weight_decay)
        if muon:  # Muon's matrices decay like AdamW's
            groups.append({"params": [p for p in own if id(p) in muon], "weight_decay": cfg.weight_decay,
                           "muon": True})
        return groups

    groups = []
    taken: set[int] = set()
    for part, scale in cfg.lr_scale.items():
        own = [p for m in model.modules_to_freeze([part]) for p in m.parameters() if id(p) not in taken]
        taken.update(id(p) for p in own)
        groups += [dict(g, lr_scale=scale) for g in split(own) if g["params"]]
    rest = [p for p in model.parameters() if id(p) not in taken]
    # Without lr_scale the AdamW groups are kept even when empty: the layout runs saved before it expect.
    groups += [g for g in split(rest) if g["params"] or not (cfg.lr_scale or g.get("muon"))]
    if muon:
        return MuonAdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)
    # The fused kernel is the fastest AdamW on both CPU and CUDA in current PyTorch.
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=True)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """The scheduled rate on every group, times the group's `lr_scale` (train.lr_scale)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def learning_rate(step: int, cfg: TrainConfig, time_fraction: Optional[float] = None) -> float:
    """Linear warmup over warmup_steps, then cosine decay from lr to min_lr at max_steps; with
    `time_fraction` (the share of this call's time budget spent, for train.decay_over "minutes"), the
    cosine follows that share instead of the step count. With train.decay_fraction f < 1 the rate holds at
    lr until a share 1 - f of the way and the cosine runs over the rest."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if time_fraction is not None:
        progress = min(1.0, max(0.0, time_fraction))
    elif step >= cfg.max_steps:
        return cfg.min_lr
    else:
        progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    progress = max(0.0, progress - (1.0 - cfg.decay_fraction)) / cfg.decay_fraction
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)
