"""Fine-tuning through the trainer: resume, gradient accumulation, freezing, starting from a text GPT or an
omni run, manifest sources and their errors, learning rates per part, seeded audio augmentation."""
import json
import warnings

import pytest
import torch

from conftest import tiny_asr_config, tiny_config, tiny_omni_config
from scene_files import write_scene_dataset
from omnigpt import Config, ConfigError, load_checkpoint, train
from omnigpt.data.sources import DataWarning
from omnigpt.data.text import DataError


def _weights(run):
    return {k: v.clone() for k, v in load_checkpoint(run).model.state_dict().items()}


def test_finetune_resume_continues_exactly(tmp_path):
    cfg = tiny_omni_config(max_steps=12, save_interval=6)
    cfg.data.augment.rotate_degrees = 10.0  # seeded per row: resuming must redraw the same augmentations
    train(cfg, tmp_path / "straight", progress=False)
    train(cfg, tmp_path / "split", stop_at_step=6, progress=False)
    train(cfg, tmp_path / "split", resume=True, progress=False)
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "split")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_loss_of_a_step_does_not_depend_on_how_its_batch_is_split(tmp_path):
    whole = tiny_omni_config(max_steps=3, batch_size=8)
    halves = tiny_omni_config(max_steps=3, batch_size=4, grad_accum=2)
    train(whole, tmp_path / "whole", progress=False)
    train(halves, tmp_path / "halves", progress=False)
    rows = lambda run: [json.loads(x)["loss"] for x in (run / "metrics.jsonl").read_text().splitlines()  # noqa
                        if json.loads(x)["split"] == "train"]
    assert rows(tmp_path / "halves") == pytest.approx(rows(tmp_path / "whole"), rel=1e-4)


def test_start_from_a_text_gpt_and_train_only_the_projector(tmp_path, corpus_file):
    text = tiny_config(str(corpus_file), max_steps=4)
    text.model.position = "rope"
    text.model.block_size = 160
    train(text, tmp_path / "text", progress=False)
    cfg = tiny_omni_config(max_steps=4, init_from=str(tmp_path / "text"), freeze=["vision", "decoder"])
    torch.manual_seed(cfg.train.seed)
    train(cfg, tmp_path / "align", progress=False)
    before, after = _weights(tmp_path / "text"), _weights(tmp_path / "align")
    assert all(torch.equal(after["gpt." + k], v) for k, v in before.items())  # the decoder: the text GPT's
    ck = load_checkpoint(tmp_path / "align")
    from omnigpt.model.omni import OmniGPT
    torch.manual_seed(cfg.train.seed)  # the weights the run started from
    init = OmniGPT(ck.config, ck.model.image_token_id).state_dict()
    assert all(torch.equal(after[k], init[k]) for k in init if k.startswith("vision."))  # frozen at init
    assert any(not torch.equal(after[k], init[k]) for k in init if k.startswith("projector."))
    assert load_checkpoint(tmp_path / "align").tokenizer.vocab_size == 264  # the text GPT's tokenizer


def test_a_classifier_starts_from_an_omni_run(tmp_path):
    from conftest import tiny_classifier_config

    train(tiny_omni_config(max_steps=2), tmp_path / "omni", progress=False)
    cfg = tiny_classifier_config("early", modalities=["text", "image"], template="q: {text} {image} a:")
    cfg.audio = None
    cfg.data.sources, cfg.data.tokenizer = ["builtin:matching"], "byte"
    cfg.data.builtin_scenes = 64
    cfg.train = type(cfg.train)(max_steps=1, batch_size=4, lr=1e-6, min_lr=1e-7, warmup_steps=1,
                                eval_interval=1, eval_batches=1, save_interval=1, init_from=str(tmp_path / "omni"))
    train(cfg, tmp_path / "cls", progress=False)
    omni, cls = load_checkpoint(tmp_path / "omni"), load_checkpoint(tmp_path / "cls")
    assert cls.config.model == omni.config.model and cls.config.vision == omni.config.vision  # adopted
    for mine, theirs in (("text.blocks.0.attn.qkv.weight", "gpt.blocks.0.attn.qkv.weight"),
                         ("vision.out.weight", "vision.out.weight"),
                         ("project.image.net.0.weight", "projector.net.0.weight")):
        a, b = cls.model.state_dict()[mine], omni.model.state_dict()[theirs]
        assert (a - b).abs().max() < 1e-4, mine  # one step at lr 1e-6 from the omni model's weights
    cfg.train.max_steps = 2  # resuming builds the model it adopted, not the config's own sections
    assert train(cfg, tmp_path / "cls", resume=True, progress=False).step == 2


