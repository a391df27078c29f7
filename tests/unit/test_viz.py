"""Attention maps: one panel per word of a caption."""
import pytest

from conftest import tiny_omni_config
from omnigpt import load_checkpoint, train
from omnigpt.data.builtin import scenes as builtin_scenes
from omnigpt.data.prompts import CAPTION_PROMPT
from omnigpt.viz import attention_figure, image_attention


@pytest.mark.parametrize("fusion", ["prefix", "cross_attention"])
def test_attention_map_has_one_panel_per_word(tmp_path, fusion):
    cfg = tiny_omni_config(fusion, max_steps=2)
    train(cfg, tmp_path / "run", progress=False)
    ck = load_checkpoint(tmp_path / "run")
    image = builtin_scenes.scene(0, 0, "test", size=32).image
    caption = "a small red circle"
    words = image_attention(ck.model, ck.tokenizer, image, CAPTION_PROMPT, ck.tokenizer.encode(" " + caption))
    assert [w.word for w in words] == caption.split()
    for w in words:
        assert w.grid.shape == (3, 3) and (w.grid >= 0).all() and w.grid.sum() <= 1.0 + 1e-5
    png = attention_figure(image, caption, words, tmp_path / "att.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
