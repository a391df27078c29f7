import re

import pytest
import yaml

from omnigpt import Config, ConfigError
from omnigpt.cli import _config_path


def test_yaml_round_trip(tmp_path):
    cfg = Config.from_dict({"model": {"n_layer": 3, "position": "rope"}, "train": {"lr": 1e-3, "precision": "bf16"}})
    cfg.save(tmp_path / "c.yaml")
    again = Config.load(tmp_path / "c.yaml")
    assert again == cfg
    assert again.model.n_layer == 3 and again.model.position == "rope" and again.train.precision == "bf16"


def test_unknown_key_is_named_with_its_file(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("train:\n  learning_rate: 0.001\n")
    with pytest.raises(ConfigError, match=r"typo.yaml: unknown key 'train.learning_rate'"):
        Config.load(path)


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match=r"'model.n_layer' must be an integer, got 'four'"):
        Config.from_dict({"model": {"n_layer": "four"}})
    with pytest.raises(ConfigError, match=r"'model.position' must be one of \['learned', 'sinusoidal', 'rope'\]"):
        Config.from_dict({"model": {"position": "alibi"}})


def test_exponent_without_a_dot_is_a_number(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 3e-4\n")  # YAML 1.1 reads this as a string
    assert Config.load(path).train.lr == 3e-4
    with pytest.raises(ConfigError, match="'train.lr' must be a number, got 'fast'"):
        Config.from_dict({"train": {"lr": "fast"}})


def test_integers_are_accepted_for_floats_but_not_booleans():
    assert Config.from_dict({"train": {"lr": 1}}).train.lr == 1.0
    with pytest.raises(ConfigError, match="'train.lr' must be a number"):
        Config.from_dict({"train": {"lr": True}})


def test_inconsistent_values_are_rejected():
    with pytest.raises(ConfigError, match="divisible"):
        Config.from_dict({"model": {"n_embd": 100, "n_head": 3}})


def test_malformed_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        Config.load(bad)
    with pytest.raises(ConfigError, match="config file not found"):
        Config.load(tmp_path / "nope.yaml")


def test_shipped_demo_config_loads():
    cfg = Config.load(_config_path("text-tiny"))
    assert cfg.data.corpus == ["builtin"]


# --------------------------------------------------------------------- values that pass the type check but not
# the model or the run: each refused by validation with the key, the value and what is allowed.
def _shipped(name: str) -> dict:
    return yaml.safe_load(_config_path(name).read_text())


def _with(base: str, changes: dict) -> dict:
    """A shipped config with `changes` ({"section.key": value}) applied; a None section drops it."""
    data = _shipped(base)
    for dotted, value in changes.items():
        section, _, key = dotted.partition(".")
        if not key:
            data.pop(section, None) if value is None else data.__setitem__(section, value)
        else:
            data.setdefault(section, {})[key] = value
    return data


BAD_VALUES = [  # (shipped config, changes, message fragment)
    ("text-tiny", {"train.lr": float("nan")}, "train.lr must be a finite number (not NaN or infinity), got nan"),
    ("text-tiny", {"train.lr": float("inf")}, "train.lr must be a finite number (not NaN or infinity), got inf"),
    ("text-tiny", {"train.lr": 0.0}, "train.lr must be > 0, got 0.0"),
    ("text-tiny", {"train.lr": -1e-3}, "train.lr must be > 0, got -0.001"),
    ("text-tiny", {"train.min_lr": -1e-5}, "train.min_lr must be in [0, train.lr]"),
    ("text-tiny", {"train.lr": 1e-4, "train.min_lr": 1e-3}, "train.min_lr must be in [0, train.lr] = [0, 0.0001]"),
    ("text-tiny", {"train.warmup_steps": -5}, "train.warmup_steps must be >= 0 (0: no warmup), got -5"),
    ("text-tiny", {"train.weight_decay": -0.1}, "train.weight_decay must be >= 0, got -0.1"),
    ("text-tiny", {"train.weight_decay": float("nan")}, "train.weight_decay must be a finite number"),
    ("text-tiny", {"train.beta2": 1.0}, "train.beta2 must be in [0, 1) (Adam's decay), got 1.0"),
    ("text-tiny", {"train.grad_clip": float("inf")}, "train.grad_clip must be a finite number"),
    ("text-tiny", {"train.max_minutes": 0}, "train.max_minutes must be > 0 minutes (or null: no limit), got 0.0"),
    ("text-tiny", {"train.max_minutes": float("nan")}, "train.max_minutes must be a finite number"),
    ("text-tiny", {"train.seed": 2 ** 70}, "train.seed must be an integer of 64 bits"),
    ("text-tiny", {"train.seed": -1}, "train.seed must be an integer in [0, 4294967295], got -1"),
    ("text-tiny", {"train.batch_size": 0}, "train.batch_size must be positive, got 0"),
    ("text-tiny", {"train.decay_fraction": float("nan")}, "train.decay_fraction must be a finite number"),
    ("text-tiny", {"model.dropout": float("nan")}, "model.dropout must be a finite number"),
    ("text-tiny", {"model.rope_theta": 0}, "model.rope_theta must be > 0 (rope's base wavelength), got 0.0"),
    ("text-tiny", {"model.norm_eps": -1e-5}, "model.norm_eps must be > 0"),
    ("text-tiny", {"model.n_embd": 100, "model.n_head": 3}, "model.n_embd (100) must be divisible by model.n_head (3)"),
    ("text-tiny", {"model.n_head": 0}, "model.n_head must be positive, got 0"),
    ("text-tiny", {"model.n_embd": 1_000_000}, "the model would have about 4.8e+13 parameters"),
    ("text-tiny", {"model.n_layer": 10 ** 9}, "in the decoder (model.n_embd 256, model.n_layer 1000000000"),
    ("text-tiny", {"model.vocab_size": 10 ** 40}, "model.vocab_size must be an integer of 64 bits"),
    ("text-tiny", {"train.batch_size": 10 ** 9}, "one batch (train.batch_size 1000000000 x model.block_size 256)"),
    ("text-tiny", {"data.val_fraction": float("nan")}, "data.val_fraction must be a finite number"),
    ("text-tiny", {"data.fim_rate": float("-inf")}, "data.fim_rate must be a finite number"),
    ("text-tiny", {"data.augment": {"brightness": -1.0}}, "data.augment.brightness must be >= 0 (0 is off), got -1.0"),
    ("text-tiny", {"data.augment": {"random_crop_scale": [0.5]}}, "data.augment.random_crop_scale must be [min, max]"),
    ("text-tiny", {"data.augment": {"hue": float("inf")}}, "data.augment.hue must be a finite number"),
    ("text-tiny", {"data.audio_augment": {"freq_masks": -2}}, "data.audio_augment.freq_masks must be >= 0"),
    ("text-tiny", {"data.audio_augment": {"noise_snr_db": [30, 10]}}, "noise_snr_db must be [low, high] with low <="),
    ("text-tiny", {"data.audio_augment": {"noise_snr_db": [10, float("nan")]}}, "noise_snr_db[1] must be a finite"),
    ("caption-shapes", {"vision.encoder": "vit", "vision.patch_size": 0}, "vision.patch_size must be positive, got 0"),
    ("caption-shapes", {"vision.encoder": "vit", "vision.n_head": 0}, "vision.n_head must be positive, got 0"),
    ("caption-shapes", {"vision.encoder": "vit", "vision.patch_size": 7}, "a multiple of vision.patch_size (7)"),
    ("caption-shapes", {"vision.std": [0, 0, 0]}, "vision.std must be three numbers > 0 (R, G, B)"),
    ("caption-shapes", {"vision.std": [0.5, 0.5]}, "vision.std must be three numbers > 0 (R, G, B): pixels are "
                                                   "divided by them, got [0.5, 0.5]"),
    ("caption-shapes", {"vision.mean": [0.5, 0.5, 0.5, 0.5]}, "vision.mean must be three numbers (R, G, B)"),
    ("caption-shapes", {"vision.mean": [0.5, float("nan"), 0.5]}, "vision.mean[1] must be a finite number"),
    ("caption-shapes", {"vision.channels": [-8, 16]}, "vision.channels[0] must be a positive number of channels"),
    ("caption-shapes", {"vision.channels": []}, "vision.channels is empty"),
    ("caption-shapes", {"vision.image_size": 100_000}, "vision.image_size must be at most 8192 pixels, got 100000"),
    ("caption-shapes", {"vision.dropout": 1.5}, "vision.dropout must be in [0, 1), got 1.5"),
    ("caption-shapes", {"vision.width": 10 ** 12}, "most of them in the projector (vision.width 1000000000000, "
                                                  "model.n_embd 256)"),
    ("caption-shapes", {"vision.channels": [32, 10 ** 6]}, "most of them in the vision (vision.channels [32, "),
    ("asr-speech", {"audio.max_seconds": float("inf")}, "audio.max_seconds must be a finite number"),
    ("asr-speech", {"audio.max_seconds": 0}, "audio.max_seconds must be positive, got 0.0"),
    ("asr-speech", {"audio.max_seconds": 1e12}, "most of them in the audio"),
    ("asr-speech", {"audio.max_seconds": 0.01}, "audio.n_fft must be fewer samples than audio.max_seconds holds"),
    ("asr-speech", {"audio.sample_rate": 10 ** 9}, "audio.sample_rate must be between 1000 and 384000 Hz"),
    ("asr-speech", {"audio.hop_length": 0}, "audio.hop_length must be positive, got 0"),
    ("asr-speech", {"audio.dropout": -0.1}, "audio.dropout must be in [0, 1)"),
    ("asr-speech", {"audio.width": 255}, "audio.width (255) must be divisible by audio.n_head (4)"),
    ("classify-builtin", {"classifier.dropout": float("nan")}, "classifier.dropout must be a finite number"),
    ("classify-builtin", {"classifier.fusion_heads": 0}, "classifier.fusion_heads must be positive, got 0"),
    ("omni-tiny", {"data.source_weights": [0.5, float("inf"), 0.1]}, "data.source_weights[1] must be a finite"),
    ("omni-tiny", {"train.lr_scale": {"vision": float("nan")}}, "train.lr_scale.vision must be a finite number"),
    ("omni-tiny", {"data.pack": True, "fusion": {"mode": "cross_attention"}}, "cross-attention, reads media by row"),
    ("classify-builtin", {"data.pack": True}, "a classifier, or cross-attention, reads media by row"),
]


@pytest.mark.parametrize("base, changes, fragment", BAD_VALUES,
                         ids=[f"{b}:{','.join(c)}={list(c.values())[-1]!r}"[:80] for b, c, _ in BAD_VALUES])
def test_values_that_break_the_model_or_the_run_are_refused(tmp_path, base, changes, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(_with(base, changes)))
    with pytest.raises(ConfigError) as info:
        Config.load(path)
    assert fragment in str(info.value)
    assert str(info.value).startswith(f"{path}: ")  # the file, then the key


@pytest.mark.parametrize("name", sorted(p.stem for p in _config_path("text-tiny").parent.glob("*.yaml")))
def test_every_shipped_config_is_valid(name):
    Config.load(_config_path(name))


BAD_FILES = [  # (file bytes, message fragment after the path)
    (b"model:\n  n_layer: 2\n  # caf\xe9\n", "not UTF-8 text (byte 0xe9 on line 3): save the config as UTF-8"),
    (b"\xff\xfe\x00m\x00o", "not UTF-8 text (byte 0xff on line 1)"),
    (b"model: [unclosed\n", "not valid YAML"),
    (b"train:\n  lr: 1e-3\n  lr: 2e-3\n", "not valid YAML at line 3, column 3: the key 'lr' is given twice in one "
                                        "mapping (the last would win silently)"),
    (b"train: {}\nmodel: {}\ntrain: {}\n", "not valid YAML at line 3, column 1: the key 'train' is given twice"),
    (b"model:\n\tn_layer: 2\n", "not valid YAML"),
    (b"", "holds no settings (it is empty or only comments): give a mapping of sections (model, data, train"),
    (b"# only a comment\n\n", "holds no settings"),
    (b"~\n", "holds no settings"),
    (b"- model\n- train\n", "expected a mapping of sections at the top level (model, data, train, vision, audio, "
                            "fusion, classifier), got list"),
    (b"42\n", "expected a mapping of sections at the top level"),
    (b"model: 3\n", "'model' must be a mapping, got 3"),
    (b"1: a\nfoo: b\n", "unknown key '1'"),
    (b"train:\n  lr: " + b"9" * 5000 + b"\n", "not a config omnigpt can read"),
    (b"train:\n  lr: 1e400\n", "train.lr must be a finite number (not NaN or infinity), got inf"),
    (b"model:\n  n_embd: .nan\n", "'model.n_embd' must be an integer, got nan"),
    (b"model:\n  position: rope\n  rope_scaling: &a {rope_type: linear, factor: 2, x: *a}\n", "holds itself"),
    (b"model:\n  rope_scaling: " + b"[" * 3000 + b"]" * 3000 + b"\n", "not a config omnigpt can read"),
    (b"train:\n  lr: !!float\n", "not a config omnigpt can read: IndexError"),
    (b"train:\n  init_from: !!timestamp x\n", "not a config omnigpt can read: AttributeError"),
    (b"train: !!python/object:os.system\n", "not valid YAML"),
    (b"model:\n  rope_scaling: {rope_type: [linear]}\n", "model.rope_scaling needs model.position: rope"),
    (b"model:\n  position: rope\n  rope_scaling: {rope_type: [linear]}\n", "rope_type ['linear'] is not supported"),
]


@pytest.mark.parametrize("content, fragment", BAD_FILES, ids=[repr(c[:24]) for c, _ in BAD_FILES])
def test_files_that_are_not_a_config_are_refused(tmp_path, content, fragment):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        Config.load(path)
    assert str(path) in str(info.value) and fragment in str(info.value)


def test_a_utf8_byte_order_mark_is_fine(tmp_path):
    path = tmp_path / "bom.yaml"
    path.write_bytes("\ufeffmodel:\n  n_layer: 3\n".encode("utf-8"))
    assert Config.load(path).model.n_layer == 3


def test_a_folder_is_named_as_a_folder(tmp_path):
    with pytest.raises(ConfigError, match=f"^{tmp_path} is a folder, not a config file: give a YAML file$"):
        Config.load(tmp_path)
    (tmp_path / "config.yaml").write_text("model:\n  n_layer: 2\n")
    with pytest.raises(ConfigError, match=r"is a folder, not a config file: give a YAML file \(the run's config is "):
        Config.load(tmp_path)


def test_the_parameter_estimate_is_close_to_the_built_model():
    from omnigpt.config import estimate_parameters
    from omnigpt.model import GPT
    from omnigpt.model.omni import OmniGPT

    for name in ("text-tiny", "caption-shapes", "asr-speech", "omni-tiny"):
        cfg = Config.load(_config_path(name))
        model = GPT(cfg.model) if cfg.vision is None and cfg.audio is None else OmniGPT(cfg, 1, 2)
        built = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
        assert 0.9 < sum(estimate_parameters(cfg).values()) / built < 1.1, name


def test_validation_after_a_change_in_code_refuses_it_too():
    cfg = Config.load(_config_path("text-tiny"))
    cfg.train.max_minutes = float("nan")  # as a flag would set it
    with pytest.raises(ConfigError, match="^train.max_minutes must be a finite number"):
        cfg.validate()


CLI_CASES = [  # (command, shipped config, changes or raw bytes, message fragment)
    ("pretrain", "text-tiny", {"train.lr": float("nan")}, "train.lr must be a finite number"),
    ("pretrain", "text-tiny", {"train.warmup_steps": -1}, "train.warmup_steps must be >= 0"),
    ("pretrain", "text-tiny", {"model.n_embd": 1_000_000}, "more than this machine's memory"),
    ("finetune", "caption-shapes", {"vision.encoder": "vit", "vision.patch_size": 0}, "vision.patch_size must be "
                                                                                       "positive, got 0"),
    ("finetune", "caption-shapes", {"vision.channels": [-8, 16]}, "vision.channels[0] must be a positive number"),
    ("finetune", "asr-speech", {"audio.max_seconds": float("inf")}, "audio.max_seconds must be a finite number"),
    ("pretrain", "text-tiny", b"", "holds no settings"),
    ("pretrain", "text-tiny", b"train:\n  lr: 0.001 # \xe9\n", "not UTF-8 text"),
]


@pytest.mark.parametrize("command, base, changes, fragment", CLI_CASES,
                         ids=[f"{c}:{fr[:40]}" for c, _, _, fr in CLI_CASES])
def test_the_cli_says_error_and_exits_2(tmp_path, capsys, command, base, changes, fragment):
    from omnigpt.cli import main

    path = tmp_path / "bad.yaml"
    path.write_bytes(changes if isinstance(changes, bytes) else yaml.safe_dump(_with(base, changes)).encode())
    with pytest.raises(SystemExit) as info:
        main([command, "--config", str(path), "--out", str(tmp_path / "run"), "--max-steps", "1", "--quiet"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}") and fragment in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_command_line_overrides_are_checked_like_the_yaml(tmp_path, capsys):
    from omnigpt.cli import main

    cfg = Config.load(_config_path("text-tiny")).with_overrides(
        ["train.lr=3e-4", "train.lora.rank=4", "data.corpus=[a.txt, b.txt]", "model.dropout=0"])
    assert (cfg.train.lr, cfg.train.lora.rank, cfg.train.lora.alpha) == (3e-4, 4, 16.0)
    assert cfg.data.corpus == ["a.txt", "b.txt"] and cfg.model.dropout == 0.0
    for item, message in [("train.lrr=1", "the command line: unknown key 'train.lrr'"),
                          ("train.lr=fast", "the command line: 'train.lr' must be a number, got 'fast'"),
                          ("trainlr", "override 'trainlr': expected section.key=value"),
                          ("model.n_layer.x=1", "override 'model.n_layer.x=1': model.n_layer is not a section"),
                          ("train.lora.rank=0", "train.lora.rank")]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            Config.load(_config_path("text-tiny")).with_overrides([item])
    with pytest.raises(SystemExit) as stopped:
        main(["pretrain", "--config", "text-tiny", "--out", str(tmp_path / "r"), "train.batch_size=-1"])
    assert stopped.value.code == 2 and "train.batch_size" in capsys.readouterr().err
