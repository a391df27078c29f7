"""Readers that turn a user's image-text files into a list of `ImageText` examples.

Accepted sources:
  PATH.jsonl                  one JSON object a line: {"image": "imgs/a.png", "text": "a caption"}
                              ("caption" is an alias of "text"; a VQA row has "question" and "answer");
                              relative image paths are relative to the manifest's folder
  coco:CAPTIONS.json          COCO captions layout ({"images": [...], "annotations": [...]}) with the image
                              folder given separately (`images=`)

Every problem is found at read time, never mid-epoch: a bad row, an unknown image id, a missing or unreadable
image is either an error (on_error="error") or skipped with one warning that counts and lists what was
skipped (on_error="skip").
"""
from __future__ import annotations

import json
import re
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from PIL import Image

from ..tokenizer import SPECIAL_TOKENS
from .image import MAX_FILE_BYTES, MAX_PIXELS
from .text import DataError

OnError = Literal["skip", "error"]
ACCEPTED = ("PATH.jsonl (a JSONL manifest)", "coco:CAPTIONS.json (COCO captions; needs images=FOLDER)")
MAX_LISTED = 20  # skipped examples named in the warning; the rest are counted


@dataclass
class ImageText:
    """One example: an image file and its text (a caption, or the answer of a VQA question)."""
    image: Path
    text: str
    line: Optional[int] = None  # line of a JSONL manifest, 1-based
    source: str = ""  # where it came from, for messages: the manifest path, or "captions.json image id 42"
    question: Optional[str] = None  # VQA rows only

    @property
    def where(self) -> str:
        return f"{self.source} line {self.line}" if self.line is not None else self.source


class DataWarning(UserWarning):
    """Examples were skipped while reading a source (on_error="skip")."""


class _Problems:
    """Raises the first problem (on_error="error") or collects them for one warning (on_error="skip")."""

    def __init__(self, source: str, on_error: OnError):
        if on_error not in ("skip", "error"):
            raise ValueError(f"on_error must be 'skip' or 'error', got {on_error!r}")
        self.source = source
        self.on_error = on_error
        self.found: list[str] = []

    def report(self, message: str) -> None:
        if self.on_error == "error":
            raise DataError(message)
        self.found.append(message)

    def finish(self, examples: list[ImageText], total: int) -> list[ImageText]:
        """Warn about what was skipped; a source left with no example at all is an error."""
        if not self.found:
            return examples
        listed = "\n  ".join(self.found[:MAX_LISTED])
        more = f"\n  ... and {len(self.found) - MAX_LISTED} more" if len(self.found) > MAX_LISTED else ""
        summary = f"{self.source}: skipped {len(self.found)} of {total} examples:\n  {listed}{more}"
        if not examples:
            raise DataError(f"no usable examples left. {summary}")
        warnings.warn(summary, DataWarning, stacklevel=3)
        return examples


def image_problem(path: Path) -> Optional[str]:
    """Why an image file cannot be used, or None. Pillow's verify() checks the header and structure (chunk
    checksums for PNG) without decoding the pixels, so it is cheap but misses some truncated pixel data."""
    if not path.exists():
        return f"image not found: {path}"
    if not path.is_file():
        return f"image is not a file: {path}"
    if path.stat().st_size > MAX_FILE_BYTES:
        return f"image too large: {path} ({path.stat().st_size} bytes, the limit is {MAX_FILE_BYTES})"
    try:
        with Image.open(path) as img:
            w, h = img.size
            img.verify()
    except Exception as exc:  # Pillow raises many types (OSError, SyntaxError, struct.error ...) for bad files
        return f"image unreadable: {path} ({type(exc).__name__}: {exc})"
    if w * h > MAX_PIXELS:
        return f"image too large: {path} ({w}x{h} pixels, the limit is {MAX_PIXELS})"
    return None


def _check_images(examples: list[ImageText], problems: _Problems) -> list[ImageText]:
    """The examples whose image is usable; each distinct image file is opened once."""
    verdict: dict[Path, Optional[str]] = {}
    kept = []
    for ex in examples:
        if ex.image not in verdict:
            verdict[ex.image] = image_problem(ex.image)
        if verdict[ex.image] is None:
            kept.append(ex)
        else:
            problems.report(f"{ex.where}: {verdict[ex.image]}")
    return kept


def _string_field(row: dict, key: str) -> str:
    value = row[key]
    if not isinstance(value, str):
        raise DataError(f"{key!r} must be a string, got {type(value).__name__} {value!r}")
    if not value.strip():
        raise DataError(f"{key!r} is empty")
    check_text(value, key)
    return value


def check_text(text: str, key: str = "text") -> None:
    """Refuse text holding a special token such as <image>: it would be read as a placeholder."""
    found = [t for t in SPECIAL_TOKENS if t in text]
    if found:
        raise DataError(f"{key!r} contains the special token {found[0]}, which omnigpt reserves "
                        f"(it would become a placeholder): {text[:80]!r}")


