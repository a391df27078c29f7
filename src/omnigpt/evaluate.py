"""Evaluation: perplexity on text and the unigram baseline it should beat; captioning (BLEU-4, CIDEr-D,
exact match), visual question answering (accuracy overall and per question type), transcripts (WER, CER),
and classification; the text tasks: translation (BLEU, chrF), summarization (ROUGE), question answering
(SQuAD exact match, F1) and text classification or moderation (accuracy, macro-F1, flagged shares)."""
from __future__ import annotations

import math
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np
import torch
from torch import nn

from .config import Config
from .data.prompts import CAPTION_PROMPT, CLASSIFY_PROMPT, TRANSCRIBE_PROMPT, target_text, vqa_prompt
from .data.builtin import scenes as builtin_scenes
from .data.builtin.speech import speech_dataset
from .data.examples import BUILTIN_SCENES, BUILTIN_SEED, BUILTIN_SPEECH, TextExamples, builtin_size, cache_dir
from .data.sources import DataWarning
from .data.text import DataError, load_tokens, read_text_file, sequential_windows, token_dtype
from .metrics import (accuracy_by_type, bleu4, cider_d, classification_scores, exact_match, flagged_shares,
                      majority_baseline, normalize_caption, rouge_scores, squad_scores, translation_scores,
                      vqa_accuracy)
from .tokenizer import Tokenizer

if TYPE_CHECKING:
    from .checkpoint import Checkpoint


class EvaluationError(ValueError):
    """An evaluation was asked for something the model or the data cannot give (exit status 2)."""


@dataclass
class EvalOptions:
    """What `evaluate_checkpoint` scores, as `omnigpt evaluate`'s flags say."""
    task: Optional[str] = None  # text, caption, vqa, caption+vqa, transcribe, classify, all (None: by the model)
    data: Optional[str] = None  # a text file, manifest or source spec (None: the built-in data or the run's split)
    images: Optional[str] = None  # image folder of a COCO captions file
    split: str = "test"  # built-in split to score
    limit: Optional[int] = None
    on_bad_file: Optional[str] = None
    errors: Optional[str] = None  # text decoding: strict or replace
    plot: Optional[str] = None  # confusion matrix PNG (default: RUN/confusion.png)
    progress: bool = True
    positive: Optional[str] = None  # text classify: the class whose probability --threshold applies to
    threshold: Optional[float] = None  # text classify: flag an example when P(positive) >= this (default 0.5)


@torch.no_grad()
def token_loss(model: nn.Module, tokens: np.ndarray, batch_size: int = 8,
               max_batches: Optional[int] = None) -> tuple[float, int]:
    """Mean next-token loss (nats) over a token stream cut into non-overlapping context windows,
    and the number of predicted tokens."""
    if len(tokens) < 2:
        raise DataError("need at least 2 tokens to measure a next-token loss")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for x, y in sequential_windows(tokens, model.config.block_size, batch_size, max_batches):
        _, loss = model(x.to(device), y.to(device))
        total += float(loss) * y.numel()
        count += y.numel()
    model.train(was_training)
    return total / count, count


def perplexity_of_text(model: nn.Module, tokenizer: Tokenizer, text: str, batch_size: int = 8) -> dict:
    """{"loss", "perplexity", "tokens"} of a text (end-of-text token appended)."""
    tokens = np.asarray(tokenizer.encode(text, eos=True), dtype=token_dtype(tokenizer.vocab_size))
    loss, n = token_loss(model, tokens, batch_size)
    return {"loss": loss, "perplexity": math.exp(loss), "tokens": n}


def perplexity_of_file(model: nn.Module, tokenizer: Tokenizer, path: str | Path, errors: str = "strict",
                       batch_size: int = 8) -> dict:
    text = read_text_file(path, errors)
    if not text.strip():
        raise DataError(f"evaluation file is empty: {path}")
    return perplexity_of_text(model, tokenizer, text, batch_size)


def perplexity_of_split(model: nn.Module, data_dir: str | Path, split: str = "val", batch_size: int = 8) -> dict:
    loss, n = token_loss(model, load_tokens(data_dir, split), batch_size)
    return {"loss": loss, "perplexity": math.exp(loss), "tokens": n}


def unigram_loss(train_tokens: np.ndarray, eval_tokens: np.ndarray, vocab_size: int) -> float:
    """Cross-entropy (nats/token) of eval_tokens under train_tokens' token frequencies (add-one smoothed):
    the loss of a model that ignores context, which a language model must beat."""
    counts = np.bincount(np.asarray(train_tokens, dtype=np.int64), minlength=vocab_size).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    return float(-logp[np.asarray(eval_tokens, dtype=np.int64)].mean())


