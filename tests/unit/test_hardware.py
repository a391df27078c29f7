"""Precision and device from the hardware: what `auto` picks, warnings, the run folder's record, old configs."""
import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from omnigpt import Config, ConfigError, hardware, load_checkpoint
from omnigpt.hardware import HardwareError, choose_precision, resolve_device, resolve_dtype
from omnigpt.train.state import load_trainer_state
from omnigpt.train.trainer import step_shortfall, train

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_native_bf16(monkeypatch):
    """This machine, as one whose CPU emulates bf16 (most laptops; AVX2-only servers)."""
    monkeypatch.delenv(hardware.ENV_PRECISION, raising=False)
    monkeypatch.setattr(hardware, "cpu_bf16_pays", lambda: False)
    monkeypatch.setattr(hardware, "_cpu_flags", lambda: {"avx2"})
    monkeypatch.setattr(hardware, "cpu_bf16_slowdown", lambda: 37.4)
    monkeypatch.setattr(hardware, "_warned", set())


def test_auto_picks_fp32_on_a_cpu_without_native_bf16(no_native_bf16):
    chosen = choose_precision("auto", "cpu")
    assert chosen.name == "fp32" and chosen.dtype == torch.float32 and not chosen.needs_scaler
    assert "no native bf16" in chosen.describe()


def test_auto_picks_bf16_on_a_cpu_where_bf16_measures_faster(monkeypatch):
    monkeypatch.delenv(hardware.ENV_PRECISION, raising=False)
    monkeypatch.setattr(hardware, "cpu_bf16_pays", lambda: True)
    monkeypatch.setattr(hardware, "cpu_bf16_slowdown", lambda: 0.42)
    chosen = choose_precision("auto", "cpu")
    assert chosen.name == "bf16" and "2.4x as fast as fp32" in chosen.reason


def test_auto_picks_fp32_where_native_bf16_is_still_slower(monkeypatch):
    """A Xeon with AVX512-BF16 but no AMX: bf16 matmuls measured 1.65x the time of fp32's."""
    monkeypatch.delenv(hardware.ENV_PRECISION, raising=False)
    monkeypatch.setattr(hardware, "_cpu_flags", lambda: {"avx2", "avx512_bf16"})
    monkeypatch.setattr(hardware, "cpu_bf16_slowdown", lambda: 1.65)
    monkeypatch.setattr(hardware, "cpu_bf16_pays", hardware.cpu_bf16_pays.__wrapped__)
    chosen = choose_precision("auto", "cpu")
    assert chosen.name == "fp32" and "1.6x the time of fp32" in chosen.reason


def test_the_measurement_takes_well_under_a_second():
    import time

    hardware.cpu_bf16_slowdown.cache_clear()
    t0 = time.perf_counter()
    slowdown = hardware.cpu_bf16_slowdown()
    assert time.perf_counter() - t0 < 1.0 and 0 < slowdown < float("inf")


@pytest.mark.parametrize("flags, slowdown, pays", [
    ({"avx2"}, None, False),  # no bf16 instructions: emulated, not even measured
    ({"avx2", "avx512_bf16"}, 0.42, True),  # a Zen 4
    ({"avx2", "avx512_bf16"}, 1.65, False),  # a Xeon without AMX
    ({"amx_bf16"}, 0.3, True),
    (None, 0.6, True),  # flags unreadable (macOS, ARM): the measurement decides
    (None, 40.0, False),
])
def test_whether_bf16_pays_follows_the_flags_and_the_measurement(monkeypatch, flags, slowdown, pays):
    def measured() -> float:
        assert slowdown is not None, "measured although the flags already said no"
        return slowdown

    monkeypatch.setattr(hardware, "_cpu_flags", lambda: flags)
    monkeypatch.setattr(hardware, "cpu_bf16_slowdown", measured)
    assert hardware.cpu_bf16_pays.__wrapped__() is pays


def test_explicit_bf16_on_an_emulating_cpu_warns_once_with_the_measured_slowdown(no_native_bf16):
    with pytest.warns(RuntimeWarning, match=r"no native bf16 .* 37x slower than fp32"):
        assert choose_precision("bf16", "cpu").name == "bf16"  # still honoured
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        choose_precision("bf16", "cpu")
    assert not seen


