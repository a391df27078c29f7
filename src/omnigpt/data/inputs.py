"""The one featurizer: examples, images and clips turned into what the model of a config takes.

`Inputs` is built once from a `Config` (and the run's tokenizer) and used alike by training, evaluation,
generation, chat, transcription and classification, so that a model always sees its inputs as it was trained
on them: images resized and normalized by the vision section (and augmented while training, seeded per row),
clips turned into log-mel features by the audio section (noise and SpecAugment while training), text
tokenized with each placeholder expanded to the vectors its image or clip becomes.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence, Union

import numpy as np
import torch

from ..config import MODALITIES, AudioConfig, Config, ConfigError, VisionConfig
from ..tokenizer import Tokenizer
from .audio import MelConfig, SpecAugment, add_noise, load_audio, log_mel, pad_short
from .batch import Batch, EncodedExample, collate, collate_classes, expand_placeholders
from .conversations import ChatTemplate
from .image import Augment, ImageSource, ImageTransform, preprocess
from .prompts import target_text
from .text import DataError

if TYPE_CHECKING:  # the sets of examples, and what they read, are not needed to featurize one
    from .examples import Example

AudioInput = Union[str, Path, bytes, np.ndarray, torch.Tensor]  # a file, or mono samples at the model's rate


class InputError(DataError):
    """A tensor or array given as an input (a preprocessed image, samples) has the wrong shape."""


def image_transform(vision: VisionConfig) -> ImageTransform:
    """The resize and normalization of an image encoder. A pretrained tower (clip, siglip) decodes every file at
    full size, as its Hugging Face processor does, so that it sees the very pixels it was trained on."""
    return ImageTransform(vision.image_size, tuple(vision.mean), tuple(vision.std), vision.resize, vision.resize_to,
                          draft=vision.encoder not in vision.TOWERS)


def mel_config(audio: AudioConfig) -> MelConfig:
    """The log-mel settings of an audio encoder: clips keep their length, or with `audio.pad_to_window` are
    padded with silence to `audio.max_seconds` (as Whisper pads to 30 s)."""
    return MelConfig(audio.sample_rate, audio.n_fft, audio.hop_length, audio.n_mels, log=audio.log,
                     pad_to_seconds=audio.max_seconds if audio.pad_to_window else None)


class Inputs:
    """Model inputs for the model of `cfg` (see the module docstring). tokenizer: needed for examples
    (`features`, `collate`), not for single images and clips."""

    def __init__(self, cfg: Config, tokenizer: Optional[Tokenizer] = None):
        self.cfg, self.tokenizer = cfg, tokenizer
        v, a = cfg.vision, cfg.audio
        self.transform = image_transform(v) if v is not None else None
        self.mel = mel_config(a) if a is not None else None
        g = cfg.data.augment
        self.augment = Augment(tuple(g.random_crop_scale), hflip=g.hflip, rotate_degrees=g.rotate_degrees,
                               brightness=g.brightness, contrast=g.contrast, saturation=g.saturation, hue=g.hue)
        aa = cfg.data.audio_augment
        self.spec_augment = SpecAugment(aa.freq_masks, aa.freq_width, aa.time_masks, aa.time_width)
        self.noise_snr_db = tuple(aa.noise_snr_db)
        self.augmenting = self.augment.active or self.spec_augment.active or bool(self.noise_snr_db)
        self._ids: dict[str, list[int]] = {}
        self._chat: Optional[ChatTemplate] = None
        c = cfg.classifier
        if c is not None:
            self.modalities = [m for m in MODALITIES if m in c.modalities]
            self.class_index = {label: i for i, label in enumerate(c.labels)}
            self.text_budget = cfg.model.block_size  # tokens of text a classifier keeps
            if c.fusion == "early" and tokenizer is not None:
                # early fusion puts the template's words, the image's and the longest clip's vectors in one context
                self.text_budget -= sum(map(len, c.template_ids(tokenizer))) + \
                    (v.tokens if v is not None and "image" in c.modalities else 0) + \
                    (a.tokens_for_frames(a.max_frames) if a is not None and "audio" in c.modalities else 0)
                if self.text_budget < 1:
                    raise ConfigError(f"early fusion: the template's words, an image and a clip of "
                                      f"audio.max_seconds leave no room for text in model.block_size "
                                      f"{cfg.model.block_size}")

    # ------------------------------------------------------------------------------ images and clips
    def image(self, img: ImageSource | torch.Tensor, rng: Optional[random.Random] = None) -> torch.Tensor:
        """An image (a path, bytes, a PIL image, or a tensor already preprocessed) -> (3, S, S); augmented
        when rng is given and the config augments."""
        if self.transform is None:
            raise ConfigError("the data has images but the config has no 'vision' section")
        if isinstance(img, torch.Tensor):
            size = self.transform.size
            if tuple(img.shape) != (3, size, size):
                raise InputError(f"an image tensor must be preprocessed to (3, {size}, {size}), got "
                                f"{tuple(img.shape)}; or pass a path or a PIL image")
            return img.float()
        augment = self.augment if rng is not None and self.augment.active else None
        return preprocess(img, self.transform, augment, rng if augment else None)

    def audio(self, clip: AudioInput, rng: Optional[random.Random] = None) -> torch.Tensor:
        """A clip (a file, bytes, or mono samples at the model's rate) -> log-mel features (n_mels, frames);
        with noise and SpecAugment when rng is given and the config asks for them. A clip too short for one
        frame (`audio.min_samples`: 201 samples at the default n_fft and hop) is padded with silence."""
        if self.mel is None:
            raise ConfigError("the data has audio but the config has no 'audio' section")
        if isinstance(clip, (str, Path, bytes)):
            wave = load_audio(clip, self.mel.sample_rate, max_seconds=self.cfg.audio.max_seconds)
        else:
            wave = torch.as_tensor(clip, dtype=torch.float32)
            if wave.dim() != 1:
                raise InputError(f"audio samples must be 1-D (mono), got shape {tuple(wave.shape)}")
            if wave.numel() == 0:
                raise InputError("audio samples are empty (0 samples)")
            if not torch.isfinite(wave).all():
                raise InputError("audio samples hold NaN or infinite values")
            if self.mel.pad_samples is not None and wave.numel() > self.mel.pad_samples:  # never cut silently
                raise InputError(f"audio of {wave.numel() / self.mel.sample_rate:.2f} s is longer than the "
                                 f"window of audio.max_seconds ({self.cfg.audio.max_seconds:g} s): cut it into windows")
        wave = pad_short(wave, self.mel)
        if rng is not None and self.noise_snr_db:
            wave = add_noise(wave, rng.uniform(*self.noise_snr_db), rng)
        features = log_mel(wave, self.mel)
        if rng is not None and self.spec_augment.active:
            features = self.spec_augment.apply(features, rng)
        return features

    def tokens_per_image(self) -> int:
        """Positions an image takes in the token stream: its vectors with early fusion, one placeholder with
        cross-attention."""
        return self.cfg.vision.tokens if self.cfg.fusion.mode == "prefix" else 1

    def tokens_per_clip(self, frames: int) -> int:
        """Positions a clip of `frames` log-mel frames takes in the token stream."""
        return self.cfg.audio.tokens_for_frames(frames) if self.cfg.fusion.mode == "prefix" else 1

    # ---------------------------------------------------------------------------------------- examples
    def encode(self, text: str) -> list[int]:
        ids = self._ids.get(text)
        if ids is None:
            ids = self.tokenizer.encode(text)
            if len(self._ids) < 200_000:
                self._ids[text] = ids
        return ids

    def features(self, ex: "Example", rng: Optional[random.Random] = None) -> EncodedExample:
        """An example as model inputs: a generator's (text + target) or, when the config has a classifier, a
        classifier's (its inputs + class). rng: this row's generator, for augmentation (None: none) and a
        classifier's modality dropout."""
        if self.cfg.classifier is not None:
            return self._classifier_features(ex, rng)
        if ex.messages:  # a conversation: the chat template's prompts and replies, verbatim
            pieces = [(self.encode(p), self.encode(r)) for p, r in self.chat.pieces(ex.messages)]
        else:
            pieces = [(self.encode(ex.text or ""), self.encode(target_text(ex.target or "")))]
            pieces += [(self.encode(p), self.encode(target_text(t))) for p, t in ex.turns]
        images, clips = [], []
        if ex.image is not None:
            n = self.tokens_per_image()
            pieces = [(expand_placeholders(p, self.tokenizer.image_id, n), t) for p, t in pieces]
            images.append(self.image(ex.image, rng))
        if ex.audio is not None:
            features = self.audio(ex.audio, rng)
            n = self.tokens_per_clip(features.shape[-1])
            pieces = [(expand_placeholders(p, self.tokenizer.audio_id, n), t) for p, t in pieces]
            clips.append(features)
        (prompt, target), turns = pieces[0], pieces[1:]
        return EncodedExample(prompt, target, images=images, task=ex.task, turns=turns, audio=clips)

    @property
    def chat(self) -> ChatTemplate:
        """The tokenizer's chat template (or the built-in one), made on first use."""
        if self._chat is None:
            self._chat = ChatTemplate.of(self.tokenizer)
        return self._chat

    def _classifier_features(self, ex: "Example", rng: Optional[random.Random]) -> EncodedExample:
        if ex.label not in self.class_index:
            raise DataError(f"label {ex.label!r} is not one of the classes {list(self.class_index)}")
        given = {"text": ex.text is not None, "image": ex.image is not None, "audio": ex.audio is not None}
        keep = {m: given[m] for m in self.modalities}
        drop = self.cfg.classifier.modality_dropout
        if rng is not None and drop > 0:
            for m in self.modalities:
                if keep[m] and sum(keep.values()) > 1 and rng.random() < drop:
                    keep[m] = False
        if not any(keep.values()):
            raise DataError(f"an example has none of the inputs this classifier reads ({', '.join(self.modalities)})")
        text = (self.tokenizer.encode(ex.text)[: self.text_budget] or [self.tokenizer.pad_id]) \
            if keep.get("text") else None
        return EncodedExample(text, images=[self.image(ex.image)] if keep.get("image") else [],
                        audio=[self.audio(ex.audio)] if keep.get("audio") else [], task=ex.task,
                        label=self.class_index[ex.label])

    def collate(self, rows: Sequence[EncodedExample], class_weights: Optional[torch.Tensor] = None) -> Batch:
        """Featurized rows -> one Batch for the model of the config."""
        if self.cfg.classifier is not None:
            return collate_classes(rows, self.modalities, self.tokenizer.pad_id,
                                   self.cfg.vision.image_size if self.cfg.vision else None,
                                   self.cfg.audio.n_mels if self.cfg.audio else None, class_weights)
        return collate(rows, self.tokenizer.pad_id, self.tokenizer.eos_id, self.cfg.model.block_size,
                       self.cfg.train.loss_average, self.cfg.data.pack is True)

    def batch(self, examples: Sequence["Example"], class_weights: Optional[torch.Tensor] = None) -> Batch:
        """Examples (no augmentation) -> one Batch: what evaluation and classification feed the model."""
        return self.collate([self.features(ex) for ex in examples], class_weights)
