"""Configuration: dataclasses for the model, the data and training, loaded from and saved to YAML.

Loading is strict: an unknown key or a value of the wrong type is an error that names the key path
(`train.lr`) and the file it came from, so a typo never silently falls back to a default.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Sequence, Union

import yaml

from .atomic import write_atomic

MODALITIES = ("text", "image", "audio")  # the inputs an example may have, in the order models take them
IGNORE_INDEX = -100  # a label that takes no part in the loss (batches write it, the models skip it)


class ConfigError(ValueError):
    """A configuration value is missing, unknown, of the wrong type or out of its range."""


INT_LIMIT = 2 ** 63  # torch and numpy hold integers in 64 bits
SEED_LIMIT = 2 ** 32  # seeds: what every random generator omnigpt seeds accepts
FLOAT_BYTES = 4  # a parameter's weight in fp32
MAX_IMAGE_SIZE = 8192  # pixels per side: a 3 x 8192 x 8192 float image is 0.8 GB already


def _show(value: Any) -> str:
    """A value for an error message: repr, with integers too long to print (or to read) summarised."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10 ** 30:
        return f"{'-' if value < 0 else ''}an integer of {value.bit_length()} bits"
    if isinstance(value, (list, tuple, dict)):
        try:
            text = repr(value)
        except ValueError:  # an element is an integer of more digits than Python prints
            return f"a {type(value).__name__} of {len(value)} items"
        return text if len(text) <= 200 else text[:200] + "..."
    return repr(value)


def _require(ok: bool, key: str, value: Any, allowed: str) -> None:
    """Raise a ConfigError naming `key`, the `value` it has and what is `allowed`, unless `ok`."""
    if not ok:
        raise ConfigError(f"{key} must be {allowed}, got {_show(value)}")


def _positive(section: str, obj: Any, names: tuple[str, ...]) -> None:
    for name in names:
        _require(getattr(obj, name) > 0, f"{section}.{name}", getattr(obj, name), "positive")


def _fraction(key: str, value: float) -> None:
    """A dropout-like probability: [0, 1)."""
    _require(0.0 <= value < 1.0, key, value, "in [0, 1)")


def check_numbers(obj: Any, key: str, _inside: tuple[int, ...] = ()) -> None:
    """Every number in `obj` (a config section, with its lists, mappings and subsections) is finite and fits in
    64 bits: NaN and infinity pass the type check but break a model or a run, so no key takes them."""
    if isinstance(obj, (dict, list, tuple)):
        if id(obj) in _inside:
            raise ConfigError(f"{key} holds itself (a YAML alias inside its own anchor): give plain values")
        _inside = (*_inside, id(obj))
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            check_numbers(getattr(obj, f.name), f"{key}.{f.name}" if key else f.name, _inside)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            check_numbers(v, f"{key}.{k}", _inside)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            check_numbers(v, f"{key}[{i}]", _inside)
    elif isinstance(obj, float):
        _require(math.isfinite(obj), key, obj, "a finite number (not NaN or infinity)")
    elif isinstance(obj, int) and not isinstance(obj, bool):
        _require(-INT_LIMIT <= obj < INT_LIMIT, key, obj, "an integer of 64 bits (-2**63 to 2**63 - 1)")


