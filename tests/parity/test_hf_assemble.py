"""An omni model assembled from pretrained parts (a tiny random Llama, CLIP tower and Whisper encoder saved as
Hugging Face folders) trains in LLaVA's two stages from the command line on built-in scenes and speech."""
import json

import pytest
import torch
from safetensors.torch import load_file

transformers = pytest.importorskip("transformers")

from omnigpt import Config  # noqa: E402
from omnigpt.checkpoint import list_checkpoints, load_checkpoint  # noqa: E402
from omnigpt.cli import _config_path, main  # noqa: E402
from omnigpt.interop.assemble import assemble  # noqa: E402
from omnigpt.interop.clip import load_vision  # noqa: E402
from omnigpt.interop.decoder import load_pretrained  # noqa: E402
from omnigpt.interop.folder import HFError  # noqa: E402
from omnigpt.interop.whisper import load_audio_encoder  # noqa: E402

from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil  # noqa: E402


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """Folders of a tiny Llama (with a tokenizer), CLIP vision tower and Whisper model (4 s window)."""
    from test_hf_tokenizer import llama_style

    root = tmp_path_factory.mktemp("parts")
    tok = llama_style()
    tok.save_pretrained(root / "lm")
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256)).save_pretrained(root / "lm")
    transformers.CLIPVisionModel(transformers.CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
        patch_size=8)).save_pretrained(root / "clip")
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        root / "clip")
    transformers.WhisperForConditionalGeneration(transformers.WhisperConfig(
        vocab_size=64, num_mel_bins=80, d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=48,
        decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=32, max_source_positions=200,
        max_target_positions=16, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=3,
        suppress_tokens=None, begin_suppress_tokens=None)).save_pretrained(root / "whisper")
    transformers.WhisperFeatureExtractor(feature_size=80, chunk_length=4).save_pretrained(root / "whisper")
    return root


def base_config(tmp_path, speech_cache, **train) -> Config:
    """Data and training for the tiny parts; audio.pool 4 cuts Whisper's 200 vectors a clip to 50."""
    cfg = Config.from_dict({
        "vision": {"encoder": "clip"}, "audio": {"pool": 4},  # the towers replace all but these choices
        "data": {"sources": ["builtin:scenes", "builtin:speech"], "tasks": ["caption", "vqa", "transcribe"],
                 "batch_mode": "per_source", "builtin_utterances": 8, "cache_dir": speech_cache},
        "train": {"seed": 3, "batch_size": 4, "lr": 3e-3, "min_lr": 3e-3, "warmup_steps": 0, "eval_interval": 1000,
                  "eval_batches": 1, **train},
    })
    cfg.save(tmp_path / "base.yaml")
    return cfg


def train_losses(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r["split"] == "train"]


def test_the_parts_keep_their_weights_and_the_towers_decide_the_inputs(parts, tmp_path, speech_cache):
    cfg, model, tok = assemble(parts / "lm", parts / "clip", parts / "whisper", base_config(tmp_path, speech_cache))
    assert (cfg.vision.encoder, cfg.vision.image_size, cfg.vision.tokens) == ("clip", 32, 16)
    assert (cfg.audio.encoder, cfg.audio.max_seconds, cfg.audio.pool, cfg.audio.pad_to_window) == \
        ("whisper", 4.0, 4, True)
    assert cfg.model.norm == "rmsnorm" and cfg.model.vocab_size == tok.vocab_size
    assert cfg.data.builtin_utterances == 8  # the base config's data
    _, lm, _ = load_pretrained(parts / "lm")
    for name, tensor in lm.state_dict().items():
        assert torch.equal(model.gpt.state_dict()[name], tensor), name
    for part, (_, loaded) in (("vision", load_vision(parts / "clip")), ("audio_encoder",
                                                                        load_audio_encoder(parts / "whisper"))):
        for name, tensor in loaded.state_dict().items():
            assert torch.equal(getattr(model, part).state_dict()[name], tensor), (part, name)
    shipped, _, _ = assemble(parts / "lm", parts / "clip", parts / "whisper", Config.load(_config_path("assemble")))
    assert (shipped.vision.feature_layer, shipped.vision.reduce, shipped.audio.pool) == (-2, "pool", 5)
    assert shipped.vision.encoder == "clip" and shipped.vision.image_size == 32  # the tower's, not the file's
    with pytest.raises(ValueError, match="needs a vision tower, an audio encoder or both"):
        assemble(parts / "lm")
    with pytest.raises(HFError, match="model_type 'llama' is not supported for an audio encoder"):
        assemble(parts / "lm", audio=parts / "lm")


@pytest.mark.slow  # about 10 s: two short fine-tuning runs
def test_llava_stages_from_the_command_line(parts, tmp_path, speech_cache, capsys):
    base_config(tmp_path, speech_cache, max_steps=8, save_interval=8)
    asm, s1, s2 = tmp_path / "asm", tmp_path / "stage1", tmp_path / "stage2"
    main(["assemble", "--lm", str(parts / "lm"), "--vision", str(parts / "clip"), "--audio", str(parts / "whisper"),
          "--config", str(tmp_path / "base.yaml"), "--out", str(asm)])
    told = json.loads(capsys.readouterr().out)
    assert told["next"] == f"omnigpt finetune --init-from {asm} --freeze vision,audio,decoder --out RUN"
    with pytest.raises(SystemExit):
        main(["assemble", "--lm", str(parts / "lm"), "--vision", str(parts / "clip"), "--out", str(asm)])
    assert "is not empty" in capsys.readouterr().err

    main(["finetune", "--init-from", str(asm), "--freeze", "vision,audio,decoder", "--out", str(s1), "--quiet"])
    before = load_file(list_checkpoints(asm)[-1] / "model.safetensors")
    after = load_file(list_checkpoints(s1)[-1] / "model.safetensors")
    for name, tensor in before.items():
        if name.startswith(("gpt.", "vision.", "audio_encoder.")):
            assert torch.equal(after[name], tensor), name  # frozen: bit-identical
    assert not torch.equal(after["projector.net.0.weight"], before["projector.net.0.weight"])
    stage1 = train_losses(s1)
    assert len(stage1) == 8 and sum(stage1[-3:]) < sum(stage1[:3])

    main(["finetune", "--init-from", str(s1), "--freeze", "vision,audio", "--out", str(s2), "--quiet"])
    final = load_file(list_checkpoints(s2)[-1] / "model.safetensors")
    assert not torch.equal(final["gpt.blocks.0.attn.qkv.weight"], after["gpt.blocks.0.attn.qkv.weight"])
    assert torch.equal(final["vision.patch.weight"], after["vision.patch.weight"])
    stage2 = train_losses(s2)
    assert sum(stage2[-3:]) < sum(stage1[-3:])
    run = load_checkpoint(s2, device="cpu")
    assert run.config.audio.encoder == "whisper" and run.config.vision.encoder == "clip"
