"""An omni model assembled from pretrained parts: a language model, a vision tower (CLIP, SigLIP) and an audio
encoder (Whisper), each from a local Hugging Face folder (or `hf:ORG/NAME`), joined by new projectors that start from random
weights. It is written as step 0 of a run folder, so every command takes it: `finetune --init-from RUN
--freeze vision,audio,decoder` trains only the projectors (LLaVA's first stage), and a second `finetune`
from that run trains more of the model (its second stage).

The parts decide the architecture: the `model:` section comes from the language model, `vision:` from the
tower (image size, patch grid, normalization) and `audio:` from the encoder (mel bins, window). A base
config gives the rest: the data and training settings, the fusion and projector, and the choices a tower
leaves open (token reduction, which layer's features, audio pooling), which are read where the base sets
them away from their defaults.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from ..atomic import write_atomic
from ..checkpoint import save_checkpoint
from ..config import AudioConfig, Config, VisionConfig
from ..model.omni import build_model
from ..tokenizer import Tokenizer
from . import clip, whisper
from .decoder import load_pretrained
from .hub import local_folder

# Keys of a base config's vision and audio sections that stay the base's (where it sets them); the rest of
# each section is the pretrained part's own.
VISION_CHOICES = ("reduce", "grid", "reduce_factor", "dropout", "feature_layer")
AUDIO_CHOICES = ("pool", "dropout", "pad_to_window")


def _chosen(base: Optional[object], default: object, keys: tuple[str, ...]) -> dict:
    """The keys in which `base` differs from the section's defaults."""
    if base is None:
        return {}
    return {k: getattr(base, k) for k in keys if getattr(base, k) != getattr(default, k)}


def _default_data(cfg: Config, vision: bool, audio: bool) -> None:
    """Built-in scenes and speech, unless the base config names its own sources."""
    if cfg.data.sources:
        return
    cfg.data.sources = (["builtin:scenes"] if vision else []) + (["builtin:speech"] if audio else [])
    cfg.data.tasks = (["caption", "vqa"] if vision else []) + (["transcribe"] if audio else [])
    if vision and audio:
        cfg.data.batch_mode = "per_source"  # an image batch and a speech batch in turn, each padded alike


def assemble(lm: str | Path, vision: Optional[str | Path] = None, audio: Optional[str | Path] = None,
             base: Optional[Config] = None, seed: int = 0) -> tuple[Config, nn.Module, Tokenizer]:
    """The config, the OmniGPT and the tokenizer of a model made of the language model in folder `lm`, the
    vision tower in `vision` and the Whisper encoder in `audio` (at least one of the two), with new projectors
    (seeded with `seed`). `base`: the rest of the config (see the module docstring)."""
    if vision is None and audio is None:
        raise ValueError("assemble needs a vision tower, an audio encoder or both besides the language model")
    cfg = Config.from_dict(base.to_dict()) if base is not None else Config()
    lm, vision, audio = (local_folder(p) if p is not None else None for p in (lm, vision, audio))
    _, decoder, tokenizer = load_pretrained(lm)
    cfg.model = decoder.config
    parts: dict[str, nn.Module] = {}
    if vision is not None:
        choices = _chosen(base.vision if base is not None else None, VisionConfig(), VISION_CHOICES)
        layer = choices.pop("feature_layer", -1)
        tower_cfg, parts["vision"] = clip.load_vision(vision, feature_layer=layer)
        for key, value in choices.items():
            setattr(tower_cfg, key, value)
        cfg.vision = tower_cfg
    else:
        cfg.vision = None
    if audio is not None:
        audio_cfg, parts["audio_encoder"] = whisper.load_audio_encoder(audio)
        for key, value in _chosen(base.audio if base is not None else None, AudioConfig(), AUDIO_CHOICES).items():
            setattr(audio_cfg, key, value)
        cfg.audio = audio_cfg
    else:
        cfg.audio = None
    cfg.classifier = None
    cfg.train.init_from = None
    _default_data(cfg, vision is not None, audio is not None)
    cfg.validate()
    torch.manual_seed(seed)
    model = build_model(cfg, tokenizer.image_id, tokenizer.audio_id, tokenizer)
    model.gpt.load_state_dict(decoder.state_dict())
    for name, part in parts.items():
        getattr(model, name).load_state_dict(part.state_dict())
    return cfg, model.eval(), tokenizer


def write_assembled(out: str | Path, lm: str | Path, vision: Optional[str | Path] = None,
                    audio: Optional[str | Path] = None, base: Optional[Config] = None, seed: int = 0) -> Path:
    """Assemble (see `assemble`) into a new run folder `out` as its step-0 checkpoint; returns that folder."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty: assemble writes a new run folder")
    cfg, model, tokenizer = assemble(lm, vision, audio, base, seed)
    folder = save_checkpoint(out, 0, model, cfg, tokenizer)
    write_atomic(out / "config.yaml", cfg.to_yaml())
    sizes = {name: sum(p.numel() for p in module.parameters()) / 1e6
             for name, module in (("decoder", model.gpt), ("vision", getattr(model, "vision", None)),
                                  ("audio", getattr(model, "audio_encoder", None))) if module is not None}
    new = sum(p.numel() for n, p in model.named_parameters() if "projector" in n) / 1e6
    print(f"assembled {', '.join(f'{k} {v:.1f}M' for k, v in sizes.items())} and new projectors ({new:.2f}M "
          f"parameters) into {folder}", file=sys.stderr)
    return folder

