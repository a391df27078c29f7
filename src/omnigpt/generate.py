"""Text generation: greedy, temperature, top-k, top-p, repetition penalty, beam search, stop conditions, streaming.

Search strategies live here, not in the model: the model only maps tokens (and a KV cache) to logits.
Batched prompts of different lengths are left-padded; padding is masked out of attention and positions
start at 0 at each prompt's first real token, so a prompt gives the same output alone or in a batch.
"""
from __future__ import annotations

import math

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from .data.batch import expand_placeholders, pad_features
from .data.image import stack_images
from .data.inputs import AudioInput, InputError, Inputs
from .model.attention import padded_causal_mask
from .extras import optional
from .tokenizer import Tokenizer

Image = optional("PIL.Image")


class GenerationError(ValueError):
    """A generation setting or prompt is unusable."""


class PromptTooLongError(GenerationError):
    """The prompt plus the tokens to generate do not fit the model's context: `problem` says by how much,
    `advice` what the command line can do about it (a caller with other means, like chat, gives its own)."""

    def __init__(self, problem: str, advice: str):
        super().__init__(f"{problem}; {advice}")
        self.problem = problem


MAX_BEAMS = 64  # each beam is a row of the batch, with its own KV cache


@dataclass
class GenerationConfig:
    max_new_tokens: int = 50
    temperature: float = 0.0  # 0 means greedy
    top_k: Optional[int] = None
    top_p: Optional[float] = None
    repetition_penalty: float = 1.0  # > 1 discourages tokens already in the prompt or output
    num_beams: int = 1
    length_penalty: float = 1.0  # beam scores are divided by length ** length_penalty
    stop_strings: list[str] = field(default_factory=list)
    stop_tokens: Optional[list[int]] = None  # None: the tokenizer's end-of-text token
    seed: Optional[int] = None
    truncate: bool = False  # drop the oldest prompt tokens when the prompt does not fit, instead of failing

    def validate(self) -> None:
        """Every value a decoding step can use: finite numbers in range (NaN passes `<` tests, so each
        bound is written to fail on it)."""
        _whole("max_new_tokens", self.max_new_tokens, 1)
        _number("temperature", self.temperature, 0.0, "a number >= 0 (0: greedy)")
        if self.top_k is not None:
            _whole("top_k", self.top_k, 1)
        if self.top_p is not None and not (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1):
            raise GenerationError(f"top_p must be in (0, 1], got {self.top_p}")
        _number("repetition_penalty", self.repetition_penalty, 0.0, "a number > 0 (1: none)", strict=True)
        _whole("num_beams", self.num_beams, 1, MAX_BEAMS)
        _number("length_penalty", self.length_penalty, None, "a finite number")
        for s in self.stop_strings:
            if not isinstance(s, str) or not s:
                raise GenerationError(f"a stop string must be non-empty text, got {s!r}")
        if self.seed is not None:
            _whole("seed", self.seed, 0, 2 ** 63 - 1)