@torch.no_grad()
def text_piece_loss(model: nn.Module, tokenizer: Tokenizer, pieces: Sequence[str], train_pieces: Sequence[str],
                    block_size: int, batch_size: int = 16) -> dict:
    """A multitask model's loss (nats/token) on held-out plain-text pieces, each scored as it was trained (a
    target after an empty prompt, then end-of-text), and the unigram loss of the same tokens under the
    training pieces' token frequencies."""
    from .data.batch import IGNORE_INDEX, EncodedExample, collate

    if not pieces or not train_pieces:
        raise DataError(f"text_piece_loss needs held-out and training pieces, got {len(pieces)} and "
                        f"{len(train_pieces)}: the text is too short to hold some out")
    examples = [EncodedExample([], tokenizer.encode(target_text(p))) for p in pieces]
    was_training = model.training
    model.eval()
    total, scored = 0.0, []
    try:
        for b in range(0, len(examples), batch_size):
            batch = collate(examples[b:b + batch_size], tokenizer.pad_id, tokenizer.eos_id, block_size)
            batch = batch.to(next(model.parameters()).device)
            _, loss = model(**batch.model_inputs(loss_only=True))
            kept = batch.targets[batch.targets != IGNORE_INDEX]
            total += float(loss) * kept.numel()
            scored.append(kept.cpu().numpy())
    finally:
        model.train(was_training)
    eval_tokens = np.concatenate(scored)
    train_tokens = np.concatenate([tokenizer.encode(target_text(p)) + [tokenizer.eos_id]
                                   for p in train_pieces])
    return {"text_val_loss": total / len(eval_tokens),
            "unigram_loss": unigram_loss(train_tokens, eval_tokens, tokenizer.vocab_size),
            "tokens": int(len(eval_tokens))}


# ---------------------------------------------------------------------------------- images: captions, VQA
def _answer_batches(model: nn.Module, tokenizer: Tokenizer, prompts: Sequence[str], images: Optional[Sequence],
                    max_new_tokens: int, batch_size: int, num_beams: int = 1, progress: bool = False,
                    audio: Optional[Sequence] = None) -> list[str]:
    """Greedy (or beam) continuations of prompts, each with one image (or one audio clip), in batches;
    stripped of spaces."""
    from tqdm.auto import tqdm

    from .generate import generate

    out: list[str] = []
    starts = range(0, len(prompts), batch_size)
    for b in tqdm(starts, disable=not progress, desc="evaluate", unit="batch", leave=False):
        ps = list(prompts[b:b + batch_size])
        media = ({"images": [[im] for im in images[b:b + batch_size]]} if images is not None else
                 {"audio": [[a] for a in audio[b:b + batch_size]]})
        out += generate(model, tokenizer, ps, max_new_tokens=max_new_tokens, num_beams=num_beams, **media)
    return [o.strip() for o in out]


def caption_scores(predictions: list[str], references: list[list[str]]) -> dict:
    """BLEU-4 (0-100), CIDEr-D (0-10), and exact match (0-1) of normalized captions."""
    preds = [normalize_caption(p) for p in predictions]
    refs = [[normalize_caption(r) for r in rs] for rs in references]
    return {"bleu4": bleu4(preds, refs), "cider_d": cider_d(preds, refs)[0], "exact_match": exact_match(preds, refs)}


def evaluate_captions(model: nn.Module, tokenizer: Tokenizer, images: Sequence, references: list[list[str]],
                      batch_size: int = 32, max_new_tokens: int = 40, num_beams: int = 1,
                      progress: bool = False) -> dict:
    """Caption each image (a path or PIL image; files are read batch by batch) with the captioning prompt and
    score against its reference captions."""
    preds = _answer_batches(model, tokenizer, [CAPTION_PROMPT] * len(images), images, max_new_tokens,
                            batch_size, num_beams, progress)
    return {**caption_scores(preds, references), "count": len(preds), "samples": _samples(preds, references)}


def evaluate_vqa(model: nn.Module, tokenizer: Tokenizer, images: Sequence, questions: list[str],
                 answers: list, types: Optional[list[str]] = None, batch_size: int = 64,
                 progress: bool = False) -> dict:
    """Answer each question about its image (a path or PIL image); VQA accuracy overall and per type."""
    prompts = [vqa_prompt(q) for q in questions]
    preds = _answer_batches(model, tokenizer, prompts, images, 8, batch_size, progress=progress)
    result = {"vqa_accuracy": vqa_accuracy(preds, answers), "count": len(preds)}
    if types is not None:
        result["vqa_by_type"] = accuracy_by_type(preds, answers, types)
    result["samples"] = [{"question": q, "prediction": p, "answer": a}
                         for q, p, a in list(zip(questions, preds, answers))[:5]]
    return result


def _samples(preds: list[str], references: list[list[str]], n: int = 5) -> list[dict]:
    return [{"prediction": p, "reference": r[0]} for p, r in list(zip(preds, references))[:n]]


