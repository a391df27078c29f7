"""Readers that turn a user's files into a list of examples: `ImageText` (read_source) or `AudioText`
(read_audio_source). The two kinds of source are read by two functions because they make different examples.

Accepted image sources (`read_source`):
  PATH.jsonl                  one JSON object a line: {"image": "imgs/a.png", "text": "a caption"}
                              ("caption" is an alias of "text"; a VQA row has "question" and "answer");
                              relative image paths are relative to the manifest's folder
  coco:CAPTIONS.json          COCO captions layout ({"images": [...], "annotations": [...]}) with the image
                              folder given separately (`images=`)

Accepted audio sources (`read_audio_source`):
  PATH.jsonl                  one JSON object a line: {"audio": "clips/a.flac", "text": "a transcript"}, or
                              {"audio": ..., "label": "dog"} for classification; relative audio paths are
                              relative to the manifest's folder
  librispeech:FOLDER          a LibriSpeech split (LibriSpeech/dev-clean): SPEAKER/CHAPTER/SPEAKER-CHAPTER.trans.txt
                              with lines "SPEAKER-CHAPTER-UTTERANCE TEXT" and the audio UTTERANCE-ID.flac beside it
  audiofolder:FOLDER          one folder per class: FOLDER/LABEL/*.wav (.flac, .ogg, .mp3)

Every problem that can be found without decoding is found at read time: a bad row, an unknown image id, a
missing or unreadable image or audio file is either an error (on_error="error") or skipped with one warning that
counts and lists what was skipped (on_error="skip"). A file whose header is fine but whose data is not is found
when it is decoded (training skips or refuses it then, naming the manifest line: `data.training`).

media_root (every reader takes it; default None, no restriction): the folder every file must be in. A source,
or a file a row names, outside it (through `../`, an absolute path or a symbolic link) is refused before it
is opened, with a message that does not say whether it exists.
"""
from __future__ import annotations

import json
import re
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Optional


from ..extras import MissingExtraError, optional
from .image import MAX_FILE_BYTES, MAX_PIXELS
from .text import DataError, reserved_token

sf = optional("soundfile")
Image = optional("PIL.Image")

OnError = Literal["skip", "error"]
Root = Optional[str | Path]  # data.media_root
ACCEPTED = ("PATH.jsonl (a JSONL manifest)", "coco:CAPTIONS.json (COCO captions; needs images=FOLDER)")
AUDIO_ACCEPTED = ('PATH.jsonl (a JSONL manifest of {"audio", "text" or "label"} rows)',
                  "librispeech:FOLDER (a LibriSpeech split folder such as LibriSpeech/dev-clean)",
                  "audiofolder:FOLDER (FOLDER/LABEL/*.wav, one folder per class)")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
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


@dataclass
class AudioText:
    """One example: an audio file and its text (a transcript, or for classification the class label)."""
    audio: Path
    text: str
    line: Optional[int] = None  # line of a JSONL manifest or LibriSpeech transcript, 1-based
    source: str = ""  # where it came from, for messages: the manifest or transcript path, or "FOLDER class dog"
    label: Optional[str] = None  # classification examples only; `text` is then the label too

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

    def finish(self, examples: list, total: int) -> list:
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
    except MissingExtraError:
        raise
    except Exception as exc:  # Pillow raises many types (OSError, SyntaxError, struct.error ...) for bad files
        return f"image unreadable: {path} ({type(exc).__name__}: {exc})"
    if w * h > MAX_PIXELS:
        return f"image too large: {path} ({w}x{h} pixels, the limit is {MAX_PIXELS})"
    return None


def _keep_usable(examples: list, path_of: Callable[[object], Path], problem_of: Callable[[Path], Optional[str]],
                 problems: _Problems) -> list:
    """The examples whose file is usable (problem_of returns None); each distinct file is checked once."""
    verdict: dict[Path, Optional[str]] = {}
    kept = []
    for ex in examples:
        path = path_of(ex)
        if path not in verdict:
            verdict[path] = problem_of(path)
        if verdict[path] is None:
            kept.append(ex)
        else:
            problems.report(f"{ex.where}: {verdict[path]}")
    return kept


def _check_images(examples: list[ImageText], problems: _Problems) -> list[ImageText]:
    return _keep_usable(examples, lambda ex: ex.image, image_problem, problems)


