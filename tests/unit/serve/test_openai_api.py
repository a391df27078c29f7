"""The HTTP server through the official `openai` client (and raw httpx for what a client would not send): a
tiny chat model trained for a few seconds, served in-process on a free loopback port."""
import base64
import io
import json
import threading
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")

from conftest import tiny_omni_config  # noqa: E402
from live_server import Running  # noqa: E402
from omnigpt import Config, Tokenizer, generate, load_checkpoint, train  # noqa: E402
from omnigpt.checkpoint import Checkpoint  # noqa: E402
from omnigpt.data.conversations import ChatTemplate  # noqa: E402
from omnigpt.model.omni import build_model  # noqa: E402
from omnigpt.serve import Limits, create_app  # noqa: E402

KEY = "sk-test"
GREETINGS = [[{"role": "user", "content": f"Hello, I am {name}."},
              {"role": "assistant", "content": f"Nice to meet you, {name}!"}]
             for name in ["Ada", "Ben", "Cleo", "Dan", "Eve", "Finn", "Gia", "Hal", "Ivy", "Jon"]]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 2-layer chat model after 40 steps on ten greetings: enough to be a real run folder with its chat
    template, not to know the replies (these tests check consistency, not learning)."""
    folder = tmp_path_factory.mktemp("chat")
    (folder / "chats.jsonl").write_text("".join(json.dumps({"messages": m}) + "\n" for m in GREETINGS))
    cfg = Config.from_dict({
        "model": {"vocab_size": 300, "block_size": 64, "n_layer": 2, "n_head": 2, "n_embd": 32, "position": "rope"},
        "data": {"tokenizer": "bpe", "sources": [str(folder / "chats.jsonl")]},
        "train": {"seed": 1, "batch_size": 8, "max_steps": 40, "lr": 3e-3, "warmup_steps": 5, "eval_interval": 40,
                  "save_interval": 40, "eval_batches": 1},
    })
    train(cfg, folder / "run", progress=False)
    return folder / "run"


@pytest.fixture(scope="module")
def served(run):
    server = Running(create_app(run, device="cpu", api_key=KEY, max_batch=4, max_queue=2,
                                limits=Limits(max_body_bytes=100_000)))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ckpt(run):
    return load_checkpoint(run, device="cpu")


def alone(ckpt, messages, **settings) -> str:
    """What `generate` writes for the messages through the model's chat template."""
    prompt = ChatTemplate.of(ckpt.tokenizer).prompt(messages)
    return generate(ckpt.model, ckpt.tokenizer, prompt, **settings).lstrip()


ASK = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hello, I am Gia."}]


def test_models_and_health(served):
    assert [m.id for m in served.client().models.list().data] == ["run"]
    assert httpx.get(served.url + "/health").json()["status"] == "ok"  # no key needed


def test_chat_is_generate_through_the_template(served, ckpt):
    out = served.client().chat.completions.create(model="run", messages=ASK, temperature=0, max_tokens=12)
    assert out.object == "chat.completion" and out.model == "run"
    assert out.choices[0].message.role == "assistant"
    assert out.choices[0].message.content == alone(ckpt, ASK, max_new_tokens=12)
    prompt_ids = ckpt.tokenizer.encode(ChatTemplate.of(ckpt.tokenizer).prompt(ASK))
    assert out.usage.prompt_tokens == len(prompt_ids)
    assert 1 <= out.usage.completion_tokens <= 12
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens


