"""Fusion strategies compared on the built-in three-modality task (`builtin:matching`: a scene, a question
naming a colour or shape, a spoken number; is that the count?).

First the omni model (`configs/omni-tiny.yaml`: text, captions and questions about scenes, speech
recognition; no labels of this task) trains for --pretrain-minutes; --init-from RUN uses an existing run
instead. Then every strategy of `omnigpt.recipes.compare.STRATEGIES` fine-tunes `configs/classify-builtin_scenes.yaml`
from that checkpoint for --minutes-each; the best of them (by test accuracy) continues from its checkpoint up to --minutes-best
minutes in all. Scores are on 1,000 test samples (their spoken numbers are in voices never heard in
training), with each modality removed in turn for the best strategy.

Target (2-core CPU): the best strategy >= 0.90 within 20 minutes of training, pretraining included; removing
any one modality brings it within 5 points of 0.50. Prints one JSON line:
{"accuracy": {strategy: ..}, "dropped": {modality: ..}, "best": .., "budgets": .., "seconds": ..}
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from omnigpt import Config
from omnigpt.recipes.compare import STRATEGIES, compare_fusion
from omnigpt.atomic import write_atomic
from omnigpt.checkpoint import list_checkpoints, resolve
from omnigpt.train.state import load_trainer_state
from omnigpt import train

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "classify-builtin_scenes.yaml"))
    p.add_argument("--pretrain-config", default=str(ROOT / "configs" / "omni-tiny.yaml"))
    p.add_argument("--pretrain-minutes", type=float, default=16.0)
    p.add_argument("--init-from", help="a trained run to start every strategy from, instead of pretraining one")
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    p.add_argument("--minutes-each", type=float, default=3.0)
    p.add_argument("--minutes-best", type=float, default=4.0)
    p.add_argument("--out", help="comparison folder (default: a temporary one); an existing one is resumed")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    cfg = Config.load(args.config)
    out = Path(args.out or tempfile.mkdtemp(prefix="omnigpt-fusion-"))
    start = Path(args.init_from) if args.init_from else out / "pretrain"
    if not args.init_from and not (start / "finished.json").is_file():
        pre = Config.load(args.pretrain_config)
        pre.train.max_minutes = args.pretrain_minutes
        result = train(pre, start, resume=bool(list_checkpoints(start)), progress=sys.stderr.isatty())
        write_atomic(start / "finished.json", json.dumps({"step": result.step, "seconds": result.seconds}))
    pretrain_seconds = load_trainer_state(resolve(start), tensors=False)["meta"].get("seconds", 0.0)
    print(f"encoders from {start}: {pretrain_seconds / 60:.1f} min of pretraining", file=sys.stderr)
    cfg.train.init_from = str(start)
    rows = compare_fusion(cfg, out, args.strategies.split(","), args.minutes_each, progress=sys.stderr.isatty())
    for r in rows:
        print(f"{r['strategy']}: accuracy {r['accuracy']:.3f} after {r['train_seconds'] / 60:.1f} min "
              f"({r['steps']} steps)", file=sys.stderr)
    best = max(rows, key=lambda r: r["accuracy"])
    if args.minutes_best > args.minutes_each:
        (best,) = compare_fusion(cfg, out, [best["strategy"]], args.minutes_best, progress=sys.stderr.isatty())
        print(f"{best['strategy']}: accuracy {best['accuracy']:.3f} after {best['train_seconds'] / 60:.1f} min "
              f"({best['steps']} steps)", file=sys.stderr)
    print(json.dumps({
        "bench": "fusion_quality", "config": Path(args.config).name,
        "accuracy": {r["strategy"]: round(r["accuracy"], 4) for r in rows},
        "macro_f1": {r["strategy"]: round(r["macro_f1"], 4) for r in rows},
        "params": {r["strategy"]: r["params"] for r in rows},
        "best": best["strategy"], "best_accuracy": round(best["accuracy"], 4), "best_steps": best["steps"],
        "dropped": {m: round(a, 4) for m, a in best["dropped"].items()},
        "pretrain": {"run": str(start), "minutes": round(pretrain_seconds / 60, 2)},
        "budgets": {"pretrain_minutes": round(pretrain_seconds / 60, 2), "each_minutes": args.minutes_each,
                    "best_minutes": args.minutes_best,
                    "best_total_minutes": round(pretrain_seconds / 60 + best["train_seconds"] / 60, 2)},
        "targets": {"best_accuracy": 0.90, "dropped_within_of_chance": 0.05},
        "seconds": round(time.time() - t0, 1), "out": str(out),
    }))


if __name__ == "__main__":
    main()
