"""Caption and VQA quality: fine-tune configs/caption-shapes.yaml from scratch on the built-in scenes and
score the test split after 5, 10 and 20 minutes of training (by default), plus the compositional split
(color-shape pairs never seen in training) at the end.

Target (2-core CPU, 20 minutes): caption exact match >= 0.85, VQA accuracy >= 0.85, and every question
type at least 20 points above always giving its most common training answer. Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from omnigpt import Config, load_checkpoint, train
from omnigpt.evaluate import evaluate_scenes

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", default=str(ROOT / "configs" / "caption-shapes.yaml"))
    p.add_argument("--minutes", type=float, nargs="+", default=[5, 10, 20],
                   help="evaluate after this many minutes of training in all (increasing)")
    p.add_argument("--scenes", type=int, default=500, help="test scenes per evaluation")
    p.add_argument("--out", help="run folder (default: a temporary one)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    cfg = Config.load(args.config)
    out = Path(args.out or tempfile.mkdtemp(prefix="omnigpt-caption-quality-"))
    curve, trained, result, ev = [], 0.0, None, {}
    for i, total in enumerate(args.minutes):
        cfg.train.max_minutes = total - trained
        result = train(cfg, out, resume=i > 0, progress=sys.stderr.isatty())
        trained = total
        ckpt = load_checkpoint(out)
        ev = evaluate_scenes(ckpt.model, ckpt.tokenizer, "test", args.scenes, size=cfg.vision.image_size)
        curve.append([total, round(ev["caption_exact_match"], 4), round(ev["vqa_accuracy"], 4), result.step])
        print(f"after {total:g} min ({result.step} steps): caption exact match {ev['caption_exact_match']:.3f}, "
              f"VQA {ev['vqa_accuracy']:.3f}", file=sys.stderr)
        if result.step >= cfg.train.max_steps:
            break
    comp = evaluate_scenes(ckpt.model, ckpt.tokenizer, "compositional", args.scenes, tasks=("caption",),
                           size=cfg.vision.image_size)
    by_type, majority = ev["vqa_by_type"], ev["majority_by_type"]
    print(json.dumps({
        "bench": "caption_quality", "config": Path(args.config).name,
        "caption_exact_match": round(ev["caption_exact_match"], 4),
        "caption_exact_match_by_objects": {k: round(v, 4) for k, v in ev["caption_exact_match_by_objects"].items()},
        "vqa_accuracy": round(ev["vqa_accuracy"], 4),
        "vqa_by_type": {k: round(v, 4) for k, v in by_type.items()},
        "majority_by_type": {k: round(v, 4) for k, v in majority.items()},
        "min_margin_over_majority": round(min(by_type[k] - majority[k] for k in by_type), 4),
        "compositional_exact_match": round(comp["caption_exact_match"], 4),
        "bleu4": round(ev["bleu4"], 2), "cider_d": round(ev["cider_d"], 3),
        "curve": curve, "curve_columns": ["minutes", "caption_exact_match", "vqa_accuracy", "steps"],
        "steps": result.step, "train_seconds": round(result.seconds, 1), "seconds": round(time.time() - t0, 1),
        "params": ckpt.model.num_params(), "test_scenes": args.scenes,
        "targets": {"caption_exact_match": 0.85, "vqa_accuracy": 0.85, "margin_over_majority": 0.20},
    }))


if __name__ == "__main__":
    main()
