"""The decoder-only language model: token (+ position) embeddings, a stack of blocks, a final norm, a head.

With `position: learned`, `bias: true` and `tie_embeddings: true` the parameter layout is GPT-2's; with
`position: rope`, `norm: rmsnorm`, `mlp: swiglu`, `bias: false` (and `n_kv_head` for grouped-query
attention) it is Llama's.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..config import IGNORE_INDEX, ModelConfig
from .attention import KVCache, Rope, sinusoidal_table
from .block import Block, norm_layer

__all__ = ["GPT", "IGNORE_INDEX"]


class GPT(nn.Module):
    accepts = frozenset({"text"})  # what the model can take (OmniGPT: also image and/or audio)
    predicts = "tokens"  # what it outputs: next-token logits (a MultimodalClassifier: "classes")

    def __init__(self, config: ModelConfig):
        super().__init__()
        config.validate()
        self.config = config
        c = config
        self.wte = nn.Embedding(c.vocab_size, c.n_embd)
        if c.position == "learned":
            self.wpe = nn.Embedding(c.block_size, c.n_embd)
        elif c.position == "sinusoidal":
            self.register_buffer("sin_table", sinusoidal_table(c.block_size, c.n_embd), persistent=False)
        self.drop = nn.Dropout(c.dropout)
        rope = Rope(c.rope_theta, c.rope_scaling) if c.position == "rope" else None
        self.blocks = nn.ModuleList(
            Block(c.n_embd, c.n_head, c.mlp_ratio, c.dropout, c.bias, c.norm_eps, causal=True, norm=c.norm, mlp=c.mlp,
                  mlp_hidden=c.mlp_hidden, n_kv_head=c.n_kv_head, qkv_bias=c.qkv_bias, rope=rope)
            for _ in range(c.n_layer)
        )
        self.ln_f = norm_layer(c.norm, c.n_embd, c.norm_eps, c.bias)
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        if c.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        self.apply(self._init_weights)
        # Residual projections start smaller so the residual stream's variance does not grow with depth.
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * c.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        if non_embedding and self.config.position == "learned":
            n -= self.wpe.weight.numel()
        return n

    def flops_per_token(self) -> float:
        """Training FLOPs per token: 6 per parameter plus attention over the context (PaLM appendix B)."""
        c = self.config
        return 6 * self.num_params() + 12 * c.n_layer * c.n_embd * c.block_size

    def add_positions(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """x (B, T, C) plus the embeddings of positions (B, T) or (1, T), for learned/sinusoidal positions."""
        if self.config.position == "learned":
            x = x + self.wpe(positions)
        elif self.config.position == "sinusoidal":
            x = x + self.sin_table[positions].to(x.dtype)
        return self.drop(x)

    def forward(self, idx: Optional[torch.Tensor] = None, targets: Optional[torch.Tensor] = None, *,
                inputs_embeds: Optional[torch.Tensor] = None, positions: Optional[torch.Tensor] = None,
                mask: Optional[torch.Tensor] = None, caches: Optional[list[KVCache]] = None,
                last_only: bool = False, before_block: Optional[Callable[[int, torch.Tensor], torch.Tensor]] = None,
                loss_weights: Optional[torch.Tensor] = None, loss_only: bool = False
                ) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        """Token ids idx (B, T) (or inputs_embeds (B, T, C) without positions added) -> logits (B, T, V).

        targets (B, T): next-token labels, IGNORE_INDEX where no loss is wanted; the mean cross-entropy
        (weighted by loss_weights (B, T) when given) is returned as the second value. positions (B, T) default to past..past+T-1, where past is the
        number of cached tokens; callers that pass positions keep them below model.block_size. mask (B, 1, T, S) boolean, see `SelfAttention`. caches: one KVCache per
        block, filled in place. last_only: compute logits for the last position only (B, 1, V).
        before_block(i, x) -> x runs before block i (how cross-attention layers are inserted).
        loss_only: return (None, loss), the head applied to the labelled positions only (what training
        needs: prompts, image and audio tokens carry no label, and the head is a large share of a step).
        """
        x = self.hidden_states(idx, inputs_embeds=inputs_embeds, positions=positions, mask=mask, caches=caches,
                               before_block=before_block)
        if loss_only:
            if targets is None:
                raise ValueError("loss_only needs targets")
            keep = targets != IGNORE_INDEX
            weights = None if loss_weights is None else loss_weights[keep][None]
            return None, next_token_loss(self.lm_head(x[keep])[None], targets[keep][None], weights)
        if last_only:
            x = x[:, -1:]
        logits = self.head(x)
        loss = None
        if targets is not None:
            loss = next_token_loss(logits, targets, loss_weights)
        return logits, loss

    def hidden_states(self, idx: Optional[torch.Tensor] = None, *, inputs_embeds: Optional[torch.Tensor] = None,
                      positions: Optional[torch.Tensor] = None, mask: Optional[torch.Tensor] = None,
                      caches: Optional[list[KVCache]] = None,
                      before_block: Optional[Callable[[int, torch.Tensor], torch.Tensor]] = None) -> torch.Tensor:
        """The final-norm hidden states (B, T, C) that the head turns into logits (arguments as `forward`)."""
        x = self.wte(idx) if inputs_embeds is None else inputs_embeds
        B, T, _ = x.shape
        if positions is None:
            past = caches[0].length if caches else 0
            # Checked with Python integers: a check on tensor values would stall the GPU and split compiled graphs.
            if past + T > self.config.block_size:
                raise ValueError(f"position {past + T - 1} is past the context length {self.config.block_size} "
                                 f"(model.block_size)")
            positions = torch.arange(past, past + T, device=x.device)[None]
        x = self.add_positions(x, positions)
        for i, block in enumerate(self.blocks):
            if before_block is not None:
                x = before_block(i, x)
            x = block(x, positions, mask, caches[i] if caches else None)
        return self.ln_f(x)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """Hidden states (B, T, C) -> logits (B, T, V).

        In inference, a few rows (decoding) are multiplied by a transposed copy of the head weight: a
        (C, V) matrix streams about twice as fast as F.linear's (V, C) on CPUs. The copy is remade whenever
        the weight changes (its version counter moves on every in-place update).
        """
        w = self.lm_head.weight
        if torch.is_grad_enabled() or x.shape[0] * x.shape[1] > 8:
            return self.lm_head(x)
        key = (w.data_ptr(), w._version, w.dtype, w.device)
        if getattr(self, "_head_t_key", None) != key:
            self._head_t = w.detach().t().contiguous()
            self._head_t_key = key
        return x.to(self._head_t.dtype) @ self._head_t

    @torch.no_grad()
    def resize_vocab(self, size: int) -> None:
        """Grow the vocabulary to `size` tokens (tokens added to a pretrained tokenizer): the new rows of the
        embedding (and of an untied head) start as the mean of the existing rows, a neutral guess that
        fine-tuning moves."""
        old = self.wte.weight
        if size < old.shape[0]:
            raise ValueError(f"resize_vocab only grows the vocabulary: {old.shape[0]} -> {size}")
        def rows(w: torch.Tensor) -> torch.Tensor:
            return torch.cat([w, w.mean(0, keepdim=True).expand(size - w.shape[0], -1)])

        self.wte = nn.Embedding(size, old.shape[1], device=old.device, dtype=old.dtype)
        self.wte.weight.copy_(rows(old))
        head = nn.Linear(old.shape[1], size, bias=False, device=old.device, dtype=old.dtype)
        if self.config.tie_embeddings:
            head.weight = self.wte.weight
        else:
            head.weight.copy_(rows(self.lm_head.weight))
        self.lm_head = head
        self.config.vocab_size = size

    def new_caches(self, batch: int, max_len: int, dtype: Optional[torch.dtype] = None) -> list[KVCache]:
        c = self.config
        p = self.wte.weight
        return [KVCache(batch, c.n_kv_head or c.n_head, max_len, c.n_embd // c.n_head, dtype or p.dtype, p.device)
                for _ in range(c.n_layer)]


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor, weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Cross-entropy of logits (B, T, V) against targets (B, T), IGNORE_INDEX excluded: the plain mean over
    tokens, or sum(weights * loss) / sum(weights) with weights (B, T)."""
    flat = logits.float().view(-1, logits.size(-1))
    if weights is None:
        return F.cross_entropy(flat, targets.reshape(-1), ignore_index=IGNORE_INDEX)
    per_token = F.cross_entropy(flat, targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="none")
    w = weights.reshape(-1).to(per_token.dtype) * (targets.reshape(-1) != IGNORE_INDEX)
    return (per_token * w).sum() / w.sum().clamp(min=1e-12)
