"""Decoder-only language models from Hugging Face folders, as omnigpt GPTs with the same outputs.

Two layouts cover the supported families: GPT-2 (`gpt2`: learned positions, LayerNorm, GELU MLP, fused
q/k/v stored as Conv1D (in, out) matrices) and Llama (`llama` (SmolLM2, Llama 3.x), `mistral` without a
sliding window shorter than its context, `qwen2`: RoPE, RMSNorm, SwiGLU, grouped-query attention).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from ..config import Config, ModelConfig
from ..model.gpt import GPT
from ..tokenizer import Tokenizer
from .folder import HFError, read_config, read_weights

LLAMA_TYPES = ("llama", "mistral", "qwen2")
SUPPORTED = ("gpt2",) + LLAMA_TYPES


def model_type(hf: dict) -> str:
    kind = hf.get("model_type")
    if kind not in SUPPORTED:
        raise HFError(f"model_type {kind!r} is not supported; omnigpt reads {', '.join(SUPPORTED)}")
    return kind


def model_config(hf: dict) -> ModelConfig:
    """omnigpt's ModelConfig for a Hugging Face config.json (as a dict)."""
    kind = model_type(hf)
    if kind == "gpt2":
        act = hf.get("activation_function", "gelu_new")
        if act not in ("gelu_new", "gelu_pytorch_tanh"):
            raise HFError(f"GPT-2 activation_function {act!r} is not supported (gelu_new)")
        return ModelConfig(vocab_size=hf["vocab_size"], block_size=hf["n_positions"], n_layer=hf["n_layer"],
                           n_head=hf["n_head"], n_embd=hf["n_embd"], bias=True, position="learned",
                           tie_embeddings=hf.get("tie_word_embeddings", True),
                           norm_eps=hf.get("layer_norm_epsilon", 1e-5),
                           mlp_hidden=hf.get("n_inner") or 4 * hf["n_embd"])
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
    # transformers 5 writes rope_parameters {rope_theta, rope_type, ...}; earlier files rope_theta and rope_scaling
    params = dict(hf.get("rope_parameters") or {})
    theta = params.pop("rope_theta", hf.get("rope_theta", 10000.0))
    scaling = hf.get("rope_scaling") or params or None
    if scaling is not None:
        kind_of_scaling = scaling.get("rope_type", scaling.get("type"))
        if kind_of_scaling == "default":
            scaling = None
        elif kind_of_scaling not in ("linear", "llama3"):
            raise HFError(f"rope_scaling type {kind_of_scaling!r} is not supported (linear, llama3)")
    return ModelConfig(vocab_size=hf["vocab_size"], block_size=context, n_layer=hf["num_hidden_layers"],
                       n_head=heads, n_embd=width, bias=False, position="rope",
                       rope_theta=float(theta), rope_scaling=scaling,
                       tie_embeddings=hf.get("tie_word_embeddings", False), norm_eps=hf.get("rms_norm_eps", 1e-6),
                       norm="rmsnorm", mlp="swiglu", mlp_hidden=hf["intermediate_size"],
                       n_kv_head=hf.get("num_key_value_heads") or heads,
                       qkv_bias=True if kind == "qwen2" else bool(hf.get("attention_bias", False)))


# The per-layer tensors both ways (import and export), as (omnigpt name, Hugging Face name) under blocks.i. and
# h.i. / layers.i.; GPT-2's Conv1D layers (True) keep their weights as (in, out). q, k and v are mapped apart:
# omnigpt fuses them.
GPT2_LAYER = (("ln_1", "ln_1", False), ("ln_2", "ln_2", False), ("attn.qkv", "attn.c_attn", True),
              ("attn.proj", "attn.c_proj", True), ("mlp.fc", "mlp.c_fc", True), ("mlp.proj", "mlp.c_proj", True))
LLAMA_LAYER = (("attn.proj.weight", "self_attn.o_proj.weight"), ("ln_1.weight", "input_layernorm.weight"),
               ("ln_2.weight", "post_attention_layernorm.weight"), ("mlp.gate.weight", "mlp.gate_proj.weight"),
               ("mlp.up.weight", "mlp.up_proj.weight"), ("mlp.proj.weight", "mlp.down_proj.weight"))


