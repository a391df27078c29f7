"""An omnigpt GPT written as a Hugging Face folder that `transformers.AutoModelForCausalLM` and `AutoTokenizer`
load: config.json, model.safetensors, tokenizer.json and tokenizer_config.json.

Two layouts, chosen from the model's config: GPT-2's (learned positions, LayerNorm, GELU MLP, biases) and the
Llama family's (RoPE, RMSNorm, SwiGLU, no biases; Qwen2's when only q/k/v have biases). A multimodal model
exports its decoder so, and its encoders and projectors beside it (`omnigpt_media.safetensors` with the
run's config as `omnigpt_config.yaml`), which only omnigpt reads.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from ..atomic import write_atomic
from ..config import ModelConfig
from ..model.gpt import GPT
from ..tokenizer import Tokenizer
from .decoder import GPT2_LAYER, LLAMA_LAYER
from .folder import HFError


def layout(cfg: ModelConfig) -> str:
    """'gpt2', 'llama' or 'qwen2': the Hugging Face architecture with the same computation, or an HFError."""
    gpt2 = (cfg.position == "learned" and cfg.norm == "layernorm" and cfg.mlp == "gelu" and cfg.bias
            and cfg.n_kv_head in (None, cfg.n_head) and cfg.qkv_bias in (None, True))
    if gpt2:
        return "gpt2"
    if cfg.position == "rope" and cfg.norm == "rmsnorm" and cfg.mlp == "swiglu" and not cfg.bias:
        return "qwen2" if cfg.qkv_bias else "llama"
    raise HFError(f"this model (position {cfg.position}, norm {cfg.norm}, mlp {cfg.mlp}, bias {cfg.bias}) has no "
                  f"Hugging Face architecture with the same computation; export writes GPT-2's layout "
                  f"(position: learned, layernorm, gelu, bias) and Llama's (position: rope, norm: rmsnorm, "
                  f"mlp: swiglu, bias: false)")


def hf_config(cfg: ModelConfig, tokenizer: Tokenizer) -> dict:
    kind = layout(cfg)
    ids = {"bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.eos_id, "pad_token_id": tokenizer.pad_id,
           "tie_word_embeddings": cfg.tie_embeddings, "vocab_size": cfg.vocab_size, "torch_dtype": "float32"}
    if kind == "gpt2":
        return {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_positions": cfg.block_size,
                "n_embd": cfg.n_embd, "n_layer": cfg.n_layer, "n_head": cfg.n_head,
                "n_inner": cfg.mlp_hidden or cfg.mlp_ratio * cfg.n_embd, "activation_function": "gelu_new",
                "layer_norm_epsilon": cfg.norm_eps, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
                **ids}
    out = {"model_type": kind, "architectures": ["LlamaForCausalLM" if kind == "llama" else "Qwen2ForCausalLM"],
           "hidden_size": cfg.n_embd, "intermediate_size": cfg.mlp_hidden or cfg.mlp_ratio * cfg.n_embd,
           "num_hidden_layers": cfg.n_layer, "num_attention_heads": cfg.n_head,
           "num_key_value_heads": cfg.n_kv_head or cfg.n_head, "head_dim": cfg.n_embd // cfg.n_head,
           "max_position_embeddings": cfg.block_size, "rms_norm_eps": cfg.norm_eps, "rope_theta": cfg.rope_theta,
           "rope_scaling": cfg.rope_scaling, "hidden_act": "silu", **ids}
    if kind == "llama":
        out.update(attention_bias=False, mlp_bias=False)
    return out


def hf_state(model: GPT) -> dict[str, torch.Tensor]:
    """The model's tensors under the Hugging Face names of its layout."""
    cfg, w = model.config, model.state_dict()
    out: dict[str, torch.Tensor] = {}
    if layout(cfg) == "gpt2":
        out.update({"transformer.wte.weight": w["wte.weight"], "transformer.wpe.weight": w["wpe.weight"],
                    "transformer.ln_f.weight": w["ln_f.weight"], "transformer.ln_f.bias": w["ln_f.bias"]})
        for i in range(cfg.n_layer):
            h, b = f"transformer.h.{i}.", f"blocks.{i}."
            for ours, theirs, conv in GPT2_LAYER:
                weight = w[f"{b}{ours}.weight"]
                out[f"{h}{theirs}.weight"] = weight.t() if conv else weight  # Conv1D keeps (in, out)
                out[f"{h}{theirs}.bias"] = w[f"{b}{ours}.bias"]
    else:
        H, Hk, D = cfg.n_head, cfg.n_kv_head or cfg.n_head, cfg.n_embd // cfg.n_head
        out.update({"model.embed_tokens.weight": w["wte.weight"], "model.norm.weight": w["ln_f.weight"]})
        for i in range(cfg.n_layer):
            h, b = f"model.layers.{i}.", f"blocks.{i}."
            for suffix in ("weight", "bias") if cfg.qkv_bias else ("weight",):
                q, k, v = w[f"{b}attn.qkv.{suffix}"].split([H * D, Hk * D, Hk * D])
                for name, t in zip("qkv", (q, k, v)):
                    out[f"{h}self_attn.{name}_proj.{suffix}"] = t
            for ours, theirs in LLAMA_LAYER:
                out[h + theirs] = w[b + ours]
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = w["lm_head.weight"]
    return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in out.items()}


def export(model: nn.Module, tokenizer: Tokenizer, out: str | Path, run_config_yaml: str | None = None) -> Path:
    """Write `model` (a GPT, or an OmniGPT whose decoder is exported) and its tokenizer to the folder `out`."""
    out = Path(out)
    decoder = model if isinstance(model, GPT) else model.gpt
    config = hf_config(decoder.config, tokenizer)  # refuses an unexportable layout before writing anything
    out.mkdir(parents=True, exist_ok=True)
    state = hf_state(decoder)
    tmp = out / ".model.safetensors.tmp"
    save_file(state, str(tmp), metadata={"format": "pt"})
    tmp.replace(out / "model.safetensors")
    write_atomic(out / "config.json", json.dumps(config, indent=2) + "\n", what="the exported config")
    tokenizer.save(out)
    if decoder is not model:
        media = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()
                 if not k.startswith("gpt.")}
        save_file(media, str(out / "omnigpt_media.safetensors"))
        if run_config_yaml is not None:
            write_atomic(out / "omnigpt_config.yaml", run_config_yaml, what="the run's config")
    return out
