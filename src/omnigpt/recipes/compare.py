"""Train one classifier per fusion strategy on the same data and budget, and compare them side by side.

Each strategy trains into OUT/STRATEGY (a run folder like any other: a stopped comparison resumes each run
from its last checkpoint, and a finished one is only evaluated again). The results go to OUT/results.json
and OUT/results.md (strategy, parameters, accuracy, macro-F1, training time, accuracy with each modality
removed; strategies compared in earlier calls on the same folder stay in the table), OUT/fusion.png (a bar
chart) and OUT/STRATEGY/confusion.png.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Optional, Sequence

from ..config import Config, ConfigError
from ..extras import require
from ..atomic import write_atomic
from ..checkpoint import list_checkpoints, load_checkpoint
from ..train.state import load_trainer_state

STRATEGIES = ("concat", "weighted_sum", "gated", "product", "attention", "early")


def _trained_seconds(run: Path) -> Optional[float]:
    """Training seconds of a run's latest checkpoint, or None when it has none."""
    found = list_checkpoints(run)
    return load_trainer_state(found[-1], tensors=False)["meta"].get("seconds", 0.0) if found else None


def compare_fusion(config: Config, out_dir: str | Path, strategies: Sequence[str] = STRATEGIES,
                   minutes: Optional[float] = None, test_examples: Optional[Sequence] = None,
                   progress: bool = True) -> list[dict]:
    """Train (or resume) each strategy for `minutes` of wall time (default: the config's train.max_minutes,
    else train.max_steps), evaluate it on `test_examples` (default: 1,000 test samples of the config's first
    built-in source), and write the results (see the module docstring). Returns one row per strategy."""
    from ..evaluate import evaluate_classifier
    from ..data.examples import BUILTIN_MATCHING, MatchingExamples, cache_dir
    from .train import train
    from ..viz import confusion_figure, fusion_bars

    require("matplotlib")  # the comparison's product is its plots: know before any strategy trains
    if config.classifier is None:
        raise ConfigError("compare-fusion needs a config with a 'classifier' section")
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown or not strategies:
        raise ConfigError(f"unknown fusion strategy {unknown or strategies}; choose from {', '.join(STRATEGIES)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if test_examples is None:
        if BUILTIN_MATCHING not in config.data.sources:
            raise ConfigError("give test examples (--test FILE): the config has no built-in source to draw them from")
        size = config.vision.image_size if config.vision else 64
        test = MatchingExamples("test", 1000, size, cache_dir(config))
        test_examples = [test.example(i) for i in range(len(test))]
    rows = []
    for strategy in strategies:
        cfg = copy.deepcopy(config)
        cfg.classifier.fusion = strategy
        budget = minutes if minutes is not None else cfg.train.max_minutes
        run = out / strategy
        seconds = _trained_seconds(run)
        finished = (run / "finished.json").is_file()
        record = json.loads((run / "finished.json").read_text()) if finished else None
        more = budget is not None and seconds is not None and budget * 60 - seconds > 5
        if not finished or (more and record["step"] < cfg.train.max_steps):
            # A new run, an interrupted one, or a finished one given a longer budget: train the rest.
            cfg.train.max_minutes = None if budget is None else budget - (seconds or 0.0) / 60
            result = train(cfg, run, resume=seconds is not None, progress=progress)
            record = {"step": result.step, "seconds": result.seconds}
            write_atomic(run / "finished.json", json.dumps(record))
        ckpt = load_checkpoint(run)
        scores = evaluate_classifier(ckpt.model, ckpt.tokenizer, test_examples, progress=progress)
        png = confusion_figure(scores["confusion"], scores["classes"], run / "confusion.png",
                               f"{strategy}: accuracy {scores['accuracy']:.3f}")
        row = {"strategy": strategy, "params": ckpt.model.num_params(), "accuracy": scores["accuracy"],
               "macro_f1": scores["macro_f1"], "train_seconds": round(record["seconds"], 1), "steps": record["step"],
               "dropped": scores.get("dropped", {}), "confusion_png": str(png)}
        if "modality_weights" in scores:
            row["modality_weights"] = scores["modality_weights"]
        rows.append(row)
        table = _merged(out / "results.json", row)
        write_atomic(out / "results.json", json.dumps(table, indent=1))
    write_atomic(out / "results.md", results_markdown(table))
    fusion_bars(table, out / "fusion.png")
    return rows


def _merged(path: Path, row: dict) -> list[dict]:
    """The folder's results with `row` added or replacing its strategy's, in STRATEGIES order: strategies
    compared in separate calls end up in one table."""
    rows = {r["strategy"]: r for r in (json.loads(path.read_text()) if path.is_file() else [])}
    rows[row["strategy"]] = row
    return [rows[s] for s in STRATEGIES if s in rows]


def results_markdown(rows: Sequence[dict]) -> str:
    """The comparison as a Markdown table, one row per strategy."""
    modalities = sorted({m for r in rows for m in r["dropped"]})
    head = ["strategy", "params", "accuracy", "macro-F1", "train time", "steps"] + [f"without {m}" for m in modalities]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["strategy"], f"{r['params']:,}", f"{r['accuracy']:.3f}", f"{r['macro_f1']:.3f}",
                 f"{r['train_seconds'] / 60:.1f} min", str(r["steps"])]
        cells += [f"{r['dropped'][m]:.3f}" if m in r["dropped"] else "-" for m in modalities]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
