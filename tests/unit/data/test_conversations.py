"""Conversations: rows read and checked, rendered by the built-in or a Jinja chat template, and cut into
prompts and replies so that the loss falls on the assistant's replies alone."""
import json

import pytest
import torch

from omnigpt import Config, Tokenizer
from omnigpt.config import IGNORE_INDEX
from omnigpt.data.conversations import ChatTemplate, read_conversations
from omnigpt.data.examples import ChatExamples, read_sources
from omnigpt.data.inputs import Inputs
from omnigpt.data.text import DataError

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
TALK = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Name a color."},
        {"role": "assistant", "content": "Blue."}]


def write(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def text_config(source, **data) -> Config:
    return Config.from_dict({"model": {"vocab_size": 300, "block_size": 128, "n_layer": 1, "n_head": 2,
                                       "n_embd": 32}, "data": {"sources": [str(source)], **data}})


def test_the_builtin_template_writes_roles_and_ends_replies_with_end_of_text():
    t = ChatTemplate(None, "<|eos|>")
    assert t.render(TALK) == ("system: Be brief.\nuser: Hi\nassistant: Hello!<|eos|>user: Name a color.\n"
                              "assistant: Blue.<|eos|>")
    assert t.prompt(TALK[:2]) == "system: Be brief.\nuser: Hi\nassistant:"
    assert t.pieces(TALK) == [("system: Be brief.\nuser: Hi\nassistant:", " Hello!"),
                              ("user: Name a color.\nassistant:", " Blue.")]


def test_a_jinja_template_is_cut_at_its_own_generation_prompt():
    t = ChatTemplate(CHATML, "<|im_end|>")
    pieces = t.pieces(TALK)
    assert pieces == [("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                       "<|im_start|>assistant\n", "Hello!"),
                      ("\n<|im_start|>user\nName a color.<|im_end|>\n<|im_start|>assistant\n", "Blue.")]
    # prompts, replies and the end-of-text after each reply give back the whole rendering
    assert "".join(p + r + "<|im_end|>" for p, r in pieces) + "\n" == t.render(TALK)
    other_end = ChatTemplate(CHATML, "</s>")  # a reply not closed by end-of-text keeps its markup
    assert other_end.pieces(TALK)[0][1] == "Hello!<|im_end|>\n"
    with pytest.raises(DataError, match="not valid Jinja"):
        ChatTemplate("{% for %}", "</s>")
    refusing = ChatTemplate("{{ raise_exception('roles must alternate') }}", "</s>")
    with pytest.raises(DataError, match="refuses this conversation: roles must alternate"):
        refusing.render(TALK)


def test_the_loss_covers_the_replies_and_nothing_else(tmp_path):
    tok = Tokenizer.byte_level()
    source = write(tmp_path / "c.jsonl", [{"messages": TALK}])
    (convo,) = read_conversations(source)
    inputs = Inputs(text_config(source), tok)
    batch = inputs.collate([inputs.features(ChatExamples([convo]).example(0))])
    targets = batch.targets[0].tolist()
    sequence = batch.ids[0].tolist() + [targets[-1]]  # the inputs and the last label: the whole sequence
    assert all(y in (IGNORE_INDEX, sequence[i + 1]) for i, y in enumerate(targets))  # labels are the next tokens
    learned = [y for y in targets if y != IGNORE_INDEX]
    text = ChatTemplate.of(tok).render(TALK)
    # the supervised tokens are exactly the characters after each "assistant:" up to and with end-of-text
    spans = [(text.index(" Hello!"), text.index("user: Name")), (text.index(" Blue."), len(text))]
    assert tok.decode(learned) == "".join(text[a:b] for a, b in spans) == " Hello!<|eos|> Blue.<|eos|>"
    assert tok.decode(batch.ids[0].tolist()) == text[:-len("<|eos|>")]


def test_content_parts_become_placeholders_and_files(tmp_path):
    from PIL import Image

    Image.new("RGB", (8, 8), "red").save(tmp_path / "a.png")
    row = {"messages": [{"role": "user", "content": [{"type": "text", "text": "What is"},
                                                      {"type": "image_url", "image_url": {"url": "a.png"}},
                                                      {"type": "text", "text": "?"}]},
                        {"role": "assistant", "content": [{"type": "text", "text": "A red square."}]}]}
    (convo,) = read_conversations(write(tmp_path / "c.jsonl", [row]))
    assert convo.messages[0]["content"] == "What is <image> ?" and convo.image == tmp_path / "a.png"
    assert convo.audio is None and convo.where == f"{tmp_path / 'c.jsonl'} line 1"


@pytest.mark.parametrize("row,message", [
    ('{"messages": [', "not valid JSON"),
    ({"text": "hi"}, "missing key 'messages'"),
    ({"messages": []}, "'messages' must be a non-empty list"),
    ({"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}, "unknown role 'robot'"),
    ({"messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": "y"}]}, "empty 'content'"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "no assistant message"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "image": "gone.png"}]},
                   {"role": "assistant", "content": "y"}]}, "image not found"),
    ({"messages": [{"role": "user", "content": [{"type": "video", "video": "v.mp4"}]},
                   {"role": "assistant", "content": "y"}]}, "unknown content part type 'video'"),
    ({"messages": [{"role": "user", "content": "say <image>"}, {"role": "assistant", "content": "y"}]},
     "special token <image>"),
])
def test_bad_rows_are_named_by_file_and_line(tmp_path, row, message):
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    path = write(tmp_path / "c.jsonl", [good, row])
    with pytest.raises(DataError, match=f"c.jsonl line 2: .*{message}"):
        read_conversations(path)
    with pytest.warns(UserWarning, match=f"skipped 1 of 2 examples:\n  .*line 2: .*{message}"):
        assert len(read_conversations(path, on_error="skip")) == 1


