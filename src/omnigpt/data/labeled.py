"""Classification manifests: JSONL or CSV rows of {"text", "image", "audio", "label"}, any of the three inputs
(at least one), paths relative to the manifest's folder.

    {"text": "a red bike, barely used", "image": "img/1.jpg", "audio": "voice/1.wav", "label": "ok"}

    text,image,audio,label          (CSV: a header row; an empty cell means the input is missing)
    a red bike,img/1.jpg,,ok

Bad rows (not JSON, no label, no input, an empty text, a missing or unreadable file, a label the model does
not know) are reported with the manifest's line number: fatal (on_error="error") or skipped with one warning.
"""
from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from .sources import (OnError, Root, _json_line, _Problems, _string_field, _within, confine, media_problem,
                      resolve_root)
from .text import DataError

INPUTS = ("text", "image", "audio")


@dataclass
class LabeledRow:
    label: str
    text: Optional[str] = None
    image: Optional[Path] = None
    audio: Optional[Path] = None
    line: Optional[int] = None
    source: str = ""

    @property
    def where(self) -> str:
        return f"{self.source} line {self.line}" if self.line is not None else self.source


def _rows(path: Path) -> list[tuple[int, object]]:
    """(line number, raw row) of a JSONL or CSV manifest; blank lines are skipped."""
    if not path.is_file():
        raise DataError(f"manifest not found: {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark (Excel's "CSV UTF-8") is dropped
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    if path.suffix.lower() == ".csv":
        reader = csv.reader(io.StringIO(text))
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path}: empty CSV (expected a header row such as text,image,audio,label)")
        header = [h.strip() for h in header]
        unknown = [f for f in header if f not in (*INPUTS, "label")]
        if unknown:
            raise DataError(f"{path}: unknown CSV column(s) {unknown}; expected text, image, audio, label")
        out = []
        for cells in reader:
            if not any(c.strip() for c in cells):
                continue
            if len(cells) != len(header):
                out.append((reader.line_num, DataError(f"the row has {len(cells)} fields but the header has "
                                                       f"{len(header)}: quote a text that holds commas")))
                continue
            out.append((reader.line_num, {k: v for k, v in zip(header, cells) if v != ""}))
        return out
    return [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]


def _parse(raw: object, folder: Path, csv_row: bool) -> LabeledRow:
    if isinstance(raw, DataError):
        raise raw
    row = raw if csv_row else _json_line(raw)
    if not isinstance(row, dict):
        raise DataError(f"expected a JSON object, got {type(row).__name__}")
    if "label" not in row:
        raise DataError("missing key 'label'")
    label = row["label"]
    if isinstance(label, int) and not isinstance(label, bool):  # {"label": 3}: class "3"
        label = str(label)
    if not isinstance(label, str) or not label.strip():
        raise DataError(f"'label' must be a non-empty string, got {row['label']!r}")
    if not any(k in row for k in INPUTS):
        raise DataError("no input: give at least one of 'text', 'image', 'audio'")
    out = LabeledRow(label.strip())
    if "text" in row:
        out.text = _string_field(row, "text")
    for key in ("image", "audio"):
        if key in row:
            p = Path(_string_field(row, key))
            setattr(out, key, p if p.is_absolute() else folder / p)
    return out


def read_labeled_manifest(path: str | Path, on_error: OnError = "error", labels: Optional[Sequence[str]] = None,
                          check_files: bool = True, root: Root = None) -> list[LabeledRow]:
    """Rows of a JSONL or CSV classification manifest, in file order. labels: the classes a trained model
    knows; a row with another label is then a bad row. root: data.media_root (see `data.sources`)."""
    path = Path(path)
    problems = _Problems(str(path), on_error)
    folder_root = resolve_root(root)
    confine(path, folder_root, "manifest")
    raw = _rows(path)
    if not raw:
        raise DataError(f"{path}: the manifest has no rows")
    folder = path.absolute().parent
    csv_rows = path.suffix.lower() == ".csv"
    known = set(labels) if labels is not None else None
    checked: dict[Path, Optional[str]] = {}
    out = []
    for number, item in raw:
        where = f"{path} line {number}"
        try:
            row = _parse(item, folder, csv_rows)
        except DataError as exc:
            problems.report(f"{where}: {exc}")
            continue
        row.line, row.source = number, str(path)
        if known is not None and row.label not in known:
            problems.report(f"{where}: label {row.label!r} is not one of the model's classes {sorted(known)}")
            continue
        if not _within([row], lambda r: [r.image, r.audio], folder_root, problems):
            continue
        bad = media_problem(row, checked) if check_files else None
        if bad:
            problems.report(f"{where}: {bad}")
            continue
        out.append(row)
    return problems.finish(out, len(raw))


def label_counts(rows: Sequence[LabeledRow]) -> Counter:
    return Counter(r.label for r in rows)
