"""OmniGPT: image encoder + projector + the GPT decoder, joined by early fusion or gated cross-attention.

prefix fusion: the prompt holds `vision.tokens` copies of the `<image>` id per image (see
`data.batch.expand_placeholders`); their embeddings are replaced by the projected image vectors.
cross_attention fusion: the prompt holds one `<image>` token per image; every text token of a row reads
all of that row's image vectors through the gated cross-attention layers.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..config import Config
from .attention import KVCache, MediaCache
from .fusion import GatedCrossAttention, Projector, place_at_placeholders
from .gpt import GPT
from .audio import AudioEncoder
from .vision import build_vision_encoder


class OmniGPT(nn.Module):
    def __init__(self, config: Config, image_token_id: int, audio_token_id: Optional[int] = None):
        super().__init__()
        if config.vision is None and config.audio is None:
            raise ValueError("OmniGPT needs a 'vision' or an 'audio' section in the config")
        self.full_config = config
        self.config = config.model  # what generation reads: block_size, vocab_size
        self.vision_config = config.vision
        self.audio_config = config.audio
        self.fusion = config.fusion.mode
        self.image_token_id = image_token_id
        self.audio_token_id = audio_token_id
        self.gpt = GPT(config.model)
        if config.vision is not None:
            self.vision = build_vision_encoder(config.vision)
            self.projector = Projector(self.vision.out_dim, config.model.n_embd, config.fusion.projector)
        if config.audio is not None:
            if audio_token_id is None:
                raise ValueError("a model with an audio encoder needs the tokenizer's <audio> token id")
            self.audio_encoder = AudioEncoder(config.audio)
            self.audio_projector = Projector(self.audio_encoder.out_dim, config.model.n_embd,
                                             config.fusion.projector)
        self.cross_at: list[int] = []
        if self.fusion == "cross_attention":
            m = config.model
            self.cross_at = list(range(0, m.n_layer, config.fusion.cross_every))
            self.cross = nn.ModuleList(GatedCrossAttention(m.n_embd, m.n_head, m.dropout, m.bias, m.norm_eps)
                                       for _ in self.cross_at)

    @property
    def tokens_per_image(self) -> int:
        """Placeholder tokens one image takes in a prompt."""
        if self.vision_config is None:
            return 1
        return self.vision_config.tokens if self.fusion == "prefix" else 1

    def tokens_for_audio(self, frames: int) -> int:
        """Placeholder tokens a clip of `frames` log-mel frames takes in a prompt (prefix fusion)."""
        return self.audio_config.tokens_for_frames(frames)

    def encode_audio(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """features (N, n_mels, frames), lengths (N,) -> the clips' projected vectors, concatenated (sum, n_embd)."""
        vectors, n = self.audio_encoder(features, lengths)
        vectors = self.audio_projector(vectors)
        return torch.cat([vectors[i, :k] for i, k in enumerate(n.tolist())])

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """images (N, 3, S, S) -> projected vectors (N, vision.tokens, n_embd)."""
        return self.projector(self.vision(images))

    def forward(self, idx: torch.Tensor, targets: Optional[torch.Tensor] = None, *,
                images: Optional[torch.Tensor] = None, image_rows: Optional[torch.Tensor] = None,
                audio: Optional[torch.Tensor] = None, audio_lengths: Optional[torch.Tensor] = None,
                audio_rows: Optional[torch.Tensor] = None, positions: Optional[torch.Tensor] = None, mask: Optional[torch.Tensor] = None,
                caches: Optional[list] = None, last_only: bool = False,
                loss_weights: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Token ids idx (B, T) with placeholders, images (N, 3, S, S), image_rows (N,) -> (logits, loss).

        audio (M, n_mels, frames) log-mel features padded to the longest clip, audio_lengths (M,) in frames,
        audio_rows (M,): clip m fills the next `tokens_for_audio(audio_lengths[m])` `<audio>` placeholders of
        its row (prefix fusion).

        Images are needed on the pass that first sees their placeholders (training, or a prompt's first
        decoding pass); later decoding steps read the KV / media caches. The other arguments are GPT's.
        """
        B = idx.shape[0]
        is_ph = idx == self.image_token_id
        first_pass = not caches or caches[0].length == 0
        n_images = 0 if images is None else images.shape[0]
        if image_rows is None and n_images:
            image_rows = self._rows_from_placeholders(is_ph, n_images)
        if first_pass:
            self._check_placeholders(is_ph, n_images, image_rows)
        x = self.gpt.wte(idx)
        if self.audio_config is not None and (audio is not None or first_pass):
            is_audio = idx == self.audio_token_id
            if first_pass:
                self._check_audio_placeholders(is_audio, audio_lengths, audio_rows)
            if audio is not None:
                x = place_at_placeholders(x, is_audio, self.encode_audio(audio, audio_lengths)[None])
        vectors = self.encode_images(images) if n_images else None
        before_block = None
        if self.fusion == "prefix" and vectors is not None:
            x = place_at_placeholders(x, is_ph, vectors)
        elif self.fusion == "cross_attention":
            n_gpt = self.gpt.config.n_layer
            media_caches = caches[n_gpt:] if caches else [None] * len(self.cross_at)
            media, visible, after = self._media_and_visibility(vectors, image_rows, is_ph, x)
            if media is None and media_caches[0] is not None and media_caches[0].k is not None:
                visible = media_caches[0].after[:, None, :].expand(B, idx.shape[1], -1)  # decoding steps
            elif media is not None:
                for cache in media_caches:
                    if cache is not None:
                        cache.after = after
            layer_of = {block: j for j, block in enumerate(self.cross_at)}

            def before_block(i: int, h: torch.Tensor) -> torch.Tensor:
                j = layer_of.get(i)
                if j is None or visible is None:
                    return h  # no image anywhere in this batch: the layer has nothing to read
                return self.cross[j](h, media, visible, media_caches[j])

            caches = caches[:n_gpt] if caches else None
        return self.gpt(targets=targets, inputs_embeds=x, positions=positions, mask=mask, caches=caches,
                        last_only=last_only, before_block=before_block, loss_weights=loss_weights)

    def _rows_from_placeholders(self, is_ph: torch.Tensor, n_images: int) -> torch.Tensor:
        per_row = is_ph.sum(1) // self.tokens_per_image
        return torch.repeat_interleave(torch.arange(is_ph.shape[0], device=is_ph.device), per_row)[:n_images]

    def _check_placeholders(self, is_ph: torch.Tensor, n_images: int, image_rows: Optional[torch.Tensor]) -> None:
        n = self.tokens_per_image
        counts = is_ph.sum(1).tolist()
        given = [0] * len(counts)
        if n_images:
            for r in image_rows.tolist():
                given[r] += 1
        for r, (c, g) in enumerate(zip(counts, given)):
            if c != g * n:
                found = f"{c // n} <image> placeholder(s)" if c % n == 0 else f"{c} placeholder tokens"
                raise ValueError(f"prompt {r} has {found} but {g} image(s) were given"
                                 + (f" (an image takes {n} placeholder tokens)" if n > 1 else ""))

    def _check_audio_placeholders(self, is_audio: torch.Tensor, lengths: Optional[torch.Tensor],
                                  rows: Optional[torch.Tensor]) -> None:
        counts = is_audio.sum(1).tolist()
        wanted = [0] * len(counts)
        clips = [0] * len(counts)
        if lengths is not None:
            if rows is None:
                raise ValueError("audio needs audio_rows: the prompt each clip belongs to")
            for r, frames in zip(rows.tolist(), lengths.tolist()):
                wanted[r] += self.tokens_for_audio(frames)
                clips[r] += 1
        for r, (c, w) in enumerate(zip(counts, wanted)):
            if c != w:
                raise ValueError(f"prompt {r} has {c} <audio> placeholder tokens but its {clips[r]} clip(s) take {w}")

    def _media_and_visibility(self, vectors: Optional[torch.Tensor], image_rows: Optional[torch.Tensor],
                              is_ph: torch.Tensor, like: torch.Tensor):
        """Cross-attention inputs from image vectors (N, n, C) and their rows (N,):

        media (B, M, C): each row's images one after another (M = n * most images in a row);
        visible (B, T, M): a token reads the image of the latest `<image>` at or before it (as in Flamingo),
        so text before an image does not see it and each image is read by the text that follows it;
        after (B, M): what tokens after the prompt read (the row's last image).
        """
        if vectors is None:
            return None, None, None
        N, n, C = vectors.shape
        B = is_ph.shape[0]
        per_row = torch.bincount(image_rows, minlength=B)
        slots = int(per_row.max())
        media = like.new_zeros(B, slots * n, C)
        slot_image = torch.full((B, slots * n), -1, dtype=torch.long, device=like.device)
        seen = [0] * B
        for i, r in enumerate(image_rows.tolist()):
            j = seen[r]
            media[r, j * n:(j + 1) * n] = vectors[i].to(media.dtype)
            slot_image[r, j * n:(j + 1) * n] = j
            seen[r] += 1
        token_image = is_ph.long().cumsum(1) - 1  # (B, T): index of the latest image at or before the token
        visible = (slot_image[:, None, :] == token_image[:, :, None]) & (token_image >= 0)[:, :, None]
        after = (slot_image == (per_row.to(like.device) - 1)[:, None]) & (slot_image >= 0)
        return media, visible, after

    def new_caches(self, batch: int, max_len: int, dtype: Optional[torch.dtype] = None) -> list:
        """The decoder's KV caches, then one media cache per cross-attention layer."""
        caches: list = self.gpt.new_caches(batch, max_len, dtype)
        return caches + [MediaCache() for _ in self.cross_at]

    def modules_to_freeze(self, names: list[str]) -> list[nn.Module]:
        parts = {"vision": [self.vision] if self.vision_config else [],
                 "audio": [self.audio_encoder] if self.audio_config else [],
                 "projector": ([self.projector] if self.vision_config else []) +
                              ([self.audio_projector] if self.audio_config else []),
                 "decoder": [self.gpt], "cross_attention": [self.cross] if self.cross_at else []}
        return [m for name in names for m in parts[name]]


def build_model(config: Config, image_token_id: Optional[int] = None, audio_token_id: Optional[int] = None
                ) -> nn.Module:
    """A text GPT, or an OmniGPT when the config has a vision or audio section."""
    if config.vision is None and config.audio is None:
        return GPT(config.model)
    if image_token_id is None:
        raise ValueError("a multimodal model needs the tokenizer's <image> token id")
    return OmniGPT(config, image_token_id, audio_token_id)
