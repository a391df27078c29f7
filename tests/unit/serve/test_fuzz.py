"""Hundreds of malformed requests, made from a fixed seed, against the in-process app of a tiny model that
takes text, images and audio: every one gets a 4xx in OpenAI's error shape, never a 5xx, and the server
answers normally afterwards."""
import base64
import io
import json
import random
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
sf = pytest.importorskip("soundfile")

from fastapi.testclient import TestClient  # noqa: E402

from omnigpt import Config, Tokenizer  # noqa: E402
from omnigpt.checkpoint import Checkpoint  # noqa: E402
from omnigpt.model.omni import build_model  # noqa: E402
from omnigpt.serve import Limits, create_app  # noqa: E402

KEY = "sk-fuzz"
AUTH = {"Authorization": f"Bearer {KEY}"}
LIMIT = 50_000  # body bytes
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
TRANSCRIPTIONS = "/v1/audio/transcriptions"


def png(width: int, height: int, seed: int = 0) -> bytes:
    from PIL import Image

    pixels = np.random.RandomState(seed).randint(0, 255, (height, width, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def wav(seconds: float, seed: int = 0, rate: int = 16000) -> bytes:
    out = io.BytesIO()
    sf.write(out, np.random.RandomState(seed).randn(int(rate * seconds)).astype(np.float32) * 0.1, rate,
             format="WAV", subtype="PCM_16")
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def client():
    cfg = Config.from_dict({
        "model": {"vocab_size": 272, "block_size": 96, "n_layer": 1, "n_head": 2, "n_embd": 16, "position": "rope"},
        "vision": {"encoder": "cnn", "image_size": 32, "width": 16, "channels": [8, 16], "reduce": "pool", "grid": 2},
        "audio": {"n_mels": 16, "width": 16, "n_layer": 1, "n_head": 2, "pool": 2, "max_seconds": 2.0},
        "data": {"tokenizer": "byte"}})
    tok = Tokenizer.byte_level()
    model = build_model(cfg, tok.image_id, tok.audio_id)
    app = create_app(Checkpoint(Path("fuzz"), cfg, model, tok, 0), api_key=KEY, max_batch=2, max_queue=4,
                     limits=Limits(max_body_bytes=LIMIT, max_image_pixels=48 * 48))
    with TestClient(app, raise_server_exceptions=False) as http:
        yield http


# ------------------------------------------------------------------------------------- the requests
class Case:
    """One request: method, path, raw body, headers, and the status it must get (None: any 4xx)."""

    def __init__(self, what: str, path: str, body: bytes = b"", headers: dict | None = None, status=None,
                 method: str = "POST"):
        self.what, self.path, self.body, self.method, self.status = what, path, body, method, status
        self.headers = {**AUTH, **(headers or {})}


def as_json(what: str, path: str, body, status=None, **headers) -> Case:
    return Case(what, path, json.dumps(body).encode(), {"Content-Type": "application/json", **headers}, status)


JUNK = [{}, {"x": [1]}, [[]], [None, {}], "zebra", "zebrazebra", -7.25, [1.5, "q"]]  # no null, bool-like words
TAKES = {"stream_options": lambda v: isinstance(v, dict), "stop": lambda v: isinstance(v, str)}  # junk a field would take


def junk(rng: random.Random, field: str) -> object:
    """A value of a random JSON type that the field refuses."""
    return rng.choice([v for v in JUNK if not TAKES.get(field, lambda v: False)(v)])


def user(content) -> dict:
    return {"model": "fuzz", "messages": [{"role": "user", "content": content}], "max_tokens": 1}


WRONG = {  # field -> values the field refuses (each a 400); pydantic's lax coercions (\"3\" -> 3) avoided
    "model": [None, 1, [], {}, ["fuzz"]],
    "messages": [None, "hi", 1, {}, [], [1], [None], [{"role": "user"}], [{"content": "x"}], [[]]],
    "stream": ["maybe", 2, [], {}, 0.5, "sometimes"],
    "stream_options": ["x", 1, [], {"include_usage": "perhaps"}],
    "n": ["many", 0, -1, 65, 10 ** 12, 1.5, [], {}, 3],  # 3 rows do not fit --max-batch 2
    "temperature": ["hot", -0.1, 2.5, [], {}, "NaN", "inf"],
    "top_p": [0, -1, 1.5, "x", "nan"],
    "max_tokens": [0, -5, "x", 1.5, [], {}],
    "stop": [1, [1], ["a"] * 5, [""], "", {}, [None]],
    "seed": [-1, 2 ** 64, "x", 1.5, {}],
    "presence_penalty": [0.5, -1, "x"],
    "frequency_penalty": [1, -0.5, "y"],
    "logprobs": [True, "x", 1],
    "tools": [[{"type": "function"}], "x", 1],
    "max_completion_tokens": [0, "x", -1],
}
WRONG_COMPLETION = {
    "prompt": [None, 1, [], [1], {}, [[1, 2]], "<image> hi", ["a", "<audio>"], [None]],
    "echo": [True, "x"], "suffix": ["after", 1], "best_of": [2, "x"],
}
BAD_PARTS = [  # content parts a chat message refuses
    [{"type": "video"}], [{"type": "text"}], [{"type": "text", "text": 1}], [{"type": "image_url"}],
    [{"type": "image_url", "image_url": "x"}], [{"type": "image_url", "image_url": {"url": ""}}],
    [{"type": "image_url", "image_url": {"url": "data:image/png;base64,!!!"}}],
    [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}}],
    [{"type": "image_url", "image_url": {"url": "data:text/plain;base64," + b64(b"hello")}}],
    [{"type": "image_url", "image_url": {"url": "data:image/png," + "abc"}}],
    [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}],
    [{"type": "image_url", "image_url": {"url": "cat.png"}}],  # no --media-root
    [{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}],
    [{"type": "input_audio"}], [{"type": "input_audio", "input_audio": {"data": "x", "format": "ogg"}}],
    [{"type": "input_audio", "input_audio": {"data": "@@@@", "format": "wav"}}],
    [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}],
    [], [1], [None], [{"type": None}], {"type": "text", "text": "hi"},
]


