"""Multi-head self-attention with positions (RoPE here; learned/sinusoidal live in the embedding) and a KV cache.

Shapes: B batch, T new tokens, S cached + new tokens, H heads, D head size, C = H * D model width.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


class KVCache:
    """Preallocated keys and values of one attention layer: (B, H, max_len, D) each, filled left to right."""

    def __init__(self, batch: int, n_head: int, max_len: int, head_size: int, dtype: torch.dtype,
                 device: torch.device | str = "cpu"):
        self.k = torch.zeros(batch, n_head, max_len, head_size, dtype=dtype, device=device)
        self.v = torch.zeros_like(self.k)
        self.length = 0

    @property
    def max_len(self) -> int:
        return self.k.shape[2]

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, H, T, D) after what is cached; return all keys and values so far (B, H, S, D)."""
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache full: {end} positions needed, {self.max_len} allocated")
        self.k[:, :, self.length:end] = k
        self.v[:, :, self.length:end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]

    def reorder(self, index: torch.Tensor) -> None:
        """Keep batch rows `index` (beam search: follow the surviving beams)."""
        self.k = self.k.index_select(0, index)
        self.v = self.v.index_select(0, index)

    def repeat_rows(self, n: int) -> None:
        """Copy the single filled row to n rows."""
        self.k = self.k.expand(n, -1, -1, -1).contiguous()
        self.v = self.v.expand(n, -1, -1, -1).contiguous()


class MediaCache:
    """Keys and values a cross-attention layer computed from encoder outputs, kept for every decoding step.

    k, v (B, H, M, D); after (B, M) boolean: the media that tokens after the prompt may read (those of each
    row's last image). Empty until the prompt's forward pass fills them.
    """

    def __init__(self):
        self.k: Optional[torch.Tensor] = None
        self.v: Optional[torch.Tensor] = None
        self.after: Optional[torch.Tensor] = None

    def reorder(self, index: torch.Tensor) -> None:
        if self.k is not None:
            self.k, self.v = self.k.index_select(0, index), self.v.index_select(0, index)
            self.after = self.after.index_select(0, index)

    def repeat_rows(self, n: int) -> None:
        if self.k is not None:
            self.k = self.k.expand(n, -1, -1, -1).contiguous()
            self.v = self.v.expand(n, -1, -1, -1).contiguous()
            self.after = self.after.expand(n, -1).contiguous()