def audio_problem(path: Path) -> Optional[str]:
    """Why an audio file cannot be used, or None. soundfile.info reads only the header (format, rate, frame
    count), so it is cheap; a file corrupt or cut off after its header is found when `load_audio` decodes it."""
    if not path.exists():
        return f"audio not found: {path}"
    if not path.is_file():
        return f"audio is not a file: {path}"
    try:
        info = sf.info(str(path))
    except MissingExtraError:
        raise
    except Exception as exc:  # sf.LibsndfileError (a RuntimeError) for unknown formats and bad headers
        return f"audio unreadable: {path} ({type(exc).__name__}: {exc})"
    if info.frames <= 0:
        return f"audio has no samples: {path} (0 frames)"
    return None


def _check_audio(examples: list[AudioText], problems: _Problems) -> list[AudioText]:
    return _keep_usable(examples, lambda ex: ex.audio, audio_problem, problems)


def media_problem(item, checked: dict[Path, Optional[str]]) -> Optional[str]:
    """Why the image or the audio file of `item` (its `.image` and `.audio`, None for none) cannot be used, or
    None; each file is checked once across calls sharing `checked`."""
    for file, check in ((item.image, image_problem), (item.audio, audio_problem)):
        if file is not None:
            if file not in checked:
                checked[file] = check(file)
            if checked[file]:
                return checked[file]
    return None


def _check_media(items: list, problems: _Problems) -> list:
    """The items (with `.image`, `.audio` and `.where`) whose files are usable."""
    checked: dict[Path, Optional[str]] = {}
    kept = []
    for it in items:
        bad = media_problem(it, checked)
        if bad is None:
            kept.append(it)
        else:
            problems.report(f"{it.where}: {bad}")
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
    token = reserved_token(text)
    if token is not None:
        raise DataError(f"{key!r} contains the special token {token}, which omnigpt reserves "
                        f"(it would become a placeholder): {text[:80]!r}")


def resolve_root(root: Root) -> Optional[Path]:
    """data.media_root resolved (symbolic links followed), or None for no restriction."""
    if root is None:
        return None
    folder = Path(root).expanduser().resolve()
    if not folder.is_dir():
        raise DataError(f"data.media_root is not a folder: {root}")
    return folder


def outside(path: Path, root: Optional[Path]) -> bool:
    """Whether `path` (symbolic links followed) lies outside `root`; never, when root is None."""
    return root is not None and not Path(path).resolve().is_relative_to(root)


def confine(path: str | Path, root: Optional[Path], what: str = "source") -> Path:
    """`path`, or DataError when it lies outside `root` (checked before the path is opened or looked at, so the
    message is the same whether it exists or not)."""
    if outside(Path(path), root):
        raise DataError(f"{what} {path} is outside data.media_root {root}")
    return Path(path)


def _within(items: list, paths_of: Callable[[object], list], root: Optional[Path], problems: "_Problems") -> list:
    """The items whose files (paths_of(item), None for none) all lie inside root; the others are reported."""
    if root is None:
        return items
    kept = []
    for it in items:
        bad = next((p for p in paths_of(it) if p is not None and outside(p, root)), None)
        if bad is None:
            kept.append(it)
        else:
            problems.report(f"{it.where}: {bad} is outside data.media_root {root}")
    return kept


def _media_path(row: object, key: str, other: str, reader: str) -> Path:
    """The file under `key` of a manifest row (a JSON object), or DataError saying what is wrong; a row with
    the `other` modality's key instead was given to the wrong reader."""
    if not isinstance(row, dict):
        raise DataError(f"expected a JSON object, got {type(row).__name__}")
    if key not in row:
        hint = f" (this row has '{other}': an {other} manifest, given where {key} rows are read)" if other in row else ""
        raise DataError(f"missing key '{key}'{hint}")
    return Path(_string_field(row, key))


def _manifest_row(row: object, folder: Path) -> tuple[Path, str, Optional[str]]:
    """(image path, text, question) of one manifest row, or DataError saying what is wrong with it."""
    image = _media_path(row, "image", "audio", "read_audio_source")
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