def test_a_text_model_reads_conversations_and_refuses_image_manifests(tmp_path):
    chats = write(tmp_path / "c.jsonl", [{"messages": TALK}] * 3)
    (examples,) = read_sources(text_config(chats), [str(chats)], "train")
    assert isinstance(examples, ChatExamples) and len(examples) == 3
    images = write(tmp_path / "i.jsonl", [{"image": "a.png", "text": "x"}])
    with pytest.raises(Exception, match="a text model fine-tunes on conversations"):
        read_sources(text_config(images), [str(images)], "train")
    with pytest.raises(Exception, match="holds builtin:scenes but the config has no 'vision' section"):
        text_config("builtin:scenes")


@pytest.mark.parametrize("loss_average", ["token", "example"])
def test_a_packed_batch_gives_each_example_its_loss_alone(tmp_path, loss_average):
    from omnigpt.data.batch import collate
    from omnigpt.model.gpt import GPT

    tok = Tokenizer.byte_level()
    cfg = text_config(write(tmp_path / "c.jsonl", [{"messages": TALK}]))
    cfg.model.position = "rope"
    inputs = Inputs(cfg, tok)
    talks = [TALK, TALK[1:3], [{"role": "user", "content": "?"}, {"role": "assistant", "content": "No."}],
             TALK[3:], TALK[:3]]
    rows = [inputs.features(ChatExamples([c]).example(0)) for c in
            (read_conversations(write(tmp_path / f"{i}.jsonl", [{"messages": t}]))[0] for i, t in enumerate(talks))]
    torch.manual_seed(0)
    model = GPT(cfg.model).eval()
    packed = collate(rows, tok.pad_id, tok.eos_id, 128, loss_average, pack=True)
    assert packed.ids.shape[0] < len(rows)  # fewer rows than examples: they shared rows
    with torch.no_grad():
        logits, loss = model(**packed.model_inputs())
        alone = [model(**collate([r], tok.pad_id, tok.eos_id, 128, loss_average).model_inputs()) for r in rows]
    # each example's per-token losses, packed and alone
    keep = packed.targets != IGNORE_INDEX
    packed_tokens = torch.nn.functional.cross_entropy(logits[keep], packed.targets[keep], reduction="none")
    single_tokens = []
    for r, (lg, _) in zip(rows, alone):
        one = collate([r], tok.pad_id, tok.eos_id, 128)
        k = one.targets != IGNORE_INDEX
        single_tokens.append(torch.nn.functional.cross_entropy(lg[k], one.targets[k], reduction="none"))
    torch.testing.assert_close(packed_tokens, torch.cat(single_tokens), rtol=0, atol=1e-5)
    if loss_average == "example":  # the batch loss: the mean of the examples' mean losses
        torch.testing.assert_close(loss, torch.stack([t.mean() for t in single_tokens]).mean(), rtol=0, atol=1e-5)
    else:
        torch.testing.assert_close(loss, torch.cat(single_tokens).mean(), rtol=0, atol=1e-5)
