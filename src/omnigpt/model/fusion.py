"""Decoder fusion: how encoder outputs enter the decoder.

- `Projector` maps encoder vectors into the decoder's embedding width (early fusion at placeholders).
- `GatedCrossAttention` lets decoder tokens read encoder outputs; its two gates are tanh(a) with a = 0 at
  initialisation, so inserting it leaves a pretrained language model's outputs unchanged.
- `place_at_placeholders` writes projected vectors into a sequence of token embeddings.

A classifier's late fusion is in `model.heads`.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .attention import CrossAttention, MediaCache
from .block import MLP


class Projector(nn.Module):
    """Encoder width -> decoder width: one linear layer, or Linear-GELU-Linear (`mlp`)."""

    def __init__(self, in_dim: int, out_dim: int, kind: str = "mlp"):
        super().__init__()
        if kind == "linear":
            self.net = nn.Linear(in_dim, out_dim)
        else:
            self.net = nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in_dim) -> (..., out_dim)."""
        return self.net(x)


class GatedCrossAttention(nn.Module):
    """x + tanh(g_attn) * xattn(ln(x), media), then + tanh(g_ff) * mlp(ln(x)); both gates start at 0.

    Tokens that see no image (text before the first `<image>`, or a row without images) pass through
    unchanged, so a text-only prompt gives the same output alone or beside image prompts.
    """

    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0, bias: bool = True, norm_eps: float = 1e-5):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, eps=norm_eps, bias=bias)
        self.attn = CrossAttention(n_embd, n_head, n_embd, dropout, bias)
        self.ln_2 = nn.LayerNorm(n_embd, eps=norm_eps, bias=bias)
        self.mlp = MLP(n_embd, 4 * n_embd, dropout, bias)
        self.attn_gate = nn.Parameter(torch.zeros(1))
        self.ff_gate = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, media: Optional[torch.Tensor], visible: torch.Tensor,
                cache: Optional[MediaCache] = None) -> torch.Tensor:
        """x (B, T, C); media (B, M, C) projected encoder outputs; visible (B, T, M) -> (B, T, C)."""
        sees = visible.any(-1, keepdim=True).to(x.dtype)  # (B, T, 1)
        x = x + sees * torch.tanh(self.attn_gate) * self.attn(self.ln_1(x), media, visible, cache)
        return x + sees * torch.tanh(self.ff_gate) * self.mlp(self.ln_2(x))


def place_at_placeholders(embeds: torch.Tensor, is_placeholder: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """Replace the placeholder positions of embeds (B, T, C) by vectors (N, n, C), in reading order.

    is_placeholder (B, T) boolean must mark exactly N * n positions: row by row, left to right, the first
    n placeholders take image 0's vectors, the next n image 1's, and so on.
    """
    flat = vectors.reshape(-1, vectors.shape[-1]).to(embeds.dtype)
    out = embeds.clone()
    out[is_placeholder] = flat
    return out


# ------------------------------------------------------------------------------ classification: late fusion
