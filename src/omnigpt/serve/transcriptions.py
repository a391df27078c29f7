"""`POST /v1/audio/transcriptions`: a recording of any length through `transcribe` (speech regions, windows,
temperature fallback; see transcribe.py), answered in the shape OpenAI's API gives for `whisper-1`: json,
text, srt, vtt or verbose_json (timed segments).

`temperature` 0 (the default) decodes greedily and falls back to sampling at 0.2, 0.4, ... 1.0 while a window
looks degenerate, as OpenAI describes; a temperature t > 0 starts there and falls back to the steps above it.
`language` is only echoed back (omnigpt recognizers are not told a language), and a `prompt` is refused: the
models are not trained to be steered by one.
"""
from __future__ import annotations

import math
from typing import Optional

from fastapi.responses import JSONResponse, PlainTextResponse, Response

from ..subtitles import to_srt, to_vtt
from ..tokenizer import Tokenizer, TokenizerError
from ..transcribe import WHISPER_TEMPERATURES, Transcript
from .protocol import APIError, TranscriptionRequest


def options(req: TranscriptionRequest) -> dict:
    """The `transcribe` settings a request asks for (its other fields are checked here)."""
    if req.prompt:
        raise APIError(400, "prompt: this server's speech models are not trained to follow a prompt; leave it out",
                       param="prompt")
    if req.stream:
        raise APIError(400, "stream: transcriptions are not streamed by this server", param="stream")
    t = req.temperature
    temperatures = WHISPER_TEMPERATURES if t == 0 else (t,) + tuple(x for x in WHISPER_TEMPERATURES if x > t)
    return {"temperatures": temperatures}


def response(transcript: Transcript, req: TranscriptionRequest, tokenizer: Tokenizer) -> Response:
    """The transcript in the requested response_format."""
    fmt = req.response_format
    if fmt == "text":
        return PlainTextResponse(transcript.text + "\n")
    if fmt == "srt":
        return PlainTextResponse(to_srt(transcript.segments))
    if fmt == "vtt":
        return PlainTextResponse(to_vtt(transcript.segments), media_type="text/vtt")
    usage = {"type": "duration", "seconds": math.ceil(transcript.duration)}  # OpenAI bills whole seconds
    if fmt == "json":
        return JSONResponse({"text": transcript.text, "usage": usage})
    return JSONResponse(verbose(transcript, req.language, tokenizer) | {"usage": usage})


def verbose(transcript: Transcript, language: Optional[str], tokenizer: Tokenizer) -> dict:
    """verbose_json: the text, the duration, and each segment timed in seconds with how it was decoded.
    `seek` is the segment's start in centiseconds (Whisper's 10 ms frames); `no_speech_prob` is 0, as every
    segment is a stretch the level detector found speech in."""
    segments = [{"id": i, "seek": int(round(s.start * 100)), "start": round(s.start, 3), "end": round(s.end, 3),
                 "text": s.text, "tokens": _tokens(tokenizer, s.text), "temperature": s.temperature,
                 "avg_logprob": round(s.avg_logprob, 4), "compression_ratio": round(s.compression_ratio, 3),
                 "no_speech_prob": 0.0} for i, s in enumerate(transcript.segments)]
    return {"task": "transcribe", "language": language or "unknown", "duration": round(transcript.duration, 3),
            "text": transcript.text, "segments": segments}


def _tokens(tokenizer: Tokenizer, text: str) -> list[int]:
    try:
        return tokenizer.encode(text)
    except TokenizerError:  # text the tokenizer refuses to encode (a special token's spelling)
        return []
