"""Examples of every task, before they become model inputs (`data.inputs`), and the sets that hold them.

One `Example` type serves every task: what the model reads (text, an image, an audio clip) and what it learns
from it, a target text that a generator writes after the text, or a class label that a classifier predicts.
A set gives examples by index (`example(index, rng)`, the rng drawing any per-example choice, such as which
question about a scene); `read_sources` turns `data.sources` specs into sets, and `hold_out` gives each set's
validation part when no `data.val_sources` are given.
"""
from __future__ import annotations

import csv
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Protocol, Sequence

import numpy as np

from ..config import Config, ConfigError
from ..extras import optional
from .builtin import matching, speech
from .conversations import Conversation, read_conversations
from .hf_datasets import dataset_rows, is_dataset_spec
from .builtin import scenes as builtin_scenes
from .labeled import LabeledRow, read_labeled_manifest
from .prompts import CAPTION_PROMPT, CLASSIFY_PROMPT, TRANSCRIBE_PROMPT, example_text, followup_prompt, vqa_prompt
from .sources import AudioText, ImageText, confine, read_audio_source, read_source, resolve_root
from .text_tasks import TaskRow, read_task_rows, task_of_keys

from .text import DataError, read_corpus

Image = optional("PIL.Image")

VAL_SEED = 987_654_321  # validation data is fixed for a run, whatever the training seed
BUILTIN_SCENES = "builtin:scenes"
BUILTIN_SPEECH = "builtin:speech"
BUILTIN_MATCHING = "builtin:matching"
BUILTIN_SEED = 0  # the built-in sets are fixed datasets; the training seed only changes the sampling
BUILTIN_VAL_SCENES = 256
BUILTIN_VAL_UTTERANCES = 256
BUILTIN_VAL_MATCHING = 512
TOKENIZER_SCENES = 3000  # built-in scenes whose texts train a BPE tokenizer


@dataclass
class Example:
    """One example of any task. A generator continues `text` (where `<image>` and `<audio>` placeholders
    mark the image and the clip) with `target`; a classifier reads `text`, `image` and `audio` (None: that
    input is missing) and predicts `label`."""
    text: Optional[str] = ""
    target: Optional[str] = None  # without the leading space
    task: str = ""  # "caption", a question type, "transcribe", "text", "classify"
    turns: list[tuple[str, str]] = field(default_factory=list)  # more (text, target) about the same input
    image: Optional[Image.Image | Path] = None
    audio: Optional[np.ndarray | Path] = None  # mono samples at the model's sample rate, or a file
    label: Optional[str] = None
    where: str = ""  # the manifest and line it was read from, for messages about its files ("" if built in)
    # A conversation ({"role", "content"} dicts): the chat template writes its prompts and replies, in place
    # of text, target and turns (see `data.conversations`).
    messages: list[dict] = field(default_factory=list)


class ExampleSet(Protocol):
    def __len__(self) -> int: ...

    def example(self, index: int, rng: Optional[random.Random] = None) -> Example: ...

    def texts(self) -> list[str]: ...

    def split_off(self, fraction: float) -> tuple["ExampleSet", "ExampleSet"]: ...


