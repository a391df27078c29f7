"""Speech recognition quality: fine-tune configs/asr-speech.yaml from scratch on the built-in speech and score
the test split (voices never heard in training) after 5, 10 and 20 minutes of training (by default).

Target (2-core CPU, 20 minutes): WER <= 0.15 (stretch 0.10).

After the last point, the same model transcribes long recordings with `omnigpt.transcribe` (speech regions,
windows, temperature fallback): --recordings recordings of about a minute each, test utterances laid end to
end with seeded pauses of 0.2-1.5 s that carry noise at the level of the next utterance's quietest 50 ms,
as a room's noise floor runs on between sentences (pauses under 0.3 s join two utterances into one stretch,
which the model never saw in training). Reported as "longform": WER against the joined references, segments per utterance,
the share of windows that fell back to sampling, and seconds of audio transcribed per wall second.

Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from omnigpt import Config, generate, load_checkpoint, train
from omnigpt.data.builtin.speech import SAMPLE_RATE, speech_dataset
from omnigpt.data.prompts import TRANSCRIBE_PROMPT
from omnigpt.metrics import cer, wer
from omnigpt.data.examples import cache_dir
from omnigpt.transcribe import transcribe

ROOT = Path(__file__).resolve().parent.parent


def score(ckpt, clips) -> tuple[float, float, list[str]]:
    preds = []
    for b in range(0, len(clips), 32):
        batch = [clips.audio(i) for i in range(b, min(len(clips), b + 32))]
        preds += [o.strip() for o in generate(ckpt.model, ckpt.tokenizer, [TRANSCRIBE_PROMPT] * len(batch),
                                              audio=[[a] for a in batch], max_new_tokens=48)]
    return wer(preds, list(clips.texts)), cer(preds, list(clips.texts)), preds


def longform(ckpt, clips, recordings: int, seconds: float, seed: int = 0) -> dict:
    """Transcribe recordings of consecutive test utterances with seeded pauses; WER of the whole transcripts."""
    rs = np.random.RandomState(seed)
    preds, refs, segments, utterances, fallbacks, audio_seconds = [], [], 0, 0, 0, 0.0
    i = 0
    t0 = time.perf_counter()
    for _ in range(recordings):
        parts, texts, length = [], [], 0
        while length < seconds * SAMPLE_RATE and i < len(clips):
            clip = np.asarray(clips.audio(i), np.float32)
            frames = clip[:len(clip) // 800 * 800].reshape(-1, 800)
            floor = float(np.sqrt((frames ** 2).mean(1)).min())
            pause = (rs.standard_normal(int(rs.uniform(0.2, 1.5) * SAMPLE_RATE)) * floor).astype(np.float32)
            parts += [pause, clip]
            texts.append(clips.texts[i])
            length += len(parts[-2]) + len(parts[-1])
            i += 1
        if not parts:
            break
        wave = np.concatenate(parts)
        tr = transcribe(ckpt.model, ckpt.tokenizer, wave)
        preds.append(tr.text)
        refs.append(" ".join(texts))
        segments += len(tr.segments)
        utterances += len(texts)
        fallbacks += sum(s.temperature > 0 for s in tr.segments)
        audio_seconds += len(wave) / SAMPLE_RATE
    took = time.perf_counter() - t0
    return {"wer": round(wer(preds, refs), 4), "recordings": len(preds), "utterances": utterances,
            "audio_seconds": round(audio_seconds, 1), "segments": segments,
            "fallback_share": round(fallbacks / max(1, segments), 4),
            "x_realtime": round(audio_seconds / took, 1),
            "sample": {"prediction": preds[0][:300], "reference": refs[0][:300]}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", default=str(ROOT / "configs" / "asr-speech.yaml"))
    p.add_argument("--minutes", type=float, nargs="+", default=[5, 10, 20])
    p.add_argument("--utterances", type=int, default=300, help="test utterances per evaluation")
    p.add_argument("--out", help="run folder (default: a temporary one)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--recordings", type=int, default=5, help="long recordings transcribed at the end (0: none)")
    p.add_argument("--recording-seconds", type=float, default=60.0)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    cfg = Config.load(args.config)
    out = Path(args.out or tempfile.mkdtemp(prefix="omnigpt-asr-quality-"))
    test = speech_dataset("test", args.utterances, 0, cache_dir(cfg))
    curve, trained, result = [], 0.0, None
    for i, total in enumerate(args.minutes):
        cfg.train.max_minutes = total - trained
        result = train(cfg, out, resume=i > 0, progress=sys.stderr.isatty())
        trained = total
        ckpt = load_checkpoint(out)
        w, c, preds = score(ckpt, test)
        curve.append([total, round(w, 4), result.step])
        print(f"after {total:g} min ({result.step} steps): WER {w:.3f}, CER {c:.3f}", file=sys.stderr)
        if result.step >= cfg.train.max_steps:
            break
    long = None
    if args.recordings:
        long = longform(ckpt, test, args.recordings, args.recording_seconds)
        print(f"long recordings: WER {long['wer']:.3f} over {long['utterances']} utterances", file=sys.stderr)
    print(json.dumps({
        "bench": "asr_quality", "config": Path(args.config).name, "wer": round(w, 4), "cer": round(c, 4),
        "curve": curve, "curve_columns": ["minutes", "wer", "steps"], "steps": result.step,
        "train_seconds": round(result.seconds, 1), "seconds": round(time.time() - t0, 1),
        "params": ckpt.model.num_params(), "test_utterances": len(test),
        "samples": [{"prediction": p, "reference": r} for p, r in list(zip(preds, test.texts))[:5]],
        "targets": {"wer": 0.15, "stretch": 0.10}, "longform": long,
    }))


if __name__ == "__main__":
    main()
