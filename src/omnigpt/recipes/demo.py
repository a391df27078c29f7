"""`omnigpt demo`: one GPT trained here from nothing on every built-in task (plain text, captions of and
questions about shape scenes, speech), each task scored on its test split, and a report to look at.

`evaluate_multitask` scores any run whose sources are built-in scenes, built-in speech and plain text;
`run_demo` trains the demo's model, scores it and writes `report.json` and `report.html` in the run folder.
"""
from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Optional

from ..atomic import write_atomic
from ..checkpoint import Checkpoint, list_checkpoints, load_checkpoint
from ..config import Config
from ..data.builtin import scenes as builtin_scenes
from ..data.builtin.speech import SAMPLE_RATE, speech_dataset
from ..data.examples import BUILTIN_SEED, builtin_size, cache_dir
from ..data.prompts import CAPTION_PROMPT, vqa_prompt
from ..evaluate import evaluate_multitask, summary_of
from ..extras import require
from ..generate import generate
from .train import train

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "omni-tiny.yaml"
TEXT_PROMPTS = ("The for statement", "A class definition", "Exceptions are")
SHOWN = 3  # scenes, questions, utterances and completions shown as samples
# By default the whole demo takes about this long, so that make demo (with its install, about a minute) stays
# under 10 minutes: training gets what set-up (synthesizing speech: 40 s on a 2-core Zen 5, over a minute on
# slower machines) and scoring leave. A fixed training budget made the slow machines run over and left the
# fast ones' spare minute unused.
DEMO_MINUTES = 8.75
SCORING_SECONDS = 0.075  # kept back per test scene and utterance for scoring (about 0.035 s each on the Zen 5)
FUNCTION_WORDS = frozenset({"a", "an", "the", "at", "and", "of", "in", "on", "is"})  # no attention panel


# What the demo's data, scores and report import: Pillow, soundfile, soxr, espeak-ng, jiwer, sacrebleu, matplotlib.
DEMO_NEEDS = ("PIL.Image", "soundfile", "soxr", "espeakng_loader", "jiwer", "sacrebleu.metrics", "matplotlib")


class DemoError(RuntimeError):
    """The demo cannot run in the folder it was given."""


def _check_run_folder(out: Path, cfg: Config) -> None:
    """A folder the demo would continue must hold a run it can continue: its model, with its optimizer."""
    found = list_checkpoints(out)
    if found:
        run = Config.load(found[-1] / "config.yaml")
        if run.vision is None or run.audio is None:
            raise DemoError(f"{out} holds a run of another model (no image or audio encoder), e.g. an older "
                            f"text-only demo; give another --out or remove the folder")
        if run.train.optimizer != cfg.train.optimizer:
            raise DemoError(f"{out} holds a demo trained with {run.train.optimizer}, whose state the demo's "
                            f"{cfg.train.optimizer} cannot continue (an older demo); give another --out or remove "
                            f"the folder")


def samples(ckpt: Checkpoint, ev: dict, report_dir: Path) -> dict:
    """What the report shows: completions of TEXT_PROMPTS, the first scored test scenes (image, caption,
    the answer to each of its questions, attention maps) and the first scored test utterances (WAV,
    reference, transcript)."""
    from ..viz import caption_attention_map

    cfg, model, tok = ckpt.config, ckpt.model, ckpt.tokenizer
    report_dir.mkdir(parents=True, exist_ok=True)
    out: dict = {}
    if "text" in ev:
        texts = generate(model, tok, list(TEXT_PROMPTS), max_new_tokens=40, temperature=0.8, top_k=40, seed=0)
        out["completions"] = [{"prompt": p, "completion": c} for p, c in zip(TEXT_PROMPTS, texts)]
    if "scenes" in ev:
        shown = min(SHOWN, ev["scenes"]["scenes"])
        rows = []
        for k, sc in enumerate(builtin_scenes.scenes("test", shown, size=builtin_size(cfg))):
            image_png = report_dir / f"scene-{k + 1}.png"
            buf = io.BytesIO()
            sc.image.save(buf, format="PNG")
            write_atomic(image_png, buf.getvalue(), what="a report picture")
            row: dict = {"image": image_png.name, "reference": sc.caption}
            if "caption_samples" in ev["scenes"]:  # the caption that was scored (scenes are scored in order)
                caption = ev["scenes"]["caption_samples"][k]["prediction"]
                row["caption"], row["match"] = caption, ev["scenes"]["caption_samples"][k]["match"]
                if caption:
                    attention_png = report_dir / f"attention-{k + 1}.png"
                    caption_attention_map(model, tok, sc.image, CAPTION_PROMPT, caption, attention_png, FUNCTION_WORDS)
                    row["attention"] = attention_png.name
            if "vqa_accuracy" in ev["scenes"]:
                prompts = [vqa_prompt(q.question) for q in sc.qas]
                answers = generate(model, tok, prompts, images=[[sc.image]] * len(prompts), max_new_tokens=8)
                row["questions"] = [{"question": q.question, "answer": a.strip(), "expected": q.answer,
                                     "correct": builtin_scenes.answer_matches(a.strip(), q.answer)}
                                    for q, a in zip(sc.qas, answers)]
            rows.append(row)
        out["scenes"] = rows
    if "speech" in ev:
        scored = ev["speech"]["transcripts"]
        clips = speech_dataset("test", len(scored), BUILTIN_SEED, cache_dir(cfg))  # the scored ones, cached
        rows = []
        for k in range(min(SHOWN, len(scored))):
            wav = report_dir / f"utterance-{k + 1}.wav"
            buf = io.BytesIO()
            require("soundfile").write(buf, clips.audio(k), SAMPLE_RATE, subtype="PCM_16", format="WAV")
            write_atomic(wav, buf.getvalue(), what="a report recording")
            rows.append({"audio": wav.name, "voice": clips.voices[k], **scored[k]})
        out["utterances"] = rows
    return out


