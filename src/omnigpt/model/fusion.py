"""Fusion: how encoder outputs enter the decoder, and how a classifier joins its modalities.

- `Projector` maps encoder vectors into the decoder's embedding width (early fusion at placeholders).
- `GatedCrossAttention` lets decoder tokens read encoder outputs; its two gates are tanh(a) with a = 0 at
  initialisation, so inserting it leaves a pretrained language model's outputs unchanged.
- `place_at_placeholders` writes projected vectors into a sequence of token embeddings.
- Late fusion for classification, each over M modalities' pooled vectors (B, M, W) and their presence
  (B, M): `ConcatFusion`, `WeightedSumFusion`, `GatedFusion`, `ProductFusion`; and `AttentionFusion` over
  the modalities' whole vector sequences. (The classifier's `early` fusion runs the GPT over one token stream instead.)
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .attention import CrossAttention, MediaCache
from .block import MLP, Block


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
class ConcatFusion(nn.Module):
    """The modalities' vectors side by side (B, M * W); a missing modality's place holds a learned "absent"
    vector, so the head can tell absence from any real input."""

    def __init__(self, n_modalities: int, width: int):
        super().__init__()
        self.absent = nn.Parameter(torch.randn(n_modalities, width) * 0.02)
        self.out_dim = n_modalities * width

    def forward(self, pooled: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        x = torch.where(present[..., None], pooled, self.absent.to(pooled.dtype))
        return x.flatten(1)


def _masked_softmax(logits: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """softmax over the present entries of each row; a row with none present gets all zeros."""
    w = logits.masked_fill(~present, float("-inf")).softmax(-1)
    return torch.nan_to_num(w, nan=0.0)


class WeightedSumFusion(nn.Module):
    """sum_m w_m v_m with w = softmax of one learned logit per modality, renormalized over the modalities an
    example has; `modality_weights()` reports w with all present."""

    def __init__(self, n_modalities: int, width: int):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(n_modalities))
        self.out_dim = width

    def weights(self, present: torch.Tensor) -> torch.Tensor:
        """(B, M) weights, each row summing to 1 over its present modalities."""
        return _masked_softmax(self.logits.expand(present.shape[0], -1).float(), present)

    def modality_weights(self) -> list[float]:
        return self.logits.detach().float().softmax(-1).tolist()

    def forward(self, pooled: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        return (self.weights(present).to(pooled.dtype)[..., None] * pooled).sum(1)


class GatedFusion(nn.Module):
    """sum_m g_m * tanh(A_m v_m), where the gate vector g_m = sigmoid(G_m [v_1 .. v_M, presence]) is computed
    from all modalities together (a gated multimodal unit): each modality's say depends on the others.
    A missing modality contributes nothing and enters the gates as zeros with its presence flag off."""

    def __init__(self, n_modalities: int, width: int):
        super().__init__()
        self.transform = nn.ModuleList(nn.Linear(width, width) for _ in range(n_modalities))
        self.gate = nn.Linear(n_modalities * (width + 1), n_modalities * width)
        self.out_dim = width

    def gates(self, pooled: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """(B, M, W) gate values in (0, 1), zero for missing modalities."""
        B, M, W = pooled.shape
        keep = present[..., None].to(pooled.dtype)
        inputs = torch.cat([(pooled * keep).flatten(1), present.to(pooled.dtype)], dim=1)
        return torch.sigmoid(self.gate(inputs)).view(B, M, W) * keep

    def forward(self, pooled: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        h = torch.stack([torch.tanh(t(pooled[:, m])) for m, t in enumerate(self.transform)], dim=1)
        return (self.gates(pooled, present) * h).sum(1)


class ProductFusion(nn.Module):
    """Low-rank tensor fusion: the elementwise product of one affine map of each modality's vector,
    prod_m (A_m v_m + b_m). Each output unit is then a product of one feature of every modality, so a label
    that depends on all of them jointly (an AND across modalities) is a simple function of the fused vector,
    where concatenation leaves the head to discover the interaction. A missing modality's factor is 1."""

    def __init__(self, n_modalities: int, width: int):
        super().__init__()
        self.factors = nn.ModuleList(nn.Linear(width, width) for _ in range(n_modalities))
        self.out_dim = width

    def forward(self, pooled: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        out = torch.ones_like(pooled[:, 0])
        for m, factor in enumerate(self.factors):
            out = out * torch.where(present[:, m:m + 1], factor(pooled[:, m]), torch.ones_like(out))
        return out


class AttentionFusion(nn.Module):
    """Cross-modal attention: every modality's vectors (each sequence tagged with a learned modality
    embedding) and a class token go through `layers` bidirectional Transformer blocks; the class token's
    output is the fused vector. Padding and missing modalities are masked out of the attention."""

    def __init__(self, n_modalities: int, width: int, n_head: int, layers: int, dropout: float = 0.0):
        super().__init__()
        self.kind = nn.Parameter(torch.randn(n_modalities, width) * 0.02)
        self.cls = nn.Parameter(torch.randn(width) * 0.02)
        self.blocks = nn.ModuleList(Block(width, n_head, dropout=dropout, causal=False) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.out_dim = width

    def forward(self, sequences: list[torch.Tensor], valid: list[torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        """sequences[m] (B, T_m, W), valid[m] (B, T_m) boolean, present (B, M) -> (B, W)."""
        B = present.shape[0]
        parts = [self.cls.to(sequences[0].dtype).expand(B, 1, -1)]
        keep = [torch.ones(B, 1, dtype=torch.bool, device=present.device)]
        for m, (x, ok) in enumerate(zip(sequences, valid)):
            parts.append(x + self.kind[m].to(x.dtype))
            keep.append(ok & present[:, m:m + 1])
        x = torch.cat(parts, dim=1)
        mask = torch.cat(keep, dim=1)[:, None, None, :]
        for block in self.blocks:
            x = block(x, None, mask)
        return self.norm(x[:, 0])
