"""Scoring a generator on the text tasks: the labels' probabilities by hand, the threshold of moderation, and
the flags that go together."""
import json
from types import SimpleNamespace

import pytest
import torch

from omnigpt import GPT, Config, ModelConfig, Tokenizer
from omnigpt.evaluate import EvalOptions, EvaluationError, evaluate_checkpoint, evaluate_text_task, label_probabilities
from omnigpt.data.text_tasks import TaskRow

TOK = Tokenizer.byte_level()


def tiny_gpt() -> GPT:
    torch.manual_seed(0)
    return GPT(ModelConfig(vocab_size=TOK.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=32)).eval()


def test_label_probabilities_are_the_labels_sequence_chances_normalized_over_the_classes():
    model = tiny_gpt()
    prompts, classes = ["text: hi\nlabel:", "text: a longer one\nlabel:"], ["ok", "toxic", "t"]
    got = label_probabilities(model, TOK, prompts, classes, batch_size=2)  # pairs split across batches
    expected = torch.zeros(2, 3)
    for i, p in enumerate(prompts):
        for j, c in enumerate(classes):
            prompt, label = TOK.encode(p), TOK.encode(" " + c) + [TOK.eos_id]
            ids = torch.tensor([prompt + label])
            logp = torch.log_softmax(model(ids[:, :-1])[0][0], -1)
            expected[i, j] = sum(logp[len(prompt) - 1 + k, t] for k, t in enumerate(label))
    assert torch.allclose(got, expected.softmax(-1), atol=1e-5)
    assert torch.allclose(got.sum(-1), torch.ones(2))


def test_the_threshold_flags_rows_of_each_class_and_decides_the_positive_prediction():
    model = tiny_gpt()
    rows = [TaskRow("classify", {"text": t, "label": y}, f"f line {i}")
            for i, (t, y) in enumerate([("a", "toxic"), ("b", "ok"), ("c", "ok"), ("d", "toxic")])]
    everything = evaluate_text_task(model, TOK, rows, "classify", positive="toxic", threshold=0.0)
    assert everything["flagged"] == {"ok": 1.0, "toxic": 1.0} and everything["accuracy"] == 0.5
    assert everything["confusion"] == [[0, 2, 0], [0, 2, 0]]  # rows: ok, toxic; columns: ok, toxic, other
    nothing = evaluate_text_task(model, TOK, rows, "classify", positive="toxic", threshold=1.0)
    assert nothing["flagged"] == {"ok": 0.0, "toxic": 0.0} and nothing["confusion"] == [[2, 0, 0], [2, 0, 0]]
    with pytest.raises(EvaluationError, match="--positive 'spam' is not a label of the data"):
        evaluate_text_task(model, TOK, rows, "classify", positive="spam")


def test_moderation_flags_go_with_text_classification(tmp_path):
    data = tmp_path / "t.jsonl"
    data.write_text(json.dumps({"source": "a", "target": "b"}) + "\n")
    cfg = Config.from_dict({"model": {"vocab_size": TOK.vocab_size, "block_size": 64, "n_layer": 1, "n_head": 2,
                                      "n_embd": 32}})
    ckpt = SimpleNamespace(model=tiny_gpt(), tokenizer=TOK, config=cfg, path=tmp_path)
    with pytest.raises(EvaluationError, match="--positive and --threshold score the labels"):
        evaluate_checkpoint(ckpt, EvalOptions("translate", str(data), positive="toxic"))
    with pytest.raises(EvaluationError, match="name it with --positive"):
        evaluate_checkpoint(ckpt, EvalOptions("classify", str(data), threshold=0.3))
    with pytest.raises(EvaluationError, match=r"--task qa needs --data: a JSONL file of \{\"context\""):
        evaluate_checkpoint(ckpt, EvalOptions("qa"))
    got = evaluate_checkpoint(ckpt, EvalOptions("translate", str(data), progress=False))
    assert set(got) == {"data", "bleu", "chrf", "count", "samples", "checkpoint"} and got["count"] == 1


def test_a_prompt_that_fills_the_context_is_named_by_its_row():
    rows = [TaskRow("summarize", {"document": "word " * 20, "summary": "s"}, "docs.jsonl line 7")]
    with pytest.raises(EvaluationError, match="docs.jsonl line 7: its prompt takes 1.. tokens"):
        evaluate_text_task(tiny_gpt(), TOK, rows, "summarize")
