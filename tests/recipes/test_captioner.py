"""A tiny captioner fine-tuned until it knows its images by heart."""
import pytest

from conftest import tiny_omni_config
from omnigpt import generate, load_checkpoint, train
from omnigpt.data.builtin import scenes as builtin_scenes
from omnigpt.data.prompts import CAPTION_PROMPT

pytestmark = pytest.mark.slow


def test_a_tiny_captioner_learns_eight_images_by_heart(tmp_path):
    cfg = tiny_omni_config(max_steps=200, batch_size=16, lr=3e-3, min_lr=3e-4, warmup_steps=10,
                           eval_interval=200, save_interval=200)
    cfg.model.n_embd, cfg.model.n_layer = 64, 2
    cfg.model.vocab_size = 400
    cfg.data.tokenizer = "bpe"  # one token per word of the scene grammar: short targets
    cfg.data.builtin_scenes = 8
    cfg.data.tasks = ["caption"]
    train(cfg, tmp_path / "cap", progress=False)
    ck = load_checkpoint(tmp_path / "cap")
    scenes = builtin_scenes.scenes("train", 8, size=32)
    out = generate(ck.model, ck.tokenizer, [CAPTION_PROMPT] * 8, images=[s.image for s in scenes],
                   max_new_tokens=60)
    assert [o.strip() for o in out] == [s.caption for s in scenes]
