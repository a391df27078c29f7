"""What a training run learns from: token windows (pretraining), or example sets made into batches by the
featurizer (fine-tuning a generator, training a classifier).

Both give the trainer the same three things: the tokenizer, `train_batch(step, count, start, stop)` (rows
start..stop of step `step`'s global batch, a pure function of the seed and the step, so resumed and
multi-process runs see the same data), and `val_batch(i, batch_size)` (fixed validation batches).
"""
from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Optional, Protocol

import torch

from ..config import Config
from ..tokenizer import Tokenizer
from .batch import Batch
from .examples import VAL_SEED, Concat, ExampleSet
from .inputs import Inputs
from .text import DataError, FIMTokens, TokenWindows, load_tokens


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
        self.class_weights = None
        if cfg.classifier is not None and cfg.classifier.class_weights == "balanced":
            labels = cfg.classifier.labels
            counts = Counter(label for s in train.parts for label in s.example_labels())
            n = sum(counts.values())
            self.class_weights = torch.tensor([n / (len(labels) * max(counts[label], 1)) for label in labels])

    def _rows(self, examples: ExampleSet, seed: int, step: int, start: int, stop: int, augment: bool) -> Batch:
        rows = []
        for r in range(start, stop):
            rng = random.Random(hash((seed, step, r)))
            ex = examples.draw(rng) if isinstance(examples, Concat) else examples.example(rng.randrange(len(examples)), rng)
            rows.append(self.inputs.features(ex, rng if augment else None))
        return self.inputs.collate(rows, self.class_weights)

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
