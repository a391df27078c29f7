"""Long-form transcription: speech regions, windows and stitching, temperature fallback, the command."""
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from omnigpt import generate, load_checkpoint
from omnigpt.data.prompts import TRANSCRIBE_PROMPT
from omnigpt.data.builtin import speech
from omnigpt.generate import GenerationError
from omnigpt.transcribe import (Hypothesis, TranscribeOptions, average_logprobs, compression_ratio, decode_windows,
                                keep, speech_regions, stitch, transcribe, windows_of)

RATE = 16000


@pytest.fixture(scope="module")
def cache(speech_cache):
    return speech_cache


@pytest.fixture(scope="module")
def recognizer(recognizer_run):
    """A tiny recognizer that knows 8 training utterances by heart (cross-attention fusion: quick to train)."""
    return load_checkpoint(recognizer_run("cross_attention"))


def _recording(clips, indices, gaps, total=None):
    """Utterances laid into silence: gaps[k] seconds before utterance k; returns (wave, [(start, end, text)])."""
    parts, truth, t = [], [], 0
    for i, gap in zip(indices, gaps):
        parts.append(np.zeros(int(gap * RATE), np.float32))
        t += int(gap * RATE)
        a = np.asarray(clips.audio(i), np.float32)
        truth.append((t / RATE, (t + len(a)) / RATE, clips.texts[i]))
        parts.append(a)
        t += len(a)
    wave = np.concatenate(parts + [np.zeros(RATE, np.float32)])
    if total is not None:
        wave = np.concatenate([wave, np.zeros(int(total * RATE) - len(wave), np.float32)])
    return wave, truth


def test_speech_regions_are_found_in_a_recording(cache):
    clips = speech.speech_dataset("train", 8, 0, cache)
    wave, truth = _recording(clips, [0, 3, 6], [1.0, 2.0, 0.8])
    regions = speech_regions(torch.from_numpy(wave), RATE)
    assert len(regions) == 3
    for (a, b), (start, end, _) in zip(regions, truth):
        assert start - 0.2 <= a / RATE <= start + 0.2 and end - 0.2 <= b / RATE <= end + 0.2
    # A pause shorter than min_silence does not split an utterance from the next.
    close = torch.from_numpy(_recording(clips, [0, 3], [1.0, 0.1])[0])
    assert len(speech_regions(close, RATE)) == 1
    assert len(speech_regions(close, RATE, TranscribeOptions(min_silence=0.05, pad_seconds=0.0))) == 2


def test_silent_and_empty_recordings_give_an_empty_transcript(recognizer):
    g = torch.Generator().manual_seed(0)
    for wave in (torch.zeros(3 * RATE), torch.zeros(0), 1e-4 * torch.randn(2 * RATE, generator=g)):  # -80 dBFS
        tr = transcribe(recognizer.model, recognizer.tokenizer, wave)
        assert tr.text == "" and tr.segments == []
        assert tr.duration == pytest.approx(wave.shape[0] / RATE)
    bad = torch.zeros(RATE)
    bad[100] = float("nan")
    with pytest.raises(GenerationError, match="NaN"):
        transcribe(recognizer.model, recognizer.tokenizer, bad)
    with pytest.raises(GenerationError, match="1-D"):
        transcribe(recognizer.model, recognizer.tokenizer, torch.zeros(2, RATE))


def test_a_recording_becomes_timed_segments_each_decoded_like_its_region(recognizer, cache):
    clips = speech.speech_dataset("train", 8, 0, cache)
    wave, truth = _recording(clips, [0, 4, 7], [1.5, 1.2, 2.0])
    tr = transcribe(recognizer.model, recognizer.tokenizer, wave)
    assert len(tr.segments) == 3
    for seg, (start, end, _) in zip(tr.segments, truth):
        assert seg.start <= start + 0.2 and seg.end >= end - 0.2 and seg.end - seg.start < end - start + 0.8
        region = wave[round(seg.start * RATE):round(seg.end * RATE)]
        alone = generate(recognizer.model, recognizer.tokenizer, TRANSCRIBE_PROMPT, audio=region,
                         max_new_tokens=48).strip()
        assert seg.text == alone and seg.temperature in TranscribeOptions().temperatures
    assert tr.text == " ".join(s.text for s in tr.segments)


def test_a_one_hour_file_is_read_and_only_its_speech_decoded(recognizer, cache, tmp_path):
    clips = speech.speech_dataset("train", 8, 0, cache)
    wave, truth = _recording(clips, [1, 5], [600.0, 2400.0], total=3600.0)
    path = tmp_path / "hour.wav"
    sf.write(path, wave, RATE, subtype="PCM_16")
    tr = transcribe(recognizer.model, recognizer.tokenizer, path)
    assert tr.duration == pytest.approx(3600.0)
    assert len(tr.segments) == 2
    for seg, (start, end, _) in zip(tr.segments, truth):
        assert abs(seg.start - start) < 0.3 and abs(seg.end - end) < 0.3


def test_windows_cover_a_long_stretch_with_equal_overlaps():
    spans = windows_of(1000, 101_000, 30_000, 5_000)
    assert spans[0][0] == 1000 and spans[-1][1] == 101_000
    assert all(e - a <= 30_000 for a, e in spans)
    assert all(prev[1] - nxt[0] == 5_000 for prev, nxt in zip(spans, spans[1:]))
    assert windows_of(0, 20_000, 30_000, 5_000) == [(0, 20_000)]


