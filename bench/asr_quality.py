"""Speech recognition quality: fine-tune configs/asr-speech.yaml from scratch on the built-in speech and score
the test split (voices never heard in training) after 5, 10 and 20 minutes of training (by default).

Target (2-core CPU, 20 minutes): WER <= 0.15 (stretch 0.10). Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from omnigpt import Config, generate, load_checkpoint, train
from omnigpt.data.speech import TRANSCRIBE_PROMPT, speech_dataset
from omnigpt.metrics import cer, wer
from omnigpt.train.datasets import cache_dir

ROOT = Path(__file__).resolve().parent.parent


def score(ckpt, clips) -> tuple[float, float, list[str]]:
    preds = []
    for b in range(0, len(clips), 32):
        batch = [clips.audio(i) for i in range(b, min(len(clips), b + 32))]
        preds += [o.strip() for o in generate(ckpt.model, ckpt.tokenizer, [TRANSCRIBE_PROMPT] * len(batch),
                                              audio=[[a] for a in batch], max_new_tokens=48)]
    return wer(preds, list(clips.texts)), cer(preds, list(clips.texts)), preds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", default=str(ROOT / "configs" / "asr-speech.yaml"))
    p.add_argument("--minutes", type=float, nargs="+", default=[5, 10, 20])
    p.add_argument("--utterances", type=int, default=300, help="test utterances per evaluation")
    p.add_argument("--out", help="run folder (default: a temporary one)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    cfg = Config.load(args.config)
    out = Path(args.out or tempfile.mkdtemp(prefix="omnigpt-asr-quality-"))
    test = speech_dataset("test", args.utterances, 0, cache_dir(cfg))
    curve, trained, result = [], 0.0, None
    for i, total in enumerate(args.minutes):
        cfg.train.max_minutes = total - trained
        result = train(cfg, out, resume=i > 0, progress=sys.stderr.isatty())
        trained = total
        ckpt = load_checkpoint(out)
        w, c, preds = score(ckpt, test)
        curve.append([total, round(w, 4), result.step])
        print(f"after {total:g} min ({result.step} steps): WER {w:.3f}, CER {c:.3f}", file=sys.stderr)
        if result.step >= cfg.train.max_steps:
            break
    print(json.dumps({
        "bench": "asr_quality", "config": Path(args.config).name, "wer": round(w, 4), "cer": round(c, 4),
        "curve": curve, "curve_columns": ["minutes", "wer", "steps"], "steps": result.step,
        "train_seconds": round(result.seconds, 1), "seconds": round(time.time() - t0, 1),
        "params": ckpt.model.num_params(), "test_utterances": len(test),
        "samples": [{"prediction": p, "reference": r} for p, r in list(zip(preds, test.texts))[:5]],
        "targets": {"wer": 0.15, "stretch": 0.10},
    }))


if __name__ == "__main__":
    main()