def _whole(name: str, value: object, low: int, high: Optional[int] = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        allowed = f"a whole number >= {low}" + (f" and <= {high}" if high is not None else "")
        raise GenerationError(f"{name} must be {allowed}, got {value!r}")


def _number(name: str, value: object, low: Optional[float], allowed: str, strict: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if strict else value >= low
    if not ok:
        raise GenerationError(f"{name} must be {allowed}, got {value!r}")


# --------------------------------------------------------------------------------------------- logits
def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """logits (B, V); seen (B, V) boolean. Positive logits of seen tokens are divided by the penalty,
    negative ones multiplied (so the penalty always lowers their probability)."""
    if penalty == 1.0:
        return logits
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def filter_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of each row (B, V); the rest become -inf."""
    k = min(k, logits.shape[-1])
    kth = torch.topk(logits, k, dim=-1).values[:, -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def filter_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of tokens whose probabilities sum to at least p (nucleus sampling)."""
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    probs = sorted_logits.softmax(-1)
    before = probs.cumsum(-1) - probs  # mass of the tokens ranked above each one
    drop_sorted = before >= p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def next_tokens(logits: torch.Tensor, cfg: GenerationConfig, seen: torch.Tensor,
                generator: Optional[torch.Generator]) -> torch.Tensor:
    """Choose one token per row from logits (B, V) -> (B,)."""
    logits = apply_repetition_penalty(logits.float(), seen, cfg.repetition_penalty)
    if cfg.temperature == 0:
        return logits.argmax(-1)
    logits = logits / cfg.temperature
    if cfg.top_k is not None:
        logits = filter_top_k(logits, cfg.top_k)
    if cfg.top_p is not None and cfg.top_p < 1.0:
        logits = filter_top_p(logits, cfg.top_p)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


# ---------------------------------------------------------------------------------------------- prompts
def fit_prompt(ids: list[int], context: int, max_new_tokens: int, truncate: bool) -> list[int]:
    """Check that a prompt plus max_new_tokens fits the context; cut it from the left when truncate."""
    if not ids:
        raise GenerationError("the prompt is empty: give at least one token")
    room = context - max_new_tokens + 1  # the last new token is never fed back, so it needs no position
    if room < 1:
        raise PromptTooLongError(f"max_new_tokens {max_new_tokens} leaves no room for a prompt in the model's "
                                 f"context of {context} tokens", f"use at most {context - 1}")
    if len(ids) <= room:
        return ids
    if truncate:
        return ids[-room:]
    raise PromptTooLongError(
        f"prompt of {len(ids)} tokens + max_new_tokens {max_new_tokens} exceeds the model's context of "
        f"{context} tokens", "shorten the prompt, lower max_new_tokens, or truncate the prompt from the left "
        "(--truncate)")


def _left_pad(prompts: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """-> ids (B, L) and valid (B, L) boolean, prompts aligned to the right."""
    L = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), L), pad_id, dtype=torch.long)
    valid = torch.zeros(len(prompts), L, dtype=torch.bool)
    for i, p in enumerate(prompts):
        ids[i, L - len(p):] = torch.tensor(p, dtype=torch.long)
        valid[i, L - len(p):] = True
    return ids, valid


