"""The audio encoder: log-mel frames (N, n_mels, frames) -> vectors (N, tokens, width), with lengths.

Two stride-2 1-D convolutions cut the frame rate by 4 (100 -> 25 per second at a 10 ms hop), the shared
Transformer block reads the whole clip in both directions, and optional average pooling bounds how many
vectors a second of audio costs. Clips of different lengths share a batch: every stage masks the padding,
so a clip gives the same vectors alone or padded beside a longer one.

`audio.encoder: whisper` builds Whisper's encoder instead (its weights load with `interop.whisper`): the first
conv keeps the frame rate, a fixed table of positions is added (a buffer saved with the weights, as Whisper's
checkpoints carry it), and the MLP's GELU is exact. With `audio.pad_to_window` every clip spans the whole
window and nothing is masked, which is what Whisper computes.
"""
from __future__ import annotations

import math

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


def whisper_positions(length: int, width: int) -> torch.Tensor:
    """Whisper's position table (length, width): sines of width / 2 timescales spaced geometrically from 1 to
    10000 positions, then the cosines of the same."""
    half = width // 2
    rates = torch.exp(-math.log(10000.0) / (half - 1) * torch.arange(half, dtype=torch.float32))
    angles = torch.arange(length, dtype=torch.float32)[:, None] * rates[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class AudioEncoder(nn.Module):
    def __init__(self, cfg: AudioConfig):
        super().__init__()
        self.cfg = cfg
        whisper = cfg.encoder == "whisper"
        self.conv1 = nn.Conv1d(cfg.n_mels, cfg.width, 3, stride=1 if whisper else 2, padding=1)
        self.conv2 = nn.Conv1d(cfg.width, cfg.width, 3, stride=2, padding=1)
        if whisper:  # persistent: imported weights bring their own table
            self.register_buffer("position_table", whisper_positions(-(-cfg.max_frames // 2), cfg.width))
        elif cfg.position == "sinusoidal":
            max_len = cfg.tokens_for_frames(cfg.max_frames) * cfg.pool + 1
            self.register_buffer("pos_table", sinusoidal_table(max_len, cfg.width), persistent=False)
        rope = 10000.0 if cfg.position == "rope" else None
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg.width, cfg.n_head, dropout=cfg.dropout, rope_theta=rope, causal=False,
                                          mlp_hidden=cfg.mlp_hidden, activation="gelu" if whisper else "gelu_tanh")
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
        if self.cfg.pad_to_window and features.shape[-1] != self.cfg.max_frames:
            raise ValueError(f"audio.pad_to_window: features must span the window of {self.cfg.max_frames} frames "
                             f"({self.cfg.max_seconds:g} s), got {features.shape[-1]}; Inputs.audio pads them")
        x = features * valid_mask(lengths, features.shape[-1])[:, None, :].to(features.dtype)
        lengths = lengths_after_stride(lengths, self.conv1.stride[0])
        x = F.gelu(self.conv1(x))
        x = x * valid_mask(lengths, x.shape[-1])[:, None, :].to(x.dtype)
        lengths = lengths_after_stride(lengths, 2)
        x = F.gelu(self.conv2(x))
        valid = valid_mask(lengths, x.shape[-1])
        x = x.transpose(1, 2)  # (N, T, width)
        pool_first = self.cfg.pool > 1 and self.cfg.pool_at == "start"
        if pool_first:
            x, lengths = self._pool(x, valid, lengths)
            valid = valid_mask(lengths, x.shape[1])
        T = x.shape[1]
        positions = torch.arange(T, device=x.device)[None].expand(x.shape[0], T)
        if self.cfg.encoder == "whisper":
            x = x + self.position_table[:T].to(x.dtype)
        elif self.cfg.position == "sinusoidal":
            x = x + self.pos_table[:T].to(x.dtype)
        x = self.drop(x)
        mask = valid[:, None, None, :]
        for block in self.blocks:
            x = block(x, positions, mask)
        x = self.norm(x) * valid[..., None].to(x.dtype)
        if self.cfg.pool > 1 and not pool_first:
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
