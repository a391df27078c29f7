"""An omnigpt GPT written as a Hugging Face folder that `transformers.AutoModelForCausalLM` and `AutoTokenizer`
load: config.json, model.safetensors, tokenizer.json and tokenizer_config.json.

Three layouts, chosen from the model's config: GPT-2's (learned positions, LayerNorm, GELU MLP, biases),
GPT-NeoX's (the same with RoPE: the shipped configs) and the Llama family's (RoPE, RMSNorm, SwiGLU, no biases;
Qwen2's when only q/k/v have biases). A multimodal model
exports its decoder so, and its encoders and projectors beside it (`omnigpt_media.safetensors` with the
run's config as `omnigpt_config.yaml`), which only omnigpt reads.
"""
from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import torch
from safetensors.torch import save_file
from torch import nn

from ..atomic import write_atomic
from ..config import ModelConfig
from ..model.gpt import GPT
from ..tokenizer import Tokenizer
from . import gpt2, llama, neox
from .folder import HFError


def family_for(cfg: ModelConfig) -> ModuleType:
    """The Hugging Face family that computes what this GPT does, or an HFError."""
    for family in (gpt2, neox, llama):
        if family.matches(cfg):
            return family
    raise HFError(f"this model (position {cfg.position}, norm {cfg.norm}, mlp {cfg.mlp}, bias {cfg.bias}) has no "
                  f"Hugging Face architecture with the same computation; export writes GPT-2's layout "
                  f"(position: learned, layernorm, gelu, bias), GPT-NeoX's (the same with position: rope) and "
                  f"Llama's (position: rope, norm: rmsnorm, mlp: swiglu, bias: false)")


def hf_config(cfg: ModelConfig, tokenizer: Tokenizer) -> dict:
    return {**family_for(cfg).hf_config(cfg), "bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.eos_id,
            "pad_token_id": tokenizer.pad_id, "tie_word_embeddings": cfg.tie_embeddings,
            "vocab_size": cfg.vocab_size, "torch_dtype": "float32"}


def hf_state(model: GPT) -> dict[str, torch.Tensor]:
    """The model's tensors under the Hugging Face names of its family."""
    out = family_for(model.config).to_hf(model.state_dict(), model.config)
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
