"""Image encoders: a small CNN and a patch ViT. Both map images (B, 3, S, S) to a grid of vectors (B, N, width).

The grid keeps the image's layout: tokens are in raster order (top row first) and carry learned 2-D
positions (a row vector plus a column vector), so the decoder can tell where in the picture a token sits.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import VisionConfig
from .block import Block


class Positions2D(nn.Module):
    """Learned 2-D positions: position (r, c) of a side x side grid is row[r] + col[c]."""

    def __init__(self, side: int, width: int):
        super().__init__()
        self.side = side
        self.row = nn.Parameter(torch.randn(side, width) * 0.02)
        self.col = nn.Parameter(torch.randn(side, width) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, side * side, width) in raster order -> x plus its positions."""
        pos = (self.row[:, None, :] + self.col[None, :, :]).reshape(self.side * self.side, -1)
        return x + pos.to(x.dtype)


def reduce_grid(x: torch.Tensor, mode: str, grid: int, factor: int) -> torch.Tensor:
    """Token reduction on a feature map x (B, C, h, w).

    pool: adaptive average pooling to grid x grid (any input size gives the same token count).
    pixel_shuffle: each factor x factor patch becomes one token with factor^2 times the channels.
    """
    if mode == "pool":
        return F.adaptive_avg_pool2d(x, min(grid, x.shape[-1]))
    if mode == "pixel_shuffle":
        return F.pixel_unshuffle(x, factor)
    return x


class CNNEncoder(nn.Module):
    """Stride-2 conv stages (conv, norm, GELU, conv, norm, GELU), a 1x1 conv to `width`, then reduction."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.cfg = cfg
        stages, c_in = [], 3
        for c in cfg.channels:
            stages += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.GroupNorm(min(8, c), c), nn.GELU(),
                       nn.Conv2d(c, c, 3, padding=1), nn.GroupNorm(min(8, c), c), nn.GELU()]
            c_in = c
        self.stages = nn.Sequential(*stages)
        self.out = nn.Conv2d(c_in, cfg.width, 1)
        self.out_dim = cfg.width * (cfg.reduce_factor ** 2 if cfg.reduce == "pixel_shuffle" else 1)
        self.pos = Positions2D(cfg.token_side(), self.out_dim)
        self.norm = nn.LayerNorm(self.out_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, S, S) normalized -> (B, N, out_dim), N = vision.tokens."""
        x = self.out(self.stages(images))
        x = reduce_grid(x, self.cfg.reduce, self.cfg.grid, self.cfg.reduce_factor)
        x = x.flatten(2).transpose(1, 2)
        return self.norm(self.pos(x))


class ViTEncoder(nn.Module):
    """Non-overlapping patches -> linear embedding + 2-D positions -> bidirectional Transformer blocks."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.cfg = cfg
        side = cfg.feature_side()
        self.patch = nn.Conv2d(3, cfg.width, cfg.patch_size, stride=cfg.patch_size)
        self.pos = Positions2D(side, cfg.width)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg.width, cfg.n_head, dropout=cfg.dropout, causal=False)
                                    for _ in range(cfg.n_layer))
        self.norm = nn.LayerNorm(cfg.width)
        self.out_dim = cfg.width * (cfg.reduce_factor ** 2 if cfg.reduce == "pixel_shuffle" else 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, S, S) normalized -> (B, N, out_dim), N = vision.tokens."""
        x = self.patch(images)
        side = x.shape[-1]
        x = self.drop(self.pos(x.flatten(2).transpose(1, 2)))
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        if self.cfg.reduce != "none":
            grid = x.transpose(1, 2).reshape(x.shape[0], -1, side, side)
            x = reduce_grid(grid, self.cfg.reduce, self.cfg.grid, self.cfg.reduce_factor).flatten(2).transpose(1, 2)
        return x


def build_vision_encoder(cfg: VisionConfig) -> nn.Module:
    return ViTEncoder(cfg) if cfg.encoder == "vit" else CNNEncoder(cfg)
