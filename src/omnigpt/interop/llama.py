"""The Llama family both ways (`llama`: Llama 3.x, SmolLM2; `mistral` without a sliding window shorter than its
context; `qwen2`): RoPE (with llama3 or linear scaling), RMSNorm, a SwiGLU MLP, grouped-query attention, no
biases except Qwen2's on q, k and v. Hugging Face keeps q, k and v apart; omnigpt fuses them."""
from __future__ import annotations

import torch

from ..config import ModelConfig
from .folder import HFError

TYPES = ("llama", "mistral", "qwen2")
# Per layer: (omnigpt name under blocks.i., Hugging Face name under model.layers.i.)
LAYER = (("attn.proj.weight", "self_attn.o_proj.weight"), ("ln_1.weight", "input_layernorm.weight"),
         ("ln_2.weight", "post_attention_layernorm.weight"), ("mlp.gate.weight", "mlp.gate_proj.weight"),
         ("mlp.up.weight", "mlp.up_proj.weight"), ("mlp.proj.weight", "mlp.down_proj.weight"))


def matches(cfg: ModelConfig) -> bool:
    """Whether a GPT computes what this family does (so it can be exported as one)."""
    return cfg.position == "rope" and cfg.norm == "rmsnorm" and cfg.mlp == "swiglu" and not cfg.bias


def _rope(hf: dict) -> tuple[float, dict | None]:
    """(theta, scaling): transformers 5 writes rope_parameters {rope_theta, rope_type, ...}; earlier files
    rope_theta and rope_scaling."""
    params = dict(hf.get("rope_parameters") or {})
    theta = params.pop("rope_theta", hf.get("rope_theta", 10000.0))
    scaling = hf.get("rope_scaling") or params or None
    if scaling is not None:
        kind = scaling.get("rope_type", scaling.get("type"))
        if kind == "default":
            return float(theta), None
        if kind not in ("linear", "llama3"):
            raise HFError(f"rope_scaling type {kind!r} is not supported (linear, llama3)")
    return float(theta), scaling


def model_config(hf: dict) -> ModelConfig:
    kind = hf["model_type"]
    if hf.get("hidden_act", "silu") != "silu":
        raise HFError(f"{kind} hidden_act {hf['hidden_act']!r} is not supported (silu)")
    heads, width = hf["num_attention_heads"], hf["hidden_size"]
    if hf.get("head_dim") not in (None, width // heads):
        raise HFError(f"{kind} head_dim {hf['head_dim']} differs from hidden_size / num_attention_heads "
                      f"({width // heads}); omnigpt does not support that")
    if hf.get("mlp_bias"):
        raise HFError(f"{kind} with mlp_bias is not supported")
    context = hf.get("max_position_embeddings", 2048)
    window = hf.get("sliding_window") if hf.get("use_sliding_window", kind == "mistral") else None
    if window:  # attention within a window as long as the context is full attention: exact up to the window
        context = min(context, window)
    theta, scaling = _rope(hf)
    return ModelConfig(vocab_size=hf["vocab_size"], block_size=context, n_layer=hf["num_hidden_layers"],
                       n_head=heads, n_embd=width, bias=False, position="rope", rope_theta=theta, rope_scaling=scaling,
                       tie_embeddings=hf.get("tie_word_embeddings", False), norm_eps=hf.get("rms_norm_eps", 1e-6),
                       norm="rmsnorm", mlp="swiglu", mlp_hidden=hf["intermediate_size"],
                       n_kv_head=hf.get("num_key_value_heads") or heads,
                       qkv_bias=True if kind == "qwen2" else bool(hf.get("attention_bias", False)))


def hf_config(cfg: ModelConfig) -> dict:
    kind = "qwen2" if cfg.qkv_bias else "llama"  # Llama's attention_bias would also bias o_proj
    out = {"model_type": kind, "architectures": ["Qwen2ForCausalLM" if cfg.qkv_bias else "LlamaForCausalLM"],
           "hidden_size": cfg.n_embd, "intermediate_size": cfg.mlp_hidden or cfg.mlp_ratio * cfg.n_embd,
           "num_hidden_layers": cfg.n_layer, "num_attention_heads": cfg.n_head,
           "num_key_value_heads": cfg.n_kv_head or cfg.n_head, "head_dim": cfg.n_embd // cfg.n_head,
           "max_position_embeddings": cfg.block_size, "rms_norm_eps": cfg.norm_eps, "rope_theta": cfg.rope_theta,
           "rope_scaling": cfg.rope_scaling, "hidden_act": "silu"}
    if kind == "llama":
        out.update(attention_bias=False, mlp_bias=False)
    return out


def _qkv_sizes(cfg: ModelConfig) -> list[int]:
    d = cfg.n_embd // cfg.n_head
    return [cfg.n_head * d, (cfg.n_kv_head or cfg.n_head) * d, (cfg.n_kv_head or cfg.n_head) * d]


def from_hf(weights: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Hugging Face tensors -> omnigpt's GPT state dict."""
    w = {k.removeprefix("model."): v for k, v in weights.items()}
    out = {"wte.weight": w["embed_tokens.weight"], "ln_f.weight": w["norm.weight"]}
    for i in range(cfg.n_layer):
        h, b = f"layers.{i}.", f"blocks.{i}."
        for suffix in ("weight", "bias") if cfg.qkv_bias else ("weight",):
            out[f"{b}attn.qkv.{suffix}"] = torch.cat([w[f"{h}self_attn.{p}_proj.{suffix}"] for p in "qkv"])
        for ours, theirs in LAYER:
            out[b + ours] = w[h + theirs]
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = weights["lm_head.weight"]
    return out


def to_hf(w: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """omnigpt's GPT state dict -> the tensors LlamaForCausalLM (Qwen2ForCausalLM) loads."""
    out = {"model.embed_tokens.weight": w["wte.weight"], "model.norm.weight": w["ln_f.weight"]}
    for i in range(cfg.n_layer):
        h, b = f"model.layers.{i}.", f"blocks.{i}."
        for suffix in ("weight", "bias") if cfg.qkv_bias else ("weight",):
            for p, t in zip("qkv", w[f"{b}attn.qkv.{suffix}"].split(_qkv_sizes(cfg))):
                out[f"{h}self_attn.{p}_proj.{suffix}"] = t
        for ours, theirs in LAYER:
            out[h + theirs] = w[b + ours]
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = w["lm_head.weight"]
    return out
