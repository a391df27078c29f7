"""The web playground at `/`: served without the key, and driven in headless Chromium (Debian's `chromium`,
through Playwright) as a person would use it: enter the key, attach an image, send, watch the reply stream
in; record from a (fake) microphone and send the clip. Each reply must be the text the API gives for the
very request the page sent, and a screenshot of the page is checked."""
import base64
import io
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from live_server import Running  # noqa: E402
from omnigpt import Config, Tokenizer  # noqa: E402
from omnigpt.checkpoint import Checkpoint  # noqa: E402
from omnigpt.model.omni import build_model  # noqa: E402
from omnigpt.serve import create_app  # noqa: E402

KEY = "sk-play"
CHROMIUM = os.environ.get("OMNIGPT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
# Flags for a closed network (no background connections) and a fake microphone that plays a beep.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]


def omni_model():
    """A 2-layer GPT that takes images and audio, with weights large enough that its inputs change its words."""
    cfg = Config.from_dict({
        "model": {"vocab_size": 272, "block_size": 256, "n_layer": 2, "n_head": 2, "n_embd": 32, "position": "rope"},
        "vision": {"encoder": "cnn", "image_size": 32, "width": 32, "channels": [8, 16], "reduce": "pool",
                   "grid": 3},
        "audio": {"n_mels": 16, "width": 32, "n_layer": 1, "n_head": 2, "pool": 4, "max_seconds": 4.0},
        "data": {"tokenizer": "byte"}})
    tok = Tokenizer.byte_level()
    torch.manual_seed(0)
    model = build_model(cfg, tok.image_id, tok.audio_id).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.3)
    return Checkpoint(Path("omni"), cfg, model, tok, 0)


def png(path: Path) -> bytes:
    from PIL import Image

    g = torch.Generator().manual_seed(7)
    pixels = (torch.rand(32, 32, 3, generator=g) * 255).to(torch.uint8).numpy()
    Image.fromarray(pixels).resize((128, 128), Image.NEAREST).save(path)
    return path.read_bytes()


def test_the_page_is_served_without_the_key_and_the_model_card_says_what_it_takes():
    from fastapi.testclient import TestClient

    with TestClient(create_app(omni_model(), api_key=KEY)) as http:
        page = http.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "<title>omnigpt playground</title>" in page.text
        assert "connect-src 'self'" in page.headers["content-security-policy"]
        assert http.get("/v1/models").status_code == 401
        card = http.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"}).json()["data"][0]
    assert card["inputs"] == ["audio", "image", "text"]
    assert card["context_length"] == 256 and card["sample_rate"] == 16000 and card["max_audio_seconds"] == 4.0


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian: apt-get install chromium; or set "
                                             "OMNIGPT_CHROMIUM to a Chromium or Chrome binary)")
def test_chat_in_a_browser_with_an_image_and_a_recording(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    picture = png(tmp_path / "picture.png")
    (tmp_path / "notes.txt").write_text("not a sound")
    server = Running(create_app(omni_model(), api_key=KEY))
    sent = []
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1100, "height": 720})
            page.on("request", lambda r: sent.append(json.loads(r.post_data))
                    if r.url.endswith("/v1/chat/completions") else None)
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server.url + "/")
            page.wait_for_selector("#status:has-text('API key')")  # (selectors: the page's CSP forbids eval)
            page.fill("#key", KEY)
            page.dispatch_event("#key", "change")
            page.wait_for_selector("#model:has-text('takes')")
            assert page.text_content("#model").startswith("omni · takes audio, image, text · 256 tokens")
            page.fill("#temperature", "0")
            page.fill("#max-tokens", "12")

            page.set_input_files("#image-file", str(tmp_path / "picture.png"))
            page.wait_for_selector(".attachment img")
            page.fill("#prompt", "caption:")
            page.press("#prompt", "Enter")
            first = page.wait_for_selector(".message.assistant[data-done='1']")
            first_text = first.eval_on_selector("span", "s => s.textContent")
            first_chunks = int(first.get_attribute("data-chunks"))
            shot = tmp_path / "playground.png"
            page.screenshot(path=str(shot))

            page.set_input_files("#audio-file", str(tmp_path / "notes.txt"))
            page.wait_for_selector("#status:has-text('could not be decoded')")
            page.click("#record")
            page.wait_for_timeout(1200)
            page.click("#record")
            page.wait_for_selector(".attachment audio")
            page.fill("#prompt", "transcript:")
            page.click("#send")
            page.wait_for_selector(".message.assistant:nth-of-type(4)[data-done='1']")
            second_text = page.eval_on_selector(".message.assistant:nth-of-type(4) span", "s => s.textContent")
            failed = page.query_selector_all(".error")
            browser.close()
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as http:
            replies = [http.post("/v1/chat/completions", json={**body, "stream": False}).json() for body in sent]
    finally:
        server.stop()
    assert not errors and not failed

    # The first request: the picture as the page read it, then the text; the reply streamed in pieces.
    assert len(sent) == 2 and sent[0]["stream"] is True and sent[0]["temperature"] == 0
    assert sent[0]["max_tokens"] == 12
    image, text = sent[0]["messages"][0]["content"]
    assert image["image_url"]["url"] == "data:image/png;base64," + base64.b64encode(picture).decode()
    assert text == {"type": "text", "text": "caption:"}
    assert first_text == replies[0]["choices"][0]["message"]["content"] and len(first_text) > 1
    assert first_chunks >= 2

    # The second: the whole conversation, then the recording as a WAV at the model's rate.
    history = sent[1]["messages"]
    assert [m["role"] for m in history] == ["user", "assistant", "user"]
    assert history[1]["content"] == first_text
    clip = history[2]["content"][0]["input_audio"]
    assert clip["format"] == "wav"
    import soundfile as sf

    samples, rate = sf.read(io.BytesIO(base64.b64decode(clip["data"])))
    assert rate == 16000 and samples.ndim == 1 and 0.5 < len(samples) / rate < 4.0
    assert abs(samples).max() > 0.01  # the fake microphone's beep, not silence
    assert second_text == replies[1]["choices"][0]["message"]["content"]

    # The screenshot shows the page laid out, with the picture in the conversation.
    from PIL import Image

    screen = Image.open(shot).convert("RGB")
    assert screen.size == (1100, 720)
    assert len(screen.getcolors(maxcolors=1 << 20)) > 1000  # the random picture's colours, beside the page's few
