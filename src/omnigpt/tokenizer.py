"""Tokenizers: byte-level BPE trained with Hugging Face `tokenizers`, a pure byte tokenizer, and any Hugging
Face `tokenizer.json` (a pretrained model's).

All are the same `Tokenizer` class over a `tokenizers.Tokenizer`. The byte kind is a BPE with no merges whose
ids 0..255 are the byte values, followed by the special tokens. A tokenizer is saved as a plain Hugging Face
`tokenizer.json` (which `tokenizers` and `transformers` load as they are) and, beside it,
`tokenizer_config.json`: Hugging Face's names for the begin/end/padding tokens and the chat template, plus
omnigpt's `omnigpt_kind` and `omnigpt_special_tokens` (the token each role uses).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterable, Iterator, Literal, Optional, Sequence

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
ROLES = ("bos", "eos", "pad", "image", "audio", "fim_prefix", "fim_middle", "fim_suffix")
DEFAULT_SPECIALS = dict(zip(ROLES, SPECIAL_TOKENS))  # the token of each role in tokenizers omnigpt makes


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
    """Text <-> token ids, with the special tokens every omnigpt model reserves.

    specials: the token of each role in ROLES (default: omnigpt's own, e.g. `<|eos|>`); a pretrained
    tokenizer keeps its own begin/end tokens (`<|endoftext|>`, `<|begin_of_text|>`, ...).
    """

    def __init__(self, backend: HFTokenizer, kind: str, specials: Optional[dict[str, str]] = None,
                 chat_template: Optional[str] = None):
        self.backend = backend
        self.kind = kind
        self.specials = {**DEFAULT_SPECIALS, **(specials or {})}
        self.chat_template = chat_template
        missing = [t for t in self.specials.values() if backend.token_to_id(t) is None]
        if missing:
            raise TokenizerError(f"tokenizer lacks the special tokens {missing}")
        self.bos_id = self.token_id(self.specials["bos"])
        self.eos_id = self.token_id(self.specials["eos"])
        self.pad_id = self.token_id(self.specials["pad"])
        self.image_id = self.token_id(self.specials["image"])
        self.audio_id = self.token_id(self.specials["audio"])
        self.fim_prefix_id = self.token_id(self.specials["fim_prefix"])
        self.fim_middle_id = self.token_id(self.specials["fim_middle"])
        self.fim_suffix_id = self.token_id(self.specials["fim_suffix"])

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
        """Train a byte-level BPE on an iterator of texts (one document each). The special tokens in a text
        (`<image>`, `<|eos|>`) are cut out first: they are one token each, and merges across them would spend
        the vocabulary on pieces such as `><` that encoding never produces."""
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
        specials = re.compile("|".join(map(re.escape, SPECIAL_TOKENS)))
        pieces = (piece for text in texts for piece in specials.split(text) if piece)
        backend.train_from_iterator(pieces, trainer=trainer)
        return cls(backend, "bpe")

    @classmethod
    def create(cls, kind: Literal["bpe", "byte"], texts: Iterable[str] = (), vocab_size: int = 4096) -> "Tokenizer":
        if kind == "byte":
            return cls.byte_level()
        return cls.train_bpe(texts, vocab_size)

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "Tokenizer":
        """A Hugging Face tokenizer folder (`tokenizer.json`, `tokenizer_config.json`): its begin/end/padding
        tokens and chat template are kept; omnigpt's roles it lacks (padding, `<image>`, `<audio>`, the
        fill-in-the-middle markers) are added as new special tokens at the end of the vocabulary."""
        folder = Path(folder)
        backend = _read_backend(folder / "tokenizer.json")
        config = _read_json(folder / "tokenizer_config.json") if (folder / "tokenizer_config.json").is_file() else {}
        specials = dict(config.get("omnigpt_special_tokens") or {})
        for role in ("bos", "eos", "pad"):
            token = _token_name(config.get(f"{role}_token"))
            if role not in specials and token and backend.token_to_id(token) is not None:
                specials[role] = token
        if "eos" not in specials:
            raise TokenizerError(f"{folder / 'tokenizer_config.json'} names no eos_token that tokenizer.json holds")
        specials.setdefault("bos", specials["eos"])
        added = [t for r, t in DEFAULT_SPECIALS.items() if r not in specials]
        backend.add_special_tokens(added)
        specials.update({r: t for r, t in DEFAULT_SPECIALS.items() if r not in specials})
        return cls(backend, config.get("omnigpt_kind", "pretrained"), specials, config.get("chat_template"))

    # persistence --------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write `tokenizer.json` (a folder path gets that file name inside it) and its `tokenizer_config.json`
        beside it (for another name, NAME.json, the side file is NAME_config.json)."""
        path = Path(path)
        if path.suffix != ".json":
            path.mkdir(parents=True, exist_ok=True)
            path = path / "tokenizer.json"
        write_atomic(path, self.backend.to_str())
        config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": self.specials["bos"],
                  "eos_token": self.specials["eos"], "pad_token": self.specials["pad"],
                  "omnigpt_kind": self.kind, "omnigpt_special_tokens": self.specials}
        if self.chat_template:
            config["chat_template"] = self.chat_template
        write_atomic(path.with_name(f"{path.stem}_config.json"), json.dumps(config, indent=2, ensure_ascii=False) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Tokenizer":
        """A tokenizer.json written by `save` (or by an earlier omnigpt, with its kind inside), or a Hugging
        Face tokenizer folder."""
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            raise TokenizerError(f"tokenizer file not found: {path}")
        side = path.with_name(f"{path.stem}_config.json")
        config = _read_json(side) if side.is_file() else {}
        if path.name == "tokenizer.json" and "omnigpt_special_tokens" not in config and config:
            return cls.from_pretrained(path.parent)
        data = _read_json(path)
        kind = data.pop("omnigpt_kind", config.get("omnigpt_kind", "bpe"))
        backend = _read_backend(path, json.dumps(data))
        return cls(backend, kind, config.get("omnigpt_special_tokens"), config.get("chat_template"))

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


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TokenizerError(f"{path}: not a readable {path.name} ({exc})") from None
    if not isinstance(data, dict):
        raise TokenizerError(f"{path}: expected a JSON object")
    return data


def _read_backend(path: Path, text: Optional[str] = None) -> HFTokenizer:
    if text is None and not path.is_file():
        raise TokenizerError(f"tokenizer file not found: {path}")
    try:
        return HFTokenizer.from_str(text) if text is not None else HFTokenizer.from_file(str(path))
    except Exception as exc:  # the backend raises plain Exception
        raise TokenizerError(f"{path}: not a readable tokenizer.json ({exc})") from None


def _token_name(value: object) -> Optional[str]:
    """A token as tokenizer_config.json names it: a string, or {"content": ...} (an AddedToken)."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None