def evaluate_scenes(model: nn.Module, tokenizer: Tokenizer, split: str = "test", count: int = 500,
                    batch_size: int = 64, progress: bool = False, size: int = 64,
                    tasks: Sequence[str] = ("caption", "vqa")) -> dict:
    """Captioning and VQA on built-in scenes of a split.

    caption_exact_match compares the parsed object sets (order-insensitive), also per number of objects;
    majority_by_type is the accuracy of always giving each question type's most common training answer.
    """
    scenes = builtin_scenes.scenes(split, count, size=size)
    images = [s.image for s in scenes]
    result: dict = {"split": split, "scenes": count}
    if "caption" in tasks:
        preds = _answer_batches(model, tokenizer, [CAPTION_PROMPT] * count, images, 40, batch_size,
                                progress=progress)
        matches = [builtin_scenes.caption_matches(p, s.caption) for p, s in zip(preds, scenes)]
        by_objects: dict[str, list[bool]] = {}
        for m, s in zip(matches, scenes):
            by_objects.setdefault(str(len(s.objects)), []).append(m)
        scores = caption_scores(preds, [[s.caption] for s in scenes])
        result.update({
            "caption_exact_match": sum(matches) / count,
            "caption_exact_match_by_objects": {k: sum(v) / len(v) for k, v in sorted(by_objects.items())},
            "bleu4": scores["bleu4"], "cider_d": scores["cider_d"],
            "caption_samples": [{"prediction": p, "reference": s.caption, "match": m}
                                for p, s, m in list(zip(preds, scenes, matches))[:5]]})
    if "vqa" in tasks:
        qa = [(s.image, q) for s in scenes for q in s.qas]
        vqa = evaluate_vqa(model, tokenizer, [im for im, _ in qa], [q.question for _, q in qa],
                           [q.answer for _, q in qa], [q.type for _, q in qa], batch_size, progress)
        train = [q for s in builtin_scenes.scenes("train", 2000, size=size) for q in s.qas]
        majority = majority_baseline([q.answer for q in train], [q.type for q in train],
                                     [q.answer for _, q in qa], [q.type for _, q in qa])
        result.update({"vqa_accuracy": vqa["vqa_accuracy"], "vqa_by_type": vqa["vqa_by_type"],
                       "majority_by_type": majority, "questions": vqa["count"], "vqa_samples": vqa["samples"]})
    return result


# ------------------------------------------------------------------------------------ audio: transcripts
def evaluate_transcripts(model: nn.Module, tokenizer: Tokenizer, audio: Sequence, references: list[str],
                         kinds: Optional[list[str]] = None, batch_size: int = 32, max_new_tokens: int = 48,
                         progress: bool = False) -> dict:
    """Transcribe each clip (a file or mono samples) with `TRANSCRIBE_PROMPT`: corpus WER and CER,
    WER per kind of phrase when `kinds` are given, and every utterance with its own WER."""
    from .metrics import cer, wer

    preds = _answer_batches(model, tokenizer, [TRANSCRIBE_PROMPT] * len(audio), None, max_new_tokens, batch_size,
                            progress=progress, audio=audio)
    result: dict = {"wer": wer(preds, references), "cer": cer(preds, references), "utterances": len(references)}
    if kinds is not None:
        groups: dict[str, list[int]] = {}
        for i, k in enumerate(kinds):
            groups.setdefault(k, []).append(i)
        result["wer_by_kind"] = {k: wer([preds[i] for i in ix], [references[i] for i in ix])
                                 for k, ix in sorted(groups.items())}
    result["transcripts"] = [{"prediction": p, "reference": r, "wer": wer([p], [r])}
                             for p, r in zip(preds, references)]
    return result


# ------------------------------------------------------------------------------------ audio: classification
def evaluate_audio_classes(model: nn.Module, tokenizer: Tokenizer, audio: Sequence, labels: list[str],
                           batch_size: int = 32, progress: bool = False) -> dict:
    """Ask for each clip's class with `CLASSIFY_PROMPT` and score the answers against the labels:
    accuracy, macro-F1 over the labels' classes, per-class scores and the confusion matrix."""

    longest = max(len(tokenizer.encode(" " + label)) for label in labels) + 1
    preds = _answer_batches(model, tokenizer, [CLASSIFY_PROMPT] * len(audio), None, longest, batch_size,
                            progress=progress, audio=audio)
    result = classification_scores(preds, labels)
    result["count"] = len(preds)
    result["samples"] = [{"prediction": p, "label": t} for p, t in list(zip(preds, labels))[:5]]
    return result


# ----------------------------------------------------------------------------------------------- text tasks
TEXT_TASKS = ("translate", "summarize", "qa", "classify")
MAX_NEW_TOKENS = {"translate": 96, "summarize": 128, "qa": 32}  # at most; the end-of-text token stops sooner


