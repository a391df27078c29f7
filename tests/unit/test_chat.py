"""The chat session: history, attached images, dropping old turns, and the REPL's commands."""
import io

import pytest
import torch

from conftest import tiny_omni_config
from omnigpt.chat import ChatSession, repl
from omnigpt.data.builtin import scenes as builtin_scenes
from omnigpt.generate import GenerationConfig, GenerationError, generate
from omnigpt.model.omni import OmniGPT
from omnigpt.tokenizer import Tokenizer

TOK = Tokenizer.byte_level()


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return OmniGPT(tiny_omni_config("prefix"), TOK.image_id).eval()


def test_turns_carry_the_history_and_images(model):
    session = ChatSession(model, TOK, GenerationConfig(max_new_tokens=5))
    image = builtin_scenes.scene(0, 0, "test", 32).image
    first = "".join(session.send("caption:", images=[image]))
    assert first == generate(model, TOK, "<image> caption:", images=image, max_new_tokens=5)
    second = "".join(session.send("and more"))
    sep = TOK.decode([TOK.eos_id])
    assert second == generate(model, TOK, f"<image> caption:{first}{sep}and more", images=[image], max_new_tokens=5)
    assert [t.message for t in session.history] == ["<image> caption:", "and more"]
    with pytest.raises(GenerationError, match="2 <image> but 1 image"):
        list(session.send("<image> <image> two?", images=[image]))
    session.reset()
    assert session.history == []


def test_old_turns_are_dropped_whole_when_the_context_is_full(model):
    session = ChatSession(model, TOK, GenerationConfig(max_new_tokens=8))
    image = builtin_scenes.scene(0, 1, "test", 32).image
    list(session.send("look:", images=[image]))
    for k in range(12):  # 160-token context: these turns cannot all stay
        list(session.send(f"message number {k} with some words"))
    assert 0 < len(session.history) < 13
    assert session.history[-1].message == "message number 11 with some words"
    assert all(t.images == [] for t in session.history)  # the image went with its turn


def test_the_repl_reads_commands_and_messages(model, tmp_path):
    builtin_scenes.scene(0, 2, "test", 32).image.save(tmp_path / "s.png")
    lines = iter(["/help", "/image nowhere.png", f"/image {tmp_path / 's.png'}", "caption:", "/frobnicate",
                  "/reset", "hello", "/quit", "never read"])
    out = io.StringIO()
    repl(ChatSession(model, TOK, GenerationConfig(max_new_tokens=4)), lambda prompt: next(lines), out)
    text = out.getvalue()
    assert "/image PATH" in text and "error: image file not found: nowhere.png" in text
    assert f"(attached {tmp_path / 's.png'}" in text and "unknown command /frobnicate" in text
    assert "(conversation forgotten)" in text
    assert next(lines) == "never read"


def test_ctrl_c_stops_a_reply_or_leaves_at_the_prompt(model):
    def interrupted():
        yield "partial"
        raise KeyboardInterrupt

    session = ChatSession(model, TOK, GenerationConfig(max_new_tokens=4))
    session.send = lambda *a, **k: interrupted()
    lines = iter(["hello"])

    def read(prompt):
        for line in lines:
            return line
        raise KeyboardInterrupt  # Ctrl-C at the prompt

    out = io.StringIO()
    repl(session, read, out)
    assert "partial\n(reply stopped)" in out.getvalue()