def test_the_environment_stands_in_for_auto_but_not_for_an_explicit_choice(no_native_bf16, monkeypatch):
    monkeypatch.setenv(hardware.ENV_PRECISION, "fp16")
    assert choose_precision("auto", "cpu").name == "fp16"
    assert choose_precision("fp32", "cpu").name == "fp32"
    monkeypatch.setenv(hardware.ENV_PRECISION, "fp64")
    with pytest.raises(HardwareError, match="OMNIGPT_PRECISION='fp64'"):
        choose_precision("auto", "cpu")


def test_the_run_folder_records_what_auto_chose(no_native_bf16, tiny, tmp_path, capsys):
    cfg = tiny(max_steps=2, save_interval=2, precision="auto")
    cfg.data.pack = "auto"
    result = train(cfg, tmp_path / "run", progress=False)
    assert result.precision == "fp32"
    assert "precision: fp32 (auto: this CPU has no native bf16" in capsys.readouterr().err
    for folder in (tmp_path / "run", result.checkpoint):
        recorded = yaml.safe_load((folder / "config.yaml").read_text())
        assert recorded["train"]["precision"] == "fp32" and recorded["data"]["pack"] is True


@pytest.mark.parametrize("bf16_pays_below, chosen", [(0.0, "fp32"), (100.0, "bf16")])
def test_auto_times_the_runs_own_model_where_bf16_matmuls_are_fast(monkeypatch, tiny, tmp_path, capsys,
                                                                  bf16_pays_below, chosen):
    """A Xeon with AMX: its bf16 matmuls are fast, yet a step of the demo's model was not; the run's own model
    decides, leaves no trace in the training (the same losses as asking for that precision), and the run folder
    records the choice with the packing that goes with it."""
    monkeypatch.delenv(hardware.ENV_PRECISION, raising=False)
    monkeypatch.setattr(hardware, "cpu_bf16_pays", lambda: True)
    monkeypatch.setattr(hardware, "cpu_bf16_slowdown", lambda: 0.42)
    monkeypatch.setattr(hardware, "STEP_BF16_PAYS", bf16_pays_below)  # 0: bf16 never pays; 100: always
    runs = {}
    for name, precision in (("auto", "auto"), ("asked", chosen)):
        cfg = tiny(max_steps=3, save_interval=3, eval_interval=3, precision=precision)
        cfg.data.pack = "auto"
        runs[name] = train(cfg, tmp_path / name, progress=False)
    err = capsys.readouterr().err
    assert "precision: bf16 (auto: a bf16 matmul measured 2.4x as fast" in err
    assert re.search(rf"precision: {chosen} \(auto: this model's training step measured [0-9.]+ s in bf16 and", err)
    assert runs["auto"].precision == chosen and runs["auto"].train_loss == runs["asked"].train_loss
    for folder in (tmp_path / "auto", runs["auto"].checkpoint):
        recorded = yaml.safe_load((folder / "config.yaml").read_text())
        assert recorded["train"]["precision"] == chosen and recorded["data"]["pack"] is (chosen == "fp32")


def test_pack_auto_packs_where_the_run_trains_in_fp32_and_the_model_can():
    from conftest import tiny_classifier_config, tiny_omni_config

    for precision, packs in (("fp32", True), ("bf16", False), ("fp16", False)):
        cfg = tiny_omni_config()
        cfg.data.pack = "auto"
        cfg.resolve_pack(precision)
        assert cfg.data.pack is packs
    for cfg in (tiny_omni_config("cross_attention"), tiny_classifier_config()):
        cfg.data.pack = "auto"
        cfg.validate()  # auto is fine for any model
        cfg.resolve_pack("fp32")
        assert cfg.data.pack is False
    explicit = tiny_omni_config()
    explicit.data.pack = True
    explicit.resolve_pack("bf16")
    assert explicit.data.pack is True
    for bad in ("sometimes", 1):  # 1 == True in Python, but a config that says 1 meant something else
        with pytest.raises(ConfigError, match=rf"'data.pack' must be one of \[False, True, 'auto'\], got {bad!r}"):
            Config.from_dict({"data": {"pack": bad}})


