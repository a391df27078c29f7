"""The one batch type omnigpt's models take, and the collates that build it from featurized examples
(`EncodedExample`, made by `data.inputs`): `collate` for the generators (token sequences), `collate_classes` for
the multimodal classifier (class labels and a modality mask).

A generator's example is a prompt (no loss), a target (loss) and the images (or audio clips) its `<image>`
(`<audio>`) placeholders stand for. Collate joins prompt + target + end-of-text, shifts by one for next-token labels, right-pads rows with
the pad token (labels IGNORE_INDEX there and on the prompt), and stacks all images of the batch in reading
order with the row each belongs to.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Optional, Sequence

import torch

from ..config import IGNORE_INDEX, MODALITIES  # noqa: F401  (MODALITIES: the order of `present`)
from .image import stack_images
from .text import DataError



@dataclass
class EncodedExample:
    """One example as model inputs. A generator's: `prompt` and `target` token ids, and the images and clips
    its placeholders stand for. A classifier's: `prompt` the text's ids (None: no text), at most one image
    and one clip, and `label` the class index."""
    prompt: Optional[list[int]]  # token ids, placeholders already expanded (see expand_placeholders)
    target: list[int] = field(default_factory=list)  # ids the loss is taken on (collate appends end-of-text)
    images: list[torch.Tensor] = field(default_factory=list)  # (3, S, S) each, in placeholder order
    task: str = ""
    audio: list[torch.Tensor] = field(default_factory=list)  # log-mel features (n_mels, frames) each, in order
    # Further (prompt, target) turns in the same sequence, e.g. more questions about the same image; each
    # target is followed by end-of-text, and only targets take loss.
    turns: list[tuple[list[int], list[int]]] = field(default_factory=list)
    label: Optional[int] = None


@dataclass
class Batch:
    ids: torch.Tensor  # (B, T) input token ids (a classifier's: its text, right-padded; one pad token if none)
    targets: Optional[torch.Tensor] = None  # (B, T) next-token labels, IGNORE_INDEX where no loss
    # Images: a generator's batch holds every image in reading order, with the row each belongs to; a
    # classifier's holds one per row (zeros where `present` says there is none) and no image_rows.
    images: Optional[torch.Tensor] = None  # (N, 3, S, S)
    image_rows: Optional[torch.Tensor] = None  # (N,)
    audio: Optional[torch.Tensor] = None  # (M, n_mels, frames) log-mel features, padded to the longest clip
    audio_lengths: Optional[torch.Tensor] = None  # (M,) frames of each clip
    audio_rows: Optional[torch.Tensor] = None  # (M,) the row each clip belongs to (generators)
    # Each clip's transcript ids (a transcription example's target), for audio.ctc_weight: (M, L) right-padded
    # with IGNORE_INDEX, and their lengths (M,), 0 for a clip without one of its own.
    audio_targets: Optional[torch.Tensor] = None
    audio_target_lengths: Optional[torch.Tensor] = None
    loss_weights: Optional[torch.Tensor] = None  # (B, T) weight of each label in the loss; None: all equal
    tasks: list[str] = field(default_factory=list)  # one per example (not per row when packed)
    # A classifier's batch:
    labels: Optional[torch.Tensor] = None  # (B,) class indices
    text_lengths: Optional[torch.Tensor] = None  # (B,)
    present: Optional[torch.Tensor] = None  # (B, M) boolean, the modalities (MODALITIES order) each row has
    class_weights: Optional[torch.Tensor] = None  # (classes,)
    # Rows whose first draw named a file that could not be decoded, drawn again (data.on_bad_file: skip).
    skipped: int = 0
    # Packed rows (data.pack): several examples one after another in a row, each with positions from 0 and
    # attention within itself only.
    positions: Optional[torch.Tensor] = None  # (B, T)
    mask: Optional[torch.Tensor] = None  # (B, 1, T, T) boolean, True where a query may attend

    def to(self, device: str | torch.device) -> "Batch":
        return replace(self, **{f.name: getattr(self, f.name).to(device, non_blocking=True)
                                for f in fields(self) if isinstance(getattr(self, f.name), torch.Tensor)})

    def loss_weight(self) -> float:
        """What this batch's mean loss is averaged over (its supervised tokens, its summed weights, or its
        examples for a classifier), so that micro-batches and processes combine into the mean over the whole
        step's batch."""
        if self.labels is not None:
            return float(self.labels.shape[0])
        supervised = self.targets != IGNORE_INDEX
        if self.loss_weights is None:
            return float(supervised.sum())
        return float((self.loss_weights * supervised).sum())

    def model_inputs(self, loss_only: bool = False) -> dict[str, Any]:
        """Keyword arguments for `model(**inputs)`: a text GPT gets ids and targets, OmniGPT also images and
        audio, a classifier its texts, images, clips, modality mask and labels. loss_only: a generator
        returns (None, loss), computing logits only where there are labels (a classifier's are tiny)."""
        if self.labels is not None:
            return {"ids": self.ids, "text_lengths": self.text_lengths, "present": self.present,
                    "labels": self.labels, "images": self.images, "audio": self.audio,
                    "audio_lengths": self.audio_lengths, "class_weights": self.class_weights}
        inputs: dict[str, Any] = {"idx": self.ids, "targets": self.targets}
        if self.positions is not None:
            inputs.update(positions=self.positions, mask=self.mask)
        if loss_only:
            inputs["loss_only"] = True
        if self.loss_weights is not None:
            inputs["loss_weights"] = self.loss_weights
        if self.images is not None:
            inputs["images"] = self.images
            inputs["image_rows"] = self.image_rows
        if self.audio is not None:
            inputs.update(audio=self.audio, audio_lengths=self.audio_lengths, audio_rows=self.audio_rows)
            if self.audio_targets is not None:
                inputs.update(audio_targets=self.audio_targets, audio_target_lengths=self.audio_target_lengths)
        return inputs