def test_stitching_keeps_each_word_once():
    def joined(*pieces):
        return " ".join(w for p in stitch([p.split() for p in pieces], most=6) for w in p)

    assert joined("where is the red tri", "red triangle is here") == "where is the red triangle is here"
    assert joined("one two three", "two three four") == "one two three four"
    assert joined("a b", "c d") == "a b c d"  # nothing repeated: nothing dropped
    assert joined("six seven eight", "", "nine ten") == "six seven eight nine ten"


def test_a_long_stretch_is_cut_into_windows_that_meet_mid_overlap(recognizer, cache):
    clips = speech.speech_dataset("train", 8, 0, cache)
    wave, truth = _recording(clips, [0, 3], [1.0, 0.1])  # one stretch of speech, longer than the window
    tr = transcribe(recognizer.model, recognizer.tokenizer, wave, window_seconds=2.0, overlap_seconds=0.5)
    assert len(tr.segments) >= 2
    for a, b in zip(tr.segments, tr.segments[1:]):
        assert a.end == pytest.approx(b.start)
    assert tr.segments[0].start <= truth[0][0] + 0.2 and tr.segments[-1].end >= truth[-1][1] - 0.2


def test_compression_ratio_flags_repetition():
    assert compression_ratio("six seven two") < 1.5
    assert compression_ratio("the cat is on the bed " * 8) > 2.4
    assert compression_ratio("") == 0.0


def test_a_degenerate_window_is_decoded_again_hotter(recognizer, cache):
    clips = [torch.as_tensor(speech.speech_dataset("train", 8, 0, cache).audio(i)) for i in (0, 1)]
    sure = decode_windows(recognizer.model, recognizer.tokenizer, clips, TranscribeOptions())
    assert [len(t) for t in sure] == [1, 1] and all(t[0].temperature == 0 for t in sure)
    assert all(t[0].avg_logprob > -1.0 for t in sure)
    # No transcript is ever certain (mean log-probability 0): every temperature is tried, seeded.
    forced = TranscribeOptions(temperatures=(0.0, 0.5, 1.0), logprob_threshold=0.0, seed=3)
    tried = decode_windows(recognizer.model, recognizer.tokenizer, clips, forced)
    assert [[h.temperature for h in t] for t in tried] == [[0.0, 0.5, 1.0]] * 2
    assert [[h.text for h in t] for t in tried] == [[h.text for h in t] for t in
                                                     decode_windows(recognizer.model, recognizer.tokenizer, clips, forced)]
    scores = average_logprobs(recognizer.model, recognizer.tokenizer, TRANSCRIBE_PROMPT, clips[:1],
                              [" " + tried[0][1].text], 48)
    assert scores[0] == pytest.approx(tried[0][1].avg_logprob, abs=1e-5)


def test_the_kept_decoding_is_the_first_good_one_else_the_surest_that_does_not_loop():
    opts = TranscribeOptions()
    loop, unsure, good = Hypothesis("a a a", -0.1, 3.0, 0.0), Hypothesis("b", -2.0, 1.0, 0.2), Hypothesis("c", -0.5, 1.0, 0.4)
    assert keep([loop, unsure, good], opts) is good
    worse = Hypothesis("d", -3.0, 1.0, 0.6)
    assert keep([loop, unsure, worse], opts) is unsure  # the loop is surer, but loops
    assert keep([loop], opts) is loop


def test_transcribe_command_writes_timed_formats(recognizer, cache, tmp_path, capsys):
    from omnigpt.cli import main

    clips = speech.speech_dataset("train", 8, 0, cache)
    wave, _ = _recording(clips, [2, 6], [1.0, 1.5])
    talk, quiet = tmp_path / "talk.wav", tmp_path / "quiet.flac"
    sf.write(talk, wave, RATE)
    sf.write(quiet, np.zeros(RATE, np.float32), RATE)
    ck = str(recognizer.path)
    main(["transcribe", "--checkpoint", ck, str(talk), "--format", "srt", "--quiet"])
    srt = capsys.readouterr().out
    assert srt.startswith("1\n00:00:0") and "\n2\n" in srt and srt.count(" --> ") == 2
    main(["transcribe", "--checkpoint", ck, str(talk), str(quiet), "--format", "json", "--quiet"])
    rows = json.loads(capsys.readouterr().out)
    assert [len(r["segments"]) for r in rows] == [2, 0] and rows[1]["text"] == ""
    with pytest.raises(SystemExit):
        main(["transcribe", "--checkpoint", ck, str(talk), str(quiet), "--format", "vtt", "--quiet"])
    assert "needs --output-dir" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # checked before any file is transcribed
        main(["transcribe", "--checkpoint", ck, str(talk), str(tmp_path / "gone.wav"), "--quiet"])
    assert "audio file not found" in capsys.readouterr().err
    (tmp_path / "b").mkdir()
    sf.write(tmp_path / "b" / "talk.wav", np.zeros(RATE, np.float32), RATE)
    with pytest.raises(SystemExit):
        main(["transcribe", "--checkpoint", ck, str(talk), str(tmp_path / "b" / "talk.wav"), "--output-dir",
              str(tmp_path / "o"), "--quiet"])
    assert "two inputs are named 'talk'" in capsys.readouterr().err
    main(["transcribe", "--checkpoint", ck, str(talk), str(quiet), "--format", "vtt", "--quiet",
          "--output-dir", str(tmp_path / "subs")])
    assert (tmp_path / "subs" / "talk.vtt").read_text().startswith("WEBVTT\n\n")
    assert (tmp_path / "subs" / "quiet.vtt").read_text() == "WEBVTT\n\n"
