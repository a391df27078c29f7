"""Pictures of a run, written as PNG next to it: the loss curve, attention maps of generated captions, and
the confusion matrix of a classifier."""
from __future__ import annotations

import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from .atomic import WriteError, write_atomic
from .extras import MissingExtraError, optional, require
from .tokenizer import Tokenizer

Image = optional("PIL.Image")


def _pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display needed)."""
    require("matplotlib").use("Agg")
    plt = require("matplotlib.pyplot")

    return plt


def _save(plt, fig, png_path: str | Path, dpi: Optional[int] = None) -> Path:
    """Render the figure to PNG bytes, free it, then write them atomically (making the folder): a failed
    write (a full disk) raises a `WriteError` naming the path and leaves no partial file."""
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", **({"dpi": dpi} if dpi else {}))
    finally:
        plt.close(fig)
    return write_atomic(png_path, buf.getvalue(), what="the plot")


def read_metrics(path: str | Path) -> list[dict]:
    """The rows of a metrics.jsonl; a line that is not a JSON object (cut short by a killed process) is
    left out."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _points(rows: list[dict]) -> list[tuple[float, float]]:
    """(step, loss) of the rows that have both as numbers."""
    return [(r["step"], r["loss"]) for r in rows
            if all(isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool) for k in ("step", "loss"))]


def plot_run(run_dir: str | Path) -> None:
    """loss.png from a run folder's metrics.jsonl. Training goes on without it, and is told once, when
    matplotlib is not installed (omnigpt[plots]) or the picture cannot be written (a full disk: the next
    checkpoint then reports it)."""
    png = Path(run_dir) / "loss.png"
    try:
        loss_curve(Path(run_dir) / "metrics.jsonl", png)
    except (MissingExtraError, WriteError) as exc:
        if png not in _unplotted:
            _unplotted.add(png)
            print(f"{png.name} not drawn: {exc}", file=sys.stderr)


_unplotted: set[Path] = set()


