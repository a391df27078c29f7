"""Timed transcripts as subtitle files: SubRip (.srt) and WebVTT (.vtt)."""
from __future__ import annotations

from typing import Sequence

from .transcribe import Segment


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
