"""Text quality: pretrain the demo config (configs/text-tiny.yaml) for its step budget and compare the
validation loss with a unigram model of the same corpus and tokenizer.

Target: a validation loss at least 35% below the unigram loss within 5 minutes on a 2-core CPU.
Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

from omnigpt import Config, load_checkpoint, train
from omnigpt.data.text import load_tokens
from omnigpt.evaluate import perplexity_of_split, unigram_loss

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", default=str(ROOT / "configs" / "text-tiny.yaml"))
    p.add_argument("--steps", type=int, help="override train.max_steps")
    p.add_argument("--minutes", type=float, default=5.0, help="wall-time cap")
    p.add_argument("--out", help="run folder (default: a temporary one)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg = Config.load(args.config)
    if args.steps:
        cfg.train.max_steps = args.steps
    cfg.train.max_minutes = args.minutes
    out = Path(args.out or tempfile.mkdtemp(prefix="omnigpt-text-quality-"))
    result = train(cfg, out, progress=sys.stderr.isatty())
    ckpt = load_checkpoint(out)
    val = perplexity_of_split(ckpt.model, out / "data", "val")  # every validation token, not a sample
    uni = unigram_loss(load_tokens(out / "data", "train"), load_tokens(out / "data", "val"), ckpt.tokenizer.vocab_size)
    print(json.dumps({
        "bench": "text_quality", "config": Path(args.config).name, "steps": result.step,
        "val_loss": round(val["loss"], 4), "unigram_loss": round(uni, 4),
        "reduction": round(1 - val["loss"] / uni, 4), "target_reduction": 0.35,
        "train_seconds": round(result.seconds, 1), "tokenizer": ckpt.tokenizer.kind,
        "vocab_size": ckpt.tokenizer.vocab_size, "params": ckpt.model.num_params(),
    }))


if __name__ == "__main__":
    main()
