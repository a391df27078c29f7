"""What a training run learns from: token windows (pretraining), or example sets made into batches by the
featurizer (fine-tuning a generator, training a classifier).

Both give the trainer the same three things: the tokenizer, `train_batch(step, count, start, stop)` (rows
start..stop of step `step`'s global batch, a pure function of the seed and the step, so resumed and
multi-process runs see the same data), and `val_batch(i, batch_size)` (fixed validation batches).

A file that the readers passed (its header is fine) but that cannot be decoded (a truncated JPEG, a WAV of NaN
samples) is found when a row draws it. Under data.on_bad_file "error" that stops the run, naming the manifest
and line; under "skip" the row is drawn again with a generator of its own (seed, step, row, attempt), so the
replacement is the same in every run however it was resumed or split, the row is warned about once
(`DataWarning`), and the batch counts it (`Batch.skipped`, which the trainer logs as `skipped_files`).
"""
from __future__ import annotations

import random
import warnings
from collections import Counter
from pathlib import Path
from typing import Optional, Protocol

import torch

from ..config import Config
from ..tokenizer import Tokenizer
from .audio import AudioError
from .batch import Batch, EncodedExample
from .examples import VAL_SEED, Concat, Example, ExampleSet
from .image import ImageError
from .inputs import Inputs
from .sources import DataWarning
from .text import DataError, FIMTokens, TokenWindows, load_tokens

MAX_DRAWS = 100  # draws of one row before the files are deemed all bad


class TrainingData(Protocol):
    tokenizer: Tokenizer

    def train_batch(self, step: int, count: int, start: int, stop: int) -> Batch: ...

    def val_batch(self, i: int, batch_size: int) -> Batch: ...


class TextData:
    """Pretraining: random windows of a tokenized corpus (see `data.text.TokenWindows`)."""

    def __init__(self, cfg: Config, run_dir: Path, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        fim = FIMTokens(tokenizer.fim_prefix_id, tokenizer.fim_middle_id, tokenizer.fim_suffix_id)
        self.train = TokenWindows(load_tokens(run_dir / "data", "train"), cfg.model.block_size, cfg.train.seed,
                                  cfg.data.fim_rate, fim)
        val_tokens = load_tokens(run_dir / "data", "val")
        if len(val_tokens) < 3:
            raise DataError(f"the validation split has {len(val_tokens)} tokens; give more text or raise "
                            f"data.val_fraction")
        self.val = TokenWindows(val_tokens, min(cfg.model.block_size, len(val_tokens) - 1), VAL_SEED)

    def train_batch(self, step: int, count: int, start: int, stop: int) -> Batch:
        return Batch(*self.train.batch(step, count, start, stop))

    def val_batch(self, i: int, batch_size: int) -> Batch:
        return Batch(*self.val.batch(i, batch_size))


class ExampleData:
    """Batches of examples: each row drawn with its own seeded generator (which also drives augmentation and
    a classifier's modality dropout), featurized and collated by `Inputs`."""

    def __init__(self, cfg: Config, tokenizer: Tokenizer, train: Concat, val: Concat):
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.train_set, self.val_set = train, val
        self.inputs = Inputs(cfg, tokenizer)
        self.on_bad_file = cfg.data.on_bad_file
        self.bad_rows: set[str] = set()  # the manifest rows whose file could not be decoded, warned about once
        self.class_weights = None
        if cfg.classifier is not None and cfg.classifier.class_weights == "balanced":
            labels = cfg.classifier.labels
            counts = Counter(label for s in train.parts for label in s.example_labels())
            n = sum(counts.values())
            self.class_weights = torch.tensor([n / (len(labels) * max(counts[label], 1)) for label in labels])

    def _rows(self, examples: ExampleSet, seed: int, step: int, start: int, stop: int, augment: bool) -> Batch:
        rows, skipped = [], 0
        for r in range(start, stop):
            features, redrawn = self._row(examples, seed, step, r, augment)
            rows.append(features)
            skipped += redrawn
        batch = self.inputs.collate(rows, self.class_weights)
        batch.skipped = skipped
        return batch

    def _row(self, examples: ExampleSet, seed: int, step: int, r: int, augment: bool) -> tuple[EncodedExample, int]:
        """Row r of step `step`, and 1 if it had to be drawn again because a file could not be decoded (else 0).
        The first draw's generator is (seed, step, r); draw k > 0 takes (seed, step, r, k), so the outcome never
        depends on what a failed draw consumed or on which bad rows this process has already met."""
        for attempt in range(MAX_DRAWS):
            rng = random.Random(hash((seed, step, r) if attempt == 0 else (seed, step, r, attempt)))
            ex = examples.draw(rng) if isinstance(examples, Concat) else examples.example(rng.randrange(len(examples)), rng)
            try:
                return self.inputs.features(ex, rng if augment else None), int(attempt > 0)
            except (ImageError, AudioError) as exc:
                last = self._bad_file(ex, exc)
        raise DataError(f"step {step} row {r}: {MAX_DRAWS} draws in a row named files that cannot be decoded (the "
                        f"last: {last}); fix or remove the broken files")

    def _bad_file(self, ex: Example, exc: DataError) -> str:
        """Raise (data.on_bad_file "error") or warn once about a row whose file could not be decoded; the
        message names the manifest and line."""
        if not ex.where:
            raise exc
        message = f"{ex.where}: {exc}"
        if self.on_bad_file == "error":
            raise type(exc)(f"{message}; to skip such files set data.on_bad_file: skip (--on-bad-file skip)") from None
        if ex.where not in self.bad_rows:
            self.bad_rows.add(ex.where)
            warnings.warn(f"{message}; skipped (data.on_bad_file: skip), its rows are drawn again", DataWarning,
                          stacklevel=2)
        return message

    def train_batch(self, step: int, count: int, start: int, stop: int) -> Batch:
        examples: ExampleSet = self.train_set
        if self.cfg.data.batch_mode == "per_source" and len(self.train_set.parts) > 1:
            # one draw per step, the same on every process and micro-batch (ints only: str hashes vary by run)
            examples = self.train_set.pick(random.Random(hash((self.cfg.train.seed, step, -1))))
        # A classifier's rows always draw modality dropout from their generator; a generator's augment only
        # when the config asks for augmentation.
        augment = self.inputs.augmenting or self.cfg.classifier is not None
        return self._rows(examples, self.cfg.train.seed, step, start, stop, augment)

    def val_batch(self, i: int, batch_size: int, task: Optional[str] = None) -> Batch:
        """Fixed validation batch i: of every source together, or of the source named `task`."""
        if task is None:
            return self._rows(self.val_set, VAL_SEED, i, 0, batch_size, augment=False)
        return self._rows(self.val_set.parts[self.val_set.names.index(task)], VAL_SEED, i, 0, batch_size,
                          augment=False)

    def val_tasks(self) -> list[str]:
        """The validation sources by name, when there are several: their losses are logged one by one."""
        return list(self.val_set.names) if len(self.val_set.parts) > 1 else []
