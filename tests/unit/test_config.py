import pytest

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
