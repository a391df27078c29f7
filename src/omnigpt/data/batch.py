"""The batch types omnigpt's models take, and the collates that build them from examples: `Batch` for the
generators (token sequences), `ClassBatch` for the multimodal classifier.

A training example is a prompt (no loss), a target (loss) and the images (or audio clips) its `<image>`
(`<audio>`) placeholders stand for. Collate joins prompt + target + end-of-text, shifts by one for next-token labels, right-pads rows with
the pad token (labels IGNORE_INDEX there and on the prompt), and stacks all images of the batch in reading
order with the row each belongs to.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Optional, Sequence

import torch

from .image import stack_images
from .text import DataError

IGNORE_INDEX = -100  # label value that takes no part in the loss


@dataclass
class Example:
    prompt: list[int]  # token ids, placeholders already expanded (see expand_placeholders)
    target: list[int]  # token ids the loss is taken on (end-of-text is appended by collate)
    images: list[torch.Tensor] = field(default_factory=list)  # (3, S, S) each, in placeholder order
    task: str = ""
    audio: list[torch.Tensor] = field(default_factory=list)  # log-mel features (n_mels, frames) each, in order
    # Further (prompt, target) turns in the same sequence, e.g. more questions about the same image; each
    # target is followed by end-of-text, and only targets take loss.
    turns: list[tuple[list[int], list[int]]] = field(default_factory=list)


@dataclass
class Batch:
    ids: torch.Tensor  # (B, T) input token ids
    targets: Optional[torch.Tensor] = None  # (B, T) next-token labels, IGNORE_INDEX where no loss
    images: Optional[torch.Tensor] = None  # (N, 3, S, S) every image of the batch in reading order
    image_rows: Optional[torch.Tensor] = None  # (N,) the row each image belongs to
    audio: Optional[torch.Tensor] = None  # (M, n_mels, frames) log-mel features, padded to the longest clip
    audio_lengths: Optional[torch.Tensor] = None  # (M,) frames of each clip
    audio_rows: Optional[torch.Tensor] = None  # (M,) the row each clip belongs to
    loss_weights: Optional[torch.Tensor] = None  # (B, T) weight of each label in the loss; None: all equal
    tasks: list[str] = field(default_factory=list)

    def to(self, device: str | torch.device) -> "Batch":
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return replace(self, ids=move(self.ids), targets=move(self.targets), images=move(self.images),
                       image_rows=move(self.image_rows), audio=move(self.audio),
                       audio_lengths=move(self.audio_lengths), audio_rows=move(self.audio_rows),
                       loss_weights=move(self.loss_weights))

    def loss_weight(self) -> float:
        """What this batch's mean loss is averaged over (its supervised tokens, or its summed weights), so
        that micro-batches and processes combine into the mean over the whole step's batch."""
        supervised = self.targets != IGNORE_INDEX
        if self.loss_weights is None:
            return float(supervised.sum())
        return float((self.loss_weights * supervised).sum())

    def model_inputs(self, loss_only: bool = False) -> dict[str, Any]:
        """Keyword arguments for `model(**inputs)`: a text GPT gets ids and targets, OmniGPT also images.
        loss_only: the model returns (None, loss), computing logits only where there are labels."""
        inputs: dict[str, Any] = {"idx": self.ids, "targets": self.targets}
        if loss_only:
            inputs["loss_only"] = True
        if self.loss_weights is not None:
            inputs["loss_weights"] = self.loss_weights
        if self.images is not None:
            inputs["images"] = self.images
            inputs["image_rows"] = self.image_rows
        if self.audio is not None:
            inputs.update(audio=self.audio, audio_lengths=self.audio_lengths, audio_rows=self.audio_rows)
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


def collate(examples: Sequence[Example], pad_id: int, eos_id: int, block_size: int,
            loss_average: str = "token") -> Batch:
    """Examples -> one right-padded Batch of at most block_size positions.

    loss_average "token": every target token weighs the same, so long targets (captions) dominate short
    ones (answers); "example": each example's tokens share one unit of weight, so every example counts
    the same whatever its length.

    A target that runs past the context is cut (the model then sees no end-of-text for it); a prompt that
    alone fills the context is an error, since nothing would be learned from it.
    """
    rows, labels, images, image_rows, clips, clip_rows = [], [], [], [], [], []
    for r, ex in enumerate(examples):
        if len(ex.prompt) >= block_size:
            raise DataError(f"a prompt of {len(ex.prompt)} tokens (images included) leaves no room for its "
                            f"target in the context of {block_size} tokens: raise model.block_size or use "
                            f"fewer image tokens (vision.reduce)")
        seq: list[int] = []
        supervised: list[bool] = []
        for prompt, target in [(ex.prompt, ex.target)] + list(ex.turns):
            seq += list(prompt) + list(target) + [eos_id]
            supervised += [False] * len(prompt) + [True] * (len(target) + 1)
        seq, supervised = seq[:block_size + 1], supervised[:block_size + 1]
        x = seq[:-1]
        y = [t if keep else IGNORE_INDEX for t, keep in zip(seq[1:], supervised[1:])]
        rows.append(x)
        labels.append(y)
        images.extend(ex.images)
        image_rows.extend([r] * len(ex.images))
        clips.extend(ex.audio)
        clip_rows.extend([r] * len(ex.audio))
    T = max(len(x) for x in rows)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    targets = torch.full((len(rows), T), IGNORE_INDEX, dtype=torch.long)
    for r, (x, y) in enumerate(zip(rows, labels)):
        ids[r, :len(x)] = torch.tensor(x, dtype=torch.long)
        targets[r, :len(y)] = torch.tensor(y, dtype=torch.long)
    batch = Batch(ids, targets, tasks=[ex.task for ex in examples])
    if loss_average == "example":
        supervised = (targets != IGNORE_INDEX).float()
        batch.loss_weights = supervised / supervised.sum(1, keepdim=True).clamp(min=1.0)
    elif loss_average != "token":
        raise ValueError(f"loss_average must be 'token' or 'example', got {loss_average!r}")
    if images:
        batch.images = stack_images(images)
        batch.image_rows = torch.tensor(image_rows, dtype=torch.long)
    if clips:
        batch.audio, batch.audio_lengths = pad_features(clips)
        batch.audio_rows = torch.tensor(clip_rows, dtype=torch.long)
    return batch


