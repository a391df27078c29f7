import json
import random
import re

import numpy as np
import pytest
import soundfile as sf

from omnigpt.data.builtin import speech
from omnigpt.data.builtin.speech import (ESPEAK_SAMPLE_RATE, MEAN_DURATION_S, PHRASE_KINDS, SAMPLE_RATE, TEST_VARIANTS,
                                 TEST_VOICES, TRAIN_VOICES, VOCABULARY, SpeechError, espeak_paths,
                                 hours_to_count, number_words, phrase, speech_dataset, synthesize, utterance,
                                 utterances, voices_for, write_speech_dataset)


# --- espeak-ng ---------------------------------------------------------------------------------------------

def test_bundled_library_and_data_are_found():
    library, data = espeak_paths()
    assert library.endswith(".so") or library.endswith(".dylib") or library.endswith(".dll")
    assert (speech.Path(data) / "voices" / "!v" / "m1").is_file()


def test_hello_world_is_speech_of_plausible_length():
    audio, sr = synthesize("hello world", "en-US", rate=175)
    assert sr == ESPEAK_SAMPLE_RATE == 22050
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert 0.5 <= len(audio) / sr <= 2.0
    assert np.abs(audio).max() > 0.1 and np.sqrt(np.mean(audio ** 2)) > 0.01


def test_faster_rate_gives_shorter_audio():
    slow, _ = synthesize("open the door and turn on the lights", "en-GB-x-rp", "m3", rate=120)
    fast, _ = synthesize("open the door and turn on the lights", "en-GB-x-rp", "m3", rate=260)
    assert len(fast) < 0.7 * len(slow)


def test_synthesis_does_not_depend_on_what_was_spoken_before():
    # espeak-ng keeps pitch-flutter and waveform state in C statics; a fresh library image per call resets it
    first, _ = synthesize("seven hundred and three", "en-US+f1", rate=150, pitch=40)
    synthesize("the dog is under the table", "en-GB-scotland+klatt2", rate=200, pitch=70)
    again, _ = synthesize("seven hundred and three", "en-US+f1", rate=150, pitch=40)
    np.testing.assert_array_equal(first, again)


def test_voices_and_variants_sound_different():
    a, _ = synthesize("a small red circle", "en-US", "m1")
    b, _ = synthesize("a small red circle", "en-US", "f1")
    c, _ = synthesize("a small red circle", "en-GB-scotland", "m1")
    for x, y in ((a, b), (a, c), (b, c)):
        assert len(x) != len(y) or not np.array_equal(x, y)


@pytest.mark.parametrize("kwargs, message", [
    ({"voice": "xx-YY"}, "cannot set voice 'xx-YY'"),
    ({"voice": "en-US", "variant": "nobody"}, "no voice variant 'nobody'"),
    ({"voice": "en-US+m1", "variant": "f1"}, "already names a variant"),
    ({"rate": 20}, "rate must be"),
    ({"pitch": 101}, "pitch must be"),
])
def test_bad_voice_or_parameter_raises(kwargs, message):
    with pytest.raises(SpeechError, match=re.escape(message)):
        synthesize("hello", **kwargs)


# --- the grammar -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n, words", [(0, "zero"), (13, "thirteen"), (42, "forty two"), (90, "ninety"),
                                      (703, "seven hundred and three"), (1000, "one thousand"),
                                      (2005, "two thousand and five"),
                                      (1234, "one thousand two hundred and thirty four")])
def test_number_words(n, words):
    assert number_words(n) == words


def test_transcripts_are_lower_case_words_of_the_grammar():
    rng = random.Random(0)
    seen, kinds = set(), set()
    for _ in range(20000):
        text, kind = phrase(rng)
        assert re.fullmatch(r"[a-z]+( [a-z]+)*", text), text
        seen |= set(text.split())
        kinds.add(kind)
    assert seen == VOCABULARY  # every word of the grammar is reachable, and no other
    assert 100 <= len(VOCABULARY) <= 150
    assert kinds == set(PHRASE_KINDS)


# --- utterances and splits ---------------------------------------------------------------------------------