def test_a_jsonl_manifest_trains_and_bad_rows_are_reported(tmp_path):
    manifest = write_scene_dataset(tmp_path / "scenes", "train", 12, size=32)
    cfg = tiny_omni_config(max_steps=3)
    cfg.data.sources = [str(manifest)]
    result = train(cfg, tmp_path / "run", progress=False)
    assert result.step == 3 and result.val_loss is not None

    lines = manifest.read_text().splitlines()
    lines[4] = json.dumps({"image": "images/missing.png", "text": "a small red circle at the top"})
    broken = manifest.with_name("broken.jsonl")
    broken.write_text("\n".join(lines) + "\n")
    cfg.data.sources = [str(broken)]
    with pytest.raises(DataError, match=r"broken.jsonl line 5: image not found: .*missing.png"):
        train(cfg, tmp_path / "run2", progress=False)
    cfg.data.on_bad_file = "skip"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(cfg, tmp_path / "run3", progress=False)
    assert any(issubclass(w.category, DataWarning) and "skipped 1 of 12" in str(w.message) for w in caught)


def test_config_errors_name_the_problem():
    with pytest.raises(ConfigError, match="holds builtin:scenes but the config has no 'vision' section"):
        Config.from_dict({"data": {"sources": ["builtin:scenes"]}})
    with pytest.raises(ConfigError, match=r"an image takes 64 tokens, more than model.block_size \(32\)"):
        Config.from_dict({"model": {"block_size": 32}, "vision": {"channels": [8, 8, 8]}})
    with pytest.raises(ConfigError, match="vision.reduce_factor"):
        Config.from_dict({"vision": {"reduce": "pixel_shuffle", "reduce_factor": 3}})


def test_freeze_mistakes_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"'train.freeze\[1\]' must be one of .*got 'bogus'"):
        tiny_omni_config(freeze=["vision", "bogus"])  # from YAML
    cfg = tiny_omni_config()
    cfg.train.freeze = ["bogus"]  # as the command line sets it
    with pytest.raises(ConfigError, match=r"train.freeze: unknown part\(s\) \['bogus'\]"):
        cfg.validate()
    with pytest.raises(ConfigError, match="leaves nothing to train"):
        tiny_omni_config(freeze=["vision", "projector", "decoder"])
    with pytest.raises(ConfigError, match="fusion.mode is prefix"):
        tiny_omni_config(freeze=["cross_attention"])
    cfg = tiny_omni_config(max_steps=4, freeze=["vision"])
    train(cfg, tmp_path / "r", stop_at_step=2, progress=False)
    cfg.train.freeze = []
    with pytest.raises(ConfigError, match=r"the run being resumed trained with \['vision'\]"):
        train(cfg, tmp_path / "r", resume=True, progress=False)


