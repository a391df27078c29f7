"""The Transformer block (pre-norm: x + attn(ln(x)), then x + mlp(ln(x))), shared by every stack in omnigpt."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .attention import KVCache, SelfAttention


class MLP(nn.Module):
    """Position-wise feed-forward: Linear -> GELU (tanh form, as GPT-2) -> Linear."""

    def __init__(self, n_embd: int, hidden: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        self.fc = nn.Linear(n_embd, hidden, bias=bias)
        self.act = nn.GELU(approximate="tanh")
        self.proj = nn.Linear(hidden, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(self.act(self.fc(x))))


class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int, mlp_ratio: int = 4, dropout: float = 0.0, bias: bool = True,
                 norm_eps: float = 1e-5, rope_theta: Optional[float] = None, causal: bool = True):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, eps=norm_eps, bias=bias)
        self.attn = SelfAttention(n_embd, n_head, dropout, bias, rope_theta, causal)
        self.ln_2 = nn.LayerNorm(n_embd, eps=norm_eps, bias=bias)
        self.mlp = MLP(n_embd, mlp_ratio * n_embd, dropout, bias)

    def forward(self, x: torch.Tensor, positions: Optional[torch.Tensor] = None,
                mask: Optional[torch.Tensor] = None, cache: Optional[KVCache] = None) -> torch.Tensor:
        """x (B, T, C) -> (B, T, C)."""
        x = x + self.attn(self.ln_1(x), positions, mask, cache)
        return x + self.mlp(self.ln_2(x))