def test_utterance_is_a_pure_function_of_seed_split_index():
    a, b, c = utterance(0, 3), utterance(0, 3), utterance(0, 4)
    np.testing.assert_array_equal(a.audio, b.audio)
    assert a[1:] == b[1:]
    assert len(a.audio) != len(c.audio) or not np.array_equal(a.audio, c.audio)
    assert a.audio.dtype == np.float32
    np.testing.assert_array_equal(a.audio * 32768, np.round(a.audio * 32768))  # on the 16-bit grid
    assert speech.RATE_RANGE[0] <= a.rate <= speech.RATE_RANGE[1]
    assert speech.PITCH_RANGE[0] <= a.pitch <= speech.PITCH_RANGE[1]
    assert 0.3 <= len(a.audio) / SAMPLE_RATE <= 8


def test_splits_draw_different_utterances():
    train, val = utterance(0, 0, "train"), utterance(0, 0, "val")
    assert (train.text, train.voice) != (val.text, val.voice)
    with pytest.raises(ValueError, match="unknown speech split 'dev'"):
        utterance(0, 0, "dev")


def test_test_split_speaks_only_with_held_out_voices():
    assert not set(TEST_VOICES) & set(TRAIN_VOICES)
    assert len(TRAIN_VOICES) == 112 and len(TEST_VOICES) == 28
    assert all(v.split("+")[1] not in TEST_VARIANTS for v in TRAIN_VOICES)
    assert voices_for("val") == voices_for("train") == TRAIN_VOICES and voices_for("test") == TEST_VOICES
    for u in utterances("test", 4, seed=1):
        assert u.voice in TEST_VOICES


def test_spawn_pool_gives_the_serial_result():
    serial = utterances("train", 8, seed=5, workers=1)
    pooled = utterances("train", 8, seed=5, workers=2)
    assert [u[1:] for u in pooled] == [u[1:] for u in serial]
    for p, s in zip(pooled, serial):
        np.testing.assert_array_equal(p.audio, s.audio)


def test_mean_duration_constant_is_current():
    durations = [len(u.audio) / SAMPLE_RATE for u in utterances("train", 40, seed=9)]
    assert abs(np.mean(durations) - MEAN_DURATION_S) < 0.2 * MEAN_DURATION_S
    assert hours_to_count(1) == round(3600 / MEAN_DURATION_S)
    with pytest.raises(ValueError):
        hours_to_count(0)


# --- cache and manifest ------------------------------------------------------------------------------------

def test_cache_round_trip_loads_without_synthesizing(tmp_path, monkeypatch):
    first = speech_dataset("val", 4, seed=1, cache_dir=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [f"speech-val-seed1-n4-v{speech.GENERATOR_VERSION}.npz"]
    for i in range(4):
        u = utterance(1, i, "val")
        np.testing.assert_array_equal(first.audio(i), u.audio)
        assert (first.texts[i], first.voices[i]) == (u.text, u.voice)

    def no_synthesis(*args, **kwargs):
        raise AssertionError("the cached set was synthesized again")

    monkeypatch.setattr(speech, "synthesize", no_synthesis)
    second = speech_dataset("val", 4, seed=1, cache_dir=tmp_path)
    np.testing.assert_array_equal(second.samples, first.samples)
    np.testing.assert_array_equal(second.offsets, first.offsets)
    assert (second.texts, second.voices, second.kinds) == (first.texts, first.voices, first.kinds)
    assert len(second) == 4 and second.durations.shape == (4,)


def test_manifest_round_trip(tmp_path):
    manifest = write_speech_dataset(tmp_path / "speech", "test", 3, seed=2)
    assert manifest == tmp_path / "speech" / "test.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert [r["audio"] for r in rows] == [f"audio/test/{i:06d}.wav" for i in range(3)]
    for i, row in enumerate(rows):
        u = utterance(2, i, "test")
        audio, sr = sf.read(manifest.parent / row["audio"], dtype="float32")
        assert sr == SAMPLE_RATE and row["text"] == u.text and row["voice"] == u.voice
        np.testing.assert_array_equal(audio, u.audio)