class Rope:
    """Rotary positions: base wavelength `theta`, and optionally a `scaling` that stretches them to a longer
    context, as Hugging Face configs write it: {"rope_type" (or "type"): "linear", "factor": f} divides every
    frequency by f; "llama3" (Llama 3.1) divides only the low frequencies, blending over a middle band, with
    "factor", "low_freq_factor", "high_freq_factor" and "original_max_position_embeddings"."""

    def __init__(self, theta: float = 10000.0, scaling: Optional[dict] = None):
        self.theta = theta
        self.scaling = dict(scaling) if scaling else None
        # The tables of the last positions seen: every layer of a stack shares this Rope and gets the same
        # positions tensor, so they are computed once per forward pass instead of once per layer (decoding
        # one token through 30 layers spent ~1 ms a token on them).
        self._tables_key: Optional[tuple] = None
        self._tables: Optional[tuple[torch.Tensor, torch.Tensor]] = None

    def tables(self, positions: torch.Tensor, head_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`rope_tables(positions, head_size, self)`, reused while the same positions tensor comes back (and,
        outside inference mode, is unchanged in place); not under autograd or torch.compile, where the
        tensors are not to be kept."""
        if torch.is_grad_enabled() or torch.compiler.is_compiling():
            return rope_tables(positions, head_size, self)
        key = (positions, None if positions.is_inference() else positions._version, head_size)
        cached = self._tables_key
        if cached is None or cached[0] is not positions or cached[1:] != key[1:]:
            self._tables = rope_tables(positions, head_size, self)
            self._tables_key = key  # holds the tensor itself, so its id cannot be reused by another
        return self._tables

    def frequencies(self, head_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """(D/2,) angular frequencies of the rotated pairs."""
        inv_freq = 1.0 / (self.theta ** (torch.arange(0, head_size, 2, device=device, dtype=torch.float32)
                                         / head_size))
        if not self.scaling:
            return inv_freq
        kind = self.scaling.get("rope_type", self.scaling.get("type"))
        factor = float(self.scaling["factor"])
        if kind == "linear":
            return inv_freq / factor
        if kind == "llama3":
            low, high = float(self.scaling["low_freq_factor"]), float(self.scaling["high_freq_factor"])
            old_context = float(self.scaling["original_max_position_embeddings"])
            wavelength = 2 * math.pi / inv_freq
            scaled = torch.where(wavelength > old_context / low, inv_freq / factor, inv_freq)
            smooth = (old_context / wavelength - low) / (high - low)
            blended = (1 - smooth) * scaled / factor + smooth * scaled
            middle = (wavelength >= old_context / high) & (wavelength <= old_context / low)
            return torch.where(middle, blended, scaled)
        raise ValueError(f"rope scaling {kind!r} is not supported (linear, llama3)")


def rope_tables(positions: torch.Tensor, head_size: int, rope: Rope | float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin for rotary embeddings at integer `positions` (B, T) -> (B, 1, T, D/2) each."""
    rope = rope if isinstance(rope, Rope) else Rope(rope)
    angles = positions.float()[..., None] * rope.frequencies(head_size, positions.device)
    return angles.cos()[:, None], angles.sin()[:, None]


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (first half, second half) of each head vector x (B, H, T, D)."""
    x1, x2 = x.float().chunk(2, dim=-1)
    out = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
    return out.type_as(x)


class SelfAttention(nn.Module):
    """Multi-head self-attention through `F.scaled_dot_product_attention`, causal unless told otherwise.

    With n_kv_head < n_head (grouped-query attention) each key/value head serves n_head / n_kv_head query
    heads, and the KV cache holds only the n_kv_head heads. q, k and v come from one fused projection
    `qkv` whose output is [q (n_head heads) | k (n_kv_head) | v (n_kv_head)].
    """

    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0, bias: bool = True,
                 rope_theta: Optional[float] = None, causal: bool = True, *, n_kv_head: Optional[int] = None,
                 qkv_bias: Optional[bool] = None, rope: Optional[Rope] = None):
        super().__init__()
        self.n_head = n_head
        self.n_kv_head = n_kv_head or n_head
        if n_head % self.n_kv_head:
            raise ValueError(f"n_head ({n_head}) must be a multiple of n_kv_head ({self.n_kv_head})")
        self.head_size = n_embd // n_head
        self.qkv = nn.Linear(n_embd, (n_head + 2 * self.n_kv_head) * self.head_size,
                             bias=bias if qkv_bias is None else qkv_bias)
        self.proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)
        self.rope = rope if rope is not None else (Rope(rope_theta) if rope_theta is not None else None)
        self.causal = causal
        self.record: Optional[list[torch.Tensor]] = None  # a list: attention maps (B, H, T, S) are appended

    def forward(self, x: torch.Tensor, positions: Optional[torch.Tensor] = None,
                mask: Optional[torch.Tensor] = None, cache: Optional[KVCache] = None) -> torch.Tensor:
        """x (B, T, C) -> (B, T, C).

        positions (B, T) integer positions, needed for RoPE. mask (B, 1, T, S) boolean, True where a query
        may attend; None means plain causal attention over the T tokens (and whatever the cache holds).
        """
        B, T, C = x.shape
        H, Hk, D = self.n_head, self.n_kv_head, self.head_size
        if self.rope is not None:
            if positions is None:
                raise ValueError("RoPE attention needs token positions")
            # q and k rotated together: one set of elementwise operations instead of two.
            heads = self.qkv(x).view(B, T, H + 2 * Hk, D).transpose(1, 2)
            qk = apply_rope(heads[:, :H + Hk], *self.rope.tables(positions, D))
            q, k, v = qk[:, :H], qk[:, H:], heads[:, H + Hk:]
        elif Hk == H:
            q, k, v = self.qkv(x).view(B, T, 3, H, D).permute(2, 0, 3, 1, 4)
        else:
            q, k, v = self.qkv(x).split([H * D, Hk * D, Hk * D], dim=-1)
            q, k, v = (t.view(B, T, -1, D).transpose(1, 2) for t in (q, k, v))
        past = 0
        if cache is not None:
            past = cache.length
            k, v = cache.append(k, v)
        if Hk != H and not (T == 1 and self.record is None and x.device.type == "cpu"):
            k, v = k.repeat_interleave(H // Hk, dim=1), v.repeat_interleave(H // Hk, dim=1)
        # else decoding one token on a CPU: `attend` reads the cache of Hk heads as it is, instead of a copy
        # of it G times over at every step (the same numbers: the kernel maps each query head to its kv head)
        dropout = self.dropout if self.training else 0.0
        if self.record is not None:
            if mask is None and self.causal and T > 1:
                mask = causal_mask(T, past, x.device)
            y = attend_and_record(q, k, v, mask, self.record)
        elif mask is None and (past == 0 or T == 1):
            # A single new token may attend to everything cached, so causal masking is unnecessary.
            y = attend(q, k, v, None, dropout, causal=self.causal and past == 0 and T > 1)
        else:
            if mask is None:
                mask = causal_mask(T, past, x.device)
            y = attend(q, k, v, mask, dropout)
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.resid_dropout(self.proj(y))


# Up to this many keys, low-precision attention on a CPU is written out as two matmuls and a softmax: there
# PyTorch's fused CPU kernel takes 3-6x longer for forward + backward (bf16, 2 cores, B=48, 4 heads of 48:
# 13.5 ms against 2.4 ms at 55 keys, 33 against 11 at 128, 10 against 6 at 256; at 512 the kernel wins).
SHORT_KEYS = 256


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor], dropout: float = 0.0,
           causal: bool = False) -> torch.Tensor:
    """softmax(q k^T / sqrt(D)) v as `F.scaled_dot_product_attention` computes it: q (B, H, T, D), k and v
    (B, H, S, D), mask (B or 1, 1, T, S) boolean, True where a query may attend; causal: the T queries are
    the last T of the S keys' positions. k and v may have fewer heads than q (grouped-query attention: query
    head h reads key/value head h // (H / Hk))."""
    S = k.shape[-2]
    grouped = k.shape[1] != q.shape[1]
    if q.device.type != "cpu" or q.dtype not in (torch.bfloat16, torch.float16) or S > SHORT_KEYS:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=causal,
                                              enable_gqa=grouped)
    if grouped:
        k, v = k.repeat_interleave(q.shape[1] // k.shape[1], 1), v.repeat_interleave(q.shape[1] // k.shape[1], 1)
    scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
    if causal:
        mask = causal_mask(q.shape[-2], S - q.shape[-2], q.device)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.float().softmax(-1).to(v.dtype)
    if dropout > 0:
        weights = F.dropout(weights, dropout)
    return weights @ v


def attend_and_record(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor],
                      record: list[torch.Tensor]) -> torch.Tensor:
    """Attention written out (for inspection, not speed): appends the weights (B, H, T, S) to `record`."""
    scores = (q.float() @ k.float().transpose(-2, -1)) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(-1)
    record.append(weights.detach())
    return (weights @ v.float()).type_as(q)


