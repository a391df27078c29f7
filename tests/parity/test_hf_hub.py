"""`hf:ORG/NAME` names a model on the Hugging Face Hub: taken from Hugging Face's cache, fetched into it first
where there is a network. Tests never reach the network: the Hub is switched off and the cache is a folder
laid out as huggingface_hub lays it out."""
import shutil
import sys

import pytest
import torch

transformers = pytest.importorskip("transformers")
hub_constants = pytest.importorskip("huggingface_hub.constants")

from omnigpt.checkpoint import CheckpointError, load_checkpoint  # noqa: E402
from omnigpt.cli import main  # noqa: E402
from omnigpt.extras import MissingExtraError  # noqa: E402
from omnigpt.interop.folder import HFError  # noqa: E402
from omnigpt.interop.hub import local_folder  # noqa: E402

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache, with the Hub out of reach."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    return cache


def cache_model(cache, repo, source):
    """Put the folder `source` into the cache as the main revision of `repo`."""
    entry = cache / f"models--{repo.replace('/', '--')}"
    shutil.copytree(source, entry / "snapshots" / COMMIT)
    (entry / "refs").mkdir()
    (entry / "refs" / "main").write_text(COMMIT)


def test_a_cached_model_loads_by_its_hub_name(offline_cache, tmp_path, capsys):
    from test_hf_tokenizer import gpt2_style

    gpt2_style().save_pretrained(tmp_path / "src")
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=600, n_positions=64, n_embd=32,
                                                                 n_layer=2, n_head=4)).eval()
    model.save_pretrained(tmp_path / "src")
    cache_model(offline_cache, "org/tiny", tmp_path / "src")
    assert local_folder("hf:org/tiny") == offline_cache / "models--org--tiny" / "snapshots" / COMMIT
    assert local_folder("hf:org/tiny@" + COMMIT) == local_folder("hf:org/tiny")
    ckpt = load_checkpoint("hf:org/tiny", device="cpu")
    ids = torch.tensor([[5, 17, 99, 3]])
    with torch.no_grad():
        assert (ckpt.model(ids)[0][0] - model(ids).logits[0]).abs().max() < 1e-4
    main(["generate", "--checkpoint", "hf:org/tiny", "--prompt", "hello", "--max-new-tokens", "3", "--json"])
    assert capsys.readouterr().out.startswith('[{"prompt": "hello"')


def test_a_model_neither_cached_nor_reachable_is_named(offline_cache):
    with pytest.raises(HFError, match=r"hf:org/absent: not in the Hugging Face cache, and the Hub cannot be "
                                      r"reached from here: download it .*huggingface-cli download org/absent"):
        local_folder("hf:org/absent")
    with pytest.raises(CheckpointError, match="hf:org/absent: not in the Hugging Face cache"):
        load_checkpoint("hf:org/absent", device="cpu")
    with pytest.raises(HFError, match="expected hf:ORG/NAME or hf:ORG/NAME@REVISION"):
        local_folder("hf:just-a-name")


def test_without_huggingface_hub_the_extra_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(MissingExtraError, match=r"omnigpt\[hub\]"):
        local_folder("hf:org/tiny")
    assert str(local_folder("runs/x")) == "runs/x"  # a path needs no package
