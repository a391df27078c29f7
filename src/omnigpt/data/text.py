"""Text data: read a corpus, tokenize it once into memory-mapped token files, draw seeded training windows.

Layout of a prepared folder: `train.bin` and `val.bin` (raw little-endian uint16, or uint32 when the
vocabulary does not fit 16 bits) and `meta.json` with the dtype and token counts.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import torch

from ..atomic import write_atomic
from ..tokenizer import SPECIAL_TOKENS, Tokenizer

BUILTIN = "builtin"
NEWLINE = "\n"


class DataError(ValueError):
    """A corpus or token file is missing, empty or unreadable."""


def builtin_documents() -> list[str]:
    """The English help text that ships with every CPython (`pydoc_data.topics`), one document per topic."""
    from pydoc_data.topics import topics

    return [topics[name].strip() for name in sorted(topics)]


def read_text_file(path: str | Path, errors: str = "strict") -> str:
    """Read a UTF-8 text file. Invalid bytes are an error naming the file and byte offset, unless
    errors='replace', which substitutes U+FFFD."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"corpus {path} is a folder; give text files (e.g. --data {path}/*.txt)")
    if not path.is_file():
        raise DataError(f"corpus file not found: {path}")
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8", errors=errors)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: invalid UTF-8 at byte offset {exc.start} (byte 0x{raw[exc.start]:02x}); "
                        f"fix the file or pass --errors replace") from None


def reserved_token(text: str) -> Optional[str]:
    """The first special token (`<image>`, `<audio>`, `<|eos|>` ...) that `text` holds, or None."""
    return next((t for t in SPECIAL_TOKENS if t in text), None)


def check_plain_text(text: str, where: str, by_line: bool = False) -> None:
    """Refuse text that holds a special token such as `<image>`: the tokenizer would read it as a placeholder
    or control token, not as the characters written. `where` names the text in the message (a file, or a flag
    such as "--text"), followed by the line of the token when the text has several lines or `by_line`."""
    token = reserved_token(text)
    if token is None:
        return
    at = text.index(token)
    line = f" line {text.count(NEWLINE, 0, at) + 1}" if by_line or NEWLINE in text else ""
    raise DataError(f"{where}{line}: contains the special token {token}, which omnigpt reserves (it would become "
                    f"a placeholder or control token, not text); remove it or write it another way, such as "
                    f"'{token[0]} {token[1:]}'")


def read_corpus(sources: Sequence[str], errors: str = "strict") -> list[str]:
    """Documents from each source: 'builtin' (many documents), or a text file (one document). Text holding a
    special token (`check_plain_text`) is an error naming the file and line."""
    docs: list[str] = []
    for src in sources:
        if src == BUILTIN:
            docs.extend(builtin_documents())
            continue
        text = read_text_file(src, errors)
        if not text.strip():
            raise DataError(f"corpus file is empty: {src}")
        check_plain_text(text, str(src), by_line=True)
        docs.append(text)
    if not docs:
        raise DataError("the corpus is empty: no documents were read")
    return docs


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def tokenize_documents(docs: Sequence[str], tokenizer: Tokenizer) -> np.ndarray:
    """All documents as one token stream, each followed by the end-of-text token."""
    dtype = token_dtype(tokenizer.vocab_size)
    parts = [np.asarray(ids + [tokenizer.eos_id], dtype=dtype) for ids in tokenizer.encode_batch(docs)]
    return np.concatenate(parts)


def prepare_tokens(docs: Sequence[str], tokenizer: Tokenizer, out_dir: str | Path, val_fraction: float) -> Path:
    """Tokenize once into out_dir/{train,val}.bin; the last `val_fraction` of the stream is validation."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokens = tokenize_documents(docs, tokenizer)
    n_val = max(1, int(len(tokens) * val_fraction))
    splits = {"train": tokens[:-n_val], "val": tokens[-n_val:]}
    for name, arr in splits.items():
        write_atomic(out / f"{name}.bin", arr.tobytes())
    meta = {"dtype": tokens.dtype.name, "vocab_size": tokenizer.vocab_size,
            "train_tokens": int(len(splits["train"])), "val_tokens": int(len(splits["val"]))}
    write_atomic(out / "meta.json", json.dumps(meta, indent=1))
    return out


TOKEN_DTYPES = ("uint16", "uint32")


def _damaged(data_dir: Path, what: str) -> DataError:
    return DataError(f"{what}; the prepared token data in {data_dir} is damaged: delete that folder and run "
                     f"again (with --resume for a run folder): the corpus is tokenized anew")


def read_token_meta(data_dir: str | Path) -> dict:
    """meta.json of a prepared folder: {"dtype", "vocab_size", "train_tokens", "val_tokens"}; a missing,
    unreadable or malformed one is a DataError naming the file."""
    data_dir = Path(data_dir)
    meta_path = data_dir / "meta.json"
    if not meta_path.is_file():
        raise DataError(f"no prepared token data in {data_dir} (meta.json missing)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise _damaged(data_dir, f"{meta_path}: not valid JSON ({exc.msg} at line {exc.lineno} column "
                                 f"{exc.colno})") from None
    except UnicodeDecodeError as exc:
        raise _damaged(data_dir, f"{meta_path}: invalid UTF-8 at byte offset {exc.start}") from None
    if not isinstance(meta, dict) or meta.get("dtype") not in TOKEN_DTYPES:
        found = meta.get("dtype") if isinstance(meta, dict) else type(meta).__name__
        raise _damaged(data_dir, f"{meta_path}: expected an object with 'dtype' one of {list(TOKEN_DTYPES)}, "
                                 f"found {found!r}")
    for key in ("train_tokens", "val_tokens"):
        value = meta.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise _damaged(data_dir, f"{meta_path}: {key!r} must be a whole number >= 0, found {value!r}")
    return meta


def load_tokens(data_dir: str | Path, split: str) -> np.ndarray:
    """Memory-map one split's token file; a damaged folder (meta.json, or a token file whose size does not
    match it) is a DataError that says to delete the folder."""
    data_dir = Path(data_dir)
    meta = read_token_meta(data_dir)
    path = data_dir / f"{split}.bin"
    if not path.is_file():
        raise DataError(f"token file missing: {path}")
    dtype = np.dtype(meta["dtype"])
    size = path.stat().st_size
    expected = meta.get(f"{split}_tokens")
    if size % dtype.itemsize or size == 0 or (expected is not None and size != expected * dtype.itemsize):
        wanted = f"{expected * dtype.itemsize} ({expected} tokens)" if expected is not None else \
            f"a non-zero multiple of {dtype.itemsize}"
        raise _damaged(data_dir, f"{path}: {size} bytes, but meta.json calls for {wanted}")
    return np.memmap(path, dtype=dtype, mode="r")


@dataclass
class FIMTokens:
    prefix: int
    middle: int
    suffix: int


def fim_transform(window: np.ndarray, rng: random.Random, fim: FIMTokens) -> np.ndarray:
    """Rewrite a token window into fill-in-the-middle form, prefix-suffix-middle order:
    [PRE] prefix [SUF] suffix [MID] middle. The result is 3 tokens longer than the input."""
    n = len(window)
    a, b = sorted((rng.randint(0, n), rng.randint(0, n)))
    prefix, middle, suffix = window[:a], window[a:b], window[b:]
    dt = window.dtype
    return np.concatenate([np.array([fim.prefix], dt), prefix, np.array([fim.suffix], dt), suffix,
                           np.array([fim.middle], dt), middle])


class TokenWindows:
    """Random (input, target) windows of `block_size` tokens from a token stream.

    The windows of optimizer step s are a pure function of (seed, s): a resumed run and a run split over
    several processes see exactly the same data as one uninterrupted single-process run.
    """

    def __init__(self, tokens: np.ndarray, block_size: int, seed: int, fim_rate: float = 0.0,
                 fim: Optional[FIMTokens] = None):
        if len(tokens) < block_size + 1:
            raise DataError(f"only {len(tokens)} tokens: too few for windows of {block_size} tokens "
                            f"(reduce model.block_size or give more text)")
        if fim_rate > 0 and fim is None:
            raise ValueError("fim_rate > 0 needs the fill-in-the-middle token ids")
        self.tokens = tokens
        self.block_size = block_size
        self.seed = seed
        self.fim_rate = fim_rate
        self.fim = fim

    def batch(self, step: int, count: int, start: int = 0, stop: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows start..stop of the `count` windows of step `step`: inputs and targets, each (rows, block_size)."""
        stop = count if stop is None else stop
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        # A window takes block_size + 1 tokens, so the last start is len - block_size - 1.
        starts = torch.randint(len(self.tokens) - self.block_size, (count,), generator=g)[start:stop]
        rows = []
        for i, s in zip(range(start, stop), starts.tolist()):
            rows.append(self._window(s, step, i))
        data = torch.from_numpy(np.stack(rows).astype(np.int64))
        return data[:, :-1], data[:, 1:]

    def _window(self, s: int, step: int, row: int) -> np.ndarray:
        T = self.block_size + 1
        if self.fim_rate > 0:
            rng = random.Random(hash((self.seed, step, row)))
            if rng.random() < self.fim_rate:
                return fim_transform(np.asarray(self.tokens[s:s + T - 3]), rng, self.fim)
        return np.asarray(self.tokens[s:s + T])


def sequential_windows(tokens: np.ndarray, block_size: int, batch_size: int,
                       max_batches: Optional[int] = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Non-overlapping windows in order, for evaluation: every token after the first is predicted once
    (a shorter final window holds the remainder)."""
    T = block_size
    n_full = (len(tokens) - 1) // T
    n = n_full if max_batches is None else min(n_full, max_batches * batch_size)
    for b in range(0, n, batch_size):
        idx = range(b, min(n, b + batch_size))
        data = torch.from_numpy(np.stack([np.asarray(tokens[i * T:i * T + T + 1]) for i in idx]).astype(np.int64))
        yield data[:, :-1], data[:, 1:]
    rest = np.asarray(tokens[n_full * T:]).astype(np.int64)
    if n == n_full and len(rest) >= 2:
        data = torch.from_numpy(rest)[None]
        yield data[:, :-1], data[:, 1:]