@dataclass
class ModelConfig:
    vocab_size: int = 4096
    block_size: int = 256  # context length in tokens
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    dropout: float = 0.0
    bias: bool = True
    position: Literal["learned", "sinusoidal", "rope"] = "learned"
    rope_theta: float = 10000.0
    tie_embeddings: bool = True
    norm_eps: float = 1e-5
    mlp_ratio: int = 4
    # The Llama family's choices (the defaults keep GPT-2's layout): RMSNorm, a SwiGLU MLP of mlp_hidden
    # units (default mlp_ratio * n_embd), n_kv_head key/value heads for grouped-query attention (default
    # n_head), biases on q/k/v alone (qkv_bias; default: bias), and a RoPE scaling as Hugging Face configs
    # write it ({rope_type: linear|llama3, factor, ...}).
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    mlp: Literal["gelu", "swiglu"] = "gelu"
    mlp_hidden: Optional[int] = None
    n_kv_head: Optional[int] = None
    qkv_bias: Optional[bool] = None
    rope_scaling: Optional[dict[str, Any]] = None  # checked in validate()

    def validate(self) -> None:
        check_numbers(self, "model")
        _positive("model", self, ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "mlp_ratio"))
        if self.n_embd % self.n_head != 0:
            raise ConfigError(f"model.n_embd ({self.n_embd}) must be divisible by model.n_head ({self.n_head})")
        if self.position == "rope" and (self.n_embd // self.n_head) % 2 != 0:
            raise ConfigError(f"model.position 'rope' needs an even head size (n_embd / n_head), got "
                              f"{self.n_embd} / {self.n_head} = {self.n_embd // self.n_head}")
        _fraction("model.dropout", self.dropout)
        _require(self.rope_theta > 0, "model.rope_theta", self.rope_theta, "> 0 (rope's base wavelength)")
        _require(self.norm_eps > 0, "model.norm_eps", self.norm_eps, "> 0 (LayerNorm divides by sqrt(var + eps))")
        if self.mlp_hidden is not None:
            _require(self.mlp_hidden >= 1, "model.mlp_hidden", self.mlp_hidden, ">= 1 (or unset: mlp_ratio * n_embd)")
        if self.n_kv_head is not None:
            _require(self.n_kv_head >= 1 and self.n_head % self.n_kv_head == 0, "model.n_kv_head", self.n_kv_head,
                     f"a divisor of model.n_head ({self.n_head}), or unset")
        if self.rope_scaling is not None:
            self._check_rope_scaling()

    def _check_rope_scaling(self) -> None:
        s = self.rope_scaling
        kind = s.get("rope_type", s.get("type"))
        if self.position != "rope":
            raise ConfigError("model.rope_scaling needs model.position: rope")
        needs = {"linear": ("factor",), "llama3": ("factor", "low_freq_factor", "high_freq_factor",
                                                   "original_max_position_embeddings")}
        if not isinstance(kind, str) or kind not in needs:
            raise ConfigError(f"model.rope_scaling rope_type {kind!r} is not supported (linear, llama3)")
        for key in needs[kind]:
            value = s.get(key)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
            _require(ok, f"model.rope_scaling.{key}", value, "a number > 0")
        if kind == "llama3":
            _require(s["high_freq_factor"] > s["low_freq_factor"], "model.rope_scaling.high_freq_factor",
                     s["high_freq_factor"], f"> low_freq_factor ({s['low_freq_factor']})")


@dataclass
class VisionConfig:
    """The image encoder: `cnn` (strided conv stages), `vit` (patches + the shared Transformer block), or the
    layout of a pretrained tower, `clip` or `siglip` (see `model.vision.TowerEncoder`; `interop.clip`
    writes this section from a Hugging Face folder).

    Its output is a grid of vectors, `tokens` per image, with learned positions. Token reduction keeps
    a large image from flooding the context: `pool` averages the grid down to `grid` x `grid` tokens,
    `pixel_shuffle` folds each `reduce_factor` x `reduce_factor` patch of tokens into one wider token.
    """
    encoder: Literal["cnn", "vit", "clip", "siglip"] = "cnn"
    image_size: int = 64  # images are resized (and center cropped) to image_size x image_size pixels
    width: int = 256  # the encoder's output width (ViT width; CNN channels of the last stage)
    channels: list[int] = field(default_factory=lambda: [32, 64, 128])  # CNN: one stride-2 stage each
    patch_size: int = 8  # ViT
    n_layer: int = 4  # ViT
    n_head: int = 4  # ViT
    reduce: Literal["none", "pool", "pixel_shuffle"] = "none"
    grid: int = 4  # tokens per side after `pool`
    reduce_factor: int = 2  # `pixel_shuffle` factor
    dropout: float = 0.0
    mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    std: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    # How an image becomes image_size x image_size: `crop` scales the centre square; `pad` letterboxes with
    # the mean colour; `stretch` scales each side (SigLIP's processor); `shortest_edge` scales the shorter
    # side to resize_to (default image_size) and cuts the centre square out, rounding as CLIP's processor.
    resize: Literal["crop", "pad", "stretch", "shortest_edge"] = "crop"
    resize_to: Optional[int] = None
    # Transformer layers (vit, clip, siglip): the MLP's inner width (default 4 * width), LayerNorm's eps,
    # the MLP's GELU (gelu_tanh, gelu: exact, quick_gelu: CLIP's x * sigmoid(1.702 x)).
    mlp_hidden: Optional[int] = None
    norm_eps: float = 1e-5
    activation: Literal["gelu_tanh", "gelu", "quick_gelu"] = "gelu_tanh"
    # clip, siglip: the hidden state handed on, as an index into Hugging Face's hidden_states (-1: the last
    # layer's output, -2: the one before, as LLaVA takes; layers after it are not built), and whether the
    # tower's post_layernorm is applied to it (SigLIP's last_hidden_state has it; CLIP's has not).
    feature_layer: int = -1
    post_norm: bool = False

    TOWERS = ("clip", "siglip")

    def feature_side(self) -> int:
        """Tokens per side of the encoder's grid before reduction."""
        if self.encoder == "vit" or self.encoder in self.TOWERS:
            return self.image_size // self.patch_size
        return math.ceil(self.image_size / 2 ** len(self.channels))

    def layers_used(self) -> int:
        """Transformer layers the encoder runs (clip, siglip: up to feature_layer)."""
        if self.encoder in self.TOWERS:
            return self.feature_layer if self.feature_layer > 0 else self.n_layer + 1 + self.feature_layer
        return self.n_layer

    def token_side(self) -> int:
        side = self.feature_side()
        if self.reduce == "pool":
            return min(self.grid, side)
        if self.reduce == "pixel_shuffle":
            return side // self.reduce_factor
        return side

    @property
    def tokens(self) -> int:
        """Vectors per image handed to the decoder."""
        return self.token_side() ** 2

    def validate(self) -> None:
        check_numbers(self, "vision")
        _positive("vision", self, ("image_size", "width", "patch_size", "n_layer", "n_head"))
        _require(self.image_size <= MAX_IMAGE_SIZE, "vision.image_size", self.image_size,
                 f"at most {MAX_IMAGE_SIZE} pixels")
        for i, c in enumerate(self.channels):
            _require(c > 0, f"vision.channels[{i}]", c, "a positive number of channels (one per CNN stage)")
        _fraction("vision.dropout", self.dropout)
        _require(len(self.mean) == 3, "vision.mean", self.mean, "three numbers (R, G, B)")
        _require(len(self.std) == 3 and all(v > 0 for v in self.std), "vision.std", self.std,
                 "three numbers > 0 (R, G, B): pixels are divided by them")
        if self.encoder == "vit" or self.encoder in self.TOWERS:
            if self.image_size % self.patch_size:
                raise ConfigError(f"vision.image_size ({self.image_size}) must be a multiple of vision.patch_size "
                                  f"({self.patch_size})")
            if self.width % self.n_head:
                raise ConfigError(f"vision.width ({self.width}) must be divisible by vision.n_head ({self.n_head})")
        elif not self.channels:
            raise ConfigError("vision.channels is empty: the CNN encoder needs at least one stage")
        if self.reduce == "pixel_shuffle" and (self.reduce_factor < 1 or self.feature_side() % self.reduce_factor):
            raise ConfigError(f"vision.reduce_factor ({self.reduce_factor}) must divide the encoder's grid side "
                              f"({self.feature_side()})")
        if self.reduce == "pool" and self.grid < 1:
            raise ConfigError(f"vision.grid must be >= 1, got {self.grid}")
        self._check_layers_and_resize()

    def _check_layers_and_resize(self) -> None:
        if self.mlp_hidden is not None:
            _require(self.mlp_hidden >= 1, "vision.mlp_hidden", self.mlp_hidden, ">= 1 (or unset: 4 * width)")
        _require(self.norm_eps > 0, "vision.norm_eps", self.norm_eps, "> 0 (LayerNorm divides by sqrt(var + eps))")
        if self.encoder in self.TOWERS:
            n = self.n_layer
            _require(1 <= self.feature_layer <= n or -n <= self.feature_layer <= -1, "vision.feature_layer",
                     self.feature_layer, f"a layer of the {n}-layer tower: -1 (the last) to -{n}, or 1 to {n}")
        else:
            _require(self.feature_layer == -1, "vision.feature_layer", self.feature_layer,
                     f"-1 for the {self.encoder} encoder (it applies to clip and siglip towers)")
            _require(not self.post_norm, "vision.post_norm", self.post_norm,
                     f"false for the {self.encoder} encoder (it applies to clip and siglip towers)")
        if self.resize_to is not None:
            _require(self.resize == "shortest_edge", "vision.resize_to", self.resize_to,
                     "unset unless vision.resize is shortest_edge")
            _require(self.image_size <= self.resize_to <= MAX_IMAGE_SIZE, "vision.resize_to", self.resize_to,
                     f"at least vision.image_size ({self.image_size}) and at most {MAX_IMAGE_SIZE} pixels: "
                     f"the shorter side is scaled to it, then the centre image_size square is cut out")


@dataclass
class AudioConfig:
    """Log-mel features and the audio encoder: two stride-2 1-D convs (4x fewer frames), the shared
    Transformer block (bidirectional), then average pooling by `pool`. At hop 160 and 16 kHz that is
    100 / (4 * pool) vectors per second of audio. pool_at `start` pools before the blocks instead of after
    them: the same vectors a second reach the decoder, and the blocks read `pool` times fewer (cheaper: the
    encoder's blocks cost about as much as the decoder on a speech batch).

    encoder `whisper` is Whisper's layout, to hold its pretrained weights (`interop.whisper`): the first conv
    keeps the frame rate (2x fewer frames in all: 50 / pool vectors per second), a fixed position table of
    max_frames / 2 rows kept with the weights (`position` stays sinusoidal), exact (erf) GELU in the MLP.

    ctc_weight: in training, a transcript's clip also takes a CTC loss (Graves et al., 2006) from a linear
    head over the encoder's vectors onto the tokenizer's ids plus a blank, weighted by this and added to the
    decoder's loss. It makes the encoder's vectors line up with the words they carry early on, which the
    decoder otherwise has to discover through the projector; 0: no head, no extra loss. A clip needs at
    least as many vectors as its transcript has tokens (plus repeats); clips that cannot align add nothing.

    pad_to_window: every clip is padded with silence to `max_seconds` before its log-mel and the encoder reads
    the whole window, as Whisper always does (30 s, 3000 frames): a Whisper encoder's states are then exactly
    Whisper's, and every clip costs the window's vectors. False: a clip keeps its length and the encoder masks
    a batch's padding, which is cheaper, but Whisper's weights then read a short clip as they never did in
    training (no silence after it), so its states differ from Whisper's. `interop.whisper` sets it.
    """
    sample_rate: int = 16000
    n_mels: int = 80
    n_fft: int = 400
    hop_length: int = 160
    log: Literal["whisper", "natural"] = "whisper"
    width: int = 256
    n_layer: int = 3
    n_head: int = 4
    position: Literal["sinusoidal", "rope"] = "sinusoidal"
    pool: int = 1
    pool_at: Literal["end", "start"] = "end"  # after the blocks, or before them
    max_seconds: float = 30.0  # longer audio is cut into windows by the caller
    dropout: float = 0.0
    encoder: Literal["omnigpt", "whisper"] = "omnigpt"
    mlp_hidden: Optional[int] = None  # the blocks' MLP width; None: 4 * width
    pad_to_window: bool = False
    ctc_weight: float = 0.0

    def tokens_for_frames(self, frames: int) -> int:
        """Encoder vectors for a clip of `frames` feature frames (with pad_to_window: the window's)."""
        if self.pad_to_window:
            frames = self.max_frames
        for _ in range(1 if self.encoder == "whisper" else 2):  # stride-2 convs: ceil(frames / 2) each
            frames = -(-frames // 2)
        return -(-frames // self.pool)

    @property
    def max_frames(self) -> int:
        return int(math.ceil(self.max_seconds * self.sample_rate / self.hop_length))

    def validate(self) -> None:
        check_numbers(self, "audio")
        _positive("audio", self, ("sample_rate", "n_mels", "n_fft", "hop_length", "width", "n_layer", "n_head",
                                  "pool"))
        _require(1000 <= self.sample_rate <= 384000, "audio.sample_rate", self.sample_rate,
                 "between 1000 and 384000 Hz")
        if self.width % self.n_head:
            raise ConfigError(f"audio.width ({self.width}) must be divisible by audio.n_head ({self.n_head})")
        if self.position == "rope" and (self.width // self.n_head) % 2:
            raise ConfigError(f"audio.position 'rope' needs an even head size (width / n_head), got "
                              f"{self.width} / {self.n_head} = {self.width // self.n_head}")
        _require(self.max_seconds > 0, "audio.max_seconds", self.max_seconds, "positive")
        longest = self.max_seconds * self.sample_rate
        _require(self.n_fft < longest, "audio.n_fft", self.n_fft,
                 f"fewer samples than audio.max_seconds holds ({self.max_seconds:g} s = {longest:g} samples)")
        _fraction("audio.dropout", self.dropout)
        _require(self.ctc_weight >= 0, "audio.ctc_weight", self.ctc_weight, ">= 0 (0: no CTC loss)")
        if self.mlp_hidden is not None:
            _require(self.mlp_hidden >= 1, "audio.mlp_hidden", self.mlp_hidden, ">= 1 (or unset: 4 * width)")
        if self.encoder == "whisper":
            _require(self.position == "sinusoidal", "audio.position", self.position,
                     "sinusoidal with audio.encoder whisper (its fixed position table)")
            _require(self.width % 2 == 0 and self.width >= 4, "audio.width", self.width,
                     "even and >= 4 with audio.encoder whisper (its position table pairs sines and cosines)")
            _require(self.pool_at == "end", "audio.pool_at", self.pool_at,
                     "end with audio.encoder whisper (its position table is one row per frame of the blocks)")
        if self.pad_to_window:
            hops = self.max_seconds * self.sample_rate / self.hop_length
            _require(float(hops).is_integer(), "audio.max_seconds", self.max_seconds,
                     f"a whole number of hops ({self.hop_length} samples at {self.sample_rate} Hz) with "
                     f"audio.pad_to_window: the window is that many feature frames")


@dataclass
class FusionConfig:
    """How encoder outputs reach the decoder.

    prefix: projected image vectors replace the `<image>` placeholder in the token stream (early fusion).
    cross_attention: the decoder reads them through gated cross-attention layers inserted before every
    `cross_every`-th block; each gate is tanh of a parameter that starts at 0, so a pretrained text GPT is
    unchanged until training opens the gates.
    """
    mode: Literal["prefix", "cross_attention"] = "prefix"
    projector: Literal["linear", "mlp"] = "mlp"
    cross_every: int = 1

    def validate(self) -> None:
        check_numbers(self, "fusion")
        if self.cross_every < 1:
            raise ConfigError(f"fusion.cross_every must be >= 1, got {self.cross_every}")


@dataclass
class ClassifierConfig:
    """Multimodal classification: each modality's encoder gives a sequence of vectors, projected to `width`;
    a fusion strategy joins the modalities and a head predicts the class.

    Encoders: text `gpt` (the `model` section's Transformer) or `lstm` (a bidirectional LSTM over token
    embeddings); image: the `vision` section (cnn or vit); audio `transformer` (the `audio` section) or `lstm`
    (a bidirectional LSTM over 4x-subsampled log-mel frames). Pooling to one vector per modality: `mean`
    (over the valid positions), `cls` (a learned token read through one Transformer block), `attention`
    (a learned query's softmax weights over the positions).

    Fusion: `concat` (pooled vectors side by side, then an MLP), `weighted_sum` (learned softmax weights
    over the modalities), `gated` (each modality's vector scaled by a sigmoid gate computed from all of them),
    `product` (low-rank tensor fusion: the elementwise product of one affine map of each modality's vector),
    `attention` (Transformer layers over all modalities' vectors, read at a class token), `early` (every
    modality in the GPT's token stream, laid out by `template`, and read at the end of each modality's span).
    A missing modality is masked out (weighted_sum, gated, product, attention, early) or replaced by a learned
    "absent" vector (concat); `modality_dropout` trains for it.
    """
    fusion: Literal["concat", "weighted_sum", "attention", "early", "gated", "product"] = "concat"
    modalities: list[Literal["text", "image", "audio"]] = field(default_factory=lambda: ["text", "image", "audio"])
    text_encoder: Literal["gpt", "lstm"] = "gpt"
    audio_encoder: Literal["transformer", "lstm"] = "transformer"
    pool: Literal["mean", "cls", "attention"] = "mean"
    width: int = 128  # every modality's vectors are projected to this width
    hidden: int = 256  # the head's hidden layer
    fusion_layers: int = 2  # attention fusion: Transformer layers over all modalities
    fusion_heads: int = 4
    lstm_width: int = 128  # per direction
    dropout: float = 0.1
    modality_dropout: float = 0.0  # training: each modality of an example is dropped with this chance
    class_weights: Literal["none", "balanced"] = "none"  # balanced: loss weights ~ 1 / class frequency
    labels: list[str] = field(default_factory=list)  # class names; filled from the training data when empty
    # Early fusion's token stream (other fusions ignore it): {text}, {image} and {audio} where each modality
    # goes, and any words around them (words after a placeholder belong to its span). Empty: "{text} {image}
    # {audio}" for the configured modalities; the text comes first so the GPT reads the image in the light of
    # the question. Words let a GPT pretrained on prompts be asked the same way, e.g.
    # "question: {text} {image} answer: {audio} transcript:".
    template: str = ""

    def validate(self) -> None:
        check_numbers(self, "classifier")
        if not self.modalities or len(set(self.modalities)) != len(self.modalities):
            raise ConfigError(f"classifier.modalities must list text, image and/or audio once each, got "
                              f"{self.modalities}")
        for name in ("width", "hidden", "fusion_layers", "fusion_heads", "lstm_width"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"classifier.{name} must be positive, got {getattr(self, name)}")
        if self.width % self.fusion_heads:
            raise ConfigError(f"classifier.width ({self.width}) must be divisible by classifier.fusion_heads "
                              f"({self.fusion_heads})")
        if not 0.0 <= self.modality_dropout < 1.0:
            raise ConfigError(f"classifier.modality_dropout must be in [0, 1), got {self.modality_dropout}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"classifier.dropout must be in [0, 1), got {self.dropout}")
        if len(set(self.labels)) != len(self.labels):
            raise ConfigError(f"classifier.labels has duplicates: {self.labels}")
        self.early_spans()

    def early_spans(self) -> tuple[str, list[tuple[str, str]]]:
        """Early fusion's template as (the words before the first placeholder, [(modality, the words after its
        placeholder)] in reading order)."""
        template = self.template or " ".join("{%s}" % m for m in ("text", "image", "audio") if m in self.modalities)
        pieces = re.split(r"\{(\w*)\}", template)
        named = pieces[1::2]
        if sorted(named) != sorted(self.modalities):
            raise ConfigError(f"classifier.template must hold each of {{{'}, {'.join(self.modalities)}}} once (the "
                              f"modalities), got {template!r}")
        return pieces[0].strip(), [(m, words.strip()) for m, words in zip(named, pieces[2::2])]

    def template_ids(self, tokenizer: Any) -> list[list[int]]:
        """Token ids of early fusion's template words: those before the first placeholder, then those after
        each (tokenizer: a `Tokenizer`, needed only when the template has words)."""
        prefix, spans = self.early_spans()
        pieces = [prefix] + [words for _, words in spans]
        if any(pieces) and tokenizer is None:
            raise ValueError(f"classifier.template {self.template!r} has words: building the model needs the "
                             f"tokenizer")
        return [tokenizer.encode((" " if k else "") + piece) if piece else [] for k, piece in enumerate(pieces)]


@dataclass
class AugmentConfig:
    """Seeded training augmentations of images (all off by default)."""
    random_crop_scale: list[float] = field(default_factory=lambda: [1.0, 1.0])  # area fraction range
    hflip: bool = False  # off: a caption that says "left" would become wrong
    rotate_degrees: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0


@dataclass
class AudioAugmentConfig:
    """Seeded training augmentations of audio (off by default): SpecAugment masks and added white noise."""
    freq_masks: int = 0  # bands of mel channels masked, each up to freq_width wide
    freq_width: int = 15
    time_masks: int = 0  # spans of frames masked, each up to time_width long
    time_width: int = 40
    noise_snr_db: list[float] = field(default_factory=list)  # [low, high]: white noise at an SNR drawn between


@dataclass
class DataConfig:
    # Text files to pretrain on; the word "builtin" stands for the English text that ships with Python.
    corpus: list[str] = field(default_factory=lambda: ["builtin"])
    tokenizer: Literal["bpe", "byte"] = "bpe"
    tokenizer_path: Optional[str] = None  # a trained tokenizer.json to reuse instead of training one
    val_fraction: float = 0.1
    fim_rate: float = 0.0  # fraction of training windows rewritten to fill-in-the-middle (PSM order)
    encoding_errors: Literal["strict", "replace"] = "strict"
    # Image-text fine-tuning (`omnigpt finetune`). A source is "builtin:scenes" (generated shape scenes),
    # "coco:captions.json" (with `images`, the image folder) or a JSONL manifest.
    sources: list[str] = field(default_factory=list)
    val_sources: list[str] = field(default_factory=list)  # default: a held-out part of the sources
    # Multitask: the chance that a training example comes from each source (default: in proportion to their
    # sizes). "text:FILE" (or "text:builtin") is a source of plain text for the language-model task.
    source_weights: list[float] = field(default_factory=list)
    # "mixed": each row of a batch draws its source; "per_source": each step draws one source (by the weights)
    # for the whole batch, so short examples are not padded to the longest source's length.
    batch_mode: Literal["mixed", "per_source"] = "mixed"
    text_chars: int = 400  # "text:" sources are cut (at whitespace) into pieces of about this many characters
    # Fine-tuning a generator: put a batch's examples one after another into as few rows as hold them, each
    # with positions from 0 and attention within itself (its loss is what it is alone), so short examples
    # waste no compute on padding. With images or audio: fusion.mode prefix only. "auto": pack where the run
    # trains in fp32 (in bf16 on a CPU the longer, masked attention rows cost more than the padding saved);
    # the run folder records what was chosen, and a resumed run keeps it.
    pack: Literal[False, True, "auto"] = False
    # hf:PATH sources (a `datasets` folder or Parquet/JSON files): their columns renamed to omnigpt's keys,
    # {ours: theirs}, e.g. {text: article, summary: highlights}
    columns: dict[str, str] = field(default_factory=dict)
    images: Optional[str] = None
    tasks: list[Literal["caption", "vqa", "transcribe"]] = field(default_factory=lambda: ["caption", "vqa"])
    caption_fraction: float = 0.5  # built-in scenes: share of examples that are captions when both tasks are on
    builtin_scenes: int = 1_000_000  # built-in training scenes (each is drawn on demand)
    # Built-in scenes: questions asked about one image in one training sequence (after the first, each is
    # a follow-up turn); several per image train question answering faster for little extra compute.
    questions_per_example: int = 1
    # Translation rows ({"source", "target"}) that name no "source_lang" / "target_lang" are asked in these
    # words ("English: the cat\nFrench:"); evaluation asks a run's test rows in the same ones.
    source_lang: str = "source"
    target_lang: str = "target"
    # Text classification rows ({"text", "label"}): the labels the run learns, filled from its training rows and
    # written into its config.yaml; evaluation refuses (or skips) a row of another label.
    labels: list[str] = field(default_factory=list)
    on_bad_file: Literal["skip", "error"] = "error"
    # Every file the data sources name must lie in this folder (../, absolute paths and symbolic links out of
    # it are refused, without saying whether the file exists): for a shared training service. None: anywhere.
    media_root: Optional[str] = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    audio_augment: AudioAugmentConfig = field(default_factory=AudioAugmentConfig)
    builtin_utterances: int = 12000  # built-in speech: training utterances synthesized once and cached
    cache_dir: Optional[str] = None  # where generated data is cached (default ~/.cache/omnigpt)

    def validate(self) -> None:
        check_numbers(self, "data")
        if not self.corpus and not self.sources:
            raise ConfigError("data.corpus is empty: give at least one text file or 'builtin'")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be in (0, 1), got {self.val_fraction}")
        if not 0.0 <= self.fim_rate <= 1.0:
            raise ConfigError(f"data.fim_rate must be in [0, 1], got {self.fim_rate}")
        if not 0.0 <= self.caption_fraction <= 1.0:
            raise ConfigError(f"data.caption_fraction must be in [0, 1], got {self.caption_fraction}")
        if self.audio_augment.noise_snr_db and len(self.audio_augment.noise_snr_db) != 2:
            raise ConfigError(f"data.audio_augment.noise_snr_db takes [low, high] in dB, got "
                              f"{self.audio_augment.noise_snr_db}")
        if self.text_chars < 1:
            raise ConfigError(f"data.text_chars must be >= 1, got {self.text_chars}")
        if self.questions_per_example < 1:
            raise ConfigError(f"data.questions_per_example must be >= 1, got {self.questions_per_example}")
        for key in ("source_lang", "target_lang"):
            if not getattr(self, key).strip() or "\n" in getattr(self, key):
                raise ConfigError(f"data.{key} must be a language's name on one line, got {getattr(self, key)!r}")
        if self.source_weights and (len(self.source_weights) != len(self.sources)
                                    or any(w < 0 for w in self.source_weights) or not sum(self.source_weights) > 0):
            raise ConfigError(f"data.source_weights needs one weight >= 0 per source ({len(self.sources)}), not all "
                              f"0; got {self.source_weights}")
        if self.sources and not self.tasks:
            raise ConfigError("data.tasks is empty: choose caption, vqa or both")
        _positive("data", self, ("builtin_scenes", "builtin_utterances"))
        aug = self.augment
        _require(len(aug.random_crop_scale) == 2 and 0 < aug.random_crop_scale[0] <= aug.random_crop_scale[1] <= 1,
                 "data.augment.random_crop_scale", aug.random_crop_scale,
                 "[min, max] area fractions with 0 < min <= max <= 1")
        for name in ("rotate_degrees", "brightness", "contrast", "saturation", "hue"):
            _require(getattr(aug, name) >= 0, f"data.augment.{name}", getattr(aug, name), ">= 0 (0 is off)")
        _require(aug.hue <= 0.5, "data.augment.hue", aug.hue, "at most 0.5 (half the colour wheel)")
        for name in ("freq_masks", "freq_width", "time_masks", "time_width"):
            value = getattr(self.audio_augment, name)
            _require(value >= 0, f"data.audio_augment.{name}", value, ">= 0 (0 is off)")
        snr = self.audio_augment.noise_snr_db
        _require(not snr or snr[0] <= snr[1], "data.audio_augment.noise_snr_db", snr, "[low, high] with low <= high")


@dataclass
class LoraConfig:
    """LoRA adapters (`model.lora`): low-rank updates on the linear layers whose module names match `targets`
    (fnmatch patterns: "*.attn.qkv", "gpt.blocks.*.mlp.*"); every other weight stays fixed."""
    rank: int = 8
    alpha: float = 16.0  # the update is scaled by alpha / rank
    dropout: float = 0.0  # on the adapters' input
    targets: list[str] = field(default_factory=lambda: ["*attn.qkv", "*attn.proj"])

    def validate(self) -> None:
        _require(isinstance(self.rank, int) and self.rank >= 1, "train.lora.rank", self.rank, "an integer >= 1")
        _require(self.alpha > 0, "train.lora.alpha", self.alpha, "> 0")
        _require(0 <= self.dropout < 1, "train.lora.dropout", self.dropout, "in [0, 1)")
        _require(bool(self.targets) and all(isinstance(t, str) and t for t in self.targets), "train.lora.targets",
                 self.targets, "a non-empty list of module-name patterns, e.g. ['*attn.qkv', '*mlp.*']")


@dataclass
class TrainConfig:
    seed: int = 1337
    batch_size: int = 16  # sequences per micro-batch on each process
    grad_accum: int = 1
    max_steps: int = 1000
    max_minutes: Optional[float] = None  # stop (with a checkpoint) after this many minutes of this invocation
    # The cosine decay runs to max_steps ("steps"), or to the end of this invocation's max_minutes
    # ("minutes": a run bounded by time ends annealed; each resumed call is a new cycle over its budget).
    decay_over: Literal["steps", "minutes"] = "steps"
    # The share of the run (after warmup) the decay takes: 1.0 is a cosine over all of it; 0.3 holds lr for
    # the first 70% and anneals over the last 30% (warmup-stable-decay), which keeps a short run learning fast
    # for longer.
    decay_fraction: float = 1.0
    # The training speed a recipe was tuned at, in steps a minute: a time-budgeted call that runs at under 80%
    # of it says so at its end, with the measured speed and what to change (its scores will be far below the
    # recipe's, which assume that many steps in the time).
    tuned_steps_per_minute: Optional[float] = None
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 50
    weight_decay: float = 0.1
    # adamw, or muon: Muon (orthogonalized momentum) for the hidden matrices of the Transformer blocks and
    # projectors, AdamW (with the betas below) for the rest; lr and weight_decay mean the same for both. In
    # omni-tiny at an equal step count it trained every task much further (train/muon.py, bench/README.md).
    optimizer: Literal["adamw", "muon"] = "adamw"
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # 0 turns clipping off
    # auto: bf16 where the hardware computes it natively (a recent GPU, a CPU with AVX512-BF16 or AMX), fp16
    # with a gradient scaler on an older GPU, fp32 otherwise. A run folder's config.yaml records the choice.
    # (Older configs' `bf16: true` / `false` read as bf16 / fp32.)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    # Where to train: auto (the GPU when there is one, each torchrun process on its own; else the CPU), cpu,
    # cuda or cuda:N. The environment variable OMNIGPT_DEVICE, when set, stands in for auto.
    device: str = "auto"
    compile: bool = False
    eval_interval: int = 100
    eval_batches: int = 20
    save_interval: int = 200
    keep_checkpoints: int = 2
    init_from: Optional[str] = None  # start from this checkpoint's weights and tokenizer (text GPT or omni)
    freeze: list[Literal["vision", "audio", "projector", "decoder", "cross_attention"]] = field(default_factory=list)
    # Learning-rate multipliers by part (the names freeze takes): {vision: 0.6} trains the image encoder at
    # 0.6 x the scheduled rate. A multitask run may need them because its encoders do not like the same rate:
    # a CNN's colour features wash out above ~3e-4. (In omni-tiny the audio encoder learned worse at both 2x
    # and 0.5x the shared 5e-4, so it keeps 1x there.)
    lr_scale: dict[Literal["vision", "audio", "projector", "decoder", "cross_attention"], float] = \
        field(default_factory=dict)
    # Fine-tuning loss: the mean over all target tokens ("token"), or over examples, each example's tokens
    # sharing one unit of weight ("example": a one-word answer counts as much as a long caption).
    loss_average: Literal["token", "example"] = "token"
    # LoRA: train low-rank adapters instead of the weights (which stay fixed); null: train the weights.
    lora: Optional[LoraConfig] = None

    def validate(self) -> None:
        check_numbers(self, "train")
        if self.lora is not None:
            self.lora.validate()
            if self.freeze:
                raise ConfigError(f"train.freeze {self.freeze} with train.lora: LoRA already keeps every weight "
                                  f"fixed and trains only its adapters; leave train.freeze empty")
        _positive("train", self, ("batch_size", "grad_accum", "max_steps", "eval_interval", "eval_batches",
                                  "save_interval", "keep_checkpoints"))
        _require(0 <= self.seed < SEED_LIMIT, "train.seed", self.seed, f"an integer in [0, {SEED_LIMIT - 1}]")
        if self.grad_clip < 0:
            raise ConfigError(f"train.grad_clip must be >= 0 (0 turns clipping off), got {self.grad_clip}")
        _require(self.lr > 0, "train.lr", self.lr, "> 0")
        _require(0 <= self.min_lr <= self.lr, "train.min_lr", self.min_lr,
                 f"in [0, train.lr] = [0, {self.lr:g}] (the cosine decays from lr to min_lr)")
        _require(self.warmup_steps >= 0, "train.warmup_steps", self.warmup_steps, ">= 0 (0: no warmup)")
        _require(self.weight_decay >= 0, "train.weight_decay", self.weight_decay, ">= 0")
        for name in ("beta1", "beta2"):
            _require(0 <= getattr(self, name) < 1, f"train.{name}", getattr(self, name), "in [0, 1) (Adam's decay)")
        if self.max_minutes is not None:
            _require(self.max_minutes > 0, "train.max_minutes", self.max_minutes, "> 0 minutes (or null: no limit)")
        if self.tuned_steps_per_minute is not None and not self.tuned_steps_per_minute > 0:
            raise ConfigError(f"train.tuned_steps_per_minute must be > 0, got {self.tuned_steps_per_minute}")
        if not 0.0 < self.decay_fraction <= 1.0:
            raise ConfigError(f"train.decay_fraction must be in (0, 1], got {self.decay_fraction}")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(self.device)):
            raise ConfigError(f"train.device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.decay_over == "minutes" and self.max_minutes is None:
            raise ConfigError("train.decay_over: minutes needs train.max_minutes (or --minutes)")
        parts = typing.get_args(typing.get_args(typing.get_type_hints(TrainConfig)["freeze"])[0])
        unknown = [p for p in self.freeze if p not in parts]
        if unknown:
            raise ConfigError(f"train.freeze: unknown part(s) {unknown}; choose from {list(parts)}")
        bad = {p: v for p, v in self.lr_scale.items() if not v > 0}
        if bad:
            raise ConfigError(f"train.lr_scale must be positive, got {bad}")


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping: PyYAML would keep the last one silently,
    and a setting written twice is a slip that the config should name."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, typing.Hashable):
                continue  # the mapping's own constructor names an unhashable key
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice in one mapping (the last would win silently)",
                    key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    vision: Optional[VisionConfig] = None  # set: a multimodal model (OmniGPT) with an image encoder
    audio: Optional[AudioConfig] = None  # set: an audio encoder (log-mel features in)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    classifier: Optional[ClassifierConfig] = None  # set: a multimodal classifier instead of a generator

    def can_pack(self) -> bool:
        """Whether data.pack can pack this model's examples: a generator whose media sit in the token stream."""
        text_only = self.vision is None and self.audio is None
        return self.classifier is None and (self.fusion.mode == "prefix" or text_only)

    def resolve_pack(self, precision: str) -> None:
        """data.pack "auto" -> true where the run trains in fp32 and the model can pack, else false."""
        if self.data.pack == "auto":
            self.data.pack = precision == "fp32" and self.can_pack()

    def validate(self) -> "Config":
        check_numbers(self, "")
        self.model.validate()
        if self.classifier is not None:
            self.classifier.validate()
            if self.train.freeze or self.train.lr_scale:
                raise ConfigError("train.freeze and train.lr_scale do not apply to a classifier yet: its parts "
                                  "train at one rate")
            needs = {"image": self.vision, "audio": self.audio}
            for m in self.classifier.modalities:
                if m in needs and needs[m] is None:
                    raise ConfigError(f"classifier.modalities lists {m}, but the config has no '"
                                      f"{'vision' if m == 'image' else 'audio'}' section")
        self.data.validate()
        self.train.validate()
        self.fusion.validate()
        if self.audio is not None:
            self.audio.validate()
        if self.vision is not None:
            self.vision.validate()
            if self.fusion.mode == "prefix" and self.vision.tokens >= self.model.block_size:
                raise ConfigError(f"an image takes {self.vision.tokens} tokens, more than model.block_size "
                                  f"({self.model.block_size}): reduce them with vision.reduce")
        if self.data.pack is True and not self.can_pack():
            raise ConfigError("data.pack packs the examples of a generator whose images and clips sit in the token "
                              "stream (fusion.mode: prefix); a classifier, or cross-attention, reads media by row: "
                              "set data.pack: false")
        if self.classifier is None:  # file manifests are checked as they are read: a text GPT takes conversations
            needs = {"builtin:scenes": ("vision", self.vision), "builtin:speech": ("audio", self.audio)}
            for spec in self.data.sources + self.data.val_sources:
                if spec in needs and needs[spec][1] is None:
                    raise ConfigError(f"data.sources holds {spec} but the config has no '{needs[spec][0]}' section")
        # The parts an omni model has (the names train.freeze and train.lr_scale take); a text GPT has none.
        parts: set[str] = set()
        if self.vision is not None or self.audio is not None:
            present = {"vision": self.vision is not None, "audio": self.audio is not None,
                       "cross_attention": self.fusion.mode == "cross_attention"}
            parts = {"projector", "decoder"} | {name for name, here in present.items() if here}
        if self.train.freeze:
            if not parts:
                raise ConfigError(f"train.freeze {self.train.freeze} needs a multimodal model (a 'vision' or "
                                  f"'audio' section)")
            if "cross_attention" in self.train.freeze and self.fusion.mode != "cross_attention":
                raise ConfigError("train.freeze names cross_attention, but fusion.mode is prefix: there are no "
                                  "cross-attention layers")
            absent = [p for p in ("vision", "audio") if p in self.train.freeze and p not in parts]
            if absent:
                raise ConfigError(f"train.freeze names {absent[0]}, but the config has no '{absent[0]}' section")
            if parts <= set(self.train.freeze):
                raise ConfigError(f"train.freeze {self.train.freeze} leaves nothing to train")
        for part in self.train.lr_scale:
            if part not in parts:
                raise ConfigError(f"train.lr_scale names {part}, but the model has no such part")
        self._check_memory()
        return self

    def _check_memory(self) -> None:
        """Refuse a model whose weights alone (fp32) would not fit in this machine's memory, or a batch whose
        logits and residual stream alone would not: either fails later in the allocator, after a long setup."""
        memory = machine_memory_bytes()
        parts = estimate_parameters(self)
        total = sum(parts.values())
        if total * FLOAT_BYTES > memory:
            part = max(parts, key=lambda name: parts[name])
            keys = ", ".join(f"{k} {_show(v)}" for k, v in _size_keys(self, part))
            raise ConfigError(f"the model would have about {total:.3g} parameters ({total * FLOAT_BYTES / 1e9:.3g} GB "
                              f"in fp32), more than this machine's memory ({memory / 1e9:.3g} GB); most of them in "
                              f"the {part} ({keys}): make it smaller")
        m, t = self.model, self.train
        activations = FLOAT_BYTES * t.batch_size * m.block_size * (m.vocab_size + m.n_layer * m.n_embd)
        if activations > memory:
            raise ConfigError(f"one batch (train.batch_size {t.batch_size} x model.block_size {m.block_size}) needs "
                              f"at least {activations / 1e9:.3g} GB for its logits and activations, more than this "
                              f"machine's memory ({memory / 1e9:.3g} GB): lower train.batch_size (train.grad_accum "
                              f"keeps the batch's size in examples)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | Path) -> None:
        write_atomic(path, self.to_yaml())

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> "Config":
        cfg = _build(cls, _upgrade(data, source), prefix="", source=source)
        if source == "<dict>":
            return cfg.validate()
        try:
            return cfg.validate()
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    def with_overrides(self, overrides: Sequence[str]) -> "Config":
        """A copy with `section.key=value` settings applied (values read as YAML: 3e-4, true, [a, b]), checked
        as the YAML file is: an unknown key or a bad value names it."""
        data = self.to_dict()
        for item in overrides:
            key, sep, raw = item.partition("=")
            if not sep or not key or any(not part for part in key.split(".")):
                raise ConfigError(f"override {item!r}: expected section.key=value, e.g. train.lr=3e-4")
            try:
                value = yaml.safe_load(raw) if raw.strip() else raw
            except yaml.YAMLError:
                value = raw
            *path, last = key.split(".")
            node = data
            for i, part in enumerate(path):
                if node.get(part) is None:  # a section that is off (vision: null, train.lora: null) turns on
                    node[part] = {}
                node = node[part]
                if not isinstance(node, dict):
                    raise ConfigError(f"override {item!r}: {'.'.join(path[:i + 1])} is not a section")
            node[last] = value
        return Config.from_dict(data, source="the command line")

    @classmethod
    def load(cls, path: str | Path) -> "Config":
        path = Path(path)
        if path.is_dir():
            inside = path / "config.yaml"
            hint = f" (the run's config is {inside})" if inside.is_file() else ""
            raise ConfigError(f"{path} is a folder, not a config file: give a YAML file{hint}")
        if not path.exists():
            raise ConfigError(f"config file not found: {path}")
        if not path.is_file():
            raise ConfigError(f"{path} is not a regular file: give a YAML file")
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the config: {exc.strerror or exc}") from None
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = raw[:exc.start].count(b"\n") + 1
            raise ConfigError(f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} on line {line}): save the config "
                              f"as UTF-8") from None
        try:
            data = yaml.load(text, Loader=_UniqueKeyLoader)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"{path}: not valid YAML{where}: {what}") from None
        except Exception as exc:
            # PyYAML's constructors fail in their own ways on some input: an integer too long to read
            # (ValueError), lists nested too deeply (RecursionError), an empty `!!int` or `!!float` (IndexError),
            # a `!!timestamp` that is not one (AttributeError)
            raise ConfigError(f"{path}: not a config omnigpt can read: {type(exc).__name__}: {exc}") from None
        if data is None:
            raise ConfigError(f"{path} holds no settings (it is empty or only comments): give a mapping of "
                              f"sections ({', '.join(f.name for f in dataclasses.fields(cls))})")
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of sections at the top level "
                              f"({', '.join(f.name for f in dataclasses.fields(cls))}), got {type(data).__name__}")
        return cls.from_dict(data, source=str(path))


def _upgrade(data: Any, source: str) -> Any:
    """Read keys of older configs and run folders as today's: `train.bf16: true|false` is `precision`."""
    train = data.get("train") if isinstance(data, dict) else None
    if not isinstance(train, dict) or "bf16" not in train:
        return data
    train = dict(train)
    old = train.pop("bf16")
    if not isinstance(old, bool):
        raise ConfigError(f"{source}: 'train.bf16' must be true or false, got {old!r} (newer configs say "
                          f"train.precision: auto | fp32 | bf16 | fp16)")
    if "precision" in train and train["precision"] != ("bf16" if old else "fp32"):
        raise ConfigError(f"{source}: 'train.bf16: {str(old).lower()}' contradicts 'train.precision: "
                          f"{train['precision']}'; keep train.precision only")
    train["precision"] = "bf16" if old else "fp32"
    return {**data, "train": train}


def _build(cls: type, data: Any, prefix: str, source: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: '{prefix.rstrip('.') or '<top>'}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names, key=str)
    if unknown:
        key = prefix + str(unknown[0])
        raise ConfigError(f"{source}: unknown key '{key}' (known keys under '{prefix.rstrip('.') or '<top>'}': "
                          f"{', '.join(sorted(names))})")
    values = {}
    for name, value in data.items():
        values[name] = _coerce(hints[name], value, prefix + name, source)
    return cls(**values)


def _coerce(tp: Any, value: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:  # a value whose section checks it in validate()
        return value
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key + ".", source)
    if origin is Union or origin is types.UnionType:
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, key, source)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if not any(value == a and type(value) is type(a) for a in allowed):  # 1 is not True
            raise ConfigError(f"{source}: '{key}' must be one of {list(allowed)}, got {value!r}")
        return value
    if origin is dict:
        key_tp, value_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: '{key}' must be a mapping, got {value!r}")
        return {_coerce(key_tp, k, f"{key}.{k}", source): _coerce(value_tp, v, f"{key}.{k}", source)
                for k, v in value.items()}
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"{source}: '{key}' must be a list, got {value!r}")
        return [_coerce(item, v, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 3e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: '{key}' must be a number, got {_show(value)}")
        try:
            return float(value)
        except OverflowError:
            raise ConfigError(f"{source}: '{key}' must be a finite number, got {_show(value)}") from None
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: '{key}' must be an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: '{key}' must be true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: '{key}' must be a string, got {value!r}")
        return value
    raise ConfigError(f"{source}: '{key}' has an unsupported type {tp}")


def machine_memory_bytes() -> int:
    """This machine's physical memory in bytes (1 TiB where the platform does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return 2 ** 40


def _block(width: int, mlp_ratio: int = 4) -> int:
    """Weights of one Transformer block: attention (4 w^2) and the MLP (2 r w^2), with biases and norms."""
    return (4 + 2 * mlp_ratio) * width * width + (9 + mlp_ratio) * width


def estimate_parameters(cfg: Config) -> dict[str, int]:
    """The parameters (and fixed tables) a config's model would have, by part, estimated without building it."""
    m = cfg.model
    kv = (m.n_kv_head or m.n_head) * (m.n_embd // m.n_head)  # grouped-query attention: fewer k/v heads
    hidden = m.mlp_hidden or m.mlp_ratio * m.n_embd
    layer = 2 * m.n_embd * (m.n_embd + kv) + (3 if m.mlp == "swiglu" else 2) * m.n_embd * hidden + 9 * m.n_embd + hidden
    parts = {"decoder": m.vocab_size * m.n_embd * (1 if m.tie_embeddings else 2) + m.block_size * m.n_embd
             + m.n_layer * layer}
    media = []
    if cfg.vision is not None:
        v = cfg.vision
        side = v.image_size // v.patch_size if v.encoder in ("vit", *v.TOWERS) \
            else -(-v.image_size // 2 ** min(len(v.channels), 64))
        out = v.width * (v.reduce_factor ** 2 if v.reduce == "pixel_shuffle" else 1)
        mlp = 2 * v.width * (v.mlp_hidden - 4 * v.width) if v.mlp_hidden else 0
        positions = 2 * side * out  # a row and a column table
        if v.encoder in v.TOWERS:  # a position for every patch (and CLIP's class token)
            encoder = 3 * v.patch_size ** 2 * v.width + v.layers_used() * (_block(v.width) + mlp)
            positions = (side * side + 1) * v.width
        elif v.encoder == "vit":
            encoder = 3 * v.patch_size ** 2 * v.width + v.n_layer * (_block(v.width) + mlp)
        else:
            widths = [3, *v.channels]
            encoder = sum(9 * a * b + 9 * b * b for a, b in zip(widths, widths[1:])) + widths[-1] * v.width
        parts["vision"] = encoder + positions
        media.append(out)
    if cfg.audio is not None:
        a = cfg.audio
        table = (a.tokens_for_frames(a.max_frames) * a.pool + 1) * a.width if a.position == "sinusoidal" else 0
        mlp = 2 * a.width * (a.mlp_hidden - 4 * a.width) if a.mlp_hidden else 0
        ctc_head = (a.width + 1) * (m.vocab_size + 1) if a.ctc_weight > 0 and cfg.classifier is None else 0
        parts["audio"] = (3 * a.n_mels * a.width + 3 * a.width ** 2 + a.n_layer * (_block(a.width) + mlp) + table
                          + ctc_head)
        media.append(a.width)
    if cfg.classifier is None:
        parts["projector"] = sum(d * m.n_embd + (m.n_embd ** 2 if cfg.fusion.projector == "mlp" else 0)
                                 for d in media)
        if cfg.fusion.mode == "cross_attention" and media:
            layers = -(-m.n_layer // cfg.fusion.cross_every)
            parts["cross_attention"] = layers * (_block(m.n_embd) + 2 * max(media) * m.n_embd)
    else:
        c = cfg.classifier
        n = len(c.modalities)
        lstm = 8 * c.lstm_width * (c.lstm_width + max(m.n_embd, cfg.audio.n_mels if cfg.audio else 0))
        widest = max([m.n_embd, *media])
        parts["classifier"] = (n * (widest * c.width + c.width ** 2) + c.fusion_layers * _block(c.width)
                               + n * c.width * c.hidden + m.vocab_size * c.lstm_width + 2 * lstm)
    return parts


def _size_keys(cfg: Config, part: str) -> list[tuple[str, Any]]:
    """The keys that set a part's size, with their values, for an error message."""
    if part == "vision" and cfg.vision is not None:
        v = cfg.vision
        if v.encoder in ("vit", *v.TOWERS):
            return [("vision.width", v.width), ("vision.n_layer", v.n_layer), ("vision.patch_size", v.patch_size),
                    ("vision.image_size", v.image_size)]
        return [("vision.channels", v.channels), ("vision.width", v.width), ("vision.image_size", v.image_size)]
    if part == "audio" and cfg.audio is not None:
        a = cfg.audio
        return [("audio.width", a.width), ("audio.n_layer", a.n_layer), ("audio.n_mels", a.n_mels),
                ("audio.max_seconds", a.max_seconds)]
    if part == "classifier" and cfg.classifier is not None:
        c = cfg.classifier
        return [("classifier.width", c.width), ("classifier.hidden", c.hidden),
                ("classifier.fusion_layers", c.fusion_layers), ("classifier.lstm_width", c.lstm_width)]
    m = cfg.model
    media = [(f"{name}.width", section.width) for name, section in (("vision", cfg.vision), ("audio", cfg.audio))
             if section is not None]
    if part == "projector":
        return [*media, ("model.n_embd", m.n_embd)]
    if part == "cross_attention":
        return [*media, ("model.n_embd", m.n_embd), ("model.n_layer", m.n_layer),
                ("fusion.cross_every", cfg.fusion.cross_every)]
    return [("model.n_embd", m.n_embd), ("model.n_layer", m.n_layer), ("model.vocab_size", m.vocab_size),
            ("model.block_size", m.block_size), ("model.mlp_hidden" if m.mlp_hidden else "model.mlp_ratio",
                                                 m.mlp_hidden or m.mlp_ratio)]
