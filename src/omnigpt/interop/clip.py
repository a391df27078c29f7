"""CLIP and SigLIP vision towers from Hugging Face folders (`model_type` clip, clip_vision_model, siglip,
siglip_vision_model), as omnigpt image encoders (`model.vision.TowerEncoder`) with the same features.

A full CLIPModel or SiglipModel folder keeps the tower's settings under `vision_config` and its tensors under
`vision_model.`; the text tower and SigLIP's attention-pooling head are not read. The folder's
`preprocessor_config.json` gives the image size, resize and normalization, so that `data.inputs.Inputs`
prepares a file as the tower's own image processor does. Hugging Face keeps q, k and v apart; omnigpt fuses
them.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator, Optional

import torch
from torch import nn

from ..config import ConfigError, VisionConfig
from ..model.vision import TowerEncoder
from .folder import HFError, read_config, read_json, read_weights

TYPES = {"clip": "clip", "clip_vision_model": "clip", "siglip": "siglip", "siglip_vision_model": "siglip"}
SUPPORTED = tuple(TYPES)
ACTIVATIONS = {"quick_gelu": "quick_gelu", "gelu": "gelu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh"}
# What transformers assumes when a config.json leaves a key out (CLIPVisionConfig, SiglipVisionConfig).
DEFAULTS = {
    "clip": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
             "image_size": 224, "patch_size": 32, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5},
    "siglip": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
               "image_size": 224, "patch_size": 16, "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6},
}
# The image processors' defaults (CLIPImageProcessor: OpenAI's mean and std; SiglipImageProcessor: 0.5).
MEAN_STD = {"clip": ([0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]),
            "siglip": ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])}
BICUBIC = 3  # PIL's number for it, as preprocessor_config.json writes `resample`
PREFIX = "vision_model."
# Per layer: (omnigpt name under blocks.i., Hugging Face name under encoder.layers.i.), weight and bias each
LAYER = (("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"), ("attn.proj", "self_attn.out_proj"),
         ("mlp.fc", "mlp.fc1"), ("mlp.proj", "mlp.fc2"))


def tower_settings(hf: dict) -> tuple[str, dict]:
    """(clip or siglip, the tower's settings with transformers' defaults filled in) of a config.json."""
    kind = hf.get("model_type")
    if kind not in TYPES:
        raise HFError(f"model_type {kind!r} is not supported for a vision tower; omnigpt reads "
                      f"{', '.join(SUPPORTED)}")
    family = TYPES[kind]
    settings = hf if kind.endswith("_vision_model") else hf.get("vision_config")
    if not isinstance(settings, dict):
        raise HFError(f"a {kind} config.json needs a 'vision_config' mapping (the image tower's settings)")
    return family, {**DEFAULTS[family], **settings}


def _per_channel(value) -> list:
    """image_mean / image_std: one number for all three channels, or a list (checked by VisionConfig)."""
    return [float(value)] * 3 if isinstance(value, (int, float)) else list(value)


def _preprocessing(path: Path, family: str, image_size: int) -> dict:
    """VisionConfig fields (resize, resize_to, mean, std) for the folder's preprocessor_config.json, or for
    the family's default image processor when the folder has none."""
    mean, std = MEAN_STD[family]
    fields = {"resize": "shortest_edge" if family == "clip" else "stretch", "mean": mean, "std": std}
    file = path / "preprocessor_config.json"
    p = read_json(path, file.name)
    if p is None:
        return fields

    def unsupported(what: str) -> HFError:
        return HFError(f"{file}: {what}; omnigpt reproduces a bicubic resize to the tower's {image_size} x "
                       f"{image_size} pixels (a centre crop after a shortest-edge resize, or a stretch), "
                       f"rescaled by 1/255 and normalized")

    if p.get("resample", BICUBIC) != BICUBIC:
        raise unsupported(f"resample {p['resample']!r} is not bicubic ({BICUBIC})")
    if not p.get("do_resize", True):
        raise unsupported("do_resize is false")
    if not p.get("do_rescale", True):
        raise unsupported("do_rescale is false (pixels would stay 0..255)")
    factor = p.get("rescale_factor", 1 / 255)
    if not isinstance(factor, (int, float)) or not math.isclose(factor, 1 / 255, rel_tol=1e-6):
        raise unsupported(f"rescale_factor {factor!r} is not 1/255")
    size = p.get("size", image_size)
    if isinstance(size, int):  # older files: CLIP's shorter side, SigLIP's square
        size = {"height": size, "width": size} if family == "siglip" else {"shortest_edge": size}
    size = {k: v for k, v in size.items() if v is not None} if isinstance(size, dict) else size
    crop = p.get("crop_size", image_size)
    crop = (crop, crop) if isinstance(crop, int) else (crop.get("height"), crop.get("width")) \
        if isinstance(crop, dict) else crop
    center_crop, square = p.get("do_center_crop", family == "clip"), (image_size, image_size)
    if isinstance(size, dict) and set(size) == {"shortest_edge"}:
        edge = size["shortest_edge"]
        if not center_crop or crop != square or not isinstance(edge, int) or edge < image_size:
            raise unsupported(f"size {p.get('size')!r} with crop_size {p.get('crop_size')!r} (do_center_crop "
                              f"{center_crop}) does not give the tower's {image_size} x {image_size} pixels")
        fields.update(resize="shortest_edge", resize_to=edge if edge != image_size else None)
    elif isinstance(size, dict) and set(size) == {"height", "width"}:
        if (size["height"], size["width"]) != square or (center_crop and crop != square):
            raise unsupported(f"size {p.get('size')!r} with crop_size {p.get('crop_size')!r} (do_center_crop "
                              f"{center_crop}) does not give the tower's {image_size} x {image_size} pixels")
        fields["resize"] = "stretch"
    else:
        raise unsupported(f"size {p.get('size')!r} is not understood (shortest_edge, or height and width)")
    if p.get("do_normalize", True):
        fields.update(mean=_per_channel(p.get("image_mean", mean)), std=_per_channel(p.get("image_std", std)))
    else:
        fields.update(mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0])
    return fields


