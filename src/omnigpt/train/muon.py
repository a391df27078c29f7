"""Muon for the Transformer's hidden matrices, AdamW for every other parameter, in one optimizer.

Muon (MomentUm Orthogonalized by Newton-Schulz) takes the Nesterov momentum of a weight matrix's gradient
and replaces it by the nearest semi-orthogonal matrix (the same singular vectors, every singular value near
1) before the step, so that every direction of the matrix learns at the same rate instead of the few that
dominate the gradient. Orthogonalizing costs five small matrix iterations a matrix (`newton_schulz`), about
13% more time a step for omni-tiny on a 2-core CPU, and in fp32 at the same step count it trained
every task of the demo much further than AdamW (bench/README.md).

It is meant for the 2-D weights of hidden linear layers (`hidden_matrices`: attention and MLP in every
Transformer block, the projectors). Embeddings, output heads, norms, biases, convolutions and learned
positions keep AdamW. Each step of a matrix is scaled by 0.2 * sqrt(max(rows, cols)), which gives the update
the root-mean-square size of an AdamW update, so that the learning rate and weight decay tuned for AdamW
carry over (as in "Muon is Scalable for LLM Training", Liu et al. 2025).
"""
from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn

# The quintic iteration's published coefficients (Jordan et al., 2024): they drive singular values in (0, 1] to
# about [0.7, 1.2] in five steps, which is as orthogonal as the update needs to be.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 5
MOMENTUM = 0.95
RMS_MATCH = 0.2  # an AdamW update's typical root-mean-square size


def newton_schulz(g: torch.Tensor, steps: int = NS_STEPS, eps: float = 1e-7) -> torch.Tensor:
    """An approximately semi-orthogonal matrix with the singular vectors of g (2-D): U V^T of g's SVD,
    reached by `steps` odd-polynomial iterations instead of an SVD."""
    a, b, c = NS_COEFFICIENTS
    x = g / (g.norm() + eps)  # every singular value now at most 1, where the iteration converges
    wide = x.shape[0] <= x.shape[1]
    if not wide:
        x = x.T  # iterate on the smaller Gram matrix
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x if wide else x.T


def hidden_matrices(model: nn.Module) -> set[int]:
    """ids of the weights Muon takes: the 2-D weights of the linear layers inside Transformer blocks
    (self- and cross-attention, MLPs) and projectors."""
    from ..model.block import Block
    from ..model.fusion import GatedCrossAttention, Projector

    ids = set()
    for owner in model.modules():
        if isinstance(owner, (Block, GatedCrossAttention, Projector)):
            ids.update(id(m.weight) for m in owner.modules() if isinstance(m, nn.Linear) and m.weight.dim() == 2)
    return ids


class MuonAdamW(torch.optim.Optimizer):
    """Muon on the param groups marked `muon: True`, AdamW on the others; `lr` and `weight_decay` mean the
    same in both (decoupled decay: each step shrinks a weight by lr * weight_decay)."""

    def __init__(self, params: Iterable[dict], lr: float, betas: tuple[float, float] = (0.9, 0.95),
                 weight_decay: float = 0.0, eps: float = 1e-8, momentum: float = MOMENTUM):
        defaults = dict(lr=lr, betas=betas, weight_decay=weight_decay, eps=eps, momentum=momentum, muon=False)
        super().__init__(params, defaults)
        for group in self.param_groups:
            if group["muon"] and any(p.dim() != 2 for p in group["params"]):
                raise ValueError("Muon takes 2-D weight matrices only; give other parameters to a group "
                                 "without muon: True")

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, decay = group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if group["muon"]:
                    self._muon(p, state, lr, decay, group["momentum"])
                else:
                    self._adamw(p, state, lr, decay, group["betas"], group["eps"])
        return loss

    @staticmethod
    def _muon(p: torch.Tensor, state: dict, lr: float, decay: float, momentum: float) -> None:
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(p)
        buf = state["momentum_buffer"]
        buf.mul_(momentum).add_(p.grad)
        update = newton_schulz(p.grad.add(buf, alpha=momentum))  # Nesterov: the gradient plus the look-ahead
        p.mul_(1 - lr * decay)
        p.add_(update.to(p.dtype), alpha=-lr * RMS_MATCH * math.sqrt(max(p.shape)))

    @staticmethod
    def _adamw(p: torch.Tensor, state: dict, lr: float, decay: float, betas: tuple[float, float],
               eps: float) -> None:
        if "step" not in state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        state["step"] += 1
        beta1, beta2 = betas
        state["exp_avg"].lerp_(p.grad, 1 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
        p.mul_(1 - lr * decay)
        denom = (state["exp_avg_sq"] / (1 - beta2 ** state["step"])).sqrt_().add_(eps)
        p.addcdiv_(state["exp_avg"], denom, value=-lr / (1 - beta1 ** state["step"]))