# ------------------------------------------------------------------------------------------- built-in
class SceneExamples:
    """Built-in shape scenes drawn on demand: each is a caption example or one of its questions."""

    def __init__(self, split: str, count: int, seed: int, tasks: Sequence[str], caption_fraction: float,
                 size: int = 64, questions_per_example: int = 1):
        self.split, self.count, self.seed, self.size = split, count, seed, size
        self.tasks = [t for t in tasks if t in ("caption", "vqa")]  # a multitask run also lists transcribe
        self.caption_fraction = caption_fraction if len(self.tasks) == 2 else float("caption" in self.tasks)
        self.questions_per_example = questions_per_example

    def __len__(self) -> int:
        return self.count

    def example(self, index: int, rng: Optional[random.Random] = None) -> Example:
        rng = rng or random.Random(index)
        s = builtin_scenes.scene(self.seed, index, self.split, self.size)
        if rng.random() < self.caption_fraction or not s.qas:
            return Example(CAPTION_PROMPT, s.caption, "caption", image=s.image)
        first, *more = rng.sample(s.qas, min(self.questions_per_example, len(s.qas)))
        turns = [(followup_prompt(q.question), q.answer) for q in more]
        return Example(vqa_prompt(first.question), first.answer, first.type, turns, image=s.image)

    def texts(self) -> list[str]:
        out = []
        for sc in builtin_scenes.scenes("train", TOKENIZER_SCENES, seed=self.seed, size=self.size):
            # Bare, as before: learned as follow-ups run (" question" one token), the follow-up turns began with
            # a token that the first question, and evaluation, do not use, and the demo's VQA fell (bf16, 3,129
            # steps: 0.642, where 2,427 steps had scored 0.749).
            out += [sc.caption] + [f"question: {q.question} answer: {q.answer}" for q in sc.qas]
        return out + ["caption:"]

    def split_off(self, fraction: float) -> tuple["SceneExamples", "SceneExamples"]:
        """(this set, the built-in validation split): the scenes have their own."""
        return self, SceneExamples("val", BUILTIN_VAL_SCENES, BUILTIN_SEED, self.tasks, self.caption_fraction,
                                   self.size)


class SpeechExamples:
    """Built-in spoken phrases (synthesized once, cached): each is a transcription example."""

    def __init__(self, split: str, count: int, seed: int, cache_dir: Path):
        self.split, self.count, self.seed, self.cache_dir = split, count, seed, cache_dir
        self._set: Optional[speech.SpeechSet] = None

    def load(self) -> "speech.SpeechSet":
        if self._set is None:
            self._set = speech.speech_dataset(self.split, self.count, self.seed, self.cache_dir)
        return self._set

    def __len__(self) -> int:
        return self.count

    def example(self, index: int, rng: Optional[random.Random] = None) -> Example:
        s = self.load()
        return Example(TRANSCRIBE_PROMPT, s.texts[index], "transcribe", audio=s.audio(index))

    def texts(self) -> list[str]:
        # Transcripts stay bare: learned after the prompt, their first token became a word instead of a space,
        # and the tests' tiny recognizers learned their 8 utterances by heart more slowly (cross-attention: 600
        # steps instead of 250) and misheard them in a segmented recording.
        return list(self.load().texts) + ["transcript:"]

    def split_off(self, fraction: float) -> tuple["SpeechExamples", "SpeechExamples"]:
        """(this set, the built-in validation split)."""
        return self, SpeechExamples("val", BUILTIN_VAL_UTTERANCES, BUILTIN_SEED, self.cache_dir)


class MatchingExamples:
    """The built-in three-modality classification task, drawn on demand; the spoken numbers are synthesized
    once per split and cached."""

    def __init__(self, split: str, count: int, size: int, cache: Path, spoken_count: Optional[int] = None):
        self.split, self.count, self.size, self.cache = split, count, size, cache
        self.spoken = matching.SpokenNumbers(split, 0, cache, spoken_count)

    def __len__(self) -> int:
        return self.count

    def example(self, index: int, rng: Optional[random.Random] = None) -> Example:
        s = matching.sample(0, index, self.split, self.size)
        return Example(s.text, task="classify", image=s.image,
                       audio=self.spoken.clip(s.number, random.Random(index)), label=s.label)

    def labels(self) -> list[str]:
        return list(matching.LABELS)

    def example_labels(self) -> list[str]:
        """The labels of (up to) the first 2,000 examples: enough to weigh the classes."""
        return [matching.sample(0, i, self.split, draw=False).label for i in range(min(len(self), 2000))]

    def texts(self) -> list[str]:
        return [matching.sample(0, i, "train", draw=False).text for i in range(2000)]

    def split_off(self, fraction: float) -> tuple["MatchingExamples", "MatchingExamples"]:
        """(this set, the built-in validation split)."""
        return self, MatchingExamples("val", BUILTIN_VAL_MATCHING, self.size, self.cache)