def expand_placeholders(ids: Sequence[int], placeholder: int, n: int) -> list[int]:
    """Each placeholder id becomes n copies: the slots that n image vectors will fill."""
    out: list[int] = []
    for t in ids:
        if t == placeholder:
            out.extend([placeholder] * n)
        else:
            out.append(t)
    return out


def collate(examples: Sequence[EncodedExample], pad_id: int, eos_id: int, block_size: int,
            loss_average: str = "token", pack: bool = False) -> Batch:
    """Examples -> one right-padded Batch of at most block_size positions.

    loss_average "token": every target token weighs the same, so long targets (captions) dominate short
    ones (answers); "example": each example's tokens share one unit of weight, so every example counts
    the same whatever its length.

    pack: examples go one after another into as few rows as hold them (in order, each row up to
    block_size + 1 tokens), each with positions from 0 and attention within itself only, so that every
    example's logits and loss are what they are alone, and the batch wastes fewer positions on padding.
    Images and clips keep reading order, each filling its own placeholders in the row it landed in, so a
    prefix-fusion model packs as a text model does (cross-attention reads media by row and cannot).

    A target that runs past the context is cut (the model then sees no end-of-text for it); a prompt that
    alone fills the context is an error, since nothing would be learned from it.
    """
    if loss_average not in ("token", "example"):
        raise ValueError(f"loss_average must be 'token' or 'example', got {loss_average!r}")
    pieces, images, image_rows, clips, clip_rows, transcripts = [], [], [], [], [], []
    for ex in examples:
        if len(ex.prompt) >= block_size:
            raise DataError(f"a prompt of {len(ex.prompt)} tokens (images included) leaves no room for its "
                            f"target in the context of {block_size} tokens: raise model.block_size or use "
                            f"fewer image tokens (vision.reduce)")
        seq: list[int] = []
        supervised: list[bool] = []
        for prompt, target in [(ex.prompt, ex.target)] + list(ex.turns):
            seq += list(prompt) + list(target) + [eos_id]
            supervised += [False] * len(prompt) + [True] * (len(target) + 1)
        pieces.append((seq[:block_size + 1], supervised[:block_size + 1]))
    rows = _pack(pieces, block_size + 1) if pack else [[p] for p in pieces]
    row_of = [r for r, row in enumerate(rows) for _ in row]  # the (packed) row each example lies in
    B, T = len(rows), max(sum(len(s) for s, _ in row) for row in rows) - 1
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    targets = torch.full((B, T), IGNORE_INDEX, dtype=torch.long)
    weights = torch.zeros((B, T))
    positions = torch.zeros((B, T), dtype=torch.long)
    segment = torch.full((B, T), -1, dtype=torch.long)
    for r, row in enumerate(rows):
        seq = [t for s, _ in row for t in s]
        # a piece's first token is never a label: in a packed row it would be predicted from the piece before
        keep = [k and i > 0 for s, sup in row for i, k in enumerate(sup)]
        n = len(seq) - 1
        ids[r, :n] = torch.tensor(seq[:-1], dtype=torch.long)
        targets[r, :n] = torch.tensor([t if k else IGNORE_INDEX for t, k in zip(seq[1:], keep[1:])], dtype=torch.long)
        start = 0
        for k, (s, sup) in enumerate(row):  # positions restart and weights are shared within each example
            end = min(start + len(s), n)
            positions[r, start:end] = torch.arange(end - start)
            segment[r, start:end] = k
            labelled = targets[r, start:end] != IGNORE_INDEX
            weights[r, start:end] = labelled.float() / max(1, int(labelled.sum()))
            start = end
    for r, ex in zip(row_of, examples):
        images.extend(ex.images)
        image_rows.extend([r] * len(ex.images))
        clips.extend(ex.audio)
        clip_rows.extend([r] * len(ex.audio))
        # a transcript belongs to its clip only where the example is one clip and the words said in it
        own = ex.task == "transcribe" and len(ex.audio) == 1 and not ex.turns
        transcripts.extend([list(ex.target) if own else []] * len(ex.audio))
    batch = Batch(ids, targets, tasks=[ex.task for ex in examples])
    if loss_average == "example":
        batch.loss_weights = weights
    if pack:
        same = (segment[:, :, None] == segment[:, None, :]) & (segment[:, :, None] >= 0)
        causal = torch.ones(T, T, dtype=torch.bool).tril()
        batch.positions = positions
        batch.mask = ((same & causal) | torch.eye(T, dtype=torch.bool))[:, None]  # padding sees itself only
    if images:
        batch.images = stack_images(images)
        batch.image_rows = torch.tensor(image_rows, dtype=torch.long)
    if clips:
        batch.audio, batch.audio_lengths = pad_features(clips)
        batch.audio_rows = torch.tensor(clip_rows, dtype=torch.long)
        if any(transcripts):
            batch.audio_target_lengths = torch.tensor([len(t) for t in transcripts], dtype=torch.long)
            batch.audio_targets = torch.full((len(transcripts), max(map(len, transcripts))), IGNORE_INDEX,
                                             dtype=torch.long)
            for m, t in enumerate(transcripts):
                batch.audio_targets[m, :len(t)] = torch.tensor(t, dtype=torch.long)
    return batch