def vision_config(path: str | Path, feature_layer: int = -1, post_norm: Optional[bool] = None) -> VisionConfig:
    """omnigpt's vision section for the tower in a Hugging Face folder: its layout from config.json, its
    image size, resize and normalization from preprocessor_config.json.

    feature_layer: the hidden state handed on (-1: the last layer's output; -2: the one before, as LLaVA).
    post_norm: apply the tower's post_layernorm to it; default: SigLIP's last layer (that is its
    last_hidden_state), never CLIP's (its post_layernorm belongs to the pooled class token)."""
    path = Path(path)
    family, t = tower_settings(read_config(path))
    act = t["hidden_act"]
    if act not in ACTIVATIONS:
        raise HFError(f"{path / 'config.json'}: hidden_act {act!r} is not supported ({', '.join(ACTIVATIONS)})")
    if t.get("num_channels", 3) != 3:
        raise HFError(f"{path / 'config.json'}: num_channels {t['num_channels']} is not 3 (RGB)")
    if post_norm is None:
        post_norm = family == "siglip" and feature_layer == -1
    cfg = VisionConfig(encoder=family, image_size=t["image_size"], width=t["hidden_size"],
                       patch_size=t["patch_size"], n_layer=t["num_hidden_layers"], n_head=t["num_attention_heads"],
                       mlp_hidden=t["intermediate_size"], norm_eps=t["layer_norm_eps"], activation=ACTIVATIONS[act],
                       feature_layer=feature_layer, post_norm=post_norm,
                       **_preprocessing(path, family, t["image_size"]))
    try:
        cfg.validate()
    except ConfigError as exc:
        raise HFError(f"{path}: {exc}") from None
    return cfg