# ------------------------------------------------------------------------------------------ from files
class FileExamples:
    """Examples read from a manifest or COCO file: captions, or question/answer rows (those of `tasks`)."""

    def __init__(self, items: Sequence[ImageText], tasks: Sequence[str] = ("caption", "vqa")):
        self.tasks = tuple(tasks)
        self.items = [it for it in items if ("vqa" if it.question is not None else "caption") in tasks]

    def __len__(self) -> int:
        return len(self.items)

    def example(self, index: int, rng: Optional[random.Random] = None) -> Example:
        it = self.items[index]
        if it.question is not None:
            return Example(vqa_prompt(it.question), it.text, "vqa", image=it.image, where=it.where)
        return Example(CAPTION_PROMPT, it.text, "caption", image=it.image, where=it.where)

    def texts(self) -> list[str]:
        return [example_text(self.example(i).text, it.text) for i, it in enumerate(self.items)]

    def split_off(self, fraction: float) -> tuple["FileExamples", "FileExamples"]:
        """(train, validation): the last `fraction` of the rows are held out."""
        n_val = max(1, int(len(self) * fraction))
        return FileExamples(self.items[:-n_val], self.tasks), FileExamples(self.items[-n_val:], self.tasks)


class AudioFileExamples:
    """Examples read from an audio manifest, a LibriSpeech folder or class folders: a clip with a transcript
    is a transcription example (`TRANSCRIBE_PROMPT`), a clip with a label a classification example that a
    generator answers with the label (`CLASSIFY_PROMPT`)."""

    def __init__(self, items: Sequence[AudioText]):
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def example(self, index: int, rng: Optional[random.Random] = None) -> Example:
        it = self.items[index]
        if it.label is not None:
            return Example(CLASSIFY_PROMPT, it.label, "classify", audio=it.audio, where=it.where)
        return Example(TRANSCRIBE_PROMPT, it.text, "transcribe", audio=it.audio, where=it.where)

    def texts(self) -> list[str]:
        return [it.text for it in self.items] + ["transcript:", "class:"]  # bare, as the built-in speech's

    def split_off(self, fraction: float) -> tuple["AudioFileExamples", "AudioFileExamples"]:
        """(train, validation), stratified by label (see `stratified_split`)."""
        rest, val = stratified_split([it.label for it in self.items], fraction)
        return AudioFileExamples([self.items[i] for i in rest]), AudioFileExamples([self.items[i] for i in val])