def _pack(pieces: list, room: int) -> list[list]:
    """Pieces (token lists with their flags) in order into rows of at most `room` tokens: a piece that does not
    fit in the current row starts the next one."""
    rows: list[list] = [[]]
    used = 0
    for piece in pieces:
        if rows[-1] and used + len(piece[0]) > room:
            rows.append([])
            used = 0
        rows[-1].append(piece)
        used += len(piece[0])
    return rows


def pad_features(clips: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (n_mels, frames_i) each -> (M, n_mels, max frames) zero-padded, and the frames of each (M,)."""
    lengths = torch.tensor([c.shape[-1] for c in clips], dtype=torch.long)
    out = clips[0].new_zeros(len(clips), clips[0].shape[0], int(lengths.max()))
    for i, c in enumerate(clips):
        out[i, :, :c.shape[-1]] = c
    return out, lengths


# ------------------------------------------------------------------------------------------ classification
def collate_classes(examples: Sequence[EncodedExample], modalities: Sequence[str], pad_id: int,
                    image_size: Optional[int] = None, n_mels: Optional[int] = None,
                    class_weights: Optional[torch.Tensor] = None) -> Batch:
    """Stack examples; a missing modality gets a placeholder the model masks out (one pad token, a zero image,
    a 16-frame silent clip). modalities: the classifier's, in MODALITIES order."""
    B = len(examples)
    has = {"text": lambda e: e.prompt is not None, "image": lambda e: bool(e.images), "audio": lambda e: bool(e.audio)}
    present = torch.tensor([[has[m](e) for m in modalities] for e in examples], dtype=torch.bool)
    texts = [e.prompt if e.prompt is not None else [pad_id] for e in examples]
    lengths = torch.tensor([len(t) for t in texts], dtype=torch.long)
    ids = torch.full((B, int(lengths.max())), pad_id, dtype=torch.long)
    for r, t in enumerate(texts):
        ids[r, :len(t)] = torch.tensor(t, dtype=torch.long)
    batch = Batch(ids, labels=torch.tensor([e.label for e in examples], dtype=torch.long), text_lengths=lengths,
                  present=present, class_weights=class_weights)
    if "image" in modalities:
        blank = torch.zeros(3, image_size, image_size)
        batch.images = stack_images([e.images[0] if e.images else blank for e in examples])
    if "audio" in modalities:
        silent = torch.zeros(n_mels, 16)
        batch.audio, batch.audio_lengths = pad_features([e.audio[0] if e.audio else silent for e in examples])
    return batch
