"""Image encoders: a small CNN, a patch ViT, and the vision towers of CLIP and SigLIP. Each maps images
(B, 3, S, S) to a grid of vectors (B, N, out_dim).

The grid keeps the image's layout: tokens are in raster order (top row first) and carry learned positions
(CNN, ViT: a row vector plus a column vector; the towers: one vector per patch, as they were pretrained),
so the decoder can tell where in the picture a token sits.
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
        self.blocks = nn.ModuleList(_blocks(cfg, cfg.n_layer))
        self.norm = nn.LayerNorm(cfg.width, eps=cfg.norm_eps)
        self.out_dim = cfg.width * (cfg.reduce_factor ** 2 if cfg.reduce == "pixel_shuffle" else 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, S, S) normalized -> (B, N, out_dim), N = vision.tokens."""
        x = self.patch(images)
        side = x.shape[-1]
        x = self.drop(self.pos(x.flatten(2).transpose(1, 2)))
        for block in self.blocks:
            x = block(x)
        return reduce_tokens(self.norm(x), self.cfg, side)


class TowerEncoder(nn.Module):
    """The vision transformer of CLIP or SigLIP, laid out so that their pretrained weights load one to one
    (`interop.clip`).

    clip: patches by a conv without bias, a learned class token in front of them, a learned position for
    each of the patches + 1, a LayerNorm (pre_norm), then pre-norm blocks (quick_gelu MLP); the class token
    is dropped from the output. siglip: patches by a conv with bias, a learned position each, the blocks.
    Both hand on the output of layer `feature_layer` (the layers after it are not built), through the
    tower's final LayerNorm when `post_norm`, then reduce the grid like the other encoders.
    """

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.cfg = cfg
        clip = cfg.encoder == "clip"
        self.side = cfg.feature_side()
        self.patch = nn.Conv2d(3, cfg.width, cfg.patch_size, stride=cfg.patch_size, bias=not clip)
        self.cls = nn.Parameter(torch.randn(cfg.width) * 0.02) if clip else None
        self.pos = nn.Parameter(torch.randn(self.side ** 2 + int(clip), cfg.width) * 0.02)
        self.pre_norm = nn.LayerNorm(cfg.width, eps=cfg.norm_eps) if clip else nn.Identity()
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(_blocks(cfg, cfg.layers_used()))
        self.post_norm = nn.LayerNorm(cfg.width, eps=cfg.norm_eps) if cfg.post_norm else nn.Identity()
        self.out_dim = cfg.width * (cfg.reduce_factor ** 2 if cfg.reduce == "pixel_shuffle" else 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, S, S) normalized, S = vision.image_size -> (B, N, out_dim), N = vision.tokens."""
        size = self.cfg.image_size
        if images.shape[-2:] != (size, size):
            raise ValueError(f"a {self.cfg.encoder} tower takes images of {size} x {size} pixels (its positions "
                             f"are learned for that grid), got {tuple(images.shape[-2:])}")
        x = self.patch(images).flatten(2).transpose(1, 2)
        if self.cls is not None:
            x = torch.cat([self.cls.to(x.dtype).expand(x.shape[0], 1, -1), x], dim=1)
        x = self.drop(self.pre_norm(x + self.pos.to(x.dtype)))
        for block in self.blocks:
            x = block(x)
        if self.cls is not None:
            x = x[:, 1:]
        return reduce_tokens(self.post_norm(x), self.cfg, self.side)


def _blocks(cfg: VisionConfig, n: int) -> list[Block]:
    """n bidirectional Transformer blocks of the config's width, MLP and norm."""
    return [Block(cfg.width, cfg.n_head, dropout=cfg.dropout, norm_eps=cfg.norm_eps, causal=False,
                  mlp_hidden=cfg.mlp_hidden, activation=cfg.activation) for _ in range(n)]


def reduce_tokens(x: torch.Tensor, cfg: VisionConfig, side: int) -> torch.Tensor:
    """Token reduction on a token grid x (B, side * side, C) in raster order -> (B, N, out_dim)."""
    if cfg.reduce == "none":
        return x
    grid = x.transpose(1, 2).reshape(x.shape[0], -1, side, side)
    return reduce_grid(grid, cfg.reduce, cfg.grid, cfg.reduce_factor).flatten(2).transpose(1, 2)


ENCODERS = {"cnn": CNNEncoder, "vit": ViTEncoder, "clip": TowerEncoder, "siglip": TowerEncoder}


def build_vision_encoder(cfg: VisionConfig) -> nn.Module:
    return ENCODERS[cfg.encoder](cfg)
