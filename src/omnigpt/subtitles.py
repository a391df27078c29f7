"""Transcripts written out: plain text, JSON, and timed subtitle files, SubRip (.srt) and WebVTT (.vtt)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from .atomic import write_atomic
from .transcribe import Segment, Transcript

FORMATS = ("txt", "json", "srt", "vtt")


def timestamp(seconds: float, decimal: str = ",") -> str:
    """HH:MM:SS,mmm (SubRip) or HH:MM:SS.mmm (WebVTT, decimal='.'), rounded to the millisecond."""
    ms = max(0, int(round(seconds * 1000)))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{ms:03d}"


def to_srt(segments: Sequence[Segment]) -> str:
    """Numbered cues from 1, a blank line after each."""
    return "".join(f"{i}\n{timestamp(s.start)} --> {timestamp(s.end)}\n{s.text}\n\n"
                   for i, s in enumerate(segments, start=1))


def to_vtt(segments: Sequence[Segment]) -> str:
    """The WEBVTT header, then one cue per segment."""
    return "WEBVTT\n\n" + "".join(f"{timestamp(s.start, '.')} --> {timestamp(s.end, '.')}\n{s.text}\n\n"
                                  for s in segments)


def render(path: str, transcript: Transcript, fmt: str) -> str:
    """One file's transcript in `fmt` (txt, json, srt or vtt)."""
    if fmt == "json":
        return json.dumps({"audio": path, **transcript.to_dict()}, ensure_ascii=False)
    if fmt == "srt":
        return to_srt(transcript.segments)
    if fmt == "vtt":
        return to_vtt(transcript.segments)
    return transcript.text


def write_transcript(path: str, transcript: Transcript, fmt: str, folder: str | Path) -> Path:
    """FOLDER/STEM.FMT, written atomically; returns its path."""
    target = Path(folder) / f"{Path(path).stem}.{fmt}"
    return write_atomic(target, render(path, transcript, fmt) + ("\n" if fmt in ("txt", "json") else ""))


def render_all(results: Sequence[tuple[str, Transcript]], fmt: str) -> str:
    """Several files' transcripts as one output: a JSON list, one subtitle file (a single input), or text
    lines (prefixed with each path when there are several)."""
    if fmt == "json":
        return json.dumps([{"audio": p, **tr.to_dict()} for p, tr in results], ensure_ascii=False) + "\n"
    if fmt in ("srt", "vtt"):
        return render(*results[0], fmt)
    return "".join((f"{path}: {tr.text}" if len(results) > 1 else tr.text) + "\n" for path, tr in results)