def run_demo(out: str | Path = "runs/demo", minutes: Optional[float] = None, scenes: int = 100,
             utterances: int = 100, progress: bool = True, config: Optional[Config] = None,
             precision: Optional[str] = None, device: Optional[str] = None,
             total_minutes: Optional[float] = DEMO_MINUTES) -> dict:
    """Train (or continue) the demo's model, score every task, write report.json and report.html in `out`,
    print the results; returns the report's numbers. Training lasts `minutes` when given; else, where the
    config has a time budget, until `total_minutes` after the call began less the time kept for scoring
    (None: the config's train.max_minutes). precision overrides train.precision (auto: bf16 where the
    hardware computes it natively), device train.device (auto: the GPU when there is one); the scoring runs
    on that device too."""
    from .report import write_report

    t0 = time.time()
    for name, value in (("scenes", scenes), ("utterances", utterances)):
        if value < 1:
            raise DemoError(f"{name} must be at least 1, got {value}")
    for name, value in (("minutes", minutes), ("total_minutes", total_minutes)):
        if value is not None and not value > 0:
            raise DemoError(f"{name} must be above 0, got {value}")
    out = Path(out)
    for module in DEMO_NEEDS:  # before minutes of training: the report needs every one of them
        require(module)
    cfg = config if config is not None else Config.load(DEMO_CONFIG)
    _check_run_folder(out, cfg)
    if minutes is not None:
        cfg.train.max_minutes = minutes
    if precision is not None:
        cfg.train.precision = precision
    if device is not None:
        cfg.train.device = device
    deadline = None
    if minutes is None and total_minutes is not None and cfg.train.max_minutes is not None:
        cfg.train.max_minutes = total_minutes
        deadline = t0 + 60 * total_minutes - SCORING_SECONDS * (scenes + utterances)
    cfg.validate()
    if deadline is not None:
        budget = (f"as long as set-up leaves of {total_minutes:g} minutes in all (fewer on a machine that is "
                  f"slower to set up)")
    elif cfg.train.max_minutes is not None:
        budget = f"up to {cfg.train.max_minutes:g} minutes"
    else:
        budget = f"up to {cfg.train.max_steps} steps"
    print(f"omnigpt demo: training one {cfg.model.n_layer}-layer GPT to complete text, caption and answer "
          f"questions about shape scenes, and transcribe speech, for {budget}; run folder {out}", flush=True)
    result = train(cfg, out, resume=True, progress=progress, deadline=deadline)
    ckpt = load_checkpoint(out, device=cfg.train.device)
    print("scoring every task ...", flush=True)
    ev = evaluate_multitask(ckpt, scenes, utterances, progress=progress)
    shown = samples(ckpt, ev, out / "report")
    summary = {**summary_of(ev), "steps": result.step, "train_seconds": round(result.seconds, 1),
               "precision": result.precision, "scenes": scenes, "utterances": utterances,
               "seconds": round(time.time() - t0, 1)}
    if result.shortfall:
        summary["shortfall"] = result.shortfall
    write_atomic(out / "report.json", json.dumps({**summary, "samples": shown}, indent=2) + "\n")
    html = write_report(out, summary, ev, shown, ckpt.config)
    print_results(summary, shown)
    print(f"\nreport: {html}  (numbers: {out / 'report.json'}; loss curves: {out / 'loss.png'})")
    print(f"chat with the model: omnigpt chat --checkpoint {out}")
    return summary


def print_results(summary: dict, shown: dict) -> None:
    """The results table and the samples, as text."""
    rows = []
    if "caption_exact_match" in summary:
        rows.append(("captions", "exact match", f"{summary['caption_exact_match']:.3f}"))
    if "vqa_accuracy" in summary:
        rows.append(("questions", "accuracy", f"{summary['vqa_accuracy']:.3f}"))
        for t, acc in summary["vqa_by_type"].items():
            rows.append((f"  {t}", f"accuracy (majority answer {summary['majority_by_type'][t]:.3f})",
                         f"{acc:.3f}"))
    if "wer" in summary:
        rows.append(("speech", f"word error rate (characters: {summary['cer']:.3f})", f"{summary['wer']:.3f}"))
    if "text_val_loss" in summary:
        rows.append(("text", f"loss, nats/token (unigram {summary['unigram_loss']:.3f})",
                     f"{summary['text_val_loss']:.3f}"))
    if not rows:
        print("\nno built-in task to score (the run learned from no built-in scenes, speech or text)")
        return
    width = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
    print(f"\nafter {summary['steps']} steps ({summary['train_seconds']:.0f} s of training in "
          f"{summary.get('precision', 'fp32')}; {summary['seconds']:.0f} s in all):")
    for task, metric, value in rows:
        print(f"  {task:<{width[0]}}  {metric:<{width[1]}}  {value}")
    for c in shown.get("completions", []):
        print(f"\n>>> {c['prompt']}{c['completion']}")
    for s in shown.get("scenes", []):
        print(f"\n[{s['image']}]" + (f" caption: {s['caption']!r}  (reference: {s['reference']!r})"
                                     if "caption" in s else ""))
        for q in s.get("questions", [])[:1]:
            print(f"  {q['question']} -> {q['answer']!r} (expected {q['expected']!r})")
    for u in shown.get("utterances", []):
        print(f"\n[{u['audio']}] heard: {u['prediction']!r}\n  said:  {u['reference']!r}")
    if "shortfall" in summary:
        print(f"\nnote: {summary['shortfall']}")

