"""Rows of the text tasks, each in its standard shape, and the prompt a generator is asked with:

    translate   {"source": "the cat", "target": "le chat"}           (optional "source_lang", "target_lang")
    summarize   {"document": "...", "summary": "..."}
    qa          {"context": "...", "question": "...", "answer": "..."}
    classify    {"text": "...", "label": "toxic"}                     (or a CSV with a text,label header)

One JSON object a line (classify also reads CSV). The model writes the last field (target, summary, answer,
label) after the task's prompt (`data.prompts`); the loss falls on it alone. Other keys of a row are ignored,
except "image" and "audio": a row naming a file belongs to another reader. A bad row (not JSON, a missing,
non-string or empty field, text holding a special token such as `<image>`) is named with its file and line,
and stops the reading or is skipped with a warning (on_error, `data.on_bad_file`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Collection, Optional

from .labeled import _rows as _csv_rows
from .prompts import qa_prompt, summarize_prompt, text_classify_prompt, translate_prompt
from .sources import OnError, Root, _Problems, _read_jsonl, _string_field, confine, resolve_root
from .text import DataError

TASKS = ("translate", "summarize", "qa", "classify")
FIELDS = {"translate": ("source", "target"), "summarize": ("document", "summary"),
          "qa": ("context", "question", "answer"), "classify": ("text", "label")}
LANGS = ("source_lang", "target_lang")  # translation rows may name their languages
MEDIA = ("image", "audio")


@dataclass
class TaskRow:
    """One row of a text task: its fields (those of FIELDS[task], and a translation's languages when given)."""
    task: str
    fields: dict[str, str]
    where: str = ""  # the file and line it was read from

    @property
    def target(self) -> str:
        """What the model writes: the translation, the summary, the answer or the label."""
        return self.fields[FIELDS[self.task][-1]]

    def prompt(self, source_lang: str = "source", target_lang: str = "target") -> str:
        """The task's prompt; a translation row's own languages win over the defaults given."""
        f = self.fields
        if self.task == "translate":
            return translate_prompt(f["source"], f.get("source_lang", source_lang), f.get("target_lang", target_lang))
        if self.task == "summarize":
            return summarize_prompt(f["document"])
        if self.task == "qa":
            return qa_prompt(f["context"], f["question"])
        return text_classify_prompt(f["text"])


def shape(task: str) -> str:
    """A task's row shape for messages: {"source", "target"}."""
    return "{" + ", ".join(f'"{k}"' for k in FIELDS[task]) + "}"


def task_of_keys(keys: Collection[str]) -> Optional[str]:
    """The text task whose row has these keys (a JSONL row's, a CSV header's), or None: a row that names an
    image or an audio file is not a text task's."""
    if any(k in keys for k in MEDIA):
        return None
    return next((t for t in ("qa", "translate", "summarize", "classify") if set(FIELDS[t]) <= set(keys)), None)


def task_row(row: object, task: str, where: str = "") -> TaskRow:
    """One row (a JSON value, or a CSV row's {column: cell}) as a TaskRow, or DataError saying what is wrong."""
    if not isinstance(row, dict):
        raise DataError(f"expected a JSON object {shape(task)}, got {type(row).__name__}")
    missing = [k for k in FIELDS[task] if k not in row]
    if missing:
        raise DataError(f"missing key {missing[0]!r}: a {task} row is {shape(task)}")
    media = [k for k in MEDIA if k in row]
    if media:
        raise DataError(f"a {task} row is text only, this one names an {media[0]} file")
    fields = {}
    for key in FIELDS[task] + (LANGS if task == "translate" else ()):
        if key in row:
            value = row[key]
            if key == "label" and isinstance(value, int) and not isinstance(value, bool):  # {"label": 3}: "3"
                value = str(value)
            value = _string_field({key: value}, key)
            fields[key] = value.strip() if key == "label" else value
    return TaskRow(task, fields, where)


def read_task_rows(path: str | Path, task: str, on_error: OnError = "error", root: Root = None) -> list[TaskRow]:
    """The rows of a task's JSONL file (classify: JSONL or CSV), in file order; bad rows name the file and
    line, fatal or skipped by on_error. root: data.media_root (the file must lie in it)."""
    if task not in TASKS:
        raise ValueError(f"unknown text task {task!r}: one of {', '.join(TASKS)}")
    path = Path(path)
    if path.suffix.lower() != ".csv":
        return _read_jsonl(path, on_error, lambda obj, folder, n: task_row(obj, task, f"{path} line {n}"),
                           root=root)
    if task != "classify":
        raise DataError(f"{path}: a {task} file is JSONL, one {shape(task)} object a line (CSV is read for "
                        f"classify only)")
    confine(path, resolve_root(root), "manifest")
    problems = _Problems(str(path), on_error)
    raw = _csv_rows(path)
    if not raw:
        raise DataError(f"{path}: the file has no rows")
    rows = []
    for number, cells in raw:
        try:
            if isinstance(cells, DataError):
                raise cells
            rows.append(task_row(cells, task, f"{path} line {number}"))
        except DataError as exc:
            problems.report(f"{path} line {number}: {exc}")
    return problems.finish(rows, len(raw))
