"""Decoder-only language models from Hugging Face folders, as omnigpt GPTs with the same outputs. Each family
(`gpt2`, `llama`, `neox`) maps its config and tensors both ways; this module picks the family by `model_type`."""
from __future__ import annotations

from pathlib import Path
from types import ModuleType

import torch

from ..config import Config, ModelConfig
from ..model.gpt import GPT
from ..tokenizer import Tokenizer
from . import gpt2, llama, neox
from .folder import HFError, read_config, read_weights

FAMILIES: dict[str, ModuleType] = {kind: family for family in (gpt2, llama, neox) for kind in family.TYPES}
SUPPORTED = tuple(FAMILIES)


def family_of(hf: dict) -> ModuleType:
    kind = hf.get("model_type")
    if kind not in FAMILIES:
        raise HFError(f"model_type {kind!r} is not supported; omnigpt reads {', '.join(SUPPORTED)}")
    return FAMILIES[kind]


def model_config(hf: dict) -> ModelConfig:
    """omnigpt's ModelConfig for a Hugging Face config.json (as a dict)."""
    return family_of(hf).model_config(hf)


def load_decoder(path: str | Path, dtype: torch.dtype = torch.float32) -> GPT:
    """The GPT in a Hugging Face folder, with its weights (kept in `dtype`)."""
    hf = read_config(path)
    family = family_of(hf)
    try:
        cfg = family.model_config(hf)
    except KeyError as exc:
        raise HFError(f"{Path(path) / 'config.json'} lacks {exc.args[0]!r}, which a {hf['model_type']} "
                      f"model needs") from None
    try:
        state = family.from_hf(read_weights(path), cfg)
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
