"""The Transformer block (pre-norm: x + attn(norm(x)), then x + mlp(norm(x))), shared by every stack in omnigpt.

Its defaults are GPT-2's layout (LayerNorm, a GELU MLP, multi-head attention, biases everywhere); the options
give the Llama family's (RMSNorm, a SwiGLU MLP, grouped-query attention, no biases; q/k/v biases alone for
Qwen2).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .attention import KVCache, Rope, SelfAttention


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x): the GELU approximation OpenAI's CLIP was trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


def activation_layer(kind: str) -> nn.Module:
    """`gelu_tanh` (GPT-2's, the default), `gelu` (exact, erf) or `quick_gelu` (CLIP's)."""
    if kind == "gelu_tanh":
        return nn.GELU(approximate="tanh")
    if kind == "gelu":
        return nn.GELU()
    if kind == "quick_gelu":
        return QuickGELU()
    raise ValueError(f"activation {kind!r} is not supported (gelu_tanh, gelu, quick_gelu)")


class MLP(nn.Module):
    """Position-wise feed-forward: Linear -> GELU (tanh form, as GPT-2, unless `activation` says) -> Linear."""

    def __init__(self, n_embd: int, hidden: int, dropout: float = 0.0, bias: bool = True,
                 activation: str = "gelu_tanh"):
        super().__init__()
        self.fc = nn.Linear(n_embd, hidden, bias=bias)
        self.act = activation_layer(activation)
        self.proj = nn.Linear(hidden, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(self.act(self.fc(x))))


class SwiGLU(nn.Module):
    """Gated feed-forward: proj(silu(gate(x)) * up(x)) (Shazeer, GLU variants; Llama's MLP)."""

    def __init__(self, n_embd: int, hidden: int, dropout: float = 0.0, bias: bool = False):
        super().__init__()
        self.gate = nn.Linear(n_embd, hidden, bias=bias)
        self.up = nn.Linear(n_embd, hidden, bias=bias)
        self.proj = nn.Linear(hidden, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.silu(self.gate(x)) * self.up(x)))


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight, computed in fp32 whatever the input's dtype (as Llama does)."""

    def __init__(self, n_embd: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(n_embd))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def norm_layer(kind: str, n_embd: int, eps: float, bias: bool) -> nn.Module:
    """`layernorm` (with a bias unless bias=False) or `rmsnorm` (a gain only)."""
    return RMSNorm(n_embd, eps) if kind == "rmsnorm" else nn.LayerNorm(n_embd, eps=eps, bias=bias)


class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int, mlp_ratio: int = 4, dropout: float = 0.0, bias: bool = True,
                 norm_eps: float = 1e-5, rope_theta: Optional[float] = None, causal: bool = True, *,
                 norm: str = "layernorm", mlp: str = "gelu", mlp_hidden: Optional[int] = None,
                 n_kv_head: Optional[int] = None, qkv_bias: Optional[bool] = None, rope: Optional[Rope] = None,
                 activation: str = "gelu_tanh"):
        """rope_theta: rotary positions with this base (rope: the same with a scaling, for imported models).
        mlp_hidden: the MLP's inner width (default mlp_ratio * n_embd). n_kv_head: key/value heads for
        grouped-query attention (default n_head). qkv_bias: biases on q, k, v (default: bias). activation:
        the GELU MLP's nonlinearity (see `activation_layer`)."""
        super().__init__()
        hidden = mlp_hidden or mlp_ratio * n_embd
        self.ln_1 = norm_layer(norm, n_embd, norm_eps, bias)
        self.attn = SelfAttention(n_embd, n_head, dropout, bias, rope_theta, causal, n_kv_head=n_kv_head,
                                  qkv_bias=qkv_bias, rope=rope)
        self.ln_2 = norm_layer(norm, n_embd, norm_eps, bias)
        self.mlp = SwiGLU(n_embd, hidden, dropout, bias) if mlp == "swiglu" else \
            MLP(n_embd, hidden, dropout, bias, activation)

    def forward(self, x: torch.Tensor, positions: Optional[torch.Tensor] = None,
                mask: Optional[torch.Tensor] = None, cache: Optional[KVCache] = None) -> torch.Tensor:
        """x (B, T, C) -> (B, T, C)."""
        x = x + self.attn(self.ln_1(x), positions, mask, cache)
        return x + self.mlp(self.ln_2(x))
