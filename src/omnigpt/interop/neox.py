"""GPT-NeoX (`model_type: gpt_neox`) both ways, in the one setting that computes omnigpt's default block with
`position: rope` (the shipped configs' layout): a sequential residual (`use_parallel_residual: false`), RoPE over
the whole head (rotate-half, as omnigpt's), LayerNorm, a GELU (tanh) MLP and biases everywhere.

Hugging Face fuses q, k and v per head, its output laid out (heads, 3, head size); omnigpt's `attn.qkv` gives
(3, heads, head size). Pythia (parallel residual, a quarter of each head rotated, exact GELU) is refused."""
from __future__ import annotations

import torch

from ..config import ModelConfig
from .folder import HFError
from .llama import _rope

TYPES = ("gpt_neox",)
# Per layer: (omnigpt name under blocks.i., Hugging Face name under gpt_neox.layers.i., q/k/v fused per head)
LAYER = (("ln_1", "input_layernorm", False), ("ln_2", "post_attention_layernorm", False),
         ("attn.qkv", "attention.query_key_value", True), ("attn.proj", "attention.dense", False),
         ("mlp.fc", "mlp.dense_h_to_4h", False), ("mlp.proj", "mlp.dense_4h_to_h", False))
TANH_GELU = ("gelu_new", "gelu_pytorch_tanh")


def matches(cfg: ModelConfig) -> bool:
    """Whether a GPT computes what GPT-NeoX does (so it can be exported as one)."""
    return (cfg.position == "rope" and cfg.norm == "layernorm" and cfg.mlp == "gelu" and cfg.bias
            and cfg.n_kv_head in (None, cfg.n_head) and cfg.qkv_bias in (None, True))


def _rotary_fraction(hf: dict) -> float:
    """The share of each head that is rotated: transformers 5 writes rope_parameters.partial_rotary_factor,
    earlier files rotary_pct; absent, transformers takes 0.25."""
    fraction = hf.get("partial_rotary_factor", hf.get("rotary_pct", 0.25))
    return float((hf.get("rope_parameters") or {}).get("partial_rotary_factor", fraction))


def model_config(hf: dict) -> ModelConfig:
    if hf.get("use_parallel_residual", True):
        raise HFError("gpt_neox with use_parallel_residual true (Pythia's and GPT-NeoX-20B's default) is not "
                      "supported: omnigpt's block adds attention and MLP one after the other "
                      "(use_parallel_residual: false)")
    if _rotary_fraction(hf) != 1.0:
        raise HFError(f"gpt_neox rotary_pct (rope_parameters.partial_rotary_factor) {_rotary_fraction(hf)} is not "
                      f"supported: omnigpt rotates the whole head (1.0)")
    act = hf.get("hidden_act", "gelu")
    if act not in TANH_GELU:
        raise HFError(f"gpt_neox hidden_act {act!r} is not supported ({', '.join(TANH_GELU)}: the tanh GELU)")
    if not hf.get("attention_bias", True):
        raise HFError("gpt_neox with attention_bias false is not supported: omnigpt's biases are all or none, and "
                      "GPT-NeoX's MLP and LayerNorms always have them")
    params = {k: v for k, v in (hf.get("rope_parameters") or {}).items() if k != "partial_rotary_factor"}
    # the base is rope_parameters.rope_theta (transformers 5), rope_theta (4.4x) or rotary_emb_base (earlier)
    theta, scaling = _rope({**hf, "rope_parameters": params,
                            "rope_theta": hf.get("rope_theta", hf.get("rotary_emb_base", 10000.0))})
    return ModelConfig(vocab_size=hf["vocab_size"], block_size=hf.get("max_position_embeddings", 2048),
                       n_layer=hf["num_hidden_layers"], n_head=hf["num_attention_heads"], n_embd=hf["hidden_size"],
                       bias=True, position="rope", rope_theta=theta, rope_scaling=scaling,
                       tie_embeddings=hf.get("tie_word_embeddings", False), norm_eps=hf.get("layer_norm_eps", 1e-5),
                       mlp_hidden=hf["intermediate_size"])


def hf_config(cfg: ModelConfig) -> dict:
    # transformers 5 turns rotary_pct, rotary_emb_base and rope_scaling into rope_parameters; 4.x reads them as is
    return {"model_type": "gpt_neox", "architectures": ["GPTNeoXForCausalLM"], "hidden_size": cfg.n_embd,
            "intermediate_size": cfg.mlp_hidden or cfg.mlp_ratio * cfg.n_embd, "num_hidden_layers": cfg.n_layer,
            "num_attention_heads": cfg.n_head, "max_position_embeddings": cfg.block_size,
            "layer_norm_eps": cfg.norm_eps, "hidden_act": "gelu_new", "use_parallel_residual": False,
            "rotary_pct": 1.0, "rotary_emb_base": cfg.rope_theta, "rope_scaling": cfg.rope_scaling,
            "attention_bias": True, "hidden_dropout": 0.0, "attention_dropout": 0.0}


def _per_head(t: torch.Tensor, n_head: int) -> torch.Tensor:
    """omnigpt's q/k/v rows (3, heads, head size) -> GPT-NeoX's (heads, 3, head size); a weight or a bias."""
    return t.unflatten(0, (3, n_head, -1)).transpose(0, 1).flatten(0, 2)


def _per_part(t: torch.Tensor, n_head: int) -> torch.Tensor:
    """GPT-NeoX's q/k/v rows (heads, 3, head size) -> omnigpt's (3, heads, head size)."""
    return t.unflatten(0, (n_head, 3, -1)).transpose(0, 1).flatten(0, 2)


def _names(cfg: ModelConfig):
    """(omnigpt name, Hugging Face name without `gpt_neox.`, whether q/k/v are fused per head) per tensor."""
    yield "wte.weight", "embed_in.weight", False
    for n in ("weight", "bias"):
        yield f"ln_f.{n}", f"final_layer_norm.{n}", False
    for i in range(cfg.n_layer):
        for ours, theirs, fused in LAYER:
            for n in ("weight", "bias"):
                yield f"blocks.{i}.{ours}.{n}", f"layers.{i}.{theirs}.{n}", fused


def from_hf(weights: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Hugging Face tensors (with or without the `gpt_neox.` prefix) -> omnigpt's GPT state dict."""
    w = {k.removeprefix("gpt_neox."): v for k, v in weights.items()}
    out = {ours: _per_part(w[theirs], cfg.n_head) if fused else w[theirs] for ours, theirs, fused in _names(cfg)}
    if not cfg.tie_embeddings:  # `embed_out` in GPT-NeoX's files; transformers 5 names the module lm_head
        out["lm_head.weight"] = weights["lm_head.weight" if "lm_head.weight" in weights else "embed_out.weight"]
    return out


def to_hf(w: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """omnigpt's GPT state dict -> the tensors GPTNeoXForCausalLM loads."""
    out = {f"gpt_neox.{theirs}": _per_head(w[ours], cfg.n_head) if fused else w[ours]
           for ours, theirs, fused in _names(cfg)}
    if not cfg.tie_embeddings:
        out["embed_out.weight"] = w["lm_head.weight"]
    return out
