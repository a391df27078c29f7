"""The audio encoder: log-mel frames (N, n_mels, frames) -> vectors (N, tokens, width), with lengths.

Two stride-2 1-D convolutions cut the frame rate by 4 (100 -> 25 per second at a 10 ms hop), the shared
Transformer block reads the whole clip in both directions, and optional average pooling bounds how many
vectors a second of audio costs. Clips of different lengths share a batch: every stage masks the padding,
so a clip gives the same vectors alone or padded beside a longer one.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import AudioConfig
from .attention import sinusoidal_table
from .block import Block


def lengths_after_stride(lengths: torch.Tensor, stride: int) -> torch.Tensor:
    """Valid lengths after a stride-`stride` stage with ceil semantics."""
    return torch.div(lengths + stride - 1, stride, rounding_mode="floor")


def valid_mask(lengths: torch.Tensor, size: int) -> torch.Tensor:
    """(N,) lengths -> (N, size) boolean, True at real (not padding) positions."""
    return torch.arange(size, device=lengths.device)[None, :] < lengths[:, None]


class AudioEncoder(nn.Module):
    def __init__(self, cfg: AudioConfig):
        super().__init__()
        self.cfg = cfg
        self.conv1 = nn.Conv1d(cfg.n_mels, cfg.width, 3, stride=2, padding=1)
        self.conv2 = nn.Conv1d(cfg.width, cfg.width, 3, stride=2, padding=1)
        max_len = cfg.tokens_for_frames(cfg.max_frames) * cfg.pool + 1
        if cfg.position == "sinusoidal":
            self.register_buffer("pos_table", sinusoidal_table(max_len, cfg.width), persistent=False)
        rope = 10000.0 if cfg.position == "rope" else None
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg.width, cfg.n_head, dropout=cfg.dropout, rope_theta=rope, causal=False)
                                    for _ in range(cfg.n_layer))
        self.norm = nn.LayerNorm(cfg.width)
        self.out_dim = cfg.width

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features (N, n_mels, frames) padded with anything past each clip's length; lengths (N,) in frames.

        Returns vectors (N, tokens, width), zero past each clip's end, and their lengths (N,).
        """
        if features.shape[-1] > self.cfg.max_frames:
            raise ValueError(f"audio of {features.shape[-1]} frames is longer than audio.max_seconds "
                             f"({self.cfg.max_seconds} s = {self.cfg.max_frames} frames): cut it into windows")
        x = features * valid_mask(lengths, features.shape[-1])[:, None, :].to(features.dtype)
        lengths = lengths_after_stride(lengths, 2)
        x = F.gelu(self.conv1(x)) * valid_mask(lengths, (x.shape[-1] + 1) // 2)[:, None, :].to(x.dtype)
        lengths = lengths_after_stride(lengths, 2)
        x = F.gelu(self.conv2(x))
        T = x.shape[-1]
        valid = valid_mask(lengths, T)
        x = x.transpose(1, 2)  # (N, T, width)
        positions = torch.arange(T, device=x.device)[None].expand(x.shape[0], T)
        if self.cfg.position == "sinusoidal":
            x = x + self.pos_table[:T].to(x.dtype)
        x = self.drop(x)
        mask = valid[:, None, None, :]
        for block in self.blocks:
            x = block(x, positions, mask)
        x = self.norm(x) * valid[..., None].to(x.dtype)
        if self.cfg.pool > 1:
            x, lengths = self._pool(x, valid, lengths)
        return x, lengths

    def _pool(self, x: torch.Tensor, valid: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean of each group of `pool` real vectors (a clip's last group may be shorter)."""
        p = self.cfg.pool
        m = valid.to(x.dtype)[:, None, :]
        total = F.avg_pool1d(x.transpose(1, 2) * m, p, p, ceil_mode=True)
        count = F.avg_pool1d(m, p, p, ceil_mode=True)
        pooled = (total / count.clamp(min=1e-6)).transpose(1, 2)
        lengths = lengths_after_stride(lengths, p)
        return pooled * valid_mask(lengths, pooled.shape[1])[..., None].to(x.dtype), lengths