def corrupt_images(rng: random.Random) -> list:
    good = png(16, 16, rng.randint(0, 99))
    return [rng.randbytes(rng.randint(1, 400)), good[:rng.randint(8, len(good) - 1)],
            good[:40] + rng.randbytes(200), png(64, 64)]  # the last: over the 48 x 48 pixel limit


def corrupt_clips(rng: random.Random) -> list:
    good = wav(0.2, rng.randint(0, 99))
    return [rng.randbytes(rng.randint(1, 400)), good[:rng.randint(4, 60)], good[:44] + rng.randbytes(100),
            wav(2.5, rate=4000)]  # the last: over the model's 2 s (at a low rate: under the body limit)


def chat_cases(rng: random.Random) -> list[Case]:
    cases = []
    for field, values in WRONG.items():
        for value in values + [junk(rng, field) for _ in range(2)]:
            body = {**user("hi"), field: value}
            cases.append(as_json(f"chat {field}={value!r:.40}", CHAT, body, 404 if field == "model" and
                                 isinstance(value, str) else None))
    for _ in range(12):  # roles that do not exist
        role = rng.choice(["bot", "", "USER", "tool", "function", "System", "assistant ", "🤖", "model"])
        cases.append(as_json(f"role {role!r}", CHAT, {"model": "fuzz", "messages": [{"role": role, "content": "x"}]}))
    for k, parts in enumerate(BAD_PARTS):
        cases.append(as_json(f"part {k}", CHAT, user(parts)))
    for k, data in enumerate(corrupt_images(rng)):
        url = "data:image/png;base64," + b64(data)
        cases.append(as_json(f"corrupt image {k}", CHAT, user([{"type": "image_url", "image_url": {"url": url}}]),
                             400))
    for k, data in enumerate(corrupt_clips(rng)):
        part = {"type": "input_audio", "input_audio": {"data": b64(data), "format": rng.choice(["wav", "mp3"])}}
        cases.append(as_json(f"corrupt clip {k}", CHAT, user([part]), 400))
    tiny = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + b64(png(8, 8))}}
    cases += [
        as_json("five images", CHAT, user([tiny] * 5), 400),
        as_json("an image in an assistant turn", CHAT, {"model": "fuzz", "messages": [
            {"role": "assistant", "content": [tiny]}]}, 400),
        as_json("a special token", CHAT, user("see <image> here"), 400),
        as_json("a prompt over the context", CHAT, user("word " * 200), 400),
        as_json("a body over the limit", CHAT, user("x" * (LIMIT + 10)), 413),
        as_json("a wrong model", CHAT, {**user("hi"), "model": "gpt-4o"}, 404),
    ]
    return cases


