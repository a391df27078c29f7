"""`hf:PATH[:SPLIT]`: rows of a dataset read through Hugging Face's `datasets` library (the optional `datasets`
extra). PATH is a folder written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk`, a Parquet, JSON or
JSONL file, a folder of such files (SPLIT picks those whose name starts with it), or, on a machine with a
network, a dataset on the Hub by name (downloaded into Hugging Face's cache).

Columns are renamed by `data.columns` ({omnigpt's key: the dataset's column}, on the command line
`--columns text=article,summary=highlights`), and the rows are written once to a JSONL file in omnigpt's
cache, named by everything that makes it. Every reader then takes that file as it takes a manifest, so a
dataset may hold conversations, a text task's rows, or image and audio rows (relative file paths are made
absolute from the dataset's folder); a bad row is named by that file and its line, line N being row N.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional

from ..atomic import write_atomic
from ..extras import require
from .text import DataError

PREFIX = "hf:"
FILE_KINDS = {".parquet": "parquet", ".json": "json", ".jsonl": "json"}
PATH_KEYS = ("image", "audio")  # columns that name files


def is_dataset_spec(spec: str) -> bool:
    return spec.startswith(PREFIX)


def split_spec(spec: str) -> tuple[str, Optional[str]]:
    """hf:PATH[:SPLIT] -> (PATH, SPLIT or None)."""
    body = spec[len(PREFIX):]
    path, sep, split = body.rpartition(":")
    if sep and split and "/" not in split and path:
        return path, split
    return body, None


def _load(path: str, split: Optional[str]):
    """The dataset at `path` (one split of it)."""
    datasets = require("datasets")
    folder = Path(path).expanduser()
    if folder.is_dir() and any((folder / f).is_file() for f in ("dataset_info.json", "dataset_dict.json",
                                                                 "state.json")):
        data = datasets.load_from_disk(str(folder))
        if isinstance(data, datasets.DatasetDict):
            if split is None and len(data) == 1:
                split = next(iter(data))
            if split not in data:
                raise DataError(f"hf:{path}: choose a split with hf:{path}:SPLIT, one of {sorted(data)}")
            data = data[split]
        return data
    if folder.is_file() or folder.is_dir():
        files = [folder] if folder.is_file() else sorted(
            p for p in folder.iterdir() if p.suffix in FILE_KINDS and (split is None or p.name.startswith(split)))
        kinds = {FILE_KINDS.get(p.suffix) for p in files}
        if not files or None in kinds or len(kinds) != 1:
            raise DataError(f"hf:{path}: expected a save_to_disk folder, or Parquet, JSON or JSONL files (one kind)"
                            + (f" named {split}*" if split else ""))
        return datasets.load_dataset(kinds.pop(), data_files=[str(p) for p in files], split="train")
    try:  # a dataset on the Hub
        return datasets.load_dataset(path, split=split or "train")
    except Exception as exc:  # datasets raises many types for a name it cannot find or fetch
        raise DataError(f"hf:{path}: not a local dataset, and not found on the Hugging Face Hub "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None


def dataset_rows(spec: str, columns: dict[str, str], cache: Path) -> Path:
    """The JSONL file holding the rows of `spec` with `columns` renamed ({ours: theirs}), written on first use."""
    path, split = split_spec(spec)
    data = _load(path, split)
    missing = sorted(theirs for theirs in columns.values() if theirs not in data.column_names)
    if missing:
        raise DataError(f"{spec}: no column {missing[0]!r} (data.columns / --columns); the dataset has "
                        f"{data.column_names}")
    fingerprint = getattr(data, "_fingerprint", None) or str(len(data))
    key = json.dumps([spec, sorted(columns.items()), fingerprint])
    out = Path(cache) / "datasets" / f"hf-{hashlib.sha1(key.encode()).hexdigest()[:16]}.jsonl"
    if out.is_file():
        return out
    root = Path(path).expanduser().resolve()
    root = root if root.is_dir() else root.parent
    rename = {theirs: ours for ours, theirs in columns.items()}
    lines = []
    for i, row in enumerate(data):
        row = {rename.get(k, k): v for k, v in row.items()}
        for k in PATH_KEYS:
            if isinstance(row.get(k), str) and row[k] and not Path(row[k]).is_absolute() and root.exists():
                row[k] = str(root / row[k])
        try:
            lines.append(json.dumps(row, ensure_ascii=False))
        except TypeError:
            bad = next(k for k, v in row.items() if not _plain(v))
            raise DataError(f"{spec} row {i}: column {bad!r} holds {type(row[bad]).__name__} values; omnigpt reads "
                            f"text, numbers, lists and file paths (save images and audio as files, name them in "
                            f"the row)") from None
    if not lines:
        raise DataError(f"{spec}: the dataset has no rows")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, "\n".join(lines) + "\n", what=f"the rows of {spec}")
    return out


def _plain(value) -> bool:
    try:
        json.dumps(value)
        return True
    except TypeError:
        return False


def parse_columns(text: str) -> dict[str, str]:
    """`text=article,summary=highlights` -> {"text": "article", "summary": "highlights"}."""
    out = {}
    for item in text.split(","):
        ours, sep, theirs = item.partition("=")
        if not sep or not ours.strip() or not theirs.strip():
            raise DataError(f"--columns {text!r}: expected OURS=THEIRS pairs separated by commas, e.g. "
                            f"text=article,summary=highlights")
        out[ours.strip()] = theirs.strip()
    return out
