"""Chat fine-tuning from the command line: a tiny GPT learns 20 conversations by heart, replies to each as
its assistant did, through the same template in `generate --chat` and in `chat`."""
import json

import pytest

from omnigpt import Config, generate, load_checkpoint
from omnigpt.chat import ChatSession
from omnigpt.cli import main
from omnigpt.data.conversations import BUILTIN_TEMPLATE, ChatTemplate
from omnigpt.generate import GenerationConfig

pytestmark = pytest.mark.slow

NAMES = ["Ada", "Ben", "Cleo", "Dan", "Eve", "Finn", "Gia", "Hal", "Ivy", "Jon"]
COLORS = ["red", "blue", "green", "gold", "pink"]


def conversations() -> list[list[dict]]:
    """10 greetings that echo a name, 10 two-turn exchanges under a system message."""
    out = []
    for i in range(20):
        name, color = NAMES[i % 10], COLORS[i % 5]
        if i < 10:
            out.append([{"role": "user", "content": f"Hello, I am {name}."},
                        {"role": "assistant", "content": f"Nice to meet you, {name}!"}])
        else:
            out.append([{"role": "system", "content": "Answer in one word."},
                        {"role": "user", "content": f"{name} likes which color?"},
                        {"role": "assistant", "content": color},
                        {"role": "user", "content": "And the opposite?"},
                        {"role": "assistant", "content": f"not {color}"}])
    return out


def test_a_tiny_gpt_learns_twenty_conversations(tmp_path, capsys):
    data = tmp_path / "chats.jsonl"
    data.write_text("".join(json.dumps({"messages": m}) + "\n" for m in conversations()))
    Config.from_dict({
        "model": {"vocab_size": 300, "block_size": 96, "n_layer": 2, "n_head": 2, "n_embd": 64, "position": "rope"},
        "data": {"tokenizer": "bpe"},
        "train": {"seed": 1, "batch_size": 16, "max_steps": 300, "lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 10,
                  "eval_interval": 300, "save_interval": 300, "eval_batches": 1},
    }).save(tmp_path / "chat.yaml")
    main(["finetune", "--config", str(tmp_path / "chat.yaml"), "--data", str(data), "--val", str(data),
          "--out", str(tmp_path / "run"), "--quiet"])
    capsys.readouterr()
    ck = load_checkpoint(tmp_path / "run", device="cpu")
    assert ck.tokenizer.chat_template == BUILTIN_TEMPLATE  # kept, so that chat asks in the same words
    template = ChatTemplate.of(ck.tokenizer)
    for messages in conversations():
        for k, m in enumerate(messages):
            if m["role"] == "assistant":
                reply = generate(ck.model, ck.tokenizer, template.prompt(messages[:k]), max_new_tokens=32)
                assert reply.strip() == m["content"], messages[:k]

    main(["generate", "--checkpoint", str(tmp_path / "run"), "--chat", "--prompt", "Hello, I am Gia.", "--json"])
    assert json.loads(capsys.readouterr().out) == [{"prompt": "Hello, I am Gia.", "completion": "Nice to meet you, Gia!"}]
    session = ChatSession(ck.model, ck.tokenizer, GenerationConfig(max_new_tokens=16), system="Answer in one word.")
    assert "".join(session.send("Ivy likes which color?")).strip() == "gold"
    assert "".join(session.send("And the opposite?")).strip() == "not gold"  # the history is in the prompt