def completion_cases(rng: random.Random) -> list[Case]:
    base = {"model": "fuzz", "prompt": "hi", "max_tokens": 1}
    cases = []
    for field, values in {**WRONG_COMPLETION, **{f: WRONG[f] for f in ("n", "temperature", "stop", "max_tokens")}
                          }.items():
        for value in values + [junk(rng, field)]:
            cases.append(as_json(f"completion {field}={value!r:.40}", COMPLETIONS, {**base, field: value}))
    cases.append(as_json("completion over the context", COMPLETIONS, {**base, "prompt": "y" * 500}, 400))
    return cases


def bad_json_cases(rng: random.Random) -> list[Case]:
    valid = json.dumps(user("hello there")).encode()
    bodies = [b"", b"null", b"1", b"[]", b'"text"', b"{", b"{not json", b"\xff\xfe{}", b"[" * 50_000,
              b'{"model": "fuzz", "messages": [{"role": "user", "content": "\xc3\x28"}]}', b"NaN", b"{}" * 3]
    bodies += [valid[:rng.randint(1, len(valid) - 1)] for _ in range(10)]  # cut off anywhere
    bodies += [rng.randbytes(rng.randint(1, 300)) for _ in range(10)]
    cases = []
    for k, body in enumerate(bodies):
        path = rng.choice([CHAT, COMPLETIONS])
        kind = rng.choice(["application/json", "text/plain", "application/x-www-form-urlencoded",
                           "multipart/form-data; boundary=xyz", None])
        cases.append(Case(f"bad JSON {k} ({kind})", path, body, {"Content-Type": kind} if kind else {}))
    return cases


def form(fields: dict, files: dict, boundary: str = "fuzzboundary") -> tuple[bytes, dict]:
    """A multipart/form-data body made by hand (so that it can be broken on purpose)."""
    out = []
    for name, value in fields.items():
        for v in value if isinstance(value, list) else [value]:
            out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{v}\r\n'.encode())
    for name, (filename, data) in files.items():
        out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                   f'Content-Type: application/octet-stream\r\n\r\n'.encode() + data + b"\r\n")
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def transcription_cases(rng: random.Random) -> list[Case]:
    clip = wav(0.3)
    ok_fields = {"model": "fuzz"}
    cases = []

    def add(what, fields, files, status=None, mangle=None):
        body, headers = form(fields, files)
        if mangle:
            body, headers = mangle(body, headers)
        cases.append(Case(f"transcription: {what}", TRANSCRIPTIONS, body, headers, status))

    add("no file", ok_fields, {}, 400)
    add("file as text", {**ok_fields, "file": "not a file"}, {}, 400)
    add("no model", {}, {"file": ("a.wav", clip)}, 400)
    add("another model", {"model": "whisper-1"}, {"file": ("a.wav", clip)}, 404)
    add("empty file", ok_fields, {"file": ("a.wav", b"")}, 400)
    add("two files", ok_fields, {"file": ("a.wav", clip), "other": ("b.wav", clip)}, 400)
    add("the file in another field", ok_fields, {"audio": ("a.wav", clip)}, 400)
    add("a field over 64 KiB", {**ok_fields, "language": "x" * 70_000}, {"file": ("a.wav", clip)})
    add("too many fields", {**ok_fields, **{f"f{i}": "v" for i in range(40)}}, {"file": ("a.wav", clip)}, 400)
    add("a body over the limit", ok_fields, {"file": ("a.wav", wav(2.0))}, 413)
    add("a recording over the limit", ok_fields, {"file": ("a.wav", wav(7200.5, rate=2))}, 400)
    add("a prompt", {**ok_fields, "prompt": "Names: Gia."}, {"file": ("a.wav", clip)}, 400)
    add("stream", {**ok_fields, "stream": "true"}, {"file": ("a.wav", clip)}, 400)
    add("word timestamps", {**ok_fields, "timestamp_granularities[]": ["segment", "word"]},
        {"file": ("a.wav", clip)}, 400)
    for fmt in ["xml", "diarized_json", "", "JSON", "srt "]:
        add(f"response_format {fmt!r}", {**ok_fields, "response_format": fmt}, {"file": ("a.wav", clip)}, 400)
    for t in ["hot", "-1", "1.5", "nan", "inf", ""]:
        add(f"temperature {t!r}", {**ok_fields, "temperature": t}, {"file": ("a.wav", clip)}, 400)
    for k, data in enumerate(corrupt_clips(rng)[:3] + [png(8, 8), b"ID3" + rng.randbytes(300)]):
        add(f"corrupt audio {k}", ok_fields, {"file": ("a.wav", data)}, 400)
    add("no boundary", ok_fields, {"file": ("a.wav", clip)}, 400,
        lambda b, h: (b, {"Content-Type": "multipart/form-data"}))
    add("another boundary", ok_fields, {"file": ("a.wav", clip)}, 400,
        lambda b, h: (b, {"Content-Type": "multipart/form-data; boundary=elsewhere"}))
    for k in range(12):  # cut off, or bytes changed, anywhere
        def cut(b, h, k=k):
            at = rng.randint(0, len(b) - 1)
            return (b[:at] if k % 2 else b[:at] + rng.randbytes(8) + b[at + 8:]), h
        if k % 2:
            add(f"cut off {k}", ok_fields, {"file": ("a.wav", clip)}, None, cut)
        else:  # changed bytes may leave a valid form: only the header's bytes are changed
            add(f"a broken header {k}", ok_fields, {"file": ("a.wav", clip)}, None,
                lambda b, h: (b[:30] + rng.randbytes(20) + b[50:], h))
    for kind in ["application/json", "text/plain", "application/x-www-form-urlencoded", None]:
        body = json.dumps({"model": "fuzz", "file": b64(clip)}).encode()
        cases.append(Case(f"transcription as {kind}", TRANSCRIPTIONS, body, {"Content-Type": kind} if kind else {},
                          400))
    return cases