def test_old_configs_with_bf16_still_load(tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text("model: {n_layer: 2}\ntrain: {bf16: true, lr: 1.0e-3}\n")
    assert Config.load(old).train.precision == "bf16"
    old.write_text("train: {bf16: false}\n")
    assert Config.load(old).train.precision == "fp32"
    old.write_text("train: {bf16: true, precision: fp32}\n")
    with pytest.raises(ConfigError, match="contradicts 'train.precision: fp32'"):
        Config.load(old)


def test_every_shipped_config_leaves_precision_to_the_hardware():
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        assert Config.load(path).train.precision == "auto", path.name


def test_fp16_trains_with_a_gradient_scaler_and_resumes_exactly(tiny, tmp_path):
    cfg = lambda: tiny(max_steps=4, save_interval=2, precision="fp16")  # noqa: E731
    whole = train(cfg(), tmp_path / "whole", progress=False)
    train(cfg(), tmp_path / "split", stop_at_step=2, progress=False)
    resumed = train(cfg(), tmp_path / "split", resume=True, progress=False)
    assert whole.precision == "fp16" and resumed.step == 4
    assert resumed.train_loss == whole.train_loss
    assert load_trainer_state(resumed.checkpoint, tensors=False)["meta"]["grad_scaler"]["scale"] > 0


def test_a_time_budget_far_short_of_the_recipe_says_why_and_what_to_change(no_native_bf16):
    cfg = Config.from_dict({"train": {"max_minutes": 7.5, "tuned_steps_per_minute": 320}}).train
    note = step_shortfall(cfg, 22, 450.0, "bf16", "cpu", ran_out=True)
    assert "22 steps in 7.5 minutes (3 a minute), 1% of the 320 a minute" in note
    assert "bf16 is slow on this CPU" in note and "precision: auto" in note
    assert re.search(r"in 8 minutes, give it about 818 ", note)
    slower = step_shortfall(cfg, 1211, 450.0, "fp32", "cpu", ran_out=True)  # a 2-core Xeon in fp32: 51%
    assert "(161 a minute), 50% of the 320" in slower and "bf16" not in slower and "about 15 " in slower
    assert step_shortfall(cfg, 2000, 450.0, "fp32", "cpu", ran_out=True) is None  # 83% of the speed: fine
    assert step_shortfall(cfg, 22, 450.0, "fp32", "cpu", ran_out=False) is None  # it reached max_steps
    assert step_shortfall(cfg, 2, 30.0, "fp32", "cpu", ran_out=True) is None  # too short to judge


def test_devices_this_machine_lacks_are_named(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto").type in ("cpu", "mps")
        with pytest.raises(HardwareError, match="no CUDA GPU"):
            resolve_device("cuda:0")
    with pytest.raises(HardwareError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(HardwareError, match="unknown dtype 'int8'"):
        resolve_dtype("int8", torch.device("cpu"))


def test_train_device_and_the_environment_choose_where_to_train(tiny, tmp_path, monkeypatch):
    from omnigpt.train import distributed

    monkeypatch.setenv(hardware.ENV_DEVICE, "cpu")  # stands in for auto, as the test suite's own setting does
    assert resolve_device("auto") == torch.device("cpu") and distributed.setup("auto").device == "cpu"
    with pytest.raises(HardwareError, match="mps is for inference"):
        distributed.setup("mps")
    monkeypatch.setenv(hardware.ENV_DEVICE, "mps")
    with pytest.raises(HardwareError, match="mps is for inference"):
        distributed.setup("auto")
    assert distributed.setup("cpu").device == "cpu"  # an explicit choice wins over the environment
    monkeypatch.delenv(hardware.ENV_DEVICE)
    if not torch.cuda.is_available():
        assert distributed.setup("auto").device == "cpu"
        with pytest.raises(HardwareError, match="no CUDA GPU"):
            distributed.setup("cuda")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {device: gpu}\n")
    with pytest.raises(ConfigError, match="train.device must be auto, cpu, cuda or cuda:N, got 'gpu'"):
        Config.load(bad)
    train(tiny(max_steps=2, device="cpu"), tmp_path / "run", progress=False)
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["train"]["device"] == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_auto_trains_in_bf16_on_a_gpu_that_computes_it(tiny, tmp_path, monkeypatch):
    monkeypatch.delenv(hardware.ENV_PRECISION, raising=False)
    monkeypatch.delenv(hardware.ENV_DEVICE, raising=False)
    result = train(tiny(max_steps=4, save_interval=4, precision="auto"), tmp_path / "run", progress=False)
    expected = "bf16" if torch.version.hip or torch.cuda.get_device_capability() >= (8, 0) else "fp16"
    assert result.precision == expected
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["train"]["precision"] == expected
    on_cpu = load_checkpoint(tmp_path / "run", device="cpu")
    assert next(on_cpu.model.parameters()).device.type == "cpu"


@pytest.fixture(scope="module")
def text_run(tmp_path_factory, request):
    from conftest import CORPUS, tiny_config

    folder = tmp_path_factory.mktemp("hw")
    corpus = folder / "corpus.txt"
    corpus.write_text(CORPUS)
    train(tiny_config(str(corpus), max_steps=30, save_interval=30), folder / "run", progress=False)
    return folder / "run"


def test_a_model_loads_in_bf16_on_the_cpu_and_generates(text_run):
    from omnigpt import generate

    ckpt = load_checkpoint(text_run, device="cpu", dtype="bf16")
    assert {p.dtype for p in ckpt.model.parameters()} == {torch.bfloat16}
    out = generate(ckpt.model, ckpt.tokenizer, "The quick", max_new_tokens=12)
    assert isinstance(out, str) and len(out) > 0
    fp32 = load_checkpoint(text_run, device="cpu", dtype="fp32")
    assert next(fp32.model.parameters()).dtype == torch.float32


def run_cli(capsys, *args: str) -> subprocess.CompletedProcess:
    """The CLI in this process (a subprocess would import torch again): its exit status and output."""
    from omnigpt.cli import main

    capsys.readouterr()
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["omnigpt", *args], code, out, err)


def test_generate_takes_device_and_dtype_flags(text_run, capsys):
    done = run_cli(capsys, "generate", "--checkpoint", str(text_run), "--prompt", "The quick", "--max-new-tokens",
                   "8", "--device", "cpu", "--dtype", "bf16", "--json")
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)
    assert row["prompt"] == "The quick" and len(row["completion"]) > 0


def test_exit_status_2_for_usage_errors_and_1_for_failures(text_run, tmp_path, capsys):
    bad_device = run_cli(capsys, "generate", "--checkpoint", str(text_run), "--prompt", "x", "--device", "tpu")
    assert bad_device.returncode == 2 and "unknown device 'tpu'" in bad_device.stderr
    bad_dtype = run_cli(capsys, "generate", "--checkpoint", str(text_run), "--prompt", "x", "--dtype", "int4")
    assert bad_dtype.returncode == 2
    missing = run_cli(capsys, "generate", "--checkpoint", str(tmp_path / "nothing"), "--prompt", "x")
    assert missing.returncode == 1 and "checkpoint not found" in missing.stderr


def test_version_and_help_with_defaults(capsys):
    from omnigpt import __version__

    # the installed entry point, once, in its own process
    version = subprocess.run([sys.executable, "-m", "omnigpt.cli", "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.strip() == f"omnigpt {__version__}"
    helped = run_cli(capsys, "generate", "--help")
    assert "(default: 50)" in helped.stdout and "(default: auto)" in helped.stdout


def test_the_makefiles_cpu_torch_is_inside_pyprojects_range():
    from packaging.requirements import Requirement

    makefile = (ROOT / "Makefile").read_text()
    pinned = re.search(r"^TORCH_CPU \?= torch==(\S+)", makefile, re.M).group(1)
    pyproject = (ROOT / "pyproject.toml").read_text()
    wanted = Requirement(re.search(r'^\s*"(torch[<>=][^"]*)"', pyproject, re.M).group(1))
    assert wanted.specifier.contains(pinned), (pinned, str(wanted))


def test_make_installs_the_extras_the_demo_needs():
    """`make install` (and so `make demo`) installs omnigpt[demo]: it must bring every package the demo checks
    for before it trains, or a fresh `make demo` stops with a missing extra."""
    from omnigpt.extras import EXTRAS
    from omnigpt.recipes.demo import DEMO_NEEDS

    assert re.search(r"^EXTRAS \?= demo$", (ROOT / "Makefile").read_text(), re.M)
    pyproject = (ROOT / "pyproject.toml").read_text()
    demo = re.search(r'^demo = \["omnigpt\[([a-z,]+)\]"\]', pyproject, re.M).group(1).split(",")
    needed = {EXTRAS[module.split(".")[0]][1] for module in DEMO_NEEDS}
    assert needed <= set(demo), needed - set(demo)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", ["text-tiny", "omni-tiny"])
def test_greedy_decoding_on_the_gpu_gives_the_cpus_tokens_in_fp32(name, monkeypatch):
    from omnigpt import Tokenizer, generate
    from omnigpt.model.omni import build_model

    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # fp32 convolutions, as on the CPU
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    cfg = Config.load(ROOT / "configs" / f"{name}.yaml")
    tok = Tokenizer.byte_level()
    torch.manual_seed(0)
    model = build_model(cfg, tok.image_id, tok.audio_id, tok).eval()
    prompt = "<image> caption:" if cfg.vision is not None else "The for statement"
    image = torch.rand(3, cfg.vision.image_size, cfg.vision.image_size) if cfg.vision is not None else None
    on_cpu = generate(model, tok, prompt, images=image, max_new_tokens=24)
    on_gpu = generate(model.to("cuda"), tok, prompt, images=image, max_new_tokens=24)
    assert on_gpu == on_cpu


def test_a_resumed_run_keeps_its_precision_on_the_same_kind_of_device(no_native_bf16, tiny, tmp_path, monkeypatch):
    from omnigpt.train import distributed
    from omnigpt.train.trainer import run_precision

    cfg = lambda: tiny(max_steps=4, save_interval=2, precision="auto")  # noqa: E731
    assert train(cfg(), tmp_path / "run", stop_at_step=2, progress=False).precision == "fp32"
    monkeypatch.setattr(hardware, "cpu_bf16_pays", lambda: True)  # auto would now say bf16
    assert train(cfg(), tmp_path / "run", resume=True, progress=False).precision == "fp32"
    cpu = distributed.DistEnv()
    moved = run_precision("bf16", cpu, {"name": "bf16", "device": "cuda"})  # a GPU run resumed on a CPU
    assert moved.name == "bf16" and "trained in bf16 on cuda" in moved.reason  # bf16 pays here (patched)
    monkeypatch.setattr(hardware, "cpu_bf16_pays", lambda: False)
    assert run_precision("bf16", cpu, {"name": "bf16", "device": "cuda"}).name == "fp32"
    assert run_precision("fp16", cpu, {"name": "bf16", "device": "cpu"}).name == "fp16"  # asked otherwise


def test_bad_precision_settings_name_the_key_and_the_value(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {precision: fp8}\n")
    with pytest.raises(ConfigError, match=r"'train.precision' must be one of \['auto', 'fp32', 'bf16', 'fp16'\], got 'fp8'"):
        Config.load(bad)
    bad.write_text("train: {tuned_steps_per_minute: 0}\n")
    with pytest.raises(ConfigError, match="train.tuned_steps_per_minute must be > 0, got 0.0"):
        Config.load(bad)
    bad.write_text("train: {bf16: yes please}\n")
    with pytest.raises(ConfigError, match="'train.bf16' must be true or false"):
        Config.load(bad)
    with pytest.raises(HardwareError, match="train.precision must be one of"):
        choose_precision("fp64", "cpu")


def test_bad_precision_flags_are_usage_errors(text_run, capsys):
    done = run_cli(capsys, "pretrain", "--config", "text-tiny", "--out", str(text_run), "--precision", "fp8")
    assert done.returncode == 2 and "invalid choice: 'fp8'" in done.stderr
    demo = run_cli(capsys, "demo", "--precision", "half")
    assert demo.returncode == 2 and "invalid choice: 'half'" in demo.stderr
    gpu = run_cli(capsys, "pretrain", "--config", "text-tiny", "--out", str(text_run), "--device", "cuda:7")
    assert gpu.returncode == 2 and "cuda:7" in gpu.stderr