def _names(cfg: VisionConfig) -> Iterator[tuple[str, tuple[str, ...]]]:
    """(omnigpt name, the Hugging Face names without `vision_model.` it is made of) per tensor the encoder
    holds; q, k and v are stacked into one."""
    clip = cfg.encoder == "clip"
    yield "patch.weight", ("embeddings.patch_embedding.weight",)
    if not clip:
        yield "patch.bias", ("embeddings.patch_embedding.bias",)
    yield "pos", ("embeddings.position_embedding.weight",)
    if clip:
        yield "cls", ("embeddings.class_embedding",)
        for p in ("weight", "bias"):
            yield f"pre_norm.{p}", (f"pre_layrnorm.{p}",)  # sic: transformers' spelling
    for i in range(cfg.layers_used()):
        h, b = f"encoder.layers.{i}.", f"blocks.{i}."
        for p in ("weight", "bias"):
            yield f"{b}attn.qkv.{p}", tuple(f"{h}self_attn.{x}_proj.{p}" for x in "qkv")
            for ours, theirs in LAYER:
                yield f"{b}{ours}.{p}", (f"{h}{theirs}.{p}",)
    if cfg.post_norm:
        for p in ("weight", "bias"):
            yield f"post_norm.{p}", (f"post_layernorm.{p}",)


def _unprefixed(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.removeprefix(PREFIX): v for k, v in weights.items()}


def from_hf(weights: dict[str, torch.Tensor], cfg: VisionConfig) -> dict[str, torch.Tensor]:
    """Hugging Face tensors (a vision model's, or a full model's under `vision_model.`) -> the state dict of
    `TowerEncoder(cfg)`. A missing tensor raises KeyError with its name."""
    w = _unprefixed(weights)
    return {ours: torch.cat([w[t] for t in theirs]) if len(theirs) > 1 else w[theirs[0]]
            for ours, theirs in _names(cfg)}


def to_hf(state: dict[str, torch.Tensor], cfg: VisionConfig, prefix: str = "") -> dict[str, torch.Tensor]:
    """`TowerEncoder(cfg)`'s state dict -> Hugging Face's names (under `prefix`: "vision_model." for a full
    model). Only what the encoder holds: a tower cut at feature_layer lacks the later layers, and one
    without post_norm its post_layernorm."""
    out = {}
    for ours, theirs in _names(cfg):
        for name, tensor in zip(theirs, state[ours].chunk(len(theirs))):
            out[prefix + name] = tensor
    return out


def _check(path: Path, weights: dict[str, torch.Tensor], cfg: VisionConfig, own: dict[str, torch.Tensor]) -> None:
    """Every tensor the encoder needs is there, of the shape the config gives, and finite."""
    prefix = PREFIX if any(k.startswith(PREFIX) for k in weights) else ""
    w = _unprefixed(weights)
    for ours, theirs in _names(cfg):
        expected = (own[ours].shape[0] // len(theirs), *own[ours].shape[1:])
        for name in theirs:
            if name not in w:
                raise HFError(f"{path}: the weights lack the tensor {prefix + name!r} that a {cfg.encoder} vision "
                              f"tower needs")
            tensor = w[name]
            if tuple(tensor.shape) != expected:
                raise HFError(f"{path}: tensor {prefix + name} has shape {tuple(tensor.shape)}, the config gives "
                              f"{expected}")
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise HFError(f"{path}: the weights hold non-finite values (NaN or infinity) in {prefix + name}")


def load_vision(path: str | Path, dtype: torch.dtype = torch.float32, feature_layer: int = -1,
                post_norm: Optional[bool] = None) -> tuple[VisionConfig, nn.Module]:
    """The vision tower in a Hugging Face folder: its VisionConfig (see `vision_config`) and the encoder with
    its weights, kept in `dtype`, in eval mode."""
    path = Path(path)
    cfg = vision_config(path, feature_layer, post_norm)
    encoder = TowerEncoder(cfg)
    weights = read_weights(path)
    _check(path, weights, cfg, encoder.state_dict())
    encoder.load_state_dict(from_hf(weights, cfg))
    return cfg, encoder.to(dtype).eval()
