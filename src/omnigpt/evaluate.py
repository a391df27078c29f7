"""Evaluation: perplexity on text and the unigram baseline it should beat; captioning (BLEU-4, CIDEr-D,
exact match), visual question answering (accuracy overall and per question type), transcripts (WER, CER),
and classification."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from .data.prompts import CAPTION_PROMPT, CLASSIFY_PROMPT, TRANSCRIBE_PROMPT, target_text, vqa_prompt
from .data.builtin import scenes as builtin_scenes
from .data.text import DataError, load_tokens, read_text_file, sequential_windows, token_dtype
from .metrics import (accuracy_by_type, bleu4, cider_d, classification_scores, exact_match, majority_baseline,
                      normalize_caption, vqa_accuracy)
from .tokenizer import Tokenizer


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
    from .data.batch import IGNORE_INDEX, Features, collate

    if not pieces or not train_pieces:
        raise DataError(f"text_piece_loss needs held-out and training pieces, got {len(pieces)} and "
                        f"{len(train_pieces)}: the text is too short to hold some out")
    examples = [Features([], tokenizer.encode(target_text(p))) for p in pieces]
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
