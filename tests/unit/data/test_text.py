import random

import numpy as np
import pytest

from omnigpt.data.text import (DataError, FIMTokens, TokenWindows, builtin_documents, fim_transform,
                               load_tokens, prepare_tokens, read_corpus, token_dtype)
from omnigpt.tokenizer import Tokenizer


def test_builtin_corpus_is_the_python_help_text():
    docs = builtin_documents()
    assert len(docs) > 50
    assert sum(len(d) for d in docs) > 300_000
    assert any(d.startswith("The \"for\" statement") for d in docs)


def test_prepare_writes_memory_mapped_splits(tmp_path):
    tok = Tokenizer.byte_level()
    out = prepare_tokens(["hello world", "second doc"], tok, tmp_path / "d", val_fraction=0.25)
    train, val = load_tokens(out, "train"), load_tokens(out, "val")
    assert isinstance(train, np.memmap) and train.dtype == np.uint16
    stream = np.concatenate([train, val]).tolist()
    assert stream == tok.encode("hello world", eos=True) + tok.encode("second doc", eos=True)
    assert len(val) == int(len(stream) * 0.25)


def test_token_dtype_widens_for_large_vocabularies():
    assert token_dtype(50_000) == np.uint16 and token_dtype(70_000) == np.uint32


def test_windows_depend_only_on_seed_and_step():
    tokens = np.arange(1000, dtype=np.uint16)
    w = TokenWindows(tokens, 16, seed=3)
    x1, y1 = w.batch(5, 8)
    x2, y2 = TokenWindows(tokens, 16, seed=3).batch(5, 8)
    assert (x1 == x2).all() and (y1 == y2).all()
    assert (y1[:, :-1] == x1[:, 1:]).all()  # targets are inputs shifted by one
    top, bottom = w.batch(5, 8, 0, 4), w.batch(5, 8, 4, 8)  # slices for two processes
    assert (np.concatenate([top[0], bottom[0]]) == x1.numpy()).all()
    assert not (w.batch(6, 8)[0] == x1).all()


def test_fim_puts_prefix_suffix_middle_in_order():
    fim = FIMTokens(prefix=900, middle=901, suffix=902)
    window = np.arange(20, dtype=np.uint16)
    out = fim_transform(window, random.Random(1), fim).tolist()
    p, s, m = out.index(900), out.index(902), out.index(901)
    assert p == 0 and p < s < m
    prefix, suffix, middle = out[1:s], out[s + 1:m], out[m + 1:]
    assert prefix + middle + suffix == list(range(20))


def test_fim_rate_rewrites_that_fraction_of_windows():
    tokens = np.arange(5000, dtype=np.uint16) % 800
    w = TokenWindows(tokens, 32, seed=1, fim_rate=0.5, fim=FIMTokens(900, 901, 902))
    x, _ = w.batch(0, 400)
    rate = float((x[:, 0] == 900).float().mean())
    assert 0.4 < rate < 0.6
    assert x.shape == (400, 32)


def test_non_utf8_corpus_names_file_and_offset(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\u00e9 ok".encode("utf-8") + b" na\xefve")
    with pytest.raises(DataError, match=r"latin1.txt: invalid UTF-8 at byte offset 11 \(byte 0xef\)"):
        read_corpus([str(bad)])
    (doc,) = read_corpus([str(bad)], errors="replace")
    assert doc.endswith("na\ufffdve")


def test_missing_and_empty_corpus(tmp_path):
    with pytest.raises(DataError, match="corpus file not found: .*nope.txt"):
        read_corpus([str(tmp_path / "nope.txt")])
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(DataError, match="corpus file is empty: .*empty.txt"):
        read_corpus([str(tmp_path / "empty.txt")])


def test_every_token_can_be_a_target():
    tokens = np.arange(12, dtype=np.uint16)
    x, y = TokenWindows(tokens, 8, seed=0).batch(0, 200)
    assert int(y.max()) == 11 and int(x.min()) == 0
    TokenWindows(np.arange(9, dtype=np.uint16), 8, seed=0).batch(0, 2)  # exactly one window fits


def test_too_little_text_for_the_context():
    with pytest.raises(DataError, match="too few for windows of 64 tokens"):
        TokenWindows(np.arange(10, dtype=np.uint16), 64, seed=0)
