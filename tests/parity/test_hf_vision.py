"""CLIP and SigLIP vision towers imported from Hugging Face folders give `transformers`' features within 1e-4,
each side starting from the same image file and preparing it with its own image processing (tiny random
towers with their preprocessor_config.json, saved once to a temporary folder)."""
import json
import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

transformers = pytest.importorskip("transformers")
Image = pytest.importorskip("PIL.Image")

from omnigpt.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from omnigpt.config import Config, ConfigError, ModelConfig, VisionConfig  # noqa: E402
from omnigpt.data.batch import EncodedExample, collate, expand_placeholders  # noqa: E402
from omnigpt.data.inputs import Inputs  # noqa: E402
from omnigpt.interop.clip import from_hf, load_vision, to_hf, vision_config  # noqa: E402
from omnigpt.interop.folder import HFError, read_weights  # noqa: E402
from omnigpt.model.omni import OmniGPT  # noqa: E402
from omnigpt.tokenizer import Tokenizer  # noqa: E402

# The image processors without torchvision (transformers 5's default ones need it).
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil  # noqa: E402
from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil  # noqa: E402

TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2, image_size=32,
             patch_size=8)
# name: (the model, its image processor); CLIP scales the shorter side to 40 and crops the centre 32 x 32.
MODELS = {
    "clip_vision_model": lambda: (transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**TOWER)),
                                  CLIPImageProcessorPil(size={"shortest_edge": 40},
                                                        crop_size={"height": 32, "width": 32})),
    "clip-gelu": lambda: (transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**TOWER, hidden_act="gelu")),
                          CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})),
    "clip": lambda: (transformers.CLIPModel(transformers.CLIPConfig(
        vision_config=TOWER, projection_dim=16, text_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=99,
            bos_token_id=0, eos_token_id=1, pad_token_id=1))),
        CLIPImageProcessorPil(size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32})),
    "siglip_vision_model": lambda: (transformers.SiglipVisionModel(transformers.SiglipVisionConfig(**TOWER)),
                                    SiglipImageProcessorPil(size={"height": 32, "width": 32})),
    "siglip": lambda: (transformers.SiglipModel(transformers.SiglipConfig(
        vision_config=TOWER, text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                               num_attention_heads=2, vocab_size=99))),
        SiglipImageProcessorPil(size={"height": 32, "width": 32}, image_mean=[0.4, 0.5, 0.6])),
}