def pad_features(clips: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (n_mels, frames_i) each -> (M, n_mels, max frames) zero-padded, and the frames of each (M,)."""
    lengths = torch.tensor([c.shape[-1] for c in clips], dtype=torch.long)
    out = clips[0].new_zeros(len(clips), clips[0].shape[0], int(lengths.max()))
    for i, c in enumerate(clips):
        out[i, :, :c.shape[-1]] = c
    return out, lengths


# ------------------------------------------------------------------------------------------ classification
@dataclass
class LabeledExample:
    """One classification example, its inputs ready for the model; None for a modality it lacks."""
    label: int
    text: Optional[list[int]] = None  # token ids
    image: Optional[torch.Tensor] = None  # (3, S, S)
    audio: Optional[torch.Tensor] = None  # log-mel features (n_mels, frames)


@dataclass
class ClassBatch:
    ids: torch.Tensor  # (B, T) token ids, right-padded; a row without text holds one pad token
    text_lengths: torch.Tensor  # (B,)
    present: torch.Tensor  # (B, M) boolean, the modalities (in MODALITIES order) each row has
    labels: torch.Tensor  # (B,)
    images: Optional[torch.Tensor] = None  # (B, 3, S, S), zeros where absent
    audio: Optional[torch.Tensor] = None  # (B, n_mels, frames), zero-padded
    audio_lengths: Optional[torch.Tensor] = None  # (B,)
    class_weights: Optional[torch.Tensor] = None  # (classes,)

    def to(self, device: str | torch.device) -> "ClassBatch":
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return replace(self, **{f: move(getattr(self, f)) for f in ("ids", "text_lengths", "present", "labels",
                                                                     "images", "audio", "audio_lengths",
                                                                     "class_weights")})

    def loss_weight(self) -> float:
        """Examples in the batch (the loss is a mean over examples)."""
        return float(self.labels.shape[0])

    def model_inputs(self, loss_only: bool = False) -> dict[str, Any]:
        """loss_only is the generators' option (logits only where needed); a classifier's logits are tiny."""
        return {"ids": self.ids, "text_lengths": self.text_lengths, "present": self.present, "labels": self.labels,
                "images": self.images, "audio": self.audio, "audio_lengths": self.audio_lengths,
                "class_weights": self.class_weights}


def collate_labeled(examples: Sequence[LabeledExample], modalities: Sequence[str], pad_id: int,
                    image_size: Optional[int] = None, n_mels: Optional[int] = None,
                    class_weights: Optional[torch.Tensor] = None) -> ClassBatch:
    """Stack examples; a missing modality gets a placeholder the model masks out (one pad token, a zero image,
    a 16-frame silent clip). modalities: the classifier's, in MODALITIES order."""
    B = len(examples)
    present = torch.tensor([[getattr(e, m) is not None for m in modalities] for e in examples], dtype=torch.bool)
    texts = [e.text if e.text is not None else [pad_id] for e in examples]
    lengths = torch.tensor([len(t) for t in texts], dtype=torch.long)
    ids = torch.full((B, int(lengths.max())), pad_id, dtype=torch.long)
    for r, t in enumerate(texts):
        ids[r, :len(t)] = torch.tensor(t, dtype=torch.long)
    batch = ClassBatch(ids, lengths, present, torch.tensor([e.label for e in examples], dtype=torch.long),
                       class_weights=class_weights)
    if "image" in modalities:
        blank = torch.zeros(3, image_size, image_size)
        batch.images = stack_images([e.image if e.image is not None else blank for e in examples])
    if "audio" in modalities:
        silent = torch.zeros(n_mels, 16)
        batch.audio, batch.audio_lengths = pad_features([e.audio if e.audio is not None else silent
                                                         for e in examples])
    return batch