def other_cases(rng: random.Random) -> list[Case]:
    cases = []
    for path in [CHAT, COMPLETIONS, TRANSCRIPTIONS, "/v1/models", "/v1/models/fuzz", "/metrics"]:
        method = "GET" if path.startswith("/v1/models") or path == "/metrics" else "POST"
        for headers in ({"Authorization": ""}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY},
                        {"Authorization": "Basic " + b64(KEY.encode())}):
            case = Case(f"auth {headers} {path}", path, b"{}", status=401, method=method)
            case.headers.update(headers)
            cases.append(case)
    for path in ["/v1/nothing", "/v1/chat", "/v2/completions", "/v1/models/other", "/v1/audio/translations",
                 "/" + "x" * 300, "/v1/chat/completions/extra"]:
        method = "GET" if path.startswith("/v1/models") else rng.choice(["GET", "POST"])
        cases.append(Case(f"path {path:.40}", path, b"{}", status=404, method=method))
    for method, path in [("GET", CHAT), ("GET", COMPLETIONS), ("GET", TRANSCRIPTIONS), ("DELETE", "/v1/models"),
                         ("PUT", "/metrics"), ("POST", "/health"), ("PATCH", CHAT)]:
        cases.append(Case(f"{method} {path}", path, b"{}", status=405, method=method))
    return cases


def all_cases(seed: int = 1234) -> list[Case]:
    rng = random.Random(seed)
    return (chat_cases(rng) + completion_cases(rng) + bad_json_cases(rng) + transcription_cases(rng)
            + other_cases(rng))


# ---------------------------------------------------------------------------------------------- tests
def test_there_are_hundreds_of_cases_and_the_same_each_run():
    a, b = all_cases(), all_cases()
    assert len(a) >= 200
    assert [(c.what, c.body) for c in a] == [(c.what, c.body) for c in b]


def test_every_malformed_request_gets_a_4xx_in_openai_shape(client):
    wrong = []
    for case in all_cases():
        r = client.request(case.method, case.path, content=case.body, headers=case.headers)
        try:
            error = r.json()["error"]
            shaped = (set(error) == {"message", "type", "param", "code"} and isinstance(error["message"], str)
                      and error["message"] and isinstance(error["type"], str))
        except (ValueError, KeyError, TypeError):
            shaped = False
        expected = r.status_code == case.status if case.status else 400 <= r.status_code < 500
        if not (expected and shaped):
            wrong.append(f"{case.what}: {r.status_code} {r.text[:200]}")
    assert not wrong, f"{len(wrong)} requests answered wrongly:\n" + "\n".join(wrong[:20])
    assert client.get("/health").json()["status"] == "ok"
    reply = client.post(CHAT, headers=AUTH, json={"model": "fuzz", "max_tokens": 2,
                                                  "messages": [{"role": "user", "content": "hi"}]})
    assert reply.status_code == 200 and reply.json()["usage"]["completion_tokens"] >= 1
    assert client.get("/health").json() == {"status": "ok", "running": 0, "waiting": 0}