def _gpt2_state(weights: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    w = {k.removeprefix("transformer."): v for k, v in weights.items()}
    out = {"wte.weight": w["wte.weight"], "wpe.weight": w["wpe.weight"],
           "ln_f.weight": w["ln_f.weight"], "ln_f.bias": w["ln_f.bias"]}
    for i in range(cfg.n_layer):
        h, b = f"h.{i}.", f"blocks.{i}."
        for ours, theirs, conv in GPT2_LAYER:
            weight = w[f"{h}{theirs}.weight"]
            out[f"{b}{ours}.weight"] = weight.t() if conv else weight  # Conv1D keeps (in, out)
            out[f"{b}{ours}.bias"] = w[f"{h}{theirs}.bias"]
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = weights["lm_head.weight"]
    return out


def _llama_state(weights: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    w = {k.removeprefix("model."): v for k, v in weights.items()}
    out = {"wte.weight": w["embed_tokens.weight"], "ln_f.weight": w["norm.weight"]}
    for i in range(cfg.n_layer):
        h, b = f"layers.{i}.", f"blocks.{i}."
        attn = h + "self_attn."
        out[b + "attn.qkv.weight"] = torch.cat([w[f"{attn}{p}_proj.weight"] for p in "qkv"])
        if cfg.qkv_bias:
            out[b + "attn.qkv.bias"] = torch.cat([w[f"{attn}{p}_proj.bias"] for p in "qkv"])
        for ours, theirs in LLAMA_LAYER:
            out[b + ours] = w[h + theirs]
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = weights["lm_head.weight"]
    return out


STATE: dict[str, Callable[[dict[str, torch.Tensor], ModelConfig], dict[str, torch.Tensor]]] = {
    "gpt2": _gpt2_state, **{k: _llama_state for k in LLAMA_TYPES}}


def load_decoder(path: str | Path, dtype: torch.dtype = torch.float32) -> GPT:
    """The GPT in a Hugging Face folder, with its weights (kept in `dtype`)."""
    hf = read_config(path)
    try:
        cfg = model_config(hf)
    except KeyError as exc:
        raise HFError(f"{Path(path) / 'config.json'} lacks {exc.args[0]!r}, which a {hf.get('model_type')} "
                      f"model needs") from None
    try:
        state = STATE[model_type(hf)](read_weights(path), cfg)
    except KeyError as exc:
        raise HFError(f"{path}: the weights lack the tensor {exc.args[0]!r} that a {hf['model_type']} model "
                      f"needs") from None
    model = GPT(cfg)
    own = model.state_dict()
    for name, tensor in state.items():
        if tuple(own[name].shape) != tuple(tensor.shape):
            raise HFError(f"{path}: tensor for {name} has shape {tuple(tensor.shape)}, the config gives "
                          f"{tuple(own[name].shape)}")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise HFError(f"{path}: the weights hold non-finite values (NaN or infinity) in {name}")
    missing = [n for n in own if n not in state and not (cfg.tie_embeddings and n == "lm_head.weight")]
    if missing:
        raise HFError(f"{path}: no weights for {missing[0]} (and {len(missing) - 1} more)")
    model.load_state_dict(state, strict=False)
    return model.to(dtype).eval()


def load_pretrained(path: str | Path, dtype: torch.dtype = torch.float32) -> tuple[Config, GPT, Tokenizer]:
    """A Hugging Face model folder as omnigpt uses a checkpoint: its config, the GPT and the tokenizer. The
    special tokens omnigpt adds to the tokenizer get new embedding rows (the mean of the others)."""
    path = Path(path)
    if not (path / "tokenizer.json").is_file():
        raise HFError(f"{path} has no tokenizer.json; omnigpt reads the fast (tokenizer.json) format")
    model = load_decoder(path, dtype)
    tokenizer = Tokenizer.from_pretrained(path)
    if tokenizer.vocab_size > model.config.vocab_size:
        model.resize_vocab(tokenizer.vocab_size)
    return Config(model=model.config), model, tokenizer
