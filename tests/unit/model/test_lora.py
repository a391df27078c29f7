"""LoRA: only the adapters train, the base stays bit-identical, adapters save apart and load onto their base,
merging gives the same function as a plain model."""
import pytest
import torch

from conftest import tiny_config, tiny_omni_config
from omnigpt import Config, Tokenizer, load_checkpoint, train
from omnigpt.checkpoint import CheckpointError, list_checkpoints
from omnigpt.cli import main
from omnigpt.config import ConfigError, LoraConfig
from omnigpt.model.gpt import GPT
from omnigpt.model.lora import ADAPTER_WEIGHTS, LoRALinear, apply_lora, merge
from omnigpt.model.omni import build_model

IDS = torch.tensor([[10, 72, 101, 108, 108, 111, 32, 119]])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(base run, LoRA run fine-tuned from it, stopped halfway and resumed) on the same corpus."""
    from conftest import CORPUS

    root = tmp_path_factory.mktemp("lora")
    (root / "corpus.txt").write_text(CORPUS)
    train(tiny_config(str(root / "corpus.txt"), max_steps=10, save_interval=10), root / "base", progress=False)
    cfg = tiny_config(str(root / "corpus.txt"), max_steps=12, save_interval=6, init_from=str(root / "base"))
    cfg.model.dropout = 0.0
    cfg.train.lora = LoraConfig(rank=2, alpha=4.0, targets=["*attn.qkv", "*attn.proj"])
    train(cfg, root / "lora", progress=False, stop_at_step=6)
    train(cfg, root / "lora", progress=False, resume=True)  # a LoRA run resumes with its adapters
    return root / "base", root / "lora"


def logits(ckpt):
    with torch.no_grad():
        return ckpt.model(IDS)[0]


def test_only_adapters_train_and_the_base_stays_bit_identical(runs):
    base_dir, lora_dir = runs
    base, tuned = load_checkpoint(base_dir, device="cpu"), load_checkpoint(lora_dir, device="cpu")
    wrapped = [n for n, m in tuned.model.named_modules() if isinstance(m, LoRALinear)]
    assert wrapped == ["blocks.0.attn.qkv", "blocks.0.attn.proj", "blocks.1.attn.qkv", "blocks.1.attn.proj"]
    for name, tensor in base.model.state_dict().items():
        assert torch.equal(tuned.model.state_dict()[name], tensor), name
    assert any(v.abs().max() > 0 for k, v in tuned.model.state_dict().items() if k.endswith("lora_b"))
    assert not torch.allclose(logits(tuned), logits(base))
    adapter = list_checkpoints(lora_dir)[-1] / ADAPTER_WEIGHTS
    assert adapter.stat().st_size < 0.05 * (list_checkpoints(base_dir)[-1] / "model.safetensors").stat().st_size


def test_adapters_load_onto_their_base_and_merge_to_the_same_logits(runs, tmp_path, capsys):
    base_dir, lora_dir = runs
    tuned = load_checkpoint(lora_dir, device="cpu")
    put_on = load_checkpoint(base_dir, device="cpu", adapter=lora_dir)
    torch.testing.assert_close(logits(put_on), logits(tuned), rtol=0, atol=0)
    unmerged = logits(tuned)
    merge(tuned.model)
    assert not any(isinstance(m, LoRALinear) for m in tuned.model.modules())
    torch.testing.assert_close(logits(tuned), unmerged, rtol=0, atol=1e-5)

    main(["merge-adapter", "--checkpoint", str(base_dir), "--adapter", str(lora_dir), "--out", str(tmp_path / "m")])
    merged = load_checkpoint(tmp_path / "m", device="cpu")
    assert merged.config.train.lora is None
    torch.testing.assert_close(logits(merged), unmerged, rtol=0, atol=1e-5)
    capsys.readouterr()
    main(["generate", "--checkpoint", str(base_dir), "--adapter", str(lora_dir), "--prompt", "The", "--json",
          "--max-new-tokens", "5"])
    assert capsys.readouterr().out.startswith('[{"prompt": "The"')


def test_mistakes_are_named(runs, tmp_path):
    base_dir, lora_dir = runs
    model = GPT(tiny_config("builtin").model)
    with pytest.raises(ConfigError, match=r"match no linear layer of this model; some of its layers: \['blocks"):
        apply_lora(model, LoraConfig(targets=["*nothing*"]))
    other = tiny_config("builtin", max_steps=2, save_interval=2)
    other.model.n_embd = 48
    train(other, tmp_path / "other", progress=False)
    with pytest.raises(CheckpointError, match=r"adapter.safetensors: blocks.0.attn.proj.lora_a has shape \(2, 32\), "
                                              r"this model needs \(2, 48\)"):
        load_checkpoint(tmp_path / "other", device="cpu", adapter=lora_dir)
    with pytest.raises(ConfigError, match="LoRA already keeps every weight fixed"):
        Config.from_dict({"vision": {}, "train": {"freeze": ["vision"], "lora": {}}})
    with pytest.raises(ConfigError, match="train.lora.rank"):
        Config.from_dict({"train": {"lora": {"rank": 0}}})


def test_the_encoders_of_a_multimodal_model_take_adapters_too():
    cfg = tiny_omni_config("prefix", encoder="vit")
    tok = Tokenizer.byte_level()
    model = build_model(cfg, tok.image_id, tok.audio_id, tok)
    wrapped = apply_lora(model, LoraConfig(rank=2, targets=["vision.blocks.*.attn.qkv", "gpt.blocks.0.mlp.fc"]))
    assert sorted(wrapped) == ["gpt.blocks.0.mlp.fc", "vision.blocks.0.attn.qkv"]
    assert {n.rsplit(".", 1)[-1] for n, p in model.named_parameters() if p.requires_grad} == {"lora_a", "lora_b"}