def _manifest_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of each non-blank line of a JSONL manifest; a missing, non-UTF-8 or empty manifest
    is an error."""
    if not path.is_file():
        raise DataError(f"manifest not found: {path}")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: invalid UTF-8 at byte offset {exc.start}") from None
    found = [(number, line) for number, line in enumerate(lines, start=1) if line.strip()]
    if not found:
        raise DataError(f"manifest is empty: {path}")
    return found


def _json_line(line: str) -> object:
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None


def read_manifest(path: str | Path, on_error: OnError = "error", check_images: bool = True,
                  root: Root = None) -> list[ImageText]:
    """Examples of a JSONL manifest, one per non-blank line, in file order (see the module docstring).
    root: data.media_root."""
    def row(obj: object, folder: Path, number: int) -> ImageText:
        image, text, question = _manifest_row(obj, folder)
        return ImageText(image, text, number, str(path), question)

    return _read_jsonl(Path(path), on_error, row, _check_images if check_images else None,
                       lambda ex: [ex.image], root)


def _read_jsonl(path: Path, on_error: OnError, row, check=None, paths_of=None, root: Root = None) -> list:
    """The items of a JSONL manifest: row(json value, the manifest's folder, line number) for each non-blank
    line, a bad one reported with its line number (fatal, or skipped); then those with a file outside root
    (paths_of(item): its files) reported, then check(items, problems)."""
    problems = _Problems(str(path), on_error)
    folder_root = resolve_root(root)
    confine(path, folder_root, "manifest")
    lines = _manifest_lines(path)
    folder = path.absolute().parent
    items = []
    for number, line in lines:
        try:
            items.append(row(_json_line(line), folder, number))
        except DataError as exc:
            problems.report(f"{path} line {number}: {exc}")
    if paths_of is not None:
        items = _within(items, paths_of, folder_root, problems)
    if check is not None:
        items = check(items, problems)
    return problems.finish(items, len(lines))


def _load_json(path: Path) -> object:
    if not path.is_file():
        raise DataError(f"COCO captions file not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
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
                       check_images: bool = True, root: Root = None) -> list[ImageText]:
    """One example per caption annotation of a COCO captions JSON (`annotations/captions_train2017.json`
    layout), in annotation order; image i is `images / file_name of i`. root: data.media_root."""
    path, folder = Path(path), Path(images)
    problems = _Problems(str(path), on_error)
    folder_root = resolve_root(root)
    confine(path, folder_root, "COCO captions file")
    confine(folder, folder_root, "COCO image folder")
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
    examples = _within(examples, lambda ex: [ex.image], folder_root, problems)
    if check_images:
        examples = _check_images(examples, problems)
    return problems.finish(examples, len(data["annotations"]))


def references_by_image(examples: list[ImageText]) -> dict[Path, list[str]]:
    """{image: its texts}, images in order of first appearance: the reference captions for evaluation."""
    refs: dict[Path, list[str]] = defaultdict(list)
    for ex in examples:
        refs[ex.image].append(ex.text)
    return dict(refs)


def _source_prefix(spec: str) -> Optional[str]:
    """The prefix of a spec ("coco" of "coco:captions.json"), or None for a plain path. Two letters or more:
    "C:\\data\\train.jsonl" is a Windows path."""
    prefix = re.match(r"([A-Za-z][A-Za-z0-9_]+):", spec)
    return prefix.group(1) if prefix else None


def read_source(spec: str, images: Optional[str] = None, on_error: OnError = "error",
                check_images: bool = True, root: Root = None) -> list[ImageText]:
    """Examples of an image source spec: "coco:CAPTIONS.json" (with `images` = the image folder) or
    "PATH.jsonl". Audio sources are read by `read_audio_source`. root: data.media_root."""
    accepted = "; ".join(ACCEPTED)
    prefix = _source_prefix(spec)
    if prefix == "coco":
        if images is None:
            raise DataError(f"source {spec!r}: a COCO captions file needs its image folder (images=FOLDER); "
                            f"the folder cannot be guessed from the JSON's name")
        return read_coco_captions(spec[len("coco:"):], images, on_error, check_images, root)
    if prefix in AUDIO_READERS:
        raise DataError(f"source {spec!r} is an audio source, where image sources are read "
                        f"(accepted: {accepted})")
    if prefix:
        raise DataError(f"unknown source prefix {prefix!r} in {spec!r}; accepted: {accepted}")
    if spec.lower().endswith(".jsonl"):
        if images is not None:
            raise DataError(f"source {spec!r}: images= applies to coco: sources only; a manifest's image paths "
                            f"are relative to the manifest's folder")
        return read_manifest(spec, on_error, check_images, root)
    raise DataError(f"unknown source {spec!r}; accepted: {accepted}")


# ------------------------------------------------------------------------------------------------ audio

def _audio_row(row: object, folder: Path) -> tuple[Path, str, Optional[str]]:
    """(audio path, text, label) of one audio manifest row, or DataError saying what is wrong with it. A row
    with only "label" takes the label as its text; a row may carry both a transcript and a label."""
    audio = _media_path(row, "audio", "image", "read_source")
    if "text" not in row and "label" not in row:
        raise DataError("missing key 'text' (a transcript) or 'label' (a class)")
    label = _string_field(row, "label") if "label" in row else None
    text = _string_field(row, "text") if "text" in row else label
    return (audio if audio.is_absolute() else folder / audio), text, label


def read_audio_manifest(path: str | Path, on_error: OnError = "error", check_audio: bool = True,
                        root: Root = None) -> list[AudioText]:
    """Examples of a JSONL audio manifest, one per non-blank line, in file order: {"audio": path, "text":
    transcript} or {"audio": path, "label": class}; other keys (duration, speaker ...) are ignored. Relative
    audio paths are relative to the manifest's folder. `check_audio` reads each file's header (`audio_problem`).
    root: data.media_root."""
    def row(obj: object, folder: Path, number: int) -> AudioText:
        audio, text, label = _audio_row(obj, folder)
        return AudioText(audio, text, number, str(path), label)

    return _read_jsonl(Path(path), on_error, row, _check_audio if check_audio else None,
                       lambda ex: [ex.audio], root)


def _subfolders(folder: Path) -> list[Path]:
    """The folders directly inside `folder`, by name; hidden ones (.git, .cache) are left out."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


LIBRISPEECH_LINE = re.compile(r"(\d+-\d+-\d+)\s+(\S.*)")  # "1272-128104-0000 MISTER QUILTER IS ..."


def _librispeech_transcript(path: Path, problems: _Problems) -> tuple[list[AudioText], int]:
    """The examples of one SPEAKER-CHAPTER.trans.txt, and how many it should have given (non-blank lines)."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        problems.report(f"{path}: invalid UTF-8 at byte offset {exc.start}")
        return [], 1
    examples, total = [], 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        total += 1
        match = LIBRISPEECH_LINE.fullmatch(line.strip())
        if not match:
            problems.report(f"{path} line {number}: expected 'SPEAKER-CHAPTER-UTTERANCE TEXT', got {line[:80]!r}")
            continue
        try:
            check_text(match.group(2))
        except DataError as exc:
            problems.report(f"{path} line {number}: {exc}")
            continue
        examples.append(AudioText(path.parent / f"{match.group(1)}.flac", match.group(2), number, str(path)))
    if total == 0:
        problems.report(f"{path}: transcript is empty")
        return [], 1
    return examples, total


def _no_librispeech(root: Path) -> str:
    splits = sorted({p.parents[2].name for p in root.glob("*/*/*/*.trans.txt")})
    hint = f"; {root} holds the splits {', '.join(splits)}: point at one of them" if splits else ""
    return f"no LibriSpeech transcripts under {root}: expected SPEAKER/CHAPTER/SPEAKER-CHAPTER.trans.txt{hint}"


def read_librispeech(root: str | Path, on_error: OnError = "error", check_audio: bool = True,
                     media: Root = None) -> list[AudioText]:
    """One example per transcript line of a LibriSpeech split folder (e.g. LibriSpeech/dev-clean):
    root/SPEAKER/CHAPTER/SPEAKER-CHAPTER.trans.txt holds lines "SPEAKER-CHAPTER-UTTERANCE TEXT", whose audio is
    UTTERANCE-ID.flac in the same folder. Speakers and chapters in folder-name order, lines in file order. The
    text is kept as written (upper case in LibriSpeech; `normalize_transcript` lowers it for WER).

    Reported with file and line: a malformed line, a missing or unreadable .flac (when `check_audio`), a
    speaker folder without chapter folders, a chapter folder without a transcript, an empty transcript.
    media: data.media_root."""
    root = Path(root)
    problems = _Problems(str(root), on_error)
    folder_root = resolve_root(media)
    confine(root, folder_root, "LibriSpeech folder")
    if not root.is_dir():
        raise DataError(f"LibriSpeech folder not found: {root}")
    root = root.absolute()
    if not any(root.glob("*/*/*.trans.txt")):
        raise DataError(_no_librispeech(root))
    examples: list[AudioText] = []
    total = 0
    for speaker in _subfolders(root):
        chapters = _subfolders(speaker)
        if not chapters:
            total += 1
            problems.report(f"{speaker}: speaker folder without chapter folders (expected {speaker.name}/CHAPTER/"
                            f"{speaker.name}-CHAPTER.trans.txt)")
        for chapter in chapters:
            transcripts = sorted(chapter.glob("*.trans.txt"))
            if not transcripts:
                total += 1
                problems.report(f"{chapter}: chapter folder without a transcript (expected "
                                f"{speaker.name}-{chapter.name}.trans.txt)")
            for transcript in transcripts:
                found, count = _librispeech_transcript(transcript, problems)
                examples += found
                total += count
    examples = _within(examples, lambda ex: [ex.audio], folder_root, problems)
    if check_audio:
        examples = _check_audio(examples, problems)
    return problems.finish(examples, total)


def _is_audio_file(path: Path, extensions: tuple[str, ...]) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in extensions


def read_audio_folders(root: str | Path, extensions: tuple[str, ...] = AUDIO_EXTENSIONS, on_error: OnError = "error",
                       check_audio: bool = True, media: Root = None) -> list[AudioText]:
    """One classification example per audio file of root/LABEL/NAME.wav: label (and text) = the folder's name.
    Classes in folder-name order, files in name order within a class. Only files directly inside a class folder
    with a suffix in `extensions` (any case) count; other files, hidden entries and files directly under root
    are ignored. A class folder without audio files is reported. media: data.media_root."""
    root = Path(root)
    problems = _Problems(str(root), on_error)
    folder_root = resolve_root(media)
    confine(root, folder_root, "audio folder")
    extensions = tuple(e.lower() for e in ((extensions,) if isinstance(extensions, str) else extensions))
    if not extensions or not all(e.startswith(".") for e in extensions):
        raise ValueError(f"extensions must be suffixes with their dot, such as ('.wav', '.flac'), got {extensions!r}")
    if not root.is_dir():
        raise DataError(f"audio folder not found: {root}")
    root = root.absolute()
    classes = _subfolders(root)
    if not classes:
        loose = sum(_is_audio_file(p, extensions) for p in root.iterdir())
        hint = f"; it holds {loose} audio files itself: pass the folder above the class folders" if loose else ""
        raise DataError(f"{root}: no class folders (expected {root}/LABEL/*{extensions[0]}){hint}")
    examples: list[AudioText] = []
    total = 0
    for folder in classes:
        files = sorted(p for p in folder.iterdir() if _is_audio_file(p, extensions))
        if not files:
            total += 1
            problems.report(f"{folder}: class {folder.name!r} has no audio files ({', '.join(extensions)})")
        examples += [AudioText(f, folder.name, None, f"{root} class {folder.name}", folder.name) for f in files]
        total += len(files)
    examples = _within(examples, lambda ex: [ex.audio], folder_root, problems)
    if check_audio:
        examples = _check_audio(examples, problems)
    return problems.finish(examples, total)


AUDIO_READERS = {"librispeech": read_librispeech, "audiofolder": read_audio_folders}


def read_audio_source(spec: str, on_error: OnError = "error", check_audio: bool = True,
                      root: Root = None) -> list[AudioText]:
    """Examples of an audio source spec: "librispeech:FOLDER", "audiofolder:FOLDER" or "PATH.jsonl" (a manifest
    of {"audio", "text" or "label"} rows); see the module docstring. root: data.media_root."""
    accepted = "; ".join(AUDIO_ACCEPTED)
    prefix = _source_prefix(spec)
    if prefix in AUDIO_READERS:
        return AUDIO_READERS[prefix](spec[len(prefix) + 1:], on_error=on_error, check_audio=check_audio, media=root)
    if prefix == "coco":
        raise DataError(f"source {spec!r} is an image source, where audio sources are read (accepted: "
                        f"{accepted})")
    if prefix:
        raise DataError(f"unknown audio source prefix {prefix!r} in {spec!r}; accepted: {accepted}")
    if spec.lower().endswith(".jsonl"):
        return read_audio_manifest(spec, on_error, check_audio, root)
    raise DataError(f"unknown audio source {spec!r}; accepted: {accepted}")