def _manifest_row(row: object, folder: Path) -> tuple[Path, str, Optional[str]]:
    """(image path, text, question) of one manifest row, or DataError saying what is wrong with it."""
    if not isinstance(row, dict):
        raise DataError(f"expected a JSON object, got {type(row).__name__}")
    if "image" not in row:
        raise DataError("missing key 'image'")
    image = Path(_string_field(row, "image"))
    keys = [k for k in ("text", "caption", "answer") if k in row]
    if "question" in row or "answer" in row:
        if not ("question" in row and "answer" in row):
            raise DataError("a VQA row needs both 'question' and 'answer'")
        if keys != ["answer"]:
            raise DataError("a VQA row has 'question' and 'answer', not also 'text' or 'caption'")
        question: Optional[str] = _string_field(row, "question")
    else:
        question = None
        if not keys:
            raise DataError("missing key 'text' (or 'caption', or 'question' and 'answer')")
        if len(keys) > 1:
            raise DataError("give 'text' or its alias 'caption', not both")
    text = _string_field(row, keys[0])
    return (image if image.is_absolute() else folder / image), text, question


def read_manifest(path: str | Path, on_error: OnError = "error", check_images: bool = True) -> list[ImageText]:
    """Examples of a JSONL manifest, one per non-blank line, in file order (see the module docstring)."""
    path = Path(path)
    problems = _Problems(str(path), on_error)
    if not path.is_file():
        raise DataError(f"manifest not found: {path}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: invalid UTF-8 at byte offset {exc.start}") from None
    folder = path.absolute().parent
    examples, total = [], 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        total += 1
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.report(f"{path} line {number}: not valid JSON ({exc.msg} at column {exc.colno})")
            continue
        try:
            image, text, question = _manifest_row(row, folder)
        except DataError as exc:
            problems.report(f"{path} line {number}: {exc}")
            continue
        examples.append(ImageText(image, text, number, str(path), question))
    if total == 0:
        raise DataError(f"manifest is empty: {path}")
    if check_images:
        examples = _check_images(examples, problems)
    return problems.finish(examples, total)


def _load_json(path: Path) -> object:
    if not path.is_file():
        raise DataError(f"COCO captions file not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: invalid UTF-8 at byte offset {exc.start}") from None


def _coco_file_names(data: object, path: Path) -> dict[object, str]:
    """{image id: file name} from the "images" list; a malformed entry is an error (the file is broken)."""
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise DataError(f"{path}: not a COCO captions file: expected an object with 'images' and 'annotations' "
                        f"lists, found {found}")
    if not isinstance(data["images"], list) or not isinstance(data["annotations"], list):
        raise DataError(f"{path}: 'images' and 'annotations' must be lists")
    names = {}
    for i, entry in enumerate(data["images"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), (int, str)) \
                or not isinstance(entry.get("file_name"), str):
            raise DataError(f"{path}: images[{i}] needs an 'id' and a string 'file_name', got {entry!r}")
        names[entry["id"]] = entry["file_name"]
    return names


def read_coco_captions(path: str | Path, images: str | Path, on_error: OnError = "error",
                       check_images: bool = True) -> list[ImageText]:
    """One example per caption annotation of a COCO captions JSON (`annotations/captions_train2017.json`
    layout), in annotation order; image i is `images / file_name of i`."""
    path, folder = Path(path), Path(images)
    problems = _Problems(str(path), on_error)
    data = _load_json(path)
    names = _coco_file_names(data, path)
    if not folder.is_dir():
        raise DataError(f"COCO image folder not found: {folder}")
    folder = folder.absolute()
    if not data["annotations"]:
        raise DataError(f"{path}: 'annotations' is empty")
    examples = []
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or not isinstance(ann.get("image_id"), (int, str)) \
                or not isinstance(ann.get("caption"), str):
            problems.report(f"{path} annotations[{i}]: needs an 'image_id' and a string 'caption', got {ann!r}")
            continue
        where = f"{path} image id {ann['image_id']}"
        if ann["image_id"] not in names:
            problems.report(f"{where} (annotations[{i}]): no image with this id in 'images'")
            continue
        try:
            check_text(ann["caption"], "caption")
        except DataError as exc:
            problems.report(f"{where} (annotations[{i}]): {exc}")
            continue
        examples.append(ImageText(folder / names[ann["image_id"]], ann["caption"], None, where))
    if check_images:
        examples = _check_images(examples, problems)
    return problems.finish(examples, len(data["annotations"]))


def references_by_image(examples: list[ImageText]) -> dict[Path, list[str]]:
    """{image: its texts}, images in order of first appearance: the reference captions for evaluation."""
    refs: dict[Path, list[str]] = defaultdict(list)
    for ex in examples:
        refs[ex.image].append(ex.text)
    return dict(refs)


def read_source(spec: str, images: Optional[str] = None, on_error: OnError = "error",
                check_images: bool = True) -> list[ImageText]:
    """Examples of a source spec: "coco:CAPTIONS.json" (with `images` = the image folder) or "PATH.jsonl"."""
    accepted = "; ".join(ACCEPTED)
    prefix = re.match(r"([A-Za-z][A-Za-z0-9_]+):", spec)  # two letters or more: "C:\..." is a Windows path
    if prefix and prefix.group(1) == "coco":
        if images is None:
            raise DataError(f"source {spec!r}: a COCO captions file needs its image folder (images=FOLDER); "
                            f"the folder cannot be guessed from the JSON's name")
        return read_coco_captions(spec[len("coco:"):], images, on_error, check_images)
    if prefix:
        raise DataError(f"unknown source prefix {prefix.group(1)!r} in {spec!r}; accepted: {accepted}")
    if spec.lower().endswith(".jsonl"):
        if images is not None:
            raise DataError(f"source {spec!r}: images= applies to coco: sources only; a manifest's image paths "
                            f"are relative to the manifest's folder")
        return read_manifest(spec, on_error, check_images)
    raise DataError(f"unknown source {spec!r}; accepted: {accepted}")
