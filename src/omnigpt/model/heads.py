"""A classifier's late fusion: each modality's vectors pooled to one (`Pool`), then joined into the vector its
head reads. Each fusion takes M modalities' pooled vectors (B, M, W) and their presence (B, M):
`ConcatFusion`, `WeightedSumFusion`, `GatedFusion`, `ProductFusion`; `AttentionFusion` reads the modalities'
whole vector sequences instead. (The classifier's `early` fusion runs the GPT over one token stream.)
"""
from __future__ import annotations


import torch
from torch import nn

from .block import Block


class Pool(nn.Module):
    """(B, T, W) vectors and their validity (B, T) -> (B, W): `mean`, `cls` or `attention` (see
    ClassifierConfig). A row without valid vectors gives zeros."""

    def __init__(self, kind: str, width: int, n_head: int, dropout: float = 0.0):
        super().__init__()
        self.kind = kind
        if kind == "attention":
            self.proj = nn.Linear(width, width)
            self.score = nn.Linear(width, 1, bias=False)
        elif kind == "cls":
            self.cls = nn.Parameter(torch.randn(width) * 0.02)
            self.block = Block(width, n_head, dropout=dropout, causal=False)
            self.norm = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        keep = valid[..., None].to(x.dtype)
        if self.kind == "mean":
            return (x * keep).sum(1) / keep.sum(1).clamp(min=1.0)
        if self.kind == "attention":
            scores = self.score(torch.tanh(self.proj(x))).squeeze(-1).float().masked_fill(~valid, float("-inf"))
            w = torch.nan_to_num(scores.softmax(-1), nan=0.0).to(x.dtype)
            return (w[..., None] * x).sum(1)
        B = x.shape[0]
        x = torch.cat([self.cls.to(x.dtype).expand(B, 1, -1), x], dim=1)
        mask = torch.cat([torch.ones(B, 1, dtype=torch.bool, device=x.device), valid], dim=1)[:, None, None, :]
        return self.norm(self.block(x, None, mask)[:, 0])


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
