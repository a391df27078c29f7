"""Whisper's encoder (`model_type: whisper`) from a Hugging Face folder, as omnigpt's audio encoder with the same
outputs (`audio.encoder: whisper`). A WhisperForConditionalGeneration or WhisperModel folder is read (tensors
under `model.encoder.` or `encoder.`); the decoder's tensors are left alone.

The features come from `preprocessor_config.json` when the folder has one (WhisperFeatureExtractor's mel bins,
FFT, hop, rate and window), else Whisper's own (80 mels, 16 kHz, 25 ms / 10 ms). The config sets
`pad_to_window`: every clip is padded to the encoder's window (30 s for the released models), as Whisper does,
so its states are Whisper's exactly. Hugging Face keeps q, k and v apart, and k has no bias; omnigpt fuses
them, with a zero k bias (a bias on the keys adds the same score to every key, which softmax ignores).
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..config import AudioConfig, ConfigError
from ..model.audio import AudioEncoder
from .folder import HFError, read_config, read_json, read_weights

TYPES = ("whisper",)
PREFIXES = ("model.encoder.", "encoder.")  # WhisperForConditionalGeneration / WhisperModel, WhisperEncoder alone
# Per layer: (omnigpt name under blocks.i., Hugging Face name under layers.i.), each with .weight and .bias
LAYER = (("ln_1", "self_attn_layer_norm"), ("attn.proj", "self_attn.out_proj"), ("ln_2", "final_layer_norm"),
         ("mlp.fc", "fc1"), ("mlp.proj", "fc2"))
WHISPER_FEATURES = {"feature_size": 80, "sampling_rate": 16000, "n_fft": 400, "hop_length": 160}


def read_features(path: str | Path) -> dict:
    """preprocessor_config.json as a dict ({} when the folder has none)."""
    return read_json(path, "preprocessor_config.json") or {}


def encoder_config(hf: dict, features: dict) -> AudioConfig:
    """omnigpt's AudioConfig for Whisper's config.json and its feature extractor's settings (dicts)."""
    kind = hf.get("model_type")
    if kind not in TYPES:
        raise HFError(f"model_type {kind!r} is not supported for an audio encoder; omnigpt reads {', '.join(TYPES)}")
    act = hf.get("activation_function", "gelu")
    if act != "gelu":
        raise HFError(f"whisper activation_function {act!r} is not supported (gelu)")
    n_mels = hf.get("num_mel_bins", 80)
    f = {**WHISPER_FEATURES, "feature_size": n_mels, **features}
    if f["feature_size"] != n_mels:
        raise HFError(f"the feature extractor gives {f['feature_size']} mel bins, the encoder takes {n_mels}")
    if f["sampling_rate"] != 16000:  # Whisper's filters stop at 8 kHz, omnigpt's at half the rate
        raise HFError(f"feature extractor sampling_rate {f['sampling_rate']} is not supported (16000)")
    frames = 2 * hf["max_source_positions"]  # the window: conv2 halves it to the position table's rows
    window = frames * f["hop_length"]
    if f.get("n_samples", window) != window:
        raise HFError(f"the feature extractor pads to {f['n_samples']} samples, the encoder's window is {frames} "
                      f"frames of {f['hop_length']} = {window} samples")
    cfg = AudioConfig(sample_rate=f["sampling_rate"], n_mels=n_mels, n_fft=f["n_fft"], hop_length=f["hop_length"],
                      log="whisper", width=hf["d_model"], n_layer=hf["encoder_layers"],
                      n_head=hf["encoder_attention_heads"], position="sinusoidal", pool=1,
                      max_seconds=window / f["sampling_rate"], encoder="whisper",
                      mlp_hidden=hf["encoder_ffn_dim"], pad_to_window=True)
    try:
        cfg.validate()
    except ConfigError as exc:
        raise HFError(f"this Whisper encoder has no omnigpt counterpart: {exc}") from None
    return cfg


def audio_config(path: str | Path) -> AudioConfig:
    """The audio section for the Whisper folder at `path` (config.json, and preprocessor_config.json if any)."""
    hf = read_config(path)
    try:
        return encoder_config(hf, read_features(path))
    except KeyError as exc:
        raise HFError(f"{Path(path) / 'config.json'} lacks {exc.args[0]!r}, which a whisper model needs") from None
    except HFError as exc:
        raise HFError(f"{path}: {exc}") from None


def _prefix(weights: dict[str, torch.Tensor]) -> str:
    for prefix in PREFIXES:
        if any(name.startswith(prefix) for name in weights):
            return prefix
    return ""


def from_hf(weights: dict[str, torch.Tensor], cfg: AudioConfig) -> dict[str, torch.Tensor]:
    """Hugging Face tensors of a Whisper model -> the state dict of omnigpt's AudioEncoder for `cfg`. HFError
    naming the Hugging Face tensor when one is missing or its shape is not what `cfg` gives."""
    prefix = _prefix(weights)
    d, hidden = cfg.width, cfg.mlp_hidden or 4 * cfg.width

    def take(name: str, *shape: int) -> torch.Tensor:
        full = prefix + name
        if full not in weights:
            raise HFError(f"the weights lack the tensor {full!r} that a whisper encoder needs")
        if tuple(weights[full].shape) != shape:
            raise HFError(f"tensor {full} has shape {tuple(weights[full].shape)}, the config gives {shape}")
        return weights[full]

    shapes = {"ln_1": (d,), "ln_2": (d,), "attn.proj": (d, d), "mlp.fc": (hidden, d), "mlp.proj": (d, hidden)}
    out = {"conv1.weight": take("conv1.weight", d, cfg.n_mels, 3), "conv1.bias": take("conv1.bias", d),
           "conv2.weight": take("conv2.weight", d, d, 3), "conv2.bias": take("conv2.bias", d),
           "position_table": take("embed_positions.weight", -(-cfg.max_frames // 2), d),
           "norm.weight": take("layer_norm.weight", d), "norm.bias": take("layer_norm.bias", d)}
    for i in range(cfg.n_layer):
        h, b = f"layers.{i}.", f"blocks.{i}."
        q, k, v = (take(f"{h}self_attn.{p}_proj.weight", d, d) for p in "qkv")
        out[b + "attn.qkv.weight"] = torch.cat([q, k, v])
        q_bias, v_bias = (take(f"{h}self_attn.{p}_proj.bias", d) for p in "qv")
        out[b + "attn.qkv.bias"] = torch.cat([q_bias, torch.zeros_like(q_bias), v_bias])
        for ours, theirs in LAYER:
            out[f"{b}{ours}.weight"] = take(f"{h}{theirs}.weight", *shapes[ours])
            out[f"{b}{ours}.bias"] = take(f"{h}{theirs}.bias", shapes[ours][0])
    return out


def load_audio_encoder(path: str | Path, dtype: torch.dtype = torch.float32) -> tuple[AudioConfig, AudioEncoder]:
    """The audio section and Whisper's encoder with its weights (kept in `dtype`) from the folder at `path`."""
    cfg = audio_config(path)
    try:
        state = from_hf(read_weights(path), cfg)
    except HFError as exc:
        raise HFError(f"{path}: {exc}") from None
    for name, tensor in state.items():
        if not bool(torch.isfinite(tensor).all()):
            raise HFError(f"{path}: the weights hold non-finite values (NaN or infinity) in {name}")
    encoder = AudioEncoder(cfg)
    encoder.load_state_dict(state)  # strict: every tensor of the encoder came from the folder
    return cfg, encoder.to(dtype).eval()