class CrossAttention(nn.Module):
    """Queries from the decoder's tokens, keys and values from encoder outputs (no positions, no causality)."""

    def __init__(self, n_embd: int, n_head: int, media_dim: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        self.n_head = n_head
        self.head_size = n_embd // n_head
        self.q = nn.Linear(n_embd, n_embd, bias=bias)
        self.kv = nn.Linear(media_dim, 2 * n_embd, bias=bias)
        self.proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.dropout = dropout
        self.record: Optional[list[torch.Tensor]] = None

    def forward(self, x: torch.Tensor, media: Optional[torch.Tensor], visible: torch.Tensor,
                cache: Optional[MediaCache] = None) -> torch.Tensor:
        """x (B, T, C), media (B, M, media_dim), visible (B, T, M) boolean: which media each token reads.

        With a filled cache, media may be None: the stored keys and values are used. A token that sees no
        media gets attention over all of them here; the caller zeroes its output.
        """
        B, T, C = x.shape
        q = self.q(x).view(B, T, self.n_head, self.head_size).transpose(1, 2)
        if cache is not None and cache.k is not None:
            k, v = cache.k, cache.v
        else:
            if media is None:
                raise ValueError("cross-attention needs encoder outputs (media) on the first call")
            M = media.shape[1]
            k, v = self.kv(media).view(B, M, 2, self.n_head, self.head_size).permute(2, 0, 3, 1, 4)
            if cache is not None:
                cache.k, cache.v = k, v
        mask = (visible | ~visible.any(-1, keepdim=True))[:, None]  # no softmax over nothing
        if self.record is not None:
            y = attend_and_record(q, k, v, mask, self.record)
        else:
            y = attend(q, k, v, mask, self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


def causal_mask(t: int, past: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(1, 1, t, past + t) boolean: query i (at absolute position past + i) sees keys 0..past + i."""
    q_pos = torch.arange(past, past + t, device=device)[:, None]
    k_pos = torch.arange(past + t, device=device)[None, :]
    return (k_pos <= q_pos)[None, None]


def padded_causal_mask(key_valid: torch.Tensor, t: int) -> torch.Tensor:
    """Causal mask for the last t queries that also hides padding keys.

    key_valid (B, S) boolean, False at padding. Returns (B, 1, t, S). A row with no visible key (a padding
    query) is allowed to see itself so attention never takes a softmax over nothing.
    """
    S = key_valid.shape[1]
    mask = causal_mask(t, S - t, key_valid.device) & key_valid[:, None, None, :]
    diag = torch.zeros_like(mask)
    diag[..., torch.arange(t), torch.arange(S - t, S)] = True
    return mask | (diag & ~mask.any(-1, keepdim=True))


def sinusoidal_table(n_positions: int, dim: int) -> torch.Tensor:
    """(n_positions, dim) fixed sine/cosine position embeddings (Transformer paper)."""
    pos = torch.arange(n_positions, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(n_positions, dim)
    table[:, 0::2] = torch.sin(pos * div)
    table[:, 1::2] = torch.cos(pos * div[: dim // 2])
    return table