class RowExamples:
    """Rows of classification manifests (`data.labeled`)."""

    def __init__(self, rows: Sequence[LabeledRow]):
        self.rows = list(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def example(self, index: int, rng: Optional[random.Random] = None) -> Example:
        r = self.rows[index]
        return Example(r.text, task="classify", image=r.image, audio=r.audio, label=r.label, where=r.where)

    def labels(self) -> list[str]:
        return sorted({r.label for r in self.rows})

    def example_labels(self) -> list[str]:
        return [r.label for r in self.rows]

    def texts(self) -> list[str]:
        return [r.text for r in self.rows if r.text]

    def split_off(self, fraction: float) -> tuple["RowExamples", "RowExamples"]:
        """(train, validation), stratified by label (see `stratified_split`)."""
        rest, val = stratified_split([r.label for r in self.rows], fraction)
        return RowExamples([self.rows[i] for i in rest]), RowExamples([self.rows[i] for i in val])


class ChatExamples:
    """Conversations read from a JSONL file (`data.conversations`): the model learns the assistant's replies."""

    def __init__(self, items: Sequence[Conversation]):
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def example(self, index: int, rng: Optional[random.Random] = None) -> Example:
        c = self.items[index]
        return Example(None, task="chat", image=c.image, audio=c.audio, where=c.where, messages=c.messages)

    def texts(self) -> list[str]:
        return [f"{m['role']}: {m['content']}" for c in self.items for m in c.messages]

    def split_off(self, fraction: float) -> tuple["ChatExamples", "ChatExamples"]:
        """(train, validation): the last `fraction` of the conversations are held out."""
        n_val = max(1, int(len(self) * fraction))
        return ChatExamples(self.items[:-n_val]), ChatExamples(self.items[-n_val:])


class TaskExamples:
    """Rows of a text task (`data.text_tasks`: translate, summarize, qa, classify): the model writes the row's
    target after the task's prompt. source_lang, target_lang: the languages a translation row that names none
    is asked in (data.source_lang, data.target_lang)."""

    def __init__(self, rows: Sequence[TaskRow], source_lang: str = "source", target_lang: str = "target"):
        self.rows = list(rows)
        self.source_lang, self.target_lang = source_lang, target_lang

    def __len__(self) -> int:
        return len(self.rows)

    def example(self, index: int, rng: Optional[random.Random] = None) -> Example:
        r = self.rows[index]
        return Example(r.prompt(self.source_lang, self.target_lang), r.target, r.task, where=r.where)

    def texts(self) -> list[str]:
        return [f"{r.prompt(self.source_lang, self.target_lang)} {r.target}" for r in self.rows]

    def split_off(self, fraction: float) -> tuple["TaskExamples", "TaskExamples"]:
        """(train, validation): classification rows stratified by label (see `stratified_split`), the others'
        last `fraction` held out."""
        if self.rows and self.rows[0].task == "classify":
            rest, val = stratified_split([r.target for r in self.rows], fraction)
        else:
            n_val = max(1, int(len(self) * fraction))
            rest, val = list(range(len(self) - n_val)), list(range(len(self) - n_val, len(self)))
        return (TaskExamples([self.rows[i] for i in rest], self.source_lang, self.target_lang),
                TaskExamples([self.rows[i] for i in val], self.source_lang, self.target_lang))


class TextExamples:
    """Plain text for the language-model task in a multitask run: pieces of about `chars` characters of the
    corpus, cut at whitespace, each a target with an empty prompt."""

    def __init__(self, corpus: Sequence[str], errors: str = "strict", chars: int = 400):
        self.pieces: list[str] = []
        for doc in read_corpus(corpus, errors):
            words, piece = doc.split(), []
            size = 0
            for w in words:
                piece.append(w)
                size += len(w) + 1
                if size >= chars:
                    self.pieces.append(" ".join(piece))
                    piece, size = [], 0
            if piece:
                self.pieces.append(" ".join(piece))
        if not self.pieces:
            raise DataError(f"text source {list(corpus)} holds no words")

    def __len__(self) -> int:
        return len(self.pieces)

    def example(self, index: int, rng: Optional[random.Random] = None) -> Example:
        return Example("", self.pieces[index], "text")

    def texts(self) -> list[str]:
        return self.pieces

    def split_off(self, fraction: float) -> tuple["TextExamples", "TextExamples"]:
        """(train, validation): the last `fraction` of the pieces are held out."""
        n_val = max(1, int(len(self.pieces) * fraction))
        train, val = TextExamples.__new__(TextExamples), TextExamples.__new__(TextExamples)
        train.pieces, val.pieces = self.pieces[:-n_val], self.pieces[-n_val:]
        return train, val


def stratified_split(labels: Sequence[Optional[str]], fraction: float) -> tuple[list[int], list[int]]:
    """(train indices, validation indices): about `fraction` of each label's examples (seeded), at least one
    of a label with two or more and never its last one, so validation holds every class training has (when
    it can) and training holds every class. Unlabeled examples (None) form one group."""
    groups: dict = {}
    for i, label in enumerate(labels):
        groups.setdefault(label, []).append(i)
    rng = random.Random(VAL_SEED)
    train, val = [], []
    for members in groups.values():
        members = list(members)
        rng.shuffle(members)
        n_val = min(len(members) - 1, max(1, round(len(members) * fraction)))
        val += members[:n_val]
        train += members[n_val:]
    if not val:
        raise DataError(f"{len(labels)} example(s): too few to hold out validation examples; give "
                        f"data.val_sources")
    return sorted(train), sorted(val)


# ------------------------------------------------------------------------------------------- several
class Concat:
    """Several example sets as one; `weights` (one per set) make `draw` pick a set with those chances."""

    def __init__(self, parts: Sequence[ExampleSet], weights: Optional[Sequence[float]] = None,
                 names: Optional[Sequence[str]] = None):
        keep = [i for i, p in enumerate(parts) if len(p)]
        self.parts = [parts[i] for i in keep]
        self.weights = [weights[i] for i in keep] if weights else None
        self.names = [names[i] for i in keep] if names else [f"source {i}" for i in keep]
        if not self.parts:
            raise DataError("no usable examples: every source is empty")

    def draw(self, rng: random.Random) -> Example:
        """A random example: uniform over all examples, or a set by its weight then uniform within it."""
        if self.weights is None:
            return self.example(rng.randrange(len(self)), rng)
        part = self.pick(rng)
        return part.example(rng.randrange(len(part)), rng)

    def pick(self, rng: random.Random) -> ExampleSet:
        """A set, by its weight (by its size when there are no weights)."""
        weights = self.weights if self.weights is not None else [len(p) for p in self.parts]
        return self.parts[rng.choices(range(len(self.parts)), weights=weights)[0]]

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    def example(self, index: int, rng: Optional[random.Random] = None) -> Example:
        for p in self.parts:
            if index < len(p):
                return p.example(index, rng)
            index -= len(p)
        raise IndexError(index)


# --------------------------------------------------------------------------------------------- reading
def cache_dir(cfg: Config) -> Path:
    """Where generated data is kept: data.cache_dir, else $OMNIGPT_CACHE, else ~/.cache/omnigpt."""
    return Path(cfg.data.cache_dir or os.environ.get("OMNIGPT_CACHE") or Path.home() / ".cache" / "omnigpt")


def media_root(cfg: Config) -> Optional[str]:
    """data.media_root: the folder every file of the sources must be in (None: anywhere)."""
    return cfg.data.media_root


def builtin_size(cfg: Config) -> int:
    """Built-in scenes are drawn at the encoder's resolution (64 px unless the config says otherwise)."""
    return max(24, cfg.vision.image_size) if cfg.vision else 64


def read_sources(cfg: Config, specs: Sequence[str], split: str,
                 labels: Optional[Sequence[str]] = None) -> list[ExampleSet]:
    """The example sets of `specs` (data.sources or data.val_sources): a classifier's labeled sources when
    the config has a classifier section, else a generator's. labels: the classes a labeled manifest's rows
    must be among (a trained classifier's). Files must lie in data.media_root when it is set."""
    if cfg.classifier is not None:
        return [_labeled_source(cfg, spec, split, labels) for spec in specs]
    d = cfg.data
    sets: list[ExampleSet] = []
    for spec in specs:
        if is_dataset_spec(spec):  # its rows, written once as a JSONL file that every reader takes
            spec = str(dataset_rows(spec, d.columns, cache_dir(cfg)))
        if spec == BUILTIN_SPEECH:
            count = d.builtin_utterances if split == "train" else BUILTIN_VAL_UTTERANCES
            sets.append(SpeechExamples(split, count, BUILTIN_SEED, cache_dir(cfg)))
        elif spec == BUILTIN_SCENES:
            count = d.builtin_scenes if split == "train" else BUILTIN_VAL_SCENES
            sets.append(SceneExamples(split, count, BUILTIN_SEED, d.tasks, d.caption_fraction, builtin_size(cfg),
                                      d.questions_per_example if split == "train" else 1))
        elif spec.startswith("text:"):
            if spec != "text:builtin":
                confine(spec[len("text:"):], resolve_root(media_root(cfg)), "text source")
            sets.append(TextExamples([spec[len("text:"):]], d.encoding_errors, d.text_chars))
        elif spec.startswith("builtin:"):
            raise ConfigError(f"unknown built-in source {spec!r}: the built-in sources are {BUILTIN_SCENES!r} "
                              f"and {BUILTIN_SPEECH!r} (and text:builtin, Python's own help text)")
        elif "messages" in _first_row_keys(spec):
            sets.append(ChatExamples(read_conversations(spec, d.on_bad_file, root=media_root(cfg))))
        elif text_task_of(spec) is not None:
            sets.append(TaskExamples(read_task_rows(spec, text_task_of(spec), d.on_bad_file, root=media_root(cfg)),
                                     d.source_lang, d.target_lang))
        elif cfg.vision is None and cfg.audio is None:
            raise ConfigError(f"source {spec}: a text model fine-tunes on conversations (JSONL rows of "
                              f"{{\"messages\": [...]}}), text:FILE, or a text task's rows (translate "
                              f"{{\"source\", \"target\"}}, summarize {{\"document\", \"summary\"}}, qa "
                              f"{{\"context\", \"question\", \"answer\"}}, classify {{\"text\", \"label\"}}); "
                              f"for image or audio manifests the config needs a 'vision' or 'audio' section")
        elif _is_audio_source(spec, cfg):
            sets.append(AudioFileExamples(read_audio_source(spec, d.on_bad_file, root=media_root(cfg))))
        else:
            sets.append(FileExamples(read_source(spec, d.images, d.on_bad_file, root=media_root(cfg)), d.tasks))
    return sets


def _labeled_source(cfg: Config, spec: str, split: str, labels: Optional[Sequence[str]]) -> ExampleSet:
    if is_dataset_spec(spec):
        spec = str(dataset_rows(spec, cfg.data.columns, cache_dir(cfg)))
    if spec == BUILTIN_MATCHING:
        count = cfg.data.builtin_scenes if split == "train" else BUILTIN_VAL_MATCHING
        return MatchingExamples(split, count, builtin_size(cfg), cache_dir(cfg))
    if spec.startswith("builtin:"):
        raise ConfigError(f"unknown built-in source {spec!r} for a classifier: the built-in task is "
                          f"{BUILTIN_MATCHING!r}")
    if spec.lower().endswith((".jsonl", ".csv")):
        return RowExamples(read_labeled_manifest(spec, cfg.data.on_bad_file, labels, root=media_root(cfg)))
    raise DataError(f"unknown classification source {spec!r}: give {BUILTIN_MATCHING}, or a .jsonl or .csv "
                    f"manifest of text/image/audio/label rows")


def _is_audio_source(spec: str, cfg: Config) -> bool:
    """librispeech:/audiofolder: sources, and manifests when the model hears but does not see, or, for a model
    that does both, a manifest whose first row names an "audio" file and no "image"."""
    if spec.startswith(("librispeech:", "audiofolder:")) or (cfg.audio is not None and cfg.vision is None):
        return True
    if cfg.audio is None:
        return False
    keys = _first_row_keys(spec)
    return "audio" in keys and "image" not in keys


def text_task_of(spec: str) -> Optional[str]:
    """The text task (translate, summarize, qa, classify) whose rows a JSONL or CSV file holds, by its first
    row's keys or its CSV header; None for any other source."""
    return task_of_keys(_first_row_keys(spec))


def _first_row_keys(spec: str) -> set[str]:
    """The keys of a JSONL manifest's first row, or a CSV file's header (none when the source is not a
    readable manifest: its reader then says what is wrong)."""
    path = Path(spec)
    if path.suffix.lower() == ".csv" and path.is_file():
        try:
            with open(path, encoding="utf-8-sig", newline="") as fh:
                return {cell.strip() for cell in next(csv.reader(fh), [])}
        except (OSError, UnicodeDecodeError, csv.Error):
            return set()
    if path.suffix != ".jsonl" or not path.is_file():
        return set()
    try:
        with open(path, encoding="utf-8-sig") as fh:
            first = next((line for line in fh if line.strip()), "")
        row = json.loads(first) if first else None
    except (OSError, UnicodeDecodeError, ValueError):
        return set()
    return set(row) if isinstance(row, dict) else set()


def hold_out(sets: Sequence[ExampleSet], names: Sequence[str], fraction: float) -> tuple[list, list]:
    """(train sets, validation sets) when no validation sources are given: built-in sets give their own
    validation split, file and text sets give up about `fraction` of their examples (see each split_off)."""
    train, val = [], []
    for s, name in zip(sets, names):
        if isinstance(s, (FileExamples, AudioFileExamples, ChatExamples, TaskExamples)) and len(s) < 2:
            raise DataError(f"source {name} has {len(s)} example(s): too few to hold out validation examples; "
                            f"give data.val_sources")
        kept, held = s.split_off(fraction)
        train.append(kept)
        val.append(held)
    return train, val


def training_labels(cfg: Config) -> list[str]:
    """The classes a run of this config learns: classifier.labels, else every label of its training and
    validation sources (what training fills classifier.labels with)."""
    if cfg.classifier is not None and cfg.classifier.labels:
        return list(cfg.classifier.labels)
    sets = read_sources(cfg, cfg.data.sources, "train") + read_sources(cfg, cfg.data.val_sources, "val")
    return sorted({label for s in sets for label in s.labels()})
