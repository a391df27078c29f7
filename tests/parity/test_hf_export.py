"""`omnigpt export`: a run's language model as a Hugging Face folder that `transformers` loads, with the same
logits (1e-4) and the same tokenizer ids; importing the export gives back the same tensors."""
import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from conftest import tiny_config  # noqa: E402
from omnigpt.checkpoint import load_checkpoint  # noqa: E402
from omnigpt.cli import main  # noqa: E402
from omnigpt.interop.decoder import load_decoder  # noqa: E402
from omnigpt.recipes.train import train  # noqa: E402

LAYOUTS = {
    "gpt2": {"position": "learned"},
    "llama": {"position": "rope", "norm": "rmsnorm", "mlp": "swiglu", "bias": False, "n_kv_head": 1,
              "mlp_hidden": 40, "tie_embeddings": False},
    "qwen2": {"position": "rope", "norm": "rmsnorm", "mlp": "swiglu", "bias": False, "qkv_bias": True},
    "gpt_neox": {"position": "rope"},  # the shipped configs' layout: RoPE, LayerNorm, GELU (tanh), biases
}


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_an_exported_run_loads_in_transformers_with_the_same_logits(name, tmp_path, corpus_file, capsys):
    cfg = tiny_config(str(corpus_file), max_steps=3, save_interval=3)
    for key, value in LAYOUTS[name].items():
        setattr(cfg.model, key, value)
    train(cfg, tmp_path / "run", progress=False)
    main(["export", "--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "hf")])
    assert "model.safetensors" in json.loads(capsys.readouterr().out)["files"]
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == name
    ours = load_checkpoint(tmp_path / "run", device="cpu")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    text = "The quick brown fox, 你好 🙂"
    ids = ours.tokenizer.encode(text)
    assert tok.encode(text, add_special_tokens=False) == ids
    with torch.no_grad():
        got, _ = ours.model(torch.tensor([ids]))
        expected = theirs(torch.tensor([ids])).logits
    assert (got - expected).abs().max().item() < 1e-4
    again = load_decoder(tmp_path / "hf").state_dict()
    for key, tensor in ours.model.state_dict().items():
        assert torch.equal(again[key], tensor), key


def test_a_layout_without_a_hugging_face_twin_is_refused_before_writing(tmp_path, corpus_file, capsys):
    cfg = tiny_config(str(corpus_file), max_steps=2, save_interval=2)
    cfg.model.position = "sinusoidal"  # fixed sine/cosine positions: no Hugging Face decoder computes that
    train(cfg, tmp_path / "run", progress=False)
    with pytest.raises(SystemExit) as exc:
        main(["export", "--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "hf")])
    assert exc.value.code == 1
    assert "has no Hugging Face architecture with the same computation" in capsys.readouterr().err
    assert not (tmp_path / "hf").exists()


@pytest.mark.parametrize("name", ["llama", "gpt_neox"])
def test_a_multimodal_model_exports_its_decoder_and_keeps_its_encoders_beside_it(name, tmp_path):
    from safetensors.torch import load_file

    from conftest import tiny_omni_config
    from omnigpt.interop.export import export
    from omnigpt.model.omni import build_model
    from omnigpt.tokenizer import Tokenizer

    cfg = tiny_omni_config()  # omni-tiny's decoder layout; the head untied so that it travels as its own tensor
    for key, value in {**LAYOUTS[name], "tie_embeddings": False}.items():
        setattr(cfg.model, key, value)
    tok = Tokenizer.byte_level()
    model = build_model(cfg, tok.image_id, tok.audio_id, tok).eval()
    export(model, tok, tmp_path, cfg.to_yaml())
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == name
    media = load_file(tmp_path / "omnigpt_media.safetensors")
    assert media and not any(k.startswith("gpt.") for k in media)
    assert all(torch.equal(media[k], v) for k, v in model.state_dict().items() if not k.startswith("gpt."))
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids = torch.tensor([tok.encode("a red circle")])
    with torch.no_grad():
        assert (model.gpt(ids)[0] - theirs(ids).logits).abs().max().item() < 1e-4
    again = load_decoder(tmp_path).state_dict()
    assert all(torch.equal(again[k], v) for k, v in model.gpt.state_dict().items())
    assert (tmp_path / "omnigpt_config.yaml").read_text() == cfg.to_yaml()