# ----------------------------------------------------------------------------------------- sampling loop
@torch.inference_mode()
def sample_ids(model: nn.Module, prompts: Sequence[list[int]], cfg: GenerationConfig, stop_ids: Sequence[int],
               pad_id: int, media: Optional[dict] = None, suppress_ids: Sequence[int] = ()) -> Iterator[torch.Tensor]:
    """Yield the next token of every row, (B,), step by step, until all rows stopped or max_new_tokens.

    A row that has produced a stop token keeps receiving `pad_id`; the caller ignores it. media: extra
    inputs of the prompt's forward pass (a multimodal model's images). suppress_ids are never generated.
    """
    device = next(model.parameters()).device
    V = model.config.vocab_size
    ids, valid = _left_pad(prompts, pad_id)
    ids, valid = ids.to(device), valid.to(device)
    B, L = ids.shape
    padded = not bool(valid.all())
    positions = (valid.long().cumsum(1) - 1).clamp(min=0)
    caches = model.new_caches(B, L + cfg.max_new_tokens)
    mask = padded_causal_mask(valid, L) if padded else None
    logits, _ = model(ids, positions=positions, mask=mask, caches=caches, last_only=True, **(media or {}))
    suppress = torch.tensor(list(suppress_ids), dtype=torch.long, device=device)
    track_seen = cfg.repetition_penalty != 1.0
    seen = torch.zeros(B, V if track_seen else 1, dtype=torch.bool, device=device)
    if track_seen:
        seen.scatter_(1, ids, valid)
    generator = None
    if cfg.temperature > 0:
        generator = torch.Generator(device=device)
        generator.manual_seed(cfg.seed if cfg.seed is not None else int(torch.randint(2**62, ()).item()))
    stop = torch.tensor(list(stop_ids), dtype=torch.long, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    pos = positions[:, -1:]
    for step in range(cfg.max_new_tokens):
        step_logits = logits[:, -1]
        if len(suppress):
            step_logits = step_logits.index_fill(1, suppress, float("-inf"))
        tok = next_tokens(step_logits, cfg, seen, generator)
        tok = torch.where(done, torch.full_like(tok, pad_id), tok)
        yield tok
        if len(stop):
            done |= torch.isin(tok, stop)
            if bool(done.all()):
                return
        if step == cfg.max_new_tokens - 1:
            return
        if track_seen:
            seen[torch.arange(B, device=device), tok] = True
        pos = pos + 1
        if padded:
            valid = torch.cat([valid, torch.ones(B, 1, dtype=torch.bool, device=device)], dim=1)
            mask = valid[:, None, None, :]
        logits, _ = model(tok[:, None], positions=pos, mask=mask, caches=caches, last_only=True)


@torch.inference_mode()
def beam_search_ids(model: nn.Module, prompt: list[int], cfg: GenerationConfig, stop_ids: Sequence[int],
                    media: Optional[dict] = None, suppress_ids: Sequence[int] = ()) -> list[int]:
    """Beam search for one prompt; returns the best continuation (stop token excluded).

    Hypotheses end at a stop token or at max_new_tokens; each is scored by its summed log-probability
    divided by length ** length_penalty. Search ends once no running beam can beat the finished ones.
    """
    device = next(model.parameters()).device
    nb = cfg.num_beams
    V = model.config.vocab_size
    ids = torch.tensor([prompt], dtype=torch.long, device=device)
    caches = model.new_caches(1, len(prompt) + cfg.max_new_tokens)  # the prompt is the same for every beam: run
    logits, _ = model(ids, caches=caches, last_only=True, **(media or {}))  # it once, then copy the cache
    for c in caches:
        c.repeat_rows(nb)
    logits = logits.expand(nb, -1, -1)
    suppress = torch.tensor(list(suppress_ids), dtype=torch.long, device=device)
    scores = torch.full((nb,), float("-inf"), device=device)
    scores[0] = 0.0  # all beams start equal: expand only the first, or every hypothesis appears nb times
    beams: list[list[int]] = [[] for _ in range(nb)]
    finished: list[tuple[float, list[int]]] = []
    stop = set(stop_ids)
    seen_base = torch.zeros(V, dtype=torch.bool, device=device)
    seen_base[ids[0]] = True

    def final_score(logp: float, length: int) -> float:
        return logp / max(length, 1) ** cfg.length_penalty

    for step in range(cfg.max_new_tokens):
        seen = seen_base.expand(nb, V).clone()
        for b, hyp in enumerate(beams):
            if hyp:
                seen[b, hyp] = True
        step_logits = logits[:, -1].float()
        if len(suppress):
            step_logits = step_logits.index_fill(1, suppress, float("-inf"))
        logp = apply_repetition_penalty(step_logits, seen, cfg.repetition_penalty).log_softmax(-1)
        cand = (scores[:, None] + logp).view(-1)
        top_scores, top_idx = cand.topk(2 * nb)
        new_beams, new_scores, origins = [], [], []
        for s, idx in zip(top_scores.tolist(), top_idx.tolist()):
            b, tok = divmod(idx, V)
            if s == float("-inf"):
                break
            if tok in stop:
                finished.append((final_score(s, len(beams[b]) + 1), beams[b]))
                continue
            new_beams.append(beams[b] + [tok])
            new_scores.append(s)
            origins.append(b)
            if len(new_beams) == nb:
                break
        if len(finished) >= nb:
            best_running = max(final_score(s, step + 1) for s in new_scores) if new_scores else float("-inf")
            if best_running <= min(f[0] for f in sorted(finished, reverse=True)[:nb]):
                break
        if not new_beams or step == cfg.max_new_tokens - 1:
            for s, hyp in zip(new_scores, new_beams):
                finished.append((final_score(s, len(hyp)), hyp))
            break
        while len(new_beams) < nb:  # fewer live candidates than beams: pad with dead copies
            new_beams.append(new_beams[0])
            new_scores.append(float("-inf"))
            origins.append(origins[0])
        index = torch.tensor(origins, device=device)
        for c in caches:
            c.reorder(index)
        beams, scores = new_beams, torch.tensor(new_scores, device=device)
        tok = torch.tensor([h[-1] for h in beams], device=device)[:, None]
        logits, _ = model(tok, caches=caches, last_only=True)
    if not finished:
        return []
    return max(finished, key=lambda f: f[0])[1]


# ------------------------------------------------------------------------------------------ text level
def _stop_ids(tokenizer: Tokenizer, cfg: GenerationConfig) -> list[int]:
    return list(cfg.stop_tokens) if cfg.stop_tokens is not None else [tokenizer.eos_id]


def _cut_at_stop(text: str, stop_strings: Sequence[str]) -> tuple[str, bool]:
    cut = min((i for i in (text.find(s) for s in stop_strings if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def image_tokens(model: nn.Module) -> int:
    """Positions an image takes in a prompt (1 for a model that takes no images: the placeholder stays)."""
    return model.tokens_per_image if "image" in model.accepts else 1


def prepare_prompts(model: nn.Module, tokenizer: Tokenizer, prompts: Sequence[str], cfg: GenerationConfig,
                    audio_tokens: Optional[Sequence[Sequence[int]]] = None) -> list[list[int]]:
    """Tokenize prompts, expand each `<image>` to the tokens an image takes and each `<audio>` to those of
    its clip (audio_tokens[prompt][clip]), and check that they fit the context with max_new_tokens."""
    context = model.config.block_size
    per_image = image_tokens(model)
    out = []
    for r, p in enumerate(prompts):
        ids = tokenizer.encode(p)
        if per_image > 1:
            ids = expand_placeholders(ids, tokenizer.image_id, per_image)
        if audio_tokens is not None and audio_tokens[r]:
            ids = expand_each(ids, tokenizer.audio_id, audio_tokens[r])
        fitted = fit_prompt(ids, context, cfg.max_new_tokens, cfg.truncate)
        for ph, what in ((tokenizer.image_id, "an image"), (tokenizer.audio_id, "an audio clip")):
            if fitted.count(ph) != ids.count(ph):
                raise PromptTooLongError(f"truncating the prompt to fit the context would cut into {what}",
                                         "shorten the text or lower max_new_tokens")
        out.append(fitted)
    return out


def expand_each(ids: Sequence[int], placeholder: int, counts: Sequence[int]) -> list[int]:
    """The k-th placeholder becomes counts[k] copies (a clip's vectors); a count mismatch is an error."""
    if list(ids).count(placeholder) != len(counts):
        raise GenerationError(f"the prompt has {list(ids).count(placeholder)} <audio> placeholder(s) but "
                              f"{len(counts)} audio clip(s) were given")
    out, k = [], 0
    for t in ids:
        if t == placeholder:
            out.extend([placeholder] * counts[k])
            k += 1
        else:
            out.append(t)
    return out


def audio_features(model: nn.Module, audio: Sequence[Sequence[AudioInput]]) -> list[list[torch.Tensor]]:
    """Per-prompt audio inputs -> per-prompt log-mel features (n_mels, frames), as the model was trained."""
    if not any(audio):
        return [[] for _ in audio]
    if "audio" not in model.accepts:
        raise GenerationError("this model has no audio encoder: it cannot take audio")
    inputs = Inputs(model.full_config)
    try:
        return [[inputs.audio(clip) for clip in row] for row in audio]
    except InputError as exc:
        raise GenerationError(str(exc)) from None


def audio_media(model: nn.Module, features: Sequence[Sequence[torch.Tensor]]) -> dict:
    """Per-prompt features -> the `audio`, `audio_lengths`, `audio_rows` inputs of a multimodal model."""
    clips = [f for row in features for f in row]
    if not clips:
        return {}
    device = next(model.parameters()).device
    padded, lengths = pad_features(clips)
    rows = [r for r, row in enumerate(features) for _ in row]
    return {"audio": padded.to(device), "audio_lengths": lengths.to(device),
            "audio_rows": torch.tensor(rows, device=device)}


ImageInput = Union[str, Path, "Image.Image", torch.Tensor]  # a file, a PIL image, or a preprocessed (3, S, S) tensor
Images = Union[ImageInput, Sequence[ImageInput], Sequence[Sequence[ImageInput]], None]


def _is_image(x: object) -> bool:
    if isinstance(x, torch.Tensor):  # tested first: a preprocessed image needs no Pillow
        return x.dim() == 3
    return isinstance(x, (str, Path, Image.Image))


def image_lists(images: Images, n_prompts: int, single: bool) -> list[list[ImageInput]]:
    """`generate`'s images argument -> one list of images per prompt.

    One prompt: an image or a list of images. Several prompts: one entry per prompt, each an image or a
    list (empty for a prompt without images). A 4-D tensor stands for a list of (3, S, S) images.
    """
    def as_list(x) -> list:
        if x is None:
            return []
        if _is_image(x):
            return [x]
        if isinstance(x, torch.Tensor) and x.dim() == 4:
            return list(x)
        return list(x)

    if images is None:
        return [[] for _ in range(n_prompts)]
    if single:
        return [as_list(images)]
    if _is_image(images) or (isinstance(images, torch.Tensor)):
        raise GenerationError(f"give one image (or list of images) per prompt: {n_prompts} prompts, but a single "
                              f"image was given")
    lists = [as_list(x) for x in images]
    if len(lists) != n_prompts:
        raise GenerationError(f"images were given for {len(lists)} prompts, but there are {n_prompts} prompts")
    return lists


def check_placeholders(prompts: Sequence[list[int]], images: Sequence[Sequence[ImageInput]], image_id: int,
                       per_image: int) -> None:
    """Each prompt needs exactly as many images as it has `<image>` placeholders."""
    for r, (ids, ims) in enumerate(zip(prompts, images)):
        found = ids.count(image_id) // per_image
        if found != len(ims):
            raise GenerationError(f"prompt {r} has {found} <image> placeholder(s) but {len(ims)} image(s) were "
                                  f"given")


def prepare_media(model: nn.Module, images: Sequence[Sequence[ImageInput]]) -> dict:
    """Per-prompt lists of images -> the `images` and `image_rows` inputs of a multimodal model."""
    if not any(images):
        return {}
    if "image" not in model.accepts:
        raise GenerationError("this model has no image encoder: it cannot take images")
    inputs = Inputs(model.full_config)
    try:
        tensors = [inputs.image(img) for row in images for img in row]
    except InputError as exc:
        raise GenerationError(str(exc)) from None
    rows = [r for r, row in enumerate(images) for _ in row]
    device = next(model.parameters()).device
    return {"images": stack_images(tensors).to(device), "image_rows": torch.tensor(rows, device=device)}


def _audio_lists(audio, n_prompts: int, single: bool) -> list[list[AudioInput]]:
    def is_clip(x) -> bool:
        return isinstance(x, (str, Path)) or (isinstance(x, (np.ndarray, torch.Tensor)) and x.ndim == 1)

    if audio is None:
        return [[] for _ in range(n_prompts)]
    if single:
        return [[audio] if is_clip(audio) else list(audio)]
    if is_clip(audio):
        raise GenerationError(f"give one audio clip (or list of clips) per prompt: {n_prompts} prompts")
    lists = [[a] if is_clip(a) else list(a or []) for a in audio]
    if len(lists) != n_prompts:
        raise GenerationError(f"audio was given for {len(lists)} prompts, but there are {n_prompts} prompts")
    return lists


def audio_token_counts(model: nn.Module, features: Sequence[Sequence[torch.Tensor]]) -> Optional[list[list[int]]]:
    if not any(features):
        return None
    return [[model.tokens_for_audio(f.shape[-1]) for f in row] for row in features]


def _suppress(model: nn.Module, tokenizer: Tokenizer) -> list[int]:
    """Placeholders stand for encoder outputs: a multimodal model must not write them."""
    return [tokenizer.image_id, tokenizer.audio_id] if model.accepts - {"text"} else []


def generate(model: nn.Module, tokenizer: Tokenizer, prompts: str | Sequence[str],
             config: Optional[GenerationConfig] = None, images: Images = None, audio=None,
             **overrides) -> str | list[str]:
    """Continue each prompt; returns the new text only (a string for a string prompt, else a list).

    images: for a multimodal model, what the prompt's `<image>` placeholders stand for, in order: for one
    prompt an image or a list of images; for a list of prompts one image or list per prompt. An image is
    a path, a PIL image or a preprocessed (3, S, S) tensor.
    audio: likewise for `<audio>` placeholders: files, or mono samples at the model's sample rate.
    Keyword overrides set fields of `config`, e.g. `generate(m, tok, "Hi", temperature=0.8, seed=1)`.
    """
    cfg = _config(config, overrides)
    single = isinstance(prompts, str)
    texts = [prompts] if single else list(prompts)
    features = audio_features(model, _audio_lists(audio, len(texts), single))
    ids = prepare_prompts(model, tokenizer, texts, cfg, audio_token_counts(model, features))
    per_prompt = image_lists(images, len(ids), single)
    check_placeholders(ids, per_prompt, tokenizer.image_id, image_tokens(model))
    suppress = _suppress(model, tokenizer)
    stops = _stop_ids(tokenizer, cfg)
    was_training = model.training
    model.eval()
    try:
        if cfg.num_beams > 1:
            outs = []
            for p, row_images, row_audio in zip(ids, per_prompt, features):
                media = {**prepare_media(model, [row_images]), **audio_media(model, [row_audio])}
                outs.append(beam_search_ids(model, p, cfg, stops, media, suppress))
        else:
            outs = [[] for _ in ids]
            ended = [False] * len(ids)
            media = {**prepare_media(model, per_prompt), **audio_media(model, features)}
            for tok in sample_ids(model, ids, cfg, stops, tokenizer.pad_id, media, suppress):
                for i, t in enumerate(tok.tolist()):
                    if ended[i]:
                        continue
                    if t in stops:
                        ended[i] = True
                        continue
                    outs[i].append(t)
                    if cfg.stop_strings and _cut_at_stop(tokenizer.decode(outs[i][-64:]), cfg.stop_strings)[1]:
                        ended[i] = True
                if all(ended):
                    break
    finally:
        model.train(was_training)
    results = [_cut_at_stop(tokenizer.decode(o), cfg.stop_strings)[0] for o in outs]
    return results[0] if single else results


def stream(model: nn.Module, tokenizer: Tokenizer, prompt: str, config: Optional[GenerationConfig] = None,
           images: Images = None, audio=None, **overrides) -> Iterator[str]:
    """Yield the continuation of one prompt piece by piece as it is generated (sampling or greedy).

    The concatenated pieces equal `generate(...)` with the same settings and seed.
    """
    cfg = _config(config, overrides)
    if cfg.num_beams > 1:
        raise GenerationError("streaming needs num_beams = 1: beam search only knows its answer at the end")
    features = audio_features(model, _audio_lists(audio, 1, True))
    (ids,) = prepare_prompts(model, tokenizer, [prompt], cfg, audio_token_counts(model, features))
    per_prompt = image_lists(images, 1, True)
    check_placeholders([ids], per_prompt, tokenizer.image_id, image_tokens(model))
    media = {**prepare_media(model, per_prompt), **audio_media(model, features)}
    suppress = _suppress(model, tokenizer)
    stops = _stop_ids(tokenizer, cfg)
    was_training = model.training
    model.eval()

    def tokens() -> Iterator[int]:
        for tok in sample_ids(model, [ids], cfg, stops, tokenizer.pad_id, media, suppress):
            t = int(tok[0])
            if t in stops:
                return
            yield t

    try:
        text = ""
        sent = 0
        hold = max((len(s) for s in cfg.stop_strings), default=1) - 1
        for piece in tokenizer.decode_stream(tokens()):
            text += piece
            cut, stopped = _cut_at_stop(text, cfg.stop_strings)
            if stopped:
                if len(cut) > sent:
                    yield cut[sent:]
                return
            safe = len(text) - hold  # hold back what could be the start of a stop string
            if safe > sent:
                yield text[sent:safe]
                sent = safe
        if len(text) > sent:
            yield text[sent:]
    finally:
        model.train(was_training)


def _config(config: Optional[GenerationConfig], overrides: dict) -> GenerationConfig:
    cfg = GenerationConfig(**{**(config.__dict__ if config else {}), **overrides})
    cfg.validate()
    return cfg
