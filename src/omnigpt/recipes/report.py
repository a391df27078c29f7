"""report.html: a multitask run's results as one page to open in a browser (every picture and sound is a
file next to it, in the run folder, so the page and its files move together)."""
from __future__ import annotations

import html
from pathlib import Path

from ..config import Config
from ..atomic import write_atomic

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.6em 0; } td, th { padding: 0.25em 0.8em; border-bottom: 1px solid #eee;
text-align: left; } th { background: #f6f6f6; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.scenes { display: flex; flex-wrap: wrap; gap: 1.2em; } .scene { width: 320px; }
.scene img.pic { width: 192px; height: 192px; image-rendering: pixelated; border: 1px solid #ccc; }
img.wide { max-width: 100%; border: 1px solid #eee; } .ok { color: #1a7f37; } .bad { color: #c62828; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; } .muted { color: #777; }
"""


def _e(value: object) -> str:
    return html.escape(str(value))


def _mark(ok: bool) -> str:
    return '<span class="ok">&#10003;</span>' if ok else '<span class="bad">&#10007;</span>'


def _said(text: str, what: str) -> str:
    """The model's output in bold, or a note that it said nothing."""
    return f"<b>{_e(text)}</b>" if text.strip() else f"<span class='muted'>(empty {what})</span>"


def _table(header: list[str], rows: list[list[str]], numeric: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _results(summary: dict) -> str:
    rows = []
    if "caption_exact_match" in summary:
        rows.append(["captions", "exact match (object sets)", f"{summary['caption_exact_match']:.3f}"])
    if "vqa_accuracy" in summary:
        rows.append(["questions", "accuracy", f"{summary['vqa_accuracy']:.3f}"])
    if "wer" in summary:
        rows.append(["speech", "word error rate (lower is better)", f"{summary['wer']:.3f}"])
        rows.append(["", "character error rate", f"{summary['cer']:.3f}"])
    if "text_val_loss" in summary:
        rows.append(["text", f"loss in nats/token (unigram baseline {summary['unigram_loss']:.3f})",
                     f"{summary['text_val_loss']:.3f}"])
    return _table(["task", "metric", "test"], rows, {2})


def _scenes(summary: dict, shown: list[dict]) -> str:
    parts = []
    if "vqa_by_type" in summary:
        rows = [[_e(t), f"{acc:.3f}", f"{summary['majority_by_type'][t]:.3f}"]
                for t, acc in summary["vqa_by_type"].items()]
        parts.append("<h3>Questions by type</h3>" + _table(["type", "accuracy", "always the majority answer"],
                                                           rows, {1, 2}))
    cards = []
    for s in shown:
        lines = [f'<img class="pic" src="report/{_e(s["image"])}" alt="test scene">']
        if "caption" in s:
            lines.append(f"<p>{_mark(s['match'])} {_said(s['caption'], 'caption')}<br>"
                         f"<span class='muted'>reference: {_e(s['reference'])}</span></p>")
        for q in s.get("questions", []):
            lines.append(f"<div>{_mark(q['correct'])} {_e(q['question'])} <b>{_e(q['answer'])}</b>"
                         f"{'' if q['correct'] else ' <span class=muted>(expected ' + _e(q['expected']) + ')</span>'}"
                         f"</div>")
        cards.append('<div class="scene">' + "".join(lines) + "</div>")
    parts.append('<h3>Test scenes</h3><div class="scenes">' + "".join(cards) + "</div>")
    maps = [s for s in shown if "attention" in s]
    if maps:
        parts.append("<h3>Where each word of the caption looked</h3><p class='muted'>The decoder's attention to "
                     "the image's grid while it wrote each word (averaged over heads and layers; words such as "
                     "'a' and 'the' left out).</p>")
        parts += [f'<p><img class="wide" src="report/{_e(s["attention"])}" alt="attention map"></p>' for s in maps]
    return "".join(parts)


def _speech(speech: dict, shown: list[dict]) -> str:
    rows = [[_e(k), f"{w:.3f}", str(speech["kinds"].count(k))] for k, w in speech["wer_by_kind"].items()]
    rows.append(["<b>all</b>", f"<b>{speech['wer']:.3f}</b>", str(speech["utterances"])])
    parts = ["<h3>Word error rate by kind of phrase</h3>", _table(["kind", "WER", "utterances"], rows, {1, 2})]
    rows = [[f'<audio controls src="report/{_e(u["audio"])}"></audio>', _e(u["reference"]),
             _said(u["prediction"], "transcript"), f"{u['wer']:.2f}"] for u in shown]
    worst = sorted(speech["transcripts"], key=lambda t: -t["wer"])[:5]
    rows += [["", _e(t["reference"]), _said(t["prediction"], "transcript"), f"{t['wer']:.2f}"]
             for t in worst if t["wer"] > 0]
    parts += ["<h3>Transcripts</h3><p class='muted'>The first test utterances (voices never heard in training), "
              "then the worst ones.</p>", _table(["listen", "said", "heard", "WER"], rows, {3})]
    return "".join(parts)


def _text(texts: dict, completions: list[dict]) -> str:
    rows = [[_e(corpus), f"{r['text_val_loss']:.3f}", f"{r['unigram_loss']:.3f}", str(r["tokens"])]
            for corpus, r in texts.items()]
    parts = [_table(["held-out text of", "loss", "unigram loss", "tokens"], rows, {1, 2, 3})]
    parts += [f"<p><b>{_e(c['prompt'])}</b>{_e(c['completion'])}</p>" for c in completions]
    return "".join(parts)


def write_report(run_dir: str | Path, summary: dict, evaluation: dict, shown: dict, config: Config) -> Path:
    """Write RUN/report.html from `demo.evaluate_multitask`'s result, its summary and the samples (whose
    pictures and sounds are already in RUN/report/); returns its path."""
    run_dir = Path(run_dir)
    scored = []
    if "scenes" in evaluation:
        scored.append(f"{evaluation['scenes']['scenes']} test scenes")
    if "speech" in evaluation:
        scored.append(f"{evaluation['speech']['utterances']} test utterances")
    if "text" in evaluation:
        scored.append("held-out text")
    body = [f"<h1>omnigpt run report</h1><p class='muted'>{_e(run_dir)}: {summary['steps']} training steps in "
            f"{summary['train_seconds']:.0f} s (this call took {summary['seconds']:.0f} s in all); scored on "
            f"{', '.join(scored) or 'nothing'}.</p>", "<h2>Results</h2>", _results(summary)]
    if (run_dir / "loss.png").is_file():
        body.append("<h2>Loss curves</h2><p class='muted'>Training loss, and the validation loss of every task "
                    "(dashed).</p><img class='wide' src='loss.png' alt='loss curves'>")
    if "scenes" in evaluation:
        body += ["<h2>Images: captions and questions</h2>", _scenes(summary, shown.get("scenes", []))]
    if "speech" in evaluation:
        body += ["<h2>Speech</h2>", _speech(evaluation["speech"], shown.get("utterances", []))]
    if "text" in evaluation:
        body += ["<h2>Text</h2>", _text(evaluation["text"], shown.get("completions", []))]
    body.append(f"<h2>Config</h2><pre>{_e(config.to_yaml())}</pre>")
    page = ("<!doctype html><html lang='en'><head><meta charset='utf-8'><title>omnigpt report</title>"
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n")
    path = run_dir / "report.html"
    write_atomic(path, page, what="the report")
    return path
