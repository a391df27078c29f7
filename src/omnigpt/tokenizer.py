"""Tokenizers: byte-level BPE trained with Hugging Face `tokenizers`, and a pure byte tokenizer.

Both are the same `Tokenizer` class over a `tokenizers.Tokenizer` with a byte-level pre-tokenizer and
decoder, so any Unicode string round-trips exactly and both save to one `tokenizer.json` format. The byte
kind is a BPE with no merges whose ids 0..255 are the byte values, followed by the special tokens.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Iterator, Literal, Sequence

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from .atomic import write_atomic

BOS = "<|bos|>"
EOS = "<|eos|>"
PAD = "<|pad|>"
IMAGE = "<image>"
AUDIO = "<audio>"
FIM_PREFIX = "<|fim_prefix|>"
FIM_MIDDLE = "<|fim_middle|>"
FIM_SUFFIX = "<|fim_suffix|>"
SPECIAL_TOKENS = [BOS, EOS, PAD, IMAGE, AUDIO, FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX]


class TokenizerError(ValueError):
    """A tokenizer file is missing or unreadable, or training input is unusable."""


def check_text(text: str) -> str:
    """text, if it can be encoded: a str holding a lone surrogate (what Python makes of bytes that are not
    UTF-8 on a command line or a terminal) cannot, and the tokenizer would fail with a TypeError."""
    if not isinstance(text, str):
        raise TokenizerError(f"expected text (str), got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise TokenizerError(f"the text is not valid UTF-8 (an undecodable byte at character {exc.start}: "
                             f"{text[max(0, exc.start - 20):exc.start]!r}...); give it as UTF-8") from None
    return text


def _byte_to_char() -> dict[int, str]:
    """The printable-character alphabet that byte-level BPE uses to stand for each byte (GPT-2's mapping)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars = list(keep)
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(keep, chars)}


class Tokenizer:
    """Text <-> token ids, with the special tokens every omnigpt model reserves."""

    def __init__(self, backend: HFTokenizer, kind: str):
        self.backend = backend
        self.kind = kind
        missing = [t for t in SPECIAL_TOKENS if backend.token_to_id(t) is None]
        if missing:
            raise TokenizerError(f"tokenizer lacks the special tokens {missing}")
        self.bos_id = self.token_id(BOS)
        self.eos_id = self.token_id(EOS)
        self.pad_id = self.token_id(PAD)
        self.image_id = self.token_id(IMAGE)
        self.audio_id = self.token_id(AUDIO)
        self.fim_prefix_id = self.token_id(FIM_PREFIX)
        self.fim_middle_id = self.token_id(FIM_MIDDLE)
        self.fim_suffix_id = self.token_id(FIM_SUFFIX)

    # construction -------------------------------------------------------------------------------------
    @classmethod
    def byte_level(cls) -> "Tokenizer":
        """256 byte tokens (id == byte value) followed by the special tokens."""
        to_char = _byte_to_char()
        vocab = {to_char[b]: b for b in range(256)}
        backend = HFTokenizer(models.BPE(vocab=vocab, merges=[]))
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        backend.decoder = decoders.ByteLevel()
        backend.add_special_tokens(SPECIAL_TOKENS)
        return cls(backend, "byte")

    @classmethod
    def train_bpe(cls, texts: Iterable[str], vocab_size: int = 4096, min_frequency: int = 2) -> "Tokenizer":
        """Train a byte-level BPE on an iterator of texts (one document each)."""
        min_size = 256 + len(SPECIAL_TOKENS)
        if vocab_size < min_size:
            raise TokenizerError(f"vocab_size must be at least {min_size} (256 bytes + specials), got {vocab_size}")
        backend = HFTokenizer(models.BPE())
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
        )
        backend.train_from_iterator(texts, trainer=trainer)
        return cls(backend, "bpe")

    @classmethod
    def create(cls, kind: Literal["bpe", "byte"], texts: Iterable[str] = (), vocab_size: int = 4096) -> "Tokenizer":
        if kind == "byte":
            return cls.byte_level()
        return cls.train_bpe(texts, vocab_size)

    # persistence --------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write `tokenizer.json` (a folder path gets that file name inside it)."""
        path = Path(path)
        if path.suffix != ".json":
            path.mkdir(parents=True, exist_ok=True)
            path = path / "tokenizer.json"
        data = json.loads(self.backend.to_str())
        data["omnigpt_kind"] = self.kind
        write_atomic(path, json.dumps(data, ensure_ascii=False))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Tokenizer":
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            raise TokenizerError(f"tokenizer file not found: {path}")
        try:
            data = json.loads(path.read_text())
            kind = data.pop("omnigpt_kind", "bpe")
            backend = HFTokenizer.from_str(json.dumps(data))
        except (json.JSONDecodeError, UnicodeDecodeError, Exception) as exc:  # the backend raises plain Exception
            raise TokenizerError(f"{path}: not a readable tokenizer.json ({exc})") from None
        return cls(backend, kind)

    # use ----------------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def token_id(self, token: str) -> int:
        idx = self.backend.token_to_id(token)
        if idx is None:
            raise TokenizerError(f"unknown token {token!r}")
        return idx

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        ids = self.backend.encode(check_text(text), add_special_tokens=False).ids
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.backend.encode_batch([check_text(t) for t in texts], add_special_tokens=False)]

    def decode(self, ids: Sequence[int], skip_special: bool = False) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special)

    def decode_stream(self, ids: Iterable[int]) -> Iterator[str]:
        """Yield text pieces as ids arrive, holding back bytes that do not yet form whole characters."""
        seen: list[int] = []
        emitted = ""
        for idx in ids:
            seen.append(idx)
            text = self.decode(seen)
            if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for the next token
                continue
            if len(text) > len(emitted) and text.startswith(emitted):
                yield text[len(emitted):]
                emitted = text
        text = self.decode(seen)
        if len(text) > len(emitted):
            yield text[len(emitted):]
