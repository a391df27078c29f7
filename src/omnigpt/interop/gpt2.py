"""GPT-2 (`model_type: gpt2`) both ways: learned positions, LayerNorm, a GELU (tanh) MLP, biases, q/k/v fused
in one matrix; Hugging Face stores its linear layers as Conv1D, weights (in, out)."""
from __future__ import annotations

import torch

from ..config import ModelConfig
from .folder import HFError

TYPES = ("gpt2",)
# Per layer: (omnigpt name under blocks.i., Hugging Face name under h.i., a Conv1D layer)
LAYER = (("ln_1", "ln_1", False), ("ln_2", "ln_2", False), ("attn.qkv", "attn.c_attn", True),
         ("attn.proj", "attn.c_proj", True), ("mlp.fc", "mlp.c_fc", True), ("mlp.proj", "mlp.c_proj", True))


def matches(cfg: ModelConfig) -> bool:
    """Whether a GPT computes what GPT-2 does (so it can be exported as one)."""
    return (cfg.position == "learned" and cfg.norm == "layernorm" and cfg.mlp == "gelu" and cfg.bias
            and cfg.n_kv_head in (None, cfg.n_head) and cfg.qkv_bias in (None, True))


def model_config(hf: dict) -> ModelConfig:
    act = hf.get("activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        raise HFError(f"GPT-2 activation_function {act!r} is not supported (gelu_new)")
    return ModelConfig(vocab_size=hf["vocab_size"], block_size=hf["n_positions"], n_layer=hf["n_layer"],
                       n_head=hf["n_head"], n_embd=hf["n_embd"], bias=True, position="learned",
                       tie_embeddings=hf.get("tie_word_embeddings", True), norm_eps=hf.get("layer_norm_epsilon", 1e-5),
                       mlp_hidden=hf.get("n_inner") or 4 * hf["n_embd"])


def hf_config(cfg: ModelConfig) -> dict:
    return {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_positions": cfg.block_size,
            "n_embd": cfg.n_embd, "n_layer": cfg.n_layer, "n_head": cfg.n_head,
            "n_inner": cfg.mlp_hidden or cfg.mlp_ratio * cfg.n_embd, "activation_function": "gelu_new",
            "layer_norm_epsilon": cfg.norm_eps, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}


def _names(cfg: ModelConfig):
    """(omnigpt name, Hugging Face name without `transformer.`, whether the tensor is transposed) per tensor."""
    for n in ("wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"):
        yield n, n, False
    for i in range(cfg.n_layer):
        for ours, theirs, conv in LAYER:
            yield f"blocks.{i}.{ours}.weight", f"h.{i}.{theirs}.weight", conv
            yield f"blocks.{i}.{ours}.bias", f"h.{i}.{theirs}.bias", False


def from_hf(weights: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Hugging Face tensors (with or without the `transformer.` prefix) -> omnigpt's GPT state dict."""
    w = {k.removeprefix("transformer."): v for k, v in weights.items()}
    out = {ours: w[theirs].t() if conv else w[theirs] for ours, theirs, conv in _names(cfg)}
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = weights["lm_head.weight"]
    return out


def to_hf(w: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """omnigpt's GPT state dict -> the tensors GPT2LMHeadModel loads."""
    out = {f"transformer.{theirs}": w[ours].t() if conv else w[ours] for ours, theirs, conv in _names(cfg)}
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = w["lm_head.weight"]
    return out
