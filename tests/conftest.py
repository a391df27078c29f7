import os

import numpy as np
import pytest
import torch

# Two threads in all: one each for `make test`'s two pytest-xdist workers (most tests are too small for a
# second thread to pay, and two workers keep both cores busy), two for a plain `pytest`.
THREADS = 1 if os.environ.get("PYTEST_XDIST_WORKER") else 2
torch.set_num_threads(THREADS)
os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))
# `precision: auto` means fp32 in tests, on every CPU: the same numbers whether or not this one has native bf16
# (tests of auto itself unset this). Likewise `device: auto` means the CPU, so that a machine with a GPU runs
# the same suite; the GPU tests ask for cuda by name.
os.environ.setdefault("OMNIGPT_PRECISION", "fp32")
os.environ.setdefault("OMNIGPT_DEVICE", "cpu")

from omnigpt import Config  # noqa: E402

CORPUS = (
    "The quick brown fox jumps over the lazy dog. A stitch in time saves nine. "
    "Pack my box with five dozen liquor jugs. How vexingly quick daft zebras jump! "
    "Sphinx of black quartz, judge my vow. The five boxing wizards jump quickly. "
) * 40


@pytest.fixture
def corpus_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(CORPUS)
    return path


def tiny_config(corpus: str, **train) -> Config:
    """A 2-layer byte-level GPT that trains in well under a second a step."""
    t = {"seed": 7, "batch_size": 4, "max_steps": 20, "lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 2,
         "eval_interval": 10, "eval_batches": 2, "save_interval": 5}
    t.update(train)
    return Config.from_dict({
        "model": {"vocab_size": 272, "block_size": 32, "n_layer": 2, "n_head": 2, "n_embd": 32, "dropout": 0.1},
        "data": {"corpus": [str(corpus)], "tokenizer": "byte", "val_fraction": 0.1},
        "train": t,
    })


@pytest.fixture
def tiny(corpus_file):
    return lambda **train: tiny_config(str(corpus_file), **train)


def tiny_omni_config(fusion: str = "prefix", encoder: str = "cnn", **train) -> Config:
    """A 2-layer multimodal GPT on built-in scenes (32 px), a byte tokenizer: trains at many steps a second."""
    t = {"seed": 3, "batch_size": 8, "max_steps": 20, "lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 2,
         "eval_interval": 10, "eval_batches": 1, "save_interval": 10}
    t.update(train)
    return Config.from_dict({
        "model": {"vocab_size": 272, "block_size": 160, "n_layer": 2, "n_head": 2, "n_embd": 32,
                  "position": "rope"},
        "vision": {"encoder": encoder, "image_size": 32, "width": 32, "channels": [8, 16], "patch_size": 8,
                   "n_layer": 1, "n_head": 2, "reduce": "pool", "grid": 3},
        "fusion": {"mode": fusion},
        "data": {"sources": ["builtin:scenes"], "tokenizer": "byte", "builtin_scenes": 64},
        "train": t,
    })


def tiny_asr_config(cache_dir: str, **train) -> Config:
    """A 2-layer speech recognizer on a few built-in utterances (16 log-mels): fast enough for tests."""
    t = {"seed": 5, "batch_size": 8, "max_steps": 20, "lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 2,
         "eval_interval": 10, "eval_batches": 1, "save_interval": 10}
    t.update(train)
    return Config.from_dict({
        "model": {"vocab_size": 400, "block_size": 128, "n_layer": 2, "n_head": 2, "n_embd": 64, "position": "rope"},
        "audio": {"n_mels": 32, "width": 64, "n_layer": 2, "n_head": 2, "pool": 2, "max_seconds": 10.0},
        "data": {"sources": ["builtin:speech"], "tasks": ["transcribe"], "tokenizer": "bpe",
                 "builtin_utterances": 8, "cache_dir": cache_dir},
        "train": t,
    })


def tiny_classifier_config(fusion="concat", **classifier) -> Config:
    c = {"fusion": fusion, "width": 32, "hidden": 32, "fusion_heads": 2, "fusion_layers": 1, "lstm_width": 16,
         "labels": ["match", "mismatch"], "dropout": 0.0}
    c.update(classifier)
    return Config.from_dict({
        "model": {"vocab_size": 272, "block_size": 96, "n_layer": 1, "n_head": 2, "n_embd": 32, "position": "rope"},
        "vision": {"encoder": "cnn", "image_size": 32, "width": 32, "channels": [8, 16], "reduce": "pool", "grid": 2},
        "audio": {"n_mels": 16, "width": 32, "n_layer": 1, "n_head": 2, "pool": 2, "max_seconds": 5.0},
        "classifier": c,
    })


@pytest.fixture(scope="session")
def speech_cache(tmp_path_factory):
    """A folder for the built-in utterances, synthesized once per test session (a file there is named by all
    that makes it, so tests share it safely; the 256 validation utterances alone take seconds)."""
    return str(tmp_path_factory.mktemp("speech-cache"))


@pytest.fixture(scope="session")
def recognizer_run(tmp_path_factory, speech_cache):
    """fusion -> the folder of a tiny recognizer that knows the 8 training utterances by heart (300 steps:
    250 were just enough with two threads, and with one thread's rounding one utterance was still misheard),
    trained once per test session."""
    from omnigpt import train

    runs = {}

    def get(fusion: str = "cross_attention"):
        if fusion not in runs:
            cfg = tiny_asr_config(speech_cache, max_steps=300, batch_size=8, lr=3e-3, warmup_steps=10,
                                  eval_interval=300, save_interval=300)
            cfg.fusion.mode = fusion
            runs[fusion] = tmp_path_factory.mktemp("recognizer") / fusion
            train(cfg, runs[fusion], progress=False)
        return runs[fusion]
    return get


def speechlike(seconds: float, seed: int, loudness: float = 1.0) -> np.ndarray:
    """A rising chirp, two tones with a tremolo, bursts of noise (16 kHz): broadband, changing, real-looking audio."""
    rs = np.random.RandomState(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    chirp = 0.3 * np.sin(2 * np.pi * (150 * t + 400 * t ** 2 / seconds))
    tones = 0.2 * np.sin(2 * np.pi * 440 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    tones += 0.1 * np.sin(2 * np.pi * 2750 * t)
    bursts = 0.05 * rs.randn(len(t)) * (np.sin(2 * np.pi * 1.5 * t) > 0.3)
    return (loudness * (chirp + tones + bursts)).astype(np.float32)