def loss_curve(metrics_path: str | Path, png_path: str | Path) -> Path:
    """Plot train loss (light, plus a moving average) and validation loss against the step; in a multitask
    run, also each source's validation loss (dashed)."""
    plt = _pyplot()

    rows = read_metrics(metrics_path)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    train = _points([r for r in rows if r.get("split") == "train"])
    val = _points([r for r in rows if r.get("split") == "val" and "task" not in r])
    tasks: dict[str, list] = {}
    for r in rows:
        if r.get("split") == "val" and "task" in r and _points([r]):
            tasks.setdefault(str(r["task"]), []).extend(_points([r]))
    if train:
        steps, losses = zip(*train)
        ax.plot(steps, losses, color="tab:blue", alpha=0.3, linewidth=0.8, label="train")
        w = max(1, len(losses) // 50)
        smooth = [sum(losses[max(0, i - w + 1):i + 1]) / len(losses[max(0, i - w + 1):i + 1])
                  for i in range(len(losses))]
        ax.plot(steps, smooth, color="tab:blue", linewidth=1.5, label=f"train (mean of {w})")
    if val:
        steps, losses = zip(*val)
        ax.plot(steps, losses, "o-", color="tab:orange", linewidth=1.5, markersize=3, label="validation")
    others = ["tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray"]
    for k, (name, points) in enumerate(tasks.items()):  # colours apart from the train and validation lines
        steps, losses = zip(*points)
        ax.plot(steps, losses, "--", color=others[k % len(others)], linewidth=1.0, label=f"validation: {name}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats / token)")
    ax.grid(alpha=0.3)
    if train or val:
        ax.legend()
    fig.tight_layout()
    return _save(plt, fig, png_path)


# --------------------------------------------------------------------------------------- attention maps
@dataclass
class WordAttention:
    word: str
    grid: np.ndarray  # (side, side) attention to the image's token grid, summing to the share the word gave it


@torch.inference_mode()
def image_attention(model: nn.Module, tokenizer: Tokenizer, image: "str | Path | Image.Image",
                    prompt: str, completion_ids: list[int]) -> list[WordAttention]:
    """For each word of a completion, the decoder's attention to the image tokens, averaged over heads,
    layers and the word's tokens.

    The attention of a word is that of the positions that predicted its tokens. In prefix fusion it is
    the self-attention onto the placeholder positions; in cross-attention fusion, the cross-attention
    onto the image's vectors.
    """
    from .generate import GenerationConfig, check_placeholders, prepare_media, prepare_prompts

    if "image" not in model.accepts:
        raise ValueError("attention maps need a multimodal model (with an image encoder)")
    (prompt_ids,) = prepare_prompts(model, tokenizer, [prompt], GenerationConfig(max_new_tokens=len(completion_ids)))
    check_placeholders([prompt_ids], [[image]], tokenizer.image_id, model.tokens_per_image)
    ids = torch.tensor([prompt_ids + completion_ids], device=next(model.parameters()).device)
    cross = model.fusion == "cross_attention"
    layers = [c.attn for c in model.cross] if cross else [b.attn for b in model.gpt.blocks]
    was_training = model.training
    model.eval()
    try:
        for layer in layers:
            layer.record = []
        model(ids, **prepare_media(model, [[image]]))
        maps = torch.stack([layer.record[0][0] for layer in layers]).mean(dim=(0, 1))  # (T, S)
    finally:
        for layer in layers:
            layer.record = None
        model.train(was_training)
    if not cross:
        maps = maps[:, ids[0] == tokenizer.image_id]
    side = model.vision_config.token_side()
    first = len(prompt_ids) - 1  # the position that predicts the first completion token
    groups: list[tuple[str, list[np.ndarray]]] = []  # a word and the attention rows of its tokens
    for j, tok in enumerate(completion_ids):
        piece = tokenizer.decode([tok])
        row = maps[first + j].float().cpu().numpy().reshape(side, side)
        if groups and not piece.startswith(" "):
            groups[-1] = (groups[-1][0] + piece, groups[-1][1] + [row])
        else:
            groups.append((piece.strip(), [row]))
    return [WordAttention(word, np.mean(rows, axis=0)) for word, rows in groups if word]


def caption_attention_map(model: nn.Module, tokenizer: Tokenizer, image: "Image.Image", prompt: str, caption: str,
                          png_path: str | Path, skip_words: frozenset[str] = frozenset()) -> Path:
    """Where each word of `caption` looked in `image` (`image_attention`), drawn over the image as the model
    saw it; words in `skip_words` (such as "a", "the") get no panel."""
    from .data.inputs import Inputs

    words = image_attention(model, tokenizer, image, prompt, tokenizer.encode(" " + caption))
    words = [w for w in words if w.word.strip(",.").lower() not in skip_words]
    return attention_figure(Inputs(model.full_config).transform.resized(image), caption, words, png_path)


def attention_figure(image: Image.Image, caption: str, words: list[WordAttention], png_path: str | Path,
                     columns: int = 6) -> Path:
    """The image with its caption, then one panel per word: the image under a heatmap of its attention.

    Pass the image as the model saw it (`ImageTransform.resized`): the grid covers that square.
    """
    plt = _pyplot()

    n = len(words) + 1
    cols = min(columns, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.4 * rows + 0.4), dpi=110, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    w, h = image.size
    axes[0, 0].imshow(image)
    axes[0, 0].set_title("image", fontsize=9)
    for k, word in enumerate(words, start=1):
        ax = axes.flat[k]
        ax.imshow(image)
        heat = word.grid / max(float(word.grid.max()), 1e-9)
        ax.imshow(heat, cmap="inferno", alpha=0.6, extent=(0, w, h, 0), interpolation="bilinear", vmin=0, vmax=1)
        ax.set_title(f"{word.word}  ({word.grid.sum():.0%})", fontsize=9)
    fig.suptitle(caption, fontsize=10)
    fig.tight_layout()
    return _save(plt, fig, png_path)


def confusion_figure(confusion: list[list[int]], classes: list[str], png_path: str | Path,
                     title: str = "") -> Path:
    """A confusion matrix as a heatmap with counts (rows: true class, columns: predicted; a last column
    "other" for predictions outside the classes when any were made)."""
    plt = _pyplot()

    matrix = np.array(confusion)
    columns = list(classes)
    if matrix.shape[1] > len(classes):
        if matrix[:, -1].any():
            columns.append("other")
        else:
            matrix = matrix[:, :len(classes)]
    side = max(3.0, 0.5 * len(columns) + 2)
    fig, ax = plt.subplots(figsize=(side + 1, side))
    im = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(columns)), columns, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = matrix.max() if matrix.size else 0
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center",
                    color="white" if top and matrix[i, j] > top / 2 else "black")
    if title:
        ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return _save(plt, fig, png_path, dpi=100)


def fusion_bars(rows: list[dict], png_path: str | Path) -> Path:
    """Accuracy per fusion strategy (dark bars), beside its accuracy with each modality removed (light
    bars), with chance for two balanced classes as a dashed line."""
    plt = _pyplot()

    modalities = sorted({m for r in rows for m in r.get("dropped", {})})
    series = [("all inputs", [r["accuracy"] for r in rows])]
    series += [(f"without {m}", [r.get("dropped", {}).get(m, float("nan")) for r in rows]) for m in modalities]
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(rows)), 4))
    x = np.arange(len(rows))
    for k, (name, values) in enumerate(series):
        bars = ax.bar(x + (k - (len(series) - 1) / 2) * width, values, width, label=name, alpha=1.0 if k == 0 else 0.55)
        if k == 0:
            ax.bar_label(bars, fmt="%.2f", fontsize=8)
    ax.axhline(0.5, color="gray", linestyle="--", linewidth=1)
    ax.set_xticks(x, [r["strategy"] for r in rows])
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside the plot: bars can be anywhere
    ax.set_title("fusion strategies")
    fig.tight_layout()
    return _save(plt, fig, png_path, dpi=100)