def test_streamed_text_is_the_whole_reply(served):
    client = served.client()
    whole = client.chat.completions.create(model="run", messages=ASK, temperature=0, max_tokens=20)
    chunks = list(client.chat.completions.create(model="run", messages=ASK, temperature=0, max_tokens=20,
                                                 stream=True, stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == whole.usage.total_tokens


def test_n_choices_and_stop_strings(served, ckpt):
    client = served.client()
    two = client.chat.completions.create(model="run", messages=ASK, n=2, temperature=1.0, seed=3, max_tokens=8)
    assert [c.index for c in two.choices] == [0, 1]
    reply = alone(ckpt, ASK, max_new_tokens=20)
    assert len(reply) > 6
    stop = reply[3:5]
    cut = client.chat.completions.create(model="run", messages=ASK, temperature=0, max_tokens=20, stop=[stop])
    assert cut.choices[0].message.content == reply[:reply.find(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_completions_continue_each_prompt(served, ckpt):
    prompts = ["Hello, I am", "Nice to"]
    out = served.client().completions.create(model="run", prompt=prompts, temperature=0, max_tokens=6)
    assert [c.text for c in sorted(out.choices, key=lambda c: c.index)] == \
        [generate(ckpt.model, ckpt.tokenizer, p, max_new_tokens=6) for p in prompts]
    assert out.choices[0].finish_reason in ("stop", "length")


def test_a_wrong_key_gets_401(served):
    with pytest.raises(openai.AuthenticationError) as caught:
        served.client("sk-wrong").models.list()
    assert caught.value.status_code == 401 and caught.value.body["type"] == "invalid_request_error"
    assert httpx.post(served.url + "/v1/chat/completions", json={}).status_code == 401  # no key at all


def test_a_full_queue_answers_429(served):
    engine = served.app.state.server.engine
    client = served.client()
    results = []

    def ask():
        results.append(client.completions.create(model="run", prompt="Hi", max_tokens=2, n=4))

    with engine.hold():  # each request takes all 4 rows: one has them, two wait in the queue, the fourth is refused
        waiting = [threading.Thread(target=ask) for _ in range(3)]
        for t in waiting:
            t.start()
        while engine.waiting < 3:
            time.sleep(0.01)
        with pytest.raises(openai.RateLimitError) as caught:
            client.completions.create(model="run", prompt="Hi", max_tokens=2)
    for t in waiting:
        t.join(30)
    assert caught.value.response.headers["retry-after"] == "1"
    assert caught.value.body["code"] == "queue_full"
    assert len(results) == 3


BAD = [  # (body, status, param)
    ("{not json", 400, None),
    ({"model": "run"}, 400, "messages"),
    ({"model": "run", "messages": []}, 400, "messages"),
    ({"model": "run", "messages": [{"role": "bot", "content": "hi"}]}, 400, "messages.0.role"),
    ({"model": "run", "messages": [{"role": "user", "content": [{"type": "video"}]}]}, 400, "messages.0.content.0"),
    ({"model": "run", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, 400, "temperature"),
    ({"model": "run", "messages": [{"role": "user", "content": "hi"}], "n": 0}, 400, "n"),
    ({"model": "run", "messages": [{"role": "user", "content": "hi"}], "n": 5}, 400, "n"),
    ({"model": "run", "messages": [{"role": "user", "content": "hi"}], "max_tokens": -1}, 400, "max_tokens"),
    ({"model": "run", "messages": [{"role": "user", "content": "hi"}], "stop": [""]}, 400, "stop"),
    ({"model": "run", "messages": [{"role": "user", "content": "hi"}], "logprobs": True}, 400, "logprobs"),
    ({"model": "run", "messages": [{"role": "user", "content": "an <image> here"}]}, 400, "messages.0.content"),
    ({"model": "run", "messages": [{"role": "user", "content": "word " * 100}]}, 400, "messages"),
    ({"model": "run", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]}, 400,
     "messages.0.content.0.image_url.url"),
    ({"model": "other", "messages": [{"role": "user", "content": "hi"}]}, 404, "model"),
    ({"model": "run", "messages": [{"role": "user", "content": "x" * 200_000}]}, 413, None),
    ([1, 2], 400, None),
]


@pytest.mark.parametrize("body,status,param", BAD, ids=range(len(BAD)))
def test_malformed_requests_get_4xx_in_openai_shape(served, body, status, param):
    content = body if isinstance(body, str) else json.dumps(body)
    r = httpx.post(served.url + "/v1/chat/completions", content=content,
                   headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["param"] == param


def test_unknown_paths_and_methods_answer_in_openai_shape(served):
    headers = {"Authorization": f"Bearer {KEY}"}
    assert httpx.get(served.url + "/v1/nothing", headers=headers).json()["error"]["message"]
    assert httpx.get(served.url + "/v1/chat/completions", headers=headers).status_code == 405


def test_a_client_that_leaves_cancels_its_request(served):
    engine = served.app.state.server.engine
    before = engine.cancelled
    with engine.hold():  # the request waits for the engine; its client goes away meanwhile
        with httpx.stream("POST", served.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                          json={"model": "run", "messages": ASK, "max_tokens": 40, "stream": True}) as r:
            assert r.status_code == 200
            assert next(r.iter_lines()).startswith("data: ")  # the role chunk comes before any token
    for _ in range(200):  # the server notices the client gone, and the engine drops the job unstarted
        if engine.cancelled > before:
            break
        time.sleep(0.01)
    assert engine.cancelled == before + 1 and engine.running == 0 and engine.waiting == 0


# ------------------------------------------------------------------------------------------------ images
def png(seed: int) -> bytes:
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    pixels = (torch.rand(32, 32, 3, generator=g) * 255).to(torch.uint8).numpy()
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def test_an_image_part_goes_where_its_placeholder_is(tmp_path):
    from PIL import Image

    tok = Tokenizer.byte_level()
    torch.manual_seed(0)
    model = build_model(tiny_omni_config(), tok.image_id, tok.audio_id).eval()
    with torch.no_grad():  # weights large enough that the image changes the words
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.3)
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "b.png").write_bytes(png(2))
    app = create_app(Checkpoint(Path("omni"), tiny_omni_config(), model, tok, 0), media_root=tmp_path / "media")
    server = Running(app)
    try:
        client = server.client()

        def ask(url):
            content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "caption:"}]
            return client.chat.completions.create(model="omni", messages=[{"role": "user", "content": content}],
                                                  temperature=0, max_tokens=10).choices[0].message.content

        a = ask("data:image/png;base64," + base64.b64encode(png(1)).decode())
        b = ask("b.png")
        with pytest.raises(openai.BadRequestError, match="outside the server's media root"):
            ask(str(tmp_path / "elsewhere.png"))
        with pytest.raises(openai.BadRequestError, match="not fetched"):
            ask("https://example.com/cat.png")
    finally:
        server.stop()
    prompt = ChatTemplate.of(tok).prompt([{"role": "user", "content": "<image> caption:"}])
    for answer, seed in ((a, 1), (b, 2)):
        image = Image.open(io.BytesIO(png(seed))).convert("RGB")
        assert answer == generate(model, tok, prompt, images=image, max_new_tokens=10).lstrip()
    assert a != b


def test_the_serve_command_passes_its_flags(monkeypatch, tmp_path):
    import omnigpt.serve
    from omnigpt.cli import main

    seen = {}
    monkeypatch.setattr(omnigpt.serve, "serve", lambda checkpoint, **options: seen.update(options, at=checkpoint))
    monkeypatch.setenv("OMNIGPT_API_KEY", "sk-env")
    main(["serve", "--checkpoint", "runs/chat", "--port", "9001", "--max-batch", "4", "--max-queue", "0",
          "--media-root", str(tmp_path), "--device", "cpu"])
    assert seen == {"at": "runs/chat", "host": "127.0.0.1", "port": 9001, "device": "cpu", "dtype": "auto",
                    "adapter": None, "api_key": "sk-env", "max_batch": 4, "max_queue": 0,
                    "media_root": str(tmp_path), "model_id": None}


def test_an_audio_part_is_heard_and_a_long_or_broken_one_refused():
    sf = pytest.importorskip("soundfile")
    from omnigpt.data.audio import load_audio

    tok = Tokenizer.byte_level()
    cfg = Config.from_dict({
        "model": {"vocab_size": 272, "block_size": 160, "n_layer": 2, "n_head": 2, "n_embd": 32, "position": "rope"},
        "audio": {"n_mels": 16, "width": 32, "n_layer": 1, "n_head": 2, "pool": 2, "max_seconds": 2.0},
        "data": {"tokenizer": "byte"}})
    torch.manual_seed(0)
    model = build_model(cfg, tok.image_id, tok.audio_id).eval()

    def wav(seconds: float) -> bytes:
        out = io.BytesIO()
        sf.write(out, torch.randn(int(16000 * seconds)).numpy() * 0.1, 16000, format="WAV")
        return out.getvalue()

    server = Running(create_app(Checkpoint(Path("ears"), cfg, model, tok, 0)))
    try:
        def ask(data: str):
            content = [{"type": "input_audio", "input_audio": {"data": data, "format": "wav"}},
                       {"type": "text", "text": "transcript:"}]
            return server.client().chat.completions.create(
                model="ears", messages=[{"role": "user", "content": content}], temperature=0,
                max_tokens=8).choices[0].message.content

        clip = wav(0.5)
        heard = ask(base64.b64encode(clip).decode())
        with pytest.raises(openai.BadRequestError, match="over the limit of 2 s"):
            ask(base64.b64encode(wav(3.0)).decode())
        with pytest.raises(openai.BadRequestError, match="base64"):
            ask("not base64!")
    finally:
        server.stop()
    prompt = ChatTemplate.of(tok).prompt([{"role": "user", "content": "<audio> transcript:"}])
    assert heard == generate(model, tok, prompt, audio=[load_audio(clip, 16000)], max_new_tokens=8).lstrip()
