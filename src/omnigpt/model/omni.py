"""OmniGPT: image encoder + projector + the GPT decoder, joined by early fusion or gated cross-attention.

prefix fusion: the prompt holds `vision.tokens` copies of the `<image>` id per image (see
`data.batch.expand_placeholders`); their embeddings are replaced by the projected image vectors.
cross_attention fusion: the prompt holds one `<image>` or `<audio>` token per image or clip; a text token
reads the vectors of the latest such placeholder before it through the gated cross-attention layers.
Audio in prefix mode takes `audio.tokens_for_frames(frames)` `<audio>` tokens per clip.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from ..config import Config
from .attention import MediaCache
from .fusion import GatedCrossAttention, Projector, place_at_placeholders
from .gpt import GPT
from .audio import AudioEncoder
from .vision import build_vision_encoder


def length_groups(lengths: list[int], overhead: float = 0.05) -> list[list[int]]:
    """Clip indices in groups of similar length, shortest first, each group to be padded only to its own
    longest clip. The encoder masks padding, so a clip's vectors do not depend on its group; the split is the
    one that pads least, an extra group counting as `overhead` of the longest clip's frames per clip of the
    batch (smaller matrices run less efficiently). A batch of equal lengths stays one group."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    if not order:
        return []
    extra = overhead * lengths[order[-1]] * len(order)
    best = [0.0] + [math.inf] * len(order)  # best[j]: least cost of the j shortest clips
    cut = [0] * (len(order) + 1)
    for j in range(1, len(order) + 1):
        for i in range(j):
            cost = best[i] + (j - i) * lengths[order[j - 1]] + (extra if i else 0.0)
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups, j = [], len(order)
    while j:
        groups.append(order[cut[j]:j])
        j = cut[j]
    return groups[::-1]


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
        # audio.ctc_weight: a training-only head from the encoder's vectors to the token ids and a blank (last).
        self.ctc_head = None
        if config.audio is not None and config.audio.ctc_weight > 0:
            self.ctc_head = nn.Linear(self.audio_encoder.out_dim, config.model.vocab_size + 1)
        self.cross_at: list[int] = []
        if self.fusion == "cross_attention":
            m = config.model
            self.cross_at = list(range(0, m.n_layer, config.fusion.cross_every))
            self.cross = nn.ModuleList(GatedCrossAttention(m.n_embd, m.n_head, m.dropout, m.bias, m.norm_eps)
                                       for _ in self.cross_at)

    predicts = "tokens"

    @property
    def accepts(self) -> frozenset[str]:
        """The inputs this model takes: text, and image and/or audio by its encoders."""
        return frozenset({"text"} | ({"image"} if self.vision_config else set()) | ({"audio"} if self.audio_config else set()))

    @property
    def tokens_per_image(self) -> int:
        """Placeholder tokens one image takes in a prompt."""
        if self.vision_config is None:
            return 1
        return self.vision_config.tokens if self.fusion == "prefix" else 1

    def tokens_for_audio(self, frames: int) -> int:
        """Placeholder tokens a clip of `frames` log-mel frames takes in a prompt."""
        return self.audio_config.tokens_for_frames(frames) if self.fusion == "prefix" else 1

    def encode_audio(self, features: torch.Tensor, lengths: torch.Tensor,
                     encoded: Optional[list] = None) -> list[torch.Tensor]:
        """features (N, n_mels, frames), lengths (N,) -> each clip's projected vectors, (vectors_i, n_embd).
        `encoded`, when given, receives each clip's encoder vectors before the projector."""
        features = features.to(self.gpt.wte.weight.dtype)  # a model held in bf16 or fp16 takes its inputs so
        # Clips of very different lengths run in length groups, each padded to its own longest (the vectors
        # are the same; the short clips no longer pay for the long one's padding).
        frames = lengths.tolist()
        groups = [] if self.audio_config.pad_to_window else length_groups(frames)
        if len(groups) < 2:  # one pass over the batch as it came
            groups = [list(range(len(frames)))]
        out: list[Optional[torch.Tensor]] = [None] * len(frames)
        for group in groups:
            part, part_lengths = features, lengths
            if len(groups) > 1:
                rows = torch.tensor(group, device=features.device)
                part, part_lengths = features[rows, :, :max(frames[i] for i in group)], lengths[rows]
            states, n = self.audio_encoder(part, part_lengths)
            vectors = self.audio_projector(states)
            for j, (i, k) in enumerate(zip(group, n.tolist())):
                out[i] = vectors[j, :k]
                if encoded is not None:
                    encoded[i] = states[j, :k]
        return out

    def ctc_loss(self, states: list[torch.Tensor], targets: torch.Tensor,
                 target_lengths: torch.Tensor) -> Optional[torch.Tensor]:
        """The CTC loss (mean over clips of each clip's loss per transcript token) of the clips whose
        transcript is given (target_lengths > 0): states[m] (vectors_m, width) from the encoder, targets
        (M, L) token ids. None when no clip has one. A clip too short for its transcript adds 0.

        The softmax runs over the tokens of the batch's transcripts and the blank only (a sampled softmax):
        the head exists to line the encoder's vectors up with the words, not to decode, and a softmax over
        the whole vocabulary for every vector cost more than the encoder itself (omni-tiny on a CPU)."""
        keep = [m for m, n in enumerate(target_lengths.tolist()) if n > 0]
        if not keep:
            return None
        rows = torch.tensor(keep, device=targets.device)
        targets, target_lengths = targets[rows], target_lengths[rows]
        said = targets[targets >= 0].unique()  # sorted: the classes of this batch, then the blank (last row)
        weight = torch.cat([self.ctc_head.weight[said], self.ctc_head.weight[-1:]])
        bias = torch.cat([self.ctc_head.bias[said], self.ctc_head.bias[-1:]])
        sizes = [states[m].shape[0] for m in keep]
        # the head runs on the clips' vectors only, then the log-probabilities are padded to (T, K, classes)
        log_probs = F.linear(torch.cat([states[m] for m in keep]), weight, bias).float().log_softmax(-1)
        log_probs = pad_sequence(log_probs.split(sizes))
        classes = torch.searchsorted(said, targets.clamp(min=0))
        return F.ctc_loss(log_probs, classes, torch.tensor(sizes, device=targets.device), target_lengths,
                          blank=len(said), zero_infinity=True)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """images (N, 3, S, S) -> projected vectors (N, vision.tokens, n_embd)."""
        return self.projector(self.vision(images.to(self.gpt.wte.weight.dtype)))

    def forward(self, idx: torch.Tensor, targets: Optional[torch.Tensor] = None, *,
                images: Optional[torch.Tensor] = None, image_rows: Optional[torch.Tensor] = None,
                audio: Optional[torch.Tensor] = None, audio_lengths: Optional[torch.Tensor] = None,
                audio_rows: Optional[torch.Tensor] = None, positions: Optional[torch.Tensor] = None, mask: Optional[torch.Tensor] = None,
                caches: Optional[list] = None, last_only: bool = False,
                loss_weights: Optional[torch.Tensor] = None, loss_only: bool = False,
                audio_targets: Optional[torch.Tensor] = None, audio_target_lengths: Optional[torch.Tensor] = None
                ) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        """Token ids idx (B, T) with placeholders, images (N, 3, S, S), image_rows (N,) -> (logits, loss).

        audio (M, n_mels, frames) log-mel features padded to the longest clip, audio_lengths (M,) in frames,
        audio_rows (M,): clip m fills the next `tokens_for_audio(audio_lengths[m])` `<audio>` placeholders of
        its row (prefix fusion).

        audio_targets (M, L) and audio_target_lengths (M,): each clip's transcript ids (`Batch`); in training,
        with audio.ctc_weight, the returned loss adds ctc_weight times their CTC loss (`ctc_loss`).

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
        is_audio = idx == self.audio_token_id if self.audio_config is not None else torch.zeros_like(is_ph)
        if self.audio_config is not None and first_pass:
            self._check_audio_placeholders(is_audio, audio_lengths, audio_rows)
        use_ctc = self.ctc_head is not None and self.training and audio_targets is not None and targets is not None
        states: Optional[list] = [None] * len(audio_lengths) if use_ctc and audio is not None else None
        clips = self.encode_audio(audio, audio_lengths, states) if self.audio_config is not None and audio is not None else []
        vectors = self.encode_images(images) if n_images else None
        before_block = None
        if self.fusion == "prefix":
            if clips:
                x = place_at_placeholders(x, is_audio, torch.cat(clips)[None])
            if vectors is not None:
                x = place_at_placeholders(x, is_ph, vectors)
        else:
            n_gpt = self.gpt.config.n_layer
            media_caches = caches[n_gpt:] if caches else [None] * len(self.cross_at)
            items = self._media_items(is_ph, is_audio, vectors, image_rows, clips, audio_rows)
            media, visible, after = self._media_and_visibility(items, is_ph | is_audio, x)
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
                    return h  # no image or clip anywhere in this batch: the layer has nothing to read
                return self.cross[j](h, media, visible, media_caches[j])

            caches = caches[:n_gpt] if caches else None
        logits, loss = self.gpt(targets=targets, inputs_embeds=x, positions=positions, mask=mask, caches=caches,
                                last_only=last_only, before_block=before_block, loss_weights=loss_weights,
                                loss_only=loss_only)
        if states is not None:
            ctc = self.ctc_loss(states, audio_targets, audio_target_lengths)
            if ctc is not None:
                loss = loss + self.audio_config.ctc_weight * ctc
        return logits, loss

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

    @staticmethod
    def _media_items(is_image: torch.Tensor, is_audio: torch.Tensor, vectors: Optional[torch.Tensor],
                     image_rows: Optional[torch.Tensor], clips: list[torch.Tensor],
                     audio_rows: Optional[torch.Tensor]) -> list[list[torch.Tensor]]:
        """Each row's media, (n_i, C) each, in the order of its placeholders: the k-th `<image>` of a row
        stands for the row's k-th image, the k-th `<audio>` for its k-th clip."""
        B = is_image.shape[0]
        images = [[] for _ in range(B)]
        audio = [[] for _ in range(B)]
        if vectors is not None:
            for i, r in enumerate(image_rows.tolist()):
                images[r].append(vectors[i])
        if clips:
            for clip, r in zip(clips, audio_rows.tolist()):
                audio[r].append(clip)
        items = []
        for r in range(B):
            next_image, next_clip = iter(images[r]), iter(audio[r])
            kinds = is_image[r][is_image[r] | is_audio[r]].tolist()  # True: image, False: clip
            items.append([next(next_image) if k else next(next_clip) for k in kinds] if images[r] or audio[r] else [])
        return items

    @staticmethod
    def _media_and_visibility(items: list[list[torch.Tensor]], is_ph: torch.Tensor, like: torch.Tensor):
        """Cross-attention inputs from each row's media (images and clips, in placeholder order):

        media (B, M, C): each row's media vectors one after another (M: the most any row has);
        visible (B, T, M): a token reads the media of the latest placeholder at or before it (as in
        Flamingo), so text before an image or clip does not see it and each is read by the text after it;
        after (B, M): what tokens after the prompt read (the row's last image or clip).
        """
        if not any(items):
            return None, None, None
        B = len(items)
        C = like.shape[-1]
        M = max(sum(v.shape[0] for v in row) for row in items)
        media = like.new_zeros(B, M, C)
        slot_item = torch.full((B, M), -1, dtype=torch.long, device=like.device)
        for r, row in enumerate(items):
            start = 0
            for j, v in enumerate(row):
                media[r, start:start + v.shape[0]] = v.to(media.dtype)
                slot_item[r, start:start + v.shape[0]] = j
                start += v.shape[0]
        last = torch.tensor([len(row) - 1 for row in items], device=like.device)
        token_item = is_ph.long().cumsum(1) - 1  # (B, T): index of the latest placeholder at or before the token
        visible = (slot_item[:, None, :] == token_item[:, :, None]) & (token_item >= 0)[:, :, None]
        after = (slot_item == last[:, None]) & (slot_item >= 0)
        return media, visible, after

    def new_caches(self, batch: int, max_len: int, dtype: Optional[torch.dtype] = None) -> list:
        """The decoder's KV caches, then one media cache per cross-attention layer."""
        caches: list = self.gpt.new_caches(batch, max_len, dtype)
        return caches + [MediaCache() for _ in self.cross_at]

    def modules_to_freeze(self, names: list[str]) -> list[nn.Module]:
        parts = {"vision": [self.vision] if self.vision_config else [],
                 "audio": ([self.audio_encoder] if self.audio_config else [])
                          + ([self.ctc_head] if self.ctc_head is not None else []),
                 "projector": ([self.projector] if self.vision_config else []) +
                              ([self.audio_projector] if self.audio_config else []),
                 "decoder": [self.gpt], "cross_attention": [self.cross] if self.cross_at else []}
        return [m for name in names for m in parts[name]]


def build_model(config: Config, image_token_id: Optional[int] = None, audio_token_id: Optional[int] = None,
                tokenizer=None) -> nn.Module:
    """A multimodal classifier when the config has a classifier section (the tokenizer encodes its early
    fusion template's words); else a text GPT, or an OmniGPT when the config has a vision or audio section."""
    if config.classifier is not None:
        from .classifier import MultimodalClassifier

        return MultimodalClassifier(config, tokenizer)
    if config.vision is None and config.audio is None:
        return GPT(config.model)
    if image_token_id is None:
        raise ValueError("a multimodal model needs the tokenizer's <image> token id")
    return OmniGPT(config, image_token_id, audio_token_id)