@pytest.fixture(scope="module")
def towers(tmp_path_factory):
    """name -> (folder, the transformers vision model, its image processor), each saved once."""
    root = tmp_path_factory.mktemp("towers")
    out = {}
    for i, (name, build) in enumerate(MODELS.items()):
        torch.manual_seed(i)
        model, processor = build()
        with torch.no_grad():  # random biases and norms (zero and one at init): every tensor's mapping shows
            for n, p in model.named_parameters():
                if n.endswith("bias") or "norm" in n:
                    p.add_(torch.randn_like(p) * 0.1)
        model.eval().save_pretrained(root / name)
        processor.save_pretrained(root / name)
        vision = getattr(model, "vision_model", model)
        out[name] = root / name, vision, type(processor).from_pretrained(root / name)
    return out


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Two real PNG files, landscape (53 x 37) and portrait (37 x 53): noise with a drawn bar and square."""
    root = tmp_path_factory.mktemp("images")
    files = []
    for w, h in ((53, 37), (37, 53)):
        pixels = np.random.RandomState(w).randint(0, 256, (h, w, 3), dtype=np.uint8)
        pixels[5:12, :] = (250, 20, 20)
        pixels[-15:-5, -15:-5] = (10, 200, 30)
        Image.fromarray(pixels).save(root / f"{w}x{h}.png")
        files.append(root / f"{w}x{h}.png")
    return files


def expected_features(name, vision, pixels, feature_layer):
    """transformers' features: hidden_states[feature_layer] (CLIP: without the class token); SigLIP's last
    layer as its last_hidden_state (after post_layernorm)."""
    with torch.no_grad():
        out = vision(pixel_values=pixels, output_hidden_states=True)
    if name.startswith("clip"):
        return out.hidden_states[feature_layer][:, 1:]
    return out.last_hidden_state if feature_layer == -1 else out.hidden_states[feature_layer]


@pytest.mark.parametrize("name,feature_layer", [(n, -1) for n in MODELS] + [("clip_vision_model", -2),
                                                                            ("siglip_vision_model", -2),
                                                                            ("clip", 1)])
def test_features_from_a_file_match_transformers(towers, images, name, feature_layer):
    folder, vision, processor = towers[name]
    cfg, encoder = load_vision(folder, feature_layer=feature_layer)
    inputs = Inputs(Config(vision=cfg))
    for file in images:
        ours = inputs.image(file)
        theirs = processor(Image.open(file), return_tensors="pt").pixel_values
        assert (ours - theirs[0]).abs().max().item() < 1e-5, file.name
        with torch.no_grad():
            got = encoder(ours[None])
        expected = expected_features(name, vision, theirs, feature_layer)
        assert got.shape == expected.shape == (1, cfg.tokens, 32)
        assert (got - expected).abs().max().item() < 1e-4, file.name


def test_the_folders_settings_become_the_vision_section(towers):
    clip = vision_config(towers["clip_vision_model"][0], feature_layer=-2)
    assert (clip.encoder, clip.width, clip.n_layer, clip.layers_used(), clip.mlp_hidden, clip.activation) == \
        ("clip", 32, 3, 2, 64, "quick_gelu")
    assert (clip.resize, clip.resize_to, clip.post_norm, clip.tokens) == ("shortest_edge", 40, False, 16)
    assert clip.mean == pytest.approx([0.48145466, 0.4578275, 0.40821073])
    siglip = vision_config(towers["siglip"][0])
    assert (siglip.encoder, siglip.resize, siglip.norm_eps, siglip.activation, siglip.post_norm) == \
        ("siglip", "stretch", 1e-6, "gelu_tanh", True)
    assert siglip.mean == pytest.approx([0.4, 0.5, 0.6]) and siglip.std == pytest.approx([0.5, 0.5, 0.5])


def test_to_hf_gives_back_the_folders_tensors(towers):
    folder = towers["clip"][0]
    cfg = vision_config(folder, post_norm=True)
    weights = read_weights(folder)
    back = to_hf(from_hf(weights, cfg), cfg, prefix="vision_model.")
    assert back and all(torch.equal(t, weights[n]) for n, t in back.items())
    assert {n for n in weights if n.startswith("vision_model.")} == set(back)


def _copy(towers, name, dest):
    folder = towers[name][0]
    dest.mkdir()
    for f in folder.iterdir():
        (dest / f.name).write_bytes(f.read_bytes())
    return dest


def test_bad_folders_are_named(towers, tmp_path):
    folder = _copy(towers, "siglip_vision_model", tmp_path / "m")
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "model_type": "vit"}))
    with pytest.raises(HFError, match="model_type 'vit' is not supported for a vision tower; omnigpt reads clip, "
                                      "clip_vision_model, siglip, siglip_vision_model"):
        load_vision(folder)
    (folder / "config.json").write_text(json.dumps({**cfg, "intermediate_size": 48}))
    with pytest.raises(HFError, match=r"tensor encoder.layers.0.mlp.fc1.weight has shape \(64, 32\), the config "
                                      r"gives \(48, 32\)"):
        load_vision(folder)
    (folder / "config.json").write_text(json.dumps({**cfg, "hidden_act": "relu"}))
    with pytest.raises(HFError, match="hidden_act 'relu' is not supported"):
        load_vision(folder)
    (folder / "config.json").write_text(json.dumps(cfg))
    weights = load_file(folder / "model.safetensors")
    del weights["encoder.layers.1.self_attn.k_proj.bias"]
    save_file(weights, folder / "model.safetensors")
    with pytest.raises(HFError, match="lack the tensor 'encoder.layers.1.self_attn.k_proj.bias' that a siglip"):
        load_vision(folder)
    assert load_vision(folder, feature_layer=1)[0].layers_used() == 1  # the layers after it are not read
    processor = json.loads((folder / "preprocessor_config.json").read_text())
    (folder / "preprocessor_config.json").write_text(json.dumps({**processor, "resample": 2}))
    with pytest.raises(HFError, match="preprocessor_config.json: resample 2 is not bicubic"):
        vision_config(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({**processor, "size": {"height": 48, "width": 48}}))
    with pytest.raises(HFError, match=r"does not give the tower's 32 x 32 pixels"):
        vision_config(folder)


def test_a_full_clip_model_names_missing_vision_tensors_with_their_prefix(towers, tmp_path):
    folder = _copy(towers, "clip", tmp_path / "m")
    weights = load_file(folder / "model.safetensors")
    del weights["vision_model.pre_layrnorm.bias"]
    save_file(weights, folder / "model.safetensors")
    with pytest.raises(HFError, match="lack the tensor 'vision_model.pre_layrnorm.bias' that a clip vision tower"):
        load_vision(folder)


@pytest.mark.parametrize("change,message", [
    ({"encoder": "clip", "feature_layer": 0}, re.escape("vision.feature_layer must be a layer of the 4-layer "
                                                        "tower: -1 (the last) to -4, or 1 to 4, got 0")),
    ({"encoder": "siglip", "feature_layer": -5}, "vision.feature_layer must be a layer of the 4-layer tower"),
    ({"encoder": "vit", "feature_layer": -2}, "vision.feature_layer must be -1 for the vit encoder"),
    ({"encoder": "cnn", "post_norm": True}, "vision.post_norm must be false for the cnn encoder"),
    ({"encoder": "clip", "resize_to": 80}, "vision.resize_to must be unset unless vision.resize is shortest_edge"),
    ({"encoder": "clip", "resize": "shortest_edge", "resize_to": 32}, "vision.resize_to must be at least "
                                                                      "vision.image_size \\(64\\)"),
    ({"encoder": "clip", "patch_size": 7}, "must be a multiple of vision.patch_size \\(7\\)"),
    ({"encoder": "siglip", "norm_eps": 0.0}, "vision.norm_eps must be > 0"),
])
def test_bad_vision_settings_are_named(change, message):
    with pytest.raises(ConfigError, match=message):
        VisionConfig(**change).validate()


def test_an_omnigpt_with_a_pretrained_clip_tower_trains_saves_and_loads(towers, images, tmp_path):
    tok = Tokenizer.byte_level()
    vision = vision_config(towers["clip_vision_model"][0], feature_layer=-2)
    vision.reduce, vision.grid = "pool", 2
    cfg = Config(model=ModelConfig(vocab_size=272, block_size=64, n_layer=1, n_head=2, n_embd=32), vision=vision)
    cfg.validate()
    torch.manual_seed(0)
    model = OmniGPT(cfg, tok.image_id)
    model.vision.load_state_dict(load_vision(towers["clip_vision_model"][0], feature_layer=-2)[1].state_dict())
    inputs = Inputs(cfg, tok)
    prompt = expand_placeholders(tok.encode("<image> caption:"), tok.image_id, model.tokens_per_image)
    row = EncodedExample(prompt, tok.encode(" bars"), [inputs.image(images[0])])
    batch = collate([row], tok.pad_id, tok.eos_id, 64)
    _, loss = model(**batch.model_inputs())
    loss.backward()
    assert model.tokens_per_image == 4 and model.vision.patch.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        logits, _ = model(**batch.model_inputs())
    save_checkpoint(tmp_path / "run", 1, model, cfg, tok)
    loaded = load_checkpoint(tmp_path / "run", device="cpu", dtype="fp32")
    assert loaded.config.vision == cfg.vision
    with torch.no_grad():
        assert torch.equal(loaded.model(**batch.model_inputs())[0], logits)