def _continue_texts(model: nn.Module, tokenizer: Tokenizer, prompts: Sequence[str], wheres: Sequence[str],
                    max_new_tokens: int, batch_size: int = 16, progress: bool = False) -> list[str]:
    """Greedy continuations of text prompts in batches, stripped of spaces. A batch writes at most
    max_new_tokens, and no more than its longest prompt leaves of the context; a prompt that fills the context
    is an error naming its row (wheres[i])."""
    from tqdm.auto import tqdm

    from .generate import generate

    context = model.config.block_size
    out: list[str] = []
    for b in tqdm(range(0, len(prompts), batch_size), disable=not progress, desc="evaluate", unit="batch",
                  leave=False):
        batch = list(prompts[b:b + batch_size])
        lengths = [len(tokenizer.encode(p)) for p in batch]
        longest = max(lengths)
        if longest >= context:
            where = wheres[b + lengths.index(longest)]
            raise EvaluationError(f"{where}: its prompt takes {longest} tokens, and the model's context holds "
                                  f"{context}: nothing is left to answer in; shorten the row")
        out += generate(model, tokenizer, batch, max_new_tokens=min(max_new_tokens, context - longest))
    return [o.strip() for o in out]


@torch.no_grad()
def label_probabilities(model: nn.Module, tokenizer: Tokenizer, prompts: Sequence[str], classes: Sequence[str],
                        batch_size: int = 32) -> torch.Tensor:
    """(N prompts, C classes): the chance that the model writes each class's label after each prompt. A
    label is scored by the log-probability of its tokens and the end-of-text token that closes it (so "toxic"
    is told from "toxicity"), and the scores of a prompt's labels are normalized over the classes (softmax)."""
    from .data.batch import IGNORE_INDEX, EncodedExample, collate

    labels = [tokenizer.encode(target_text(c)) for c in classes]
    pairs = [EncodedExample(tokenizer.encode(p), t) for p in prompts for t in labels]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    scores = []
    try:
        for b in range(0, len(pairs), batch_size):
            batch = collate(pairs[b:b + batch_size], tokenizer.pad_id, tokenizer.eos_id, model.config.block_size)
            batch = batch.to(device)
            logits, _ = model(**batch.model_inputs())
            scored = batch.targets != IGNORE_INDEX
            logp = torch.log_softmax(logits.float(), -1).gather(-1, batch.targets.clamp(min=0)[..., None])[..., 0]
            scores.append((logp * scored).sum(-1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(scores).view(len(prompts), len(classes)).softmax(-1)


def evaluate_text_task(model: nn.Module, tokenizer: Tokenizer, rows: Sequence, task: str,
                       source_lang: str = "source", target_lang: str = "target", batch_size: int = 16,
                       progress: bool = False, positive: Optional[str] = None,
                       threshold: Optional[float] = None) -> dict:
    """Ask a generator each row (`data.text_tasks.TaskRow`) with its task's prompt and score the answers:
    translate: BLEU and chrF (0..100); summarize: ROUGE-1/2/L F-measure (0..1); qa: SQuAD exact match and F1
    (0..1); classify: accuracy, macro-F1, per-class scores and the confusion matrix over the rows' labels, the
    label the model writes (greedy), or, with `positive`, the most probable label (`label_probabilities`)
    where the positive class is chosen when its probability reaches `threshold` (default 0.5), and `flagged`:
    the share of each class's rows so flagged."""
    if task not in TEXT_TASKS:
        raise EvaluationError(f"unknown text task {task!r}: one of {', '.join(TEXT_TASKS)}")
    if not rows:
        raise EvaluationError(f"no {task} rows to score")
    prompts = [r.prompt(source_lang, target_lang) for r in rows]
    references = [r.target for r in rows]
    wheres = [r.where for r in rows]
    if task == "classify":
        result = _classify_texts(model, tokenizer, prompts, references, wheres, batch_size, progress, positive,
                                 threshold)
        preds = result.pop("predictions")
    else:
        preds = _continue_texts(model, tokenizer, prompts, wheres, MAX_NEW_TOKENS[task], batch_size, progress)
        score = {"translate": translation_scores, "summarize": rouge_scores, "qa": squad_scores}[task]
        result = score(preds, references)
    result["count"] = len(rows)
    result["samples"] = [{"prediction": p, "reference": r} for p, r in list(zip(preds, references))[:5]]
    return result


def _classify_texts(model: nn.Module, tokenizer: Tokenizer, prompts: list[str], labels: list[str],
                    wheres: list[str], batch_size: int, progress: bool, positive: Optional[str],
                    threshold: Optional[float]) -> dict:
    classes = sorted(set(labels))
    if positive is None:
        longest = max(len(tokenizer.encode(target_text(c))) for c in classes) + 1
        preds = _continue_texts(model, tokenizer, prompts, wheres, longest, batch_size, progress)
        return {**classification_scores(preds, labels, classes), "predictions": preds}
    if positive not in classes:
        raise EvaluationError(f"--positive {positive!r} is not a label of the data: its labels are {classes}")
    threshold = 0.5 if threshold is None else threshold
    probs = label_probabilities(model, tokenizer, prompts, classes, batch_size)
    k = classes.index(positive)
    flagged = (probs[:, k] >= threshold).tolist()
    others = probs.clone()
    others[:, k] = -1.0  # the best class besides the positive one, for rows below the threshold
    preds = [positive if f or len(classes) == 1 else classes[o] for f, o in zip(flagged, others.argmax(-1).tolist())]
    return {**classification_scores(preds, labels, classes), "positive": positive, "threshold": threshold,
            "flagged": flagged_shares(flagged, labels), "predictions": preds}


# ------------------------------------------------------------------------------- multimodal classification
def evaluate_classifier(model: nn.Module, tokenizer: Tokenizer, examples: Sequence, batch_size: int = 64,
                        drop_each: bool = True, progress: bool = False) -> dict:
    """Accuracy, macro-F1, per-class scores and confusion matrix of a MultimodalClassifier on raw examples
    (`data.examples.Example` with a label); with drop_each, also the accuracy with each modality removed from
    every example (what the model makes of the others alone)."""
    from tqdm.auto import tqdm

    from .data.inputs import Inputs

    data = Inputs(model.full_config, tokenizer)
    device = next(model.parameters()).device
    labels = [data.class_index[e.label] if e.label in data.class_index else -1 for e in examples]
    if -1 in labels:
        bad = examples[labels.index(-1)].label
        raise DataError(f"label {bad!r} is not one of the model's classes {model.labels}")
    runs = {"all": None, **({m: m for m in model.modalities} if drop_each and len(model.modalities) > 1 else {})}
    preds: dict = {name: [] for name in runs}
    for b in tqdm(range(0, len(examples), batch_size), disable=not progress, desc="evaluate", unit="batch",
                  leave=False):
        batch = data.batch(examples[b:b + batch_size]).to(device)
        for name, dropped in runs.items():
            inputs = batch.model_inputs()
            inputs.pop("labels"), inputs.pop("class_weights")
            if dropped is not None:
                present = inputs["present"].clone()
                present[:, model.modalities.index(dropped)] = False
                inputs["present"] = present
            preds[name] += model.probabilities(**inputs).argmax(-1).tolist()
    names = model.labels
    result = classification_scores([names[p] for p in preds["all"]], [names[t] for t in labels], names)
    result["count"] = len(examples)
    if len(runs) > 1:
        result["dropped"] = {m: sum(p == t for p, t in zip(preds[m], labels)) / len(labels) for m in runs if m != "all"}
    fuse = getattr(model, "fuse", None)
    if hasattr(fuse, "modality_weights"):
        result["modality_weights"] = dict(zip(model.modalities, fuse.modality_weights()))
    return result


# ------------------------------------------------------------------------------------------ a whole run
def evaluate_multitask(ckpt: Checkpoint, scenes: int = 100, utterances: int = 100,
                       progress: bool = False) -> dict:
    """Score each task a run was trained on: {"scenes": evaluate_scenes(...) on built-in test scenes,
    "speech": evaluate_transcripts(...) on built-in test utterances (voices never heard in training), "text":
    {corpus: text_piece_loss(...)} on the text held out of training (the validation pieces)}, each key only
    for the sources the run learned from."""
    cfg, model, tok = ckpt.config, ckpt.model, ckpt.tokenizer
    result: dict = {}
    if BUILTIN_SCENES in cfg.data.sources:
        tasks = [t for t in ("caption", "vqa") if t in cfg.data.tasks]
        result["scenes"] = evaluate_scenes(model, tok, "test", scenes, size=builtin_size(cfg), tasks=tasks,
                                           progress=progress)
    if BUILTIN_SPEECH in cfg.data.sources:
        clips = speech_dataset("test", utterances, BUILTIN_SEED, cache_dir(cfg))
        result["speech"] = evaluate_transcripts(model, tok, [clips.audio(i) for i in range(len(clips))],
                                                list(clips.texts), list(clips.kinds), progress=progress)
        result["speech"]["kinds"] = list(clips.kinds)
    for corpus, (train_pieces, held_out) in _text_splits(cfg).items():
        result.setdefault("text", {})[corpus] = text_piece_loss(model, tok, held_out, train_pieces,
                                                                cfg.model.block_size)
    return result


def _text_splits(cfg: Config) -> dict[str, tuple[list[str], list[str]]]:
    """{corpus: (training pieces, held-out pieces)} of each "text:" source, split as training split it."""
    d = cfg.data
    held_out = [s[len("text:"):] for s in d.val_sources if s.startswith("text:")]
    out = {}
    for corpus in text_sources(cfg):
        whole = TextExamples([corpus], d.encoding_errors, d.text_chars)
        if d.val_sources:  # training read all of it; the validation text is its own
            if held_out:
                out[corpus] = (whole.pieces, TextExamples(held_out, d.encoding_errors, d.text_chars).pieces)
        else:
            train_part, val_part = whole.split_off(d.val_fraction)
            out[corpus] = (train_part.pieces, val_part.pieces)
    return out


def text_sources(cfg: Config) -> list[str]:
    return [s[len("text:"):] for s in cfg.data.sources if s.startswith("text:")]


def summary_of(ev: dict) -> dict:
    """The headline numbers of `evaluate_multitask`'s result (those of the first text source for text)."""
    out: dict = {}
    if "scenes" in ev:
        sc = ev["scenes"]
        for key in ("caption_exact_match", "vqa_accuracy", "vqa_by_type", "majority_by_type"):
            if key in sc:
                out[key] = sc[key]
    if "speech" in ev:
        out["wer"], out["cer"] = ev["speech"]["wer"], ev["speech"]["cer"]
        out["wer_by_kind"] = ev["speech"]["wer_by_kind"]
    if "text" in ev:
        first = next(iter(ev["text"].values()))
        out["text_val_loss"], out["unigram_loss"] = first["text_val_loss"], first["unigram_loss"]
    return out


def evaluate_checkpoint(ckpt: "Checkpoint", opts: Optional[EvalOptions] = None) -> dict:
    """Score a loaded checkpoint as `omnigpt evaluate` does: a classifier on its classes; a generator on
    opts.task (default: every built-in task a multimodal run learned, else captions and questions for a
    model that sees, transcripts for one that hears, and perplexity for a text GPT). The result is what the
    command prints as JSON."""
    opts = opts or EvalOptions()
    if (opts.positive is not None or opts.threshold is not None) and \
            (opts.task != "classify" or ckpt.model.predicts == "classes"):
        raise EvaluationError("--positive and --threshold score the labels a generator writes: they go with "
                              "--task classify on text rows, for a model without a classifier section")
    if opts.threshold is not None and opts.positive is None:
        raise EvaluationError("--threshold applies to the probability of a class: name it with --positive")
    if ckpt.model.predicts == "classes":
        if opts.task not in (None, "classify"):
            raise EvaluationError(f"{ckpt.path} is a classifier: it is scored on its classes (--task classify, "
                                  f"the default), not --task {opts.task}")
        return {**_evaluate_classifier(ckpt, opts), "checkpoint": str(ckpt.path)}
    sees, hears = ("image" in ckpt.model.accepts, "audio" in ckpt.model.accepts)
    task = opts.task or ("all" if sees and hears else "caption+vqa" if sees else "transcribe" if hears else "text")
    if opts.plot and task != "classify":
        raise EvaluationError(f"--plot draws a confusion matrix of classes; --task {task} has none")
    if task == "all":
        result = _evaluate_all(ckpt, opts)
    elif task == "transcribe":
        result = _evaluate_speech(ckpt, opts)
    elif task in TEXT_TASKS and (task != "classify" or _classifies_text(ckpt, opts)):
        result = _evaluate_text_task(ckpt, opts, task)
    elif task == "classify":
        result = _evaluate_audio_classes(ckpt, opts)
    elif task != "text":
        result = _evaluate_images(ckpt, opts, task)
    elif opts.data:
        result = perplexity_of_file(ckpt.model, ckpt.tokenizer, opts.data, opts.errors or "strict")
        result["data"] = opts.data
    else:
        run = _run_dir_of(ckpt.path)
        if run is None:
            raise EvaluationError(f"{ckpt.path} has no tokenized validation split; give --data FILE")
        result = perplexity_of_split(ckpt.model, run / "data", "val")
        result["data"] = "validation split"
    result["checkpoint"] = str(ckpt.path)
    return result


def _evaluate_all(ckpt: "Checkpoint", opts: EvalOptions) -> dict:
    if opts.limit is not None and opts.limit < 1:
        raise EvaluationError(f"--limit must be at least 1, got {opts.limit}")
    ev = evaluate_multitask(ckpt, opts.limit or 500, opts.limit or 500, progress=opts.progress)
    if not ev:
        raise EvaluationError(f"{ckpt.path} learned no built-in task (scenes, speech or text) to score; choose a "
                              f"--task and give --data")
    if "speech" in ev:
        ev["speech"]["samples"] = [{k: t[k] for k in ("prediction", "reference")}
                                   for t in ev["speech"].pop("transcripts")[:5]]
        ev["speech"].pop("kinds")
    return {**summary_of(ev), "tasks": ev}


def _evaluate_speech(ckpt: "Checkpoint", opts: EvalOptions) -> dict:
    from .data.sources import read_audio_source
    from .data.builtin.speech import speech_dataset
    from .data.examples import cache_dir

    if "audio" not in ckpt.model.accepts:
        raise EvaluationError(f"--task transcribe needs a model with an audio encoder; {ckpt.path} has none")
    if opts.limit is not None and opts.limit < 1:
        raise EvaluationError(f"--limit must be at least 1, got {opts.limit}")
    spec = opts.data or "builtin:speech"
    if spec == "builtin:speech":
        split = opts.split if opts.split in ("train", "val", "test") else "test"
        clips = speech_dataset(split, opts.limit or 500, 0, cache_dir(ckpt.config))
        audio, refs, kinds = [clips.audio(i) for i in range(len(clips))], list(clips.texts), list(clips.kinds)
    else:
        items = read_audio_source(spec, opts.on_bad_file or "error", root=ckpt.config.data.media_root)[:opts.limit]
        audio, refs, kinds = [it.audio for it in items], [it.text for it in items], None
    result = evaluate_transcripts(ckpt.model, ckpt.tokenizer, audio, refs, kinds, progress=opts.progress)
    transcripts = result.pop("transcripts")
    return {"data": spec, **result, "samples": [{"prediction": t["prediction"], "reference": t["reference"]}
                                                for t in transcripts[:5]]}


def _evaluate_images(ckpt: "Checkpoint", opts: EvalOptions, task: str) -> dict:
    from .data.sources import read_source, references_by_image
    from .data.examples import builtin_size

    if "image" not in ckpt.model.accepts:
        raise EvaluationError(f"--task {task} needs a model with an image encoder; {ckpt.path} has none")
    tasks = ("caption", "vqa") if task == "caption+vqa" else (task,)
    if opts.limit is not None and opts.limit < 1:
        raise EvaluationError(f"--limit must be at least 1, got {opts.limit}")
    spec = opts.data or "builtin:scenes"
    if spec == "builtin:scenes":
        result = evaluate_scenes(ckpt.model, ckpt.tokenizer, opts.split, opts.limit or 500, tasks=tasks,
                                 size=builtin_size(ckpt.config), progress=opts.progress)
    else:
        items = read_source(spec, opts.images, opts.on_bad_file or "error", root=ckpt.config.data.media_root)
        result = {"data": spec}
        captions = [it for it in items if it.question is None]
        questions = [it for it in items if it.question is not None][:opts.limit]
        if "caption" in tasks and captions:
            refs = list(references_by_image(captions).items())[:opts.limit]
            scores = evaluate_captions(ckpt.model, ckpt.tokenizer, [p for p, _ in refs], [r for _, r in refs],
                                       progress=opts.progress)
            result.update({"caption_exact_match": scores["exact_match"], "bleu4": scores["bleu4"],
                           "cider_d": scores["cider_d"], "images": scores["count"],
                           "caption_samples": scores["samples"]})
        if "vqa" in tasks and questions:
            vqa = evaluate_vqa(ckpt.model, ckpt.tokenizer, [q.image for q in questions],
                               [q.question for q in questions], [q.text for q in questions], progress=opts.progress)
            result.update({"vqa_accuracy": vqa["vqa_accuracy"], "questions": vqa["count"],
                           "vqa_samples": vqa["samples"]})
        if len(result) == 1:
            raise EvaluationError(f"{spec} holds no {' or '.join(tasks)} examples")
    result["checkpoint"] = str(ckpt.path)
    return result


def _evaluate_audio_classes(ckpt: "Checkpoint", opts: EvalOptions) -> dict:
    from .data.sources import read_audio_source
    from .viz import confusion_figure

    if "audio" not in ckpt.model.accepts:
        raise EvaluationError(f"--task classify needs a model with an audio encoder; {ckpt.path} has none")
    if not opts.data:
        raise EvaluationError("--task classify needs --data audiofolder:DIR or a JSONL manifest of {\"audio\", "
                              "\"label\"} rows")
    if opts.limit is not None and opts.limit < 1:
        raise EvaluationError(f"--limit must be at least 1, got {opts.limit}")
    items = _sample(read_audio_source(opts.data, opts.on_bad_file or "error", root=ckpt.config.data.media_root),
                    opts.limit)
    unlabeled = [it for it in items if it.label is None]
    if unlabeled:
        raise EvaluationError(f"{unlabeled[0].where}: no label; --task classify needs a label for every clip")
    result = {"data": opts.data, **evaluate_audio_classes(ckpt.model, ckpt.tokenizer, [it.audio for it in items],
                                                          [it.label for it in items], progress=opts.progress)}
    plot = _plot_path(opts.plot, ckpt.path)
    result["confusion_png"] = _png_or_note(lambda: confusion_figure(
        result["confusion"], result["classes"], plot, f"{opts.data}: accuracy {result['accuracy']:.3f}"))
    return result


def _classifies_text(ckpt: "Checkpoint", opts: EvalOptions) -> bool:
    """--task classify asks a generator for the labels of text rows: always for a model that does not hear,
    and for one that does when --data holds {"text", "label"} rows (else it is asked for audio classes)."""
    from .data.examples import text_task_of

    return "audio" not in ckpt.model.accepts or bool(opts.data and text_task_of(opts.data) == "classify")


def _evaluate_text_task(ckpt: "Checkpoint", opts: EvalOptions, task: str) -> dict:
    from .data.text_tasks import read_task_rows, shape
    from .viz import confusion_figure

    if not opts.data:
        also = " (or a CSV file with a text,label header)" if task == "classify" else ""
        raise EvaluationError(f"--task {task} needs --data: a JSONL file of {shape(task)} rows{also}")
    if opts.limit is not None and opts.limit < 1:
        raise EvaluationError(f"--limit must be at least 1, got {opts.limit}")
    d = ckpt.config.data
    rows = read_task_rows(opts.data, task, opts.on_bad_file or "error", root=d.media_root)
    if task == "classify" and d.labels:  # the labels the run learned: a row of another cannot be scored
        unknown = [r for r in rows if r.target not in d.labels]
        if unknown and (opts.on_bad_file or "error") == "error":
            raise DataError(f"{unknown[0].where}: label {unknown[0].target!r} is not one the model learned "
                            f"{d.labels}; to skip such rows use --on-bad-file skip")
        if unknown:
            warnings.warn(f"{opts.data}: skipped {len(unknown)} row(s) whose label the model never learned, the "
                          f"first at {unknown[0].where} ({unknown[0].target!r})", DataWarning, stacklevel=2)
            rows = [r for r in rows if r.target in d.labels]
            if not rows:
                raise DataError(f"{opts.data}: no row has a label the model learned ({d.labels})")
    rows = _sample(rows, opts.limit) if task == "classify" else rows[:opts.limit]
    result = {"data": opts.data, **evaluate_text_task(
        ckpt.model, ckpt.tokenizer, rows, task, d.source_lang, d.target_lang, progress=opts.progress,
        positive=opts.positive, threshold=opts.threshold)}
    if task == "classify":
        plot = _plot_path(opts.plot, ckpt.path)
        result["confusion_png"] = _png_or_note(lambda: confusion_figure(
            result["confusion"], result["classes"], plot, f"{opts.data}: accuracy {result['accuracy']:.3f}"))
    return result


def _evaluate_classifier(ckpt: "Checkpoint", opts: EvalOptions) -> dict:
    from .data.examples import BUILTIN_MATCHING, MatchingExamples, cache_dir, read_sources
    from .viz import confusion_figure

    if opts.limit is not None and opts.limit < 1:
        raise EvaluationError(f"--limit must be at least 1, got {opts.limit}")
    cfg = ckpt.config
    if not opts.data and BUILTIN_MATCHING not in (cfg.data.sources or []):
        raise EvaluationError(f"{ckpt.path} was not trained on {BUILTIN_MATCHING}: give its test data with --data "
                              f"(a JSONL manifest with labels, or audiofolder:DIR)")
    spec = opts.data or BUILTIN_MATCHING
    if opts.on_bad_file:
        cfg.data.on_bad_file = opts.on_bad_file
    if spec == BUILTIN_MATCHING:
        split = opts.split if opts.split in ("train", "val", "test") else "test"
        sets = [MatchingExamples(split, opts.limit or 1000, cfg.vision.image_size if cfg.vision else 64,
                                 cache_dir(cfg))]
    else:
        sets = read_sources(cfg, [spec], "test", labels=ckpt.model.labels)
    examples = _sample([s.example(i) for s in sets for i in range(len(s))], opts.limit)
    result = {"data": spec, **evaluate_classifier(ckpt.model, ckpt.tokenizer, examples, progress=opts.progress)}
    plot = _plot_path(opts.plot, ckpt.path)
    result["confusion_png"] = _png_or_note(lambda: confusion_figure(
        result["confusion"], result["classes"], plot, f"{cfg.classifier.fusion}: accuracy {result['accuracy']:.3f}"))
    return result


def _run_dir_of(checkpoint: Path) -> Optional[Path]:
    """The run folder holding a checkpoint (for its tokenized validation split), if any."""
    for folder in (checkpoint, checkpoint.parent.parent):
        if (folder / "data" / "meta.json").is_file():
            return folder
    return None


def _plot_path(given: Optional[str], checkpoint: Path) -> Path:
    """Where the confusion matrix goes: --plot (a folder, existing or written with a trailing slash, gets
    confusion.png inside), else the run folder's confusion.png."""
    if not given:
        return _run_folder(checkpoint) / "confusion.png"
    path = Path(given)
    if path.is_dir() or given.endswith(("/", "\\")):
        return path / "confusion.png"
    return path


def _run_folder(checkpoint: Path) -> Path:
    """The run folder of a checkpoint folder (RUN/checkpoints/step-N), else the folder itself."""
    checkpoint = Path(checkpoint)
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint


def _sample(items: list, limit: Optional[int]) -> list:
    """At most `limit` of the items, a seeded sample in file order: class folders are read class by class, so
    the first items would all be of one class."""
    if limit is None or limit >= len(items):
        return items
    import random

    return [items[i] for i in sorted(random.Random(0).sample(range(len(items)), limit))]


def _png_or_note(draw) -> Optional[str]:
    """The path of the PNG `draw()` writes, or None with a note where matplotlib is missing: the scores
    computed before the plot are still printed."""
    from .extras import MissingExtraError

    try:
        return str(draw())
    except MissingExtraError as exc:
        print(f"no plot: {exc}", file=sys.stderr)
        return None
