"""POST /v1/audio/transcriptions through the official `openai` client, in every response format: a tiny
recognizer that knows its 8 training utterances by heart (the session's `recognizer_run`) transcribes a
recording of two of them, and each format carries what `transcribe` gives for it."""
import io
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")
sf = pytest.importorskip("soundfile")

from fastapi.testclient import TestClient  # noqa: E402

from omnigpt import Config, GPT, Tokenizer, load_checkpoint  # noqa: E402
from omnigpt.checkpoint import Checkpoint  # noqa: E402
from omnigpt.data.builtin import speech  # noqa: E402
from omnigpt.serve import Limits, create_app  # noqa: E402
from omnigpt.subtitles import to_srt, to_vtt  # noqa: E402
from omnigpt.transcribe import transcribe  # noqa: E402

KEY = "sk-test"
RATE = 16000


@pytest.fixture(scope="module")
def recognizer(recognizer_run):
    return load_checkpoint(recognizer_run("cross_attention"), device="cpu")


@pytest.fixture(scope="module")
def recording(speech_cache):
    """(WAV bytes, samples, the words said): utterances 0 and 3 of the training set, with pauses around."""
    clips = speech.speech_dataset("train", 8, 0, speech_cache)
    silence = [np.zeros(n, np.float32) for n in (RATE, RATE // 2, RATE)]
    wave = np.concatenate([silence[0], np.asarray(clips.audio(0), np.float32), silence[1],
                           np.asarray(clips.audio(3), np.float32), silence[2]])
    out = io.BytesIO()
    sf.write(out, wave, RATE, format="WAV")
    return out.getvalue(), wave, f"{clips.texts[0]} {clips.texts[3]}"


@pytest.fixture(scope="module")
def client(recognizer):
    app = create_app(recognizer, api_key=KEY, model_id="ears", limits=Limits(max_body_bytes=400_000))
    with TestClient(app) as http:  # in-process: no socket, the app's lifespan runs
        yield openai.OpenAI(base_url="http://testserver/v1", api_key=KEY, http_client=http, max_retries=0)


def test_every_response_format_carries_the_transcript(client, recognizer, recording):
    data, wave, said = recording
    expected = transcribe(recognizer.model, recognizer.tokenizer, wave)
    assert expected.text == said and len(expected.segments) == 2  # the recognizer knows these by heart

    def ask(fmt=None, **extra):
        settings = {"response_format": fmt} if fmt else {}
        return client.audio.transcriptions.create(model="ears", file=("talk.wav", data, "audio/wav"),
                                                  **settings, **extra)

    assert ask().text == said  # json by default
    assert ask("json").text == said
    assert ask("text") == said + "\n"
    assert ask("srt") == to_srt(expected.segments)
    assert ask("vtt") == to_vtt(expected.segments)
    verbose = ask("verbose_json", language="en", timestamp_granularities=["segment"])
    assert verbose.text == said and verbose.language == "en"
    assert verbose.duration == pytest.approx(len(wave) / RATE, abs=1e-3)
    assert [(s.id, s.text) for s in verbose.segments] == [(i, s.text) for i, s in enumerate(expected.segments)]
    for got, want in zip(verbose.segments, expected.segments):
        assert got.start == pytest.approx(want.start, abs=1e-3) and got.end == pytest.approx(want.end, abs=1e-3)
        assert got.tokens == recognizer.tokenizer.encode(want.text) and got.temperature == 0.0
    assert verbose.usage.seconds == np.ceil(len(wave) / RATE)


def test_a_sampled_transcription_starts_at_its_temperature(client, recording):
    data, _, said = recording
    out = client.audio.transcriptions.create(model="ears", file=("talk.wav", data), temperature=0.4,
                                             response_format="verbose_json")
    assert {s.temperature for s in out.segments} <= {0.4, 0.6, 0.8, 1.0}


def test_bad_uploads_are_refused_in_openai_shape(client, recording):
    data, _, _ = recording

    def refused(error, match, **request):
        with pytest.raises(error, match=match) as caught:
            client.audio.transcriptions.create(**{"model": "ears", "file": ("talk.wav", data), **request})
        assert set(caught.value.body) == {"message", "type", "param", "code"}
        return caught.value.body

    assert refused(openai.BadRequestError, "audio is empty", file=("empty.wav", b""))["param"] == "file"
    refused(openai.BadRequestError, "not an audio file", file=("noise.wav", bytes(range(256)) * 8))
    refused(openai.BadRequestError, "cut off|truncated|not an audio", file=("cut.wav", data[:2000]))
    refused(openai.APIStatusError, "over the limit", file=("long.wav", data * 2))  # 413
    refused(openai.NotFoundError, "does not exist", model="whisper-1")
    assert refused(openai.BadRequestError, "prompt", prompt="Names: Gia.")["param"] == "prompt"
    assert refused(openai.BadRequestError, "temperature", temperature=1.5)["param"] == "temperature"
    assert refused(openai.BadRequestError, "response_format", response_format="diarized_json")["param"] == \
        "response_format"
    refused(openai.BadRequestError, "timestamp_granularities", timestamp_granularities=["word"])


def test_a_model_without_ears_cannot_transcribe(recording):
    tok = Tokenizer.byte_level()
    cfg = Config.from_dict({"model": {"vocab_size": 272, "block_size": 32, "n_layer": 1, "n_head": 2, "n_embd": 16}})
    app = create_app(Checkpoint(Path("text"), cfg, GPT(cfg.model), tok, 0))
    with TestClient(app) as http:
        r = http.post("/v1/audio/transcriptions", data={"model": "text"}, files={"file": ("a.wav", recording[0])})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "model" and "no audio encoder" in r.json()["error"]["message"]
    assert json.loads(r.text)["error"]["code"] == "model_not_supported"