def test_lr_scale_gives_a_part_its_own_rate_and_resumes_exactly(tmp_path):
    from omnigpt.model.omni import build_model
    from omnigpt.train.optim import build_optimizer, set_learning_rate

    cfg = tiny_omni_config(max_steps=4, save_interval=2, lr_scale={"vision": 0.25, "projector": 2})
    model = build_model(cfg, 300)
    optimizer = build_optimizer(model, cfg.train)
    set_learning_rate(optimizer, 1e-3)
    rate = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(rate) == len(list(model.parameters()))
    assert {rate[id(p)] for p in model.vision.parameters()} == {2.5e-4}
    assert {rate[id(p)] for p in model.projector.parameters()} == {2e-3}
    assert {rate[id(p)] for p in model.gpt.parameters()} == {1e-3}
    decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert all((id(p) in decayed) == (p.dim() >= 2) for p in model.parameters())

    train(cfg, tmp_path / "straight", progress=False)
    train(cfg, tmp_path / "split", stop_at_step=2, progress=False)
    train(cfg, tmp_path / "split", resume=True, progress=False)
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "split")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_lr_scale_mistakes_are_config_errors():
    with pytest.raises(ConfigError, match=r"'train.lr_scale.bogus' must be one of"):
        tiny_omni_config(lr_scale={"bogus": 1.0})
    with pytest.raises(ConfigError, match=r"train.lr_scale must be positive, got \{'vision': 0.0\}"):
        tiny_omni_config(lr_scale={"vision": 0})
    with pytest.raises(ConfigError, match="train.lr_scale names audio, but the model has no such part"):
        tiny_omni_config(lr_scale={"audio": 2.0})
    with pytest.raises(ConfigError, match="'train.lr_scale' must be a mapping"):
        tiny_omni_config(lr_scale=[0.5])


@pytest.mark.slow  # over 5 s
def test_audio_augmentation_is_seeded_and_resume_exact(tmp_path, speech_cache):
    import torch

    cfg = tiny_asr_config(speech_cache, max_steps=6, save_interval=3, freeze=["audio"])
    cfg.data.audio_augment.time_masks = 2
    cfg.data.audio_augment.freq_masks = 1
    cfg.data.audio_augment.noise_snr_db = [10.0, 30.0]
    train(cfg, tmp_path / "straight", progress=False)
    train(cfg, tmp_path / "split", stop_at_step=3, progress=False)
    train(cfg, tmp_path / "split", resume=True, progress=False)
    a = load_checkpoint(tmp_path / "straight").model.state_dict()
    b = load_checkpoint(tmp_path / "split").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    from omnigpt.model.omni import OmniGPT
    ck = load_checkpoint(tmp_path / "straight")
    torch.manual_seed(cfg.train.seed)
    init = OmniGPT(ck.config, ck.model.image_token_id, ck.model.audio_token_id).state_dict()
    assert all(torch.equal(a[k], init[k]) for k in init if k.startswith("audio_encoder."))  # frozen


def test_a_run_with_a_ctc_head_trains_reloads_and_starts_a_run_without_one(tmp_path, speech_cache):
    """audio.ctc_weight through the trainer: the run saves its CTC head and reloads with it, and a later run
    whose config has no CTC loss starts from it (the head is left behind, every other weight is taken)."""
    cfg = tiny_asr_config(speech_cache, max_steps=2, save_interval=2, eval_interval=2)
    cfg.audio.ctc_weight = 0.5
    train(cfg, tmp_path / "ctc", progress=False)
    ckpt = load_checkpoint(tmp_path / "ctc")
    assert ckpt.config.audio.ctc_weight == 0.5
    assert ckpt.model.ctc_head.out_features == ckpt.config.model.vocab_size + 1
    plain = tiny_asr_config(speech_cache, max_steps=1, save_interval=1, eval_interval=1, lr=1e-9, min_lr=1e-10,
                            init_from=str(tmp_path / "ctc"))
    train(plain, tmp_path / "plain", progress=False)
    after = load_checkpoint(tmp_path / "plain").model
    assert after.ctc_head is None
    before = ckpt.model.state_dict()
    for name, value in after.state_dict().items():
        assert (value - before[name]).abs().max() < 1e-5, name
