"""A run's data, set up once: the tokenizer (kept in the run folder), the tokenized corpus for pretraining, or
the example sets for fine-tuning and classification, with their validation parts. The main process does the
work that writes files or synthesizes speech; the others wait for it, then read the same."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

from ..atomic import write_atomic
from ..checkpoint import is_pretrained_folder, resolve
from ..config import Config, ConfigError
from ..data.conversations import BUILTIN_TEMPLATE
from ..data.examples import ChatExamples, Concat, SpeechExamples, TaskExamples, hold_out, read_sources
from ..data.text import DataError, prepare_tokens, read_corpus
from ..data.training import ExampleData, TextData, TrainingData
from ..tokenizer import Tokenizer
from . import distributed


def load_or_create_tokenizer(cfg: Config, run_dir: Path, texts: Callable[[], list[str]],
                             chat: bool = False) -> Tokenizer:
    """The run's tokenizer: kept in run_dir, else from train.init_from, data.tokenizer_path, or trained on
    texts() with data.tokenizer and model.vocab_size. chat: the run learns conversations, so a tokenizer
    without a chat template keeps the built-in one it trains with (which `chat` then uses too)."""
    tok_path = run_dir / "tokenizer.json"
    if tok_path.is_file():
        return Tokenizer.load(tok_path)
    if cfg.train.init_from and is_pretrained_folder(cfg.train.init_from):
        tokenizer = Tokenizer.from_pretrained(cfg.train.init_from)
    elif cfg.train.init_from:
        tokenizer = Tokenizer.load(resolve(cfg.train.init_from) / "tokenizer.json")
    elif cfg.data.tokenizer_path:
        tokenizer = Tokenizer.load(cfg.data.tokenizer_path)
    else:
        tokenizer = Tokenizer.create(cfg.data.tokenizer, texts(), cfg.model.vocab_size)
    if chat and tokenizer.chat_template is None:
        tokenizer.chat_template = BUILTIN_TEMPLATE
    if tokenizer.vocab_size > cfg.model.vocab_size:
        raise ConfigError(f"the tokenizer has {tokenizer.vocab_size} tokens but model.vocab_size is "
                          f"{cfg.model.vocab_size}: raise model.vocab_size")
    tokenizer.save(tok_path)
    return tokenizer


def prepare_text(cfg: Config, run_dir: Path, env: distributed.DistEnv) -> TextData:
    """Train or load the tokenizer and tokenize the corpus into run_dir/data, once (on the main process)."""
    if env.is_main:
        docs: list[str] = []

        def texts() -> list[str]:
            if not docs:
                docs.extend(read_corpus(cfg.data.corpus, cfg.data.encoding_errors))
            return docs

        tokenizer = load_or_create_tokenizer(cfg, run_dir, texts)
        if not (run_dir / "data" / "meta.json").is_file():
            prepare_tokens(texts(), tokenizer, run_dir / "data", cfg.data.val_fraction)
    distributed.barrier(env)
    return TextData(cfg, run_dir, Tokenizer.load(run_dir / "tokenizer.json"))


def prepare_examples(cfg: Config, run_dir: Path, env: distributed.DistEnv) -> ExampleData:
    """Read the sources, hold out validation examples, fix a classifier's classes (written back into the
    run's config.yaml), synthesize built-in speech once, and set up the tokenizer (trained on the texts)."""
    d = cfg.data
    train_sets = read_sources(cfg, d.sources, "train")
    if d.val_sources:
        val_sets = read_sources(cfg, d.val_sources, "val")
    else:
        train_sets, val_sets = hold_out(train_sets, d.sources, d.val_fraction)
    if cfg.classifier is not None:
        _fix_classes(cfg, run_dir, env, train_sets + val_sets)
    _note_text_labels(cfg, run_dir, env, train_sets)

    if env.is_main:  # synthesize (or find in the cache) the built-in speech once, before the other processes
        for s in train_sets + val_sets:
            if isinstance(s, SpeechExamples):
                longest = float(s.load().durations.max(initial=0.0))
                if cfg.audio is not None and longest > cfg.audio.max_seconds:
                    raise DataError(f"builtin:speech ({s.split}) holds clips of up to {longest:.1f} s, longer than "
                                    f"audio.max_seconds ({cfg.audio.max_seconds:g}): raise it to at least "
                                    f"{math.ceil(longest)}")
    distributed.barrier(env)

    def texts() -> list[str]:
        out = [t for s in train_sets for t in s.texts()]
        return out or ["-"]

    if env.is_main:
        load_or_create_tokenizer(cfg, run_dir, texts, chat=any(isinstance(s, ChatExamples) for s in train_sets))
    distributed.barrier(env)
    names = list(d.val_sources or d.sources)
    return ExampleData(cfg, Tokenizer.load(run_dir / "tokenizer.json"),
                       Concat(train_sets, d.source_weights or None, d.sources),
                       Concat(val_sets, None, names if len(names) == len(val_sets) else None))


def _note_text_labels(cfg: Config, run_dir: Path, env: distributed.DistEnv, sets: list) -> None:
    """data.labels: the labels of the text classification rows the run trains on (kept in its config.yaml)."""
    found = sorted({r.target for s in sets if isinstance(s, TaskExamples) for r in s.rows if r.task == "classify"})
    if found and not cfg.data.labels:
        cfg.data.labels = found
        if env.is_main:
            write_atomic(run_dir / "config.yaml", cfg.to_yaml())


def _fix_classes(cfg: Config, run_dir: Path, env: distributed.DistEnv, sets: list) -> None:
    c = cfg.classifier
    found = sorted({label for s in sets for label in s.labels()})
    if not c.labels:
        c.labels = found
        if env.is_main:
            write_atomic(run_dir / "config.yaml", cfg.to_yaml())
    unknown = sorted(set(found) - set(c.labels))
    if unknown:
        raise DataError(f"the data has labels {unknown} that classifier.labels {c.labels} does not list")
    if len(c.labels) < 2:
        raise DataError(f"a classifier needs at least two classes; the training data has {c.labels}")


def prepare(cfg: Config, run_dir: Path, env: distributed.DistEnv) -> TrainingData:
    if cfg.data.sources or cfg.classifier is not None:
        return prepare_examples(cfg, run_dir, env)
    return prepare_text(cfg, run_dir, env)
