"""Evaluation of language models: perplexity on text, and the unigram baseline it should beat."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from .data.text import DataError, load_tokens, read_text_file, sequential_windows, token_dtype
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
