"""A damaged run folder gives a one-line CheckpointError naming the file and what is wrong with it, never a
KeyError or a library's own error: weights cut short, garbage or NaN, wrong metadata, files missing, a
trainer state that lacks what resuming needs."""
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from conftest import tiny_config
from omnigpt import train
from omnigpt.checkpoint import CheckpointError, load_checkpoint, load_weights, read_weights, resolve, weight_shapes
from omnigpt.model.omni import build_model
from omnigpt.tokenizer import Tokenizer
from omnigpt.train.state import FILE, load_trainer_state, optimizer_from_tensors


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run stopped at step 2: one checkpoint, with its trainer state."""
    root = tmp_path_factory.mktemp("trained")
    (root / "corpus.txt").write_text("The quick brown fox jumps over the lazy dog. " * 200)
    cfg = tiny_config(str(root / "corpus.txt"), max_steps=4, save_interval=2, eval_interval=2)
    train(cfg, root / "run", stop_at_step=2, progress=False)
    return root / "run", cfg


@pytest.fixture
def run(trained, tmp_path):
    """A fresh copy of the trained run, and its one checkpoint folder."""
    copy = tmp_path / "run"
    shutil.copytree(trained[0], copy)
    return copy, copy / "checkpoints" / "step-00000002"


def rewrite(path: Path, change_tensors=None, change_meta=None) -> None:
    """Write a safetensors file again with its tensors and metadata changed."""
    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
    if change_tensors:
        change_tensors(tensors)
    if change_meta:
        change_meta(meta)
    save_file(tensors, str(path), metadata=meta)


def first_float(tensors: dict) -> str:
    return sorted(k for k, v in tensors.items() if v.is_floating_point())[0]


def cut_short(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def nan_everywhere(tensors: dict) -> None:
    for name, value in tensors.items():
        if value.is_floating_point():
            tensors[name] = torch.full_like(value, float("nan"))


def inf_in(tensors: dict) -> None:
    name = first_float(tensors)
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] = float("inf")


def reshaped(tensors: dict) -> None:
    name = first_float(tensors)
    tensors[name] = torch.zeros(*tensors[name].shape[:-1], tensors[name].shape[-1] + 1)


def dropped(tensors: dict) -> None:
    del tensors[first_float(tensors)]


def added(tensors: dict) -> None:
    tensors["extra.weight"] = torch.zeros(2)


W = "model.safetensors"
DAMAGE = {  # name -> (what is done to the checkpoint folder, the message's words after "<file> in <folder>")
    "weights cut short": (lambda f: cut_short(f / W), "is not a readable safetensors file"),
    "weights empty": (lambda f: (f / W).write_bytes(b""), "is not a readable safetensors file"),
    "weights garbage": (lambda f: (f / W).write_bytes(bytes(range(256)) * 8), "is not a readable safetensors file"),
    "weights a text file": (lambda f: (f / W).write_text("not weights"), "is not a readable safetensors file"),
    "step not a number": (lambda f: rewrite(f / W, change_meta=lambda m: m.update(step="five")),
                          "has a wrong step in its metadata: 'five'"),
    "step negative": (lambda f: rewrite(f / W, change_meta=lambda m: m.update(step="-3")),
                      "has a wrong step in its metadata: '-3'"),
    "step a fraction": (lambda f: rewrite(f / W, change_meta=lambda m: m.update(step="2.5")),
                        "has a wrong step in its metadata: '2.5'"),
    "weights all NaN": (lambda f: rewrite(f / W, nan_everywhere), "holds non-finite values in "),
    "an infinite weight": (lambda f: rewrite(f / W, inf_in), "holds non-finite values in "),
    "a tensor of another shape": (lambda f: rewrite(f / W, reshaped), "does not fit the model: "),
    "a tensor missing": (lambda f: rewrite(f / W, dropped), "does not match config.yaml: missing ['"),
    "a tensor too many": (lambda f: rewrite(f / W, added), "does not match config.yaml: missing [], unexpected "
                                                          "['extra.weight']"),
    "config.yaml garbage": (lambda f: (f / "config.yaml").write_bytes(b"model: [\xff\xfe"), "is unreadable: "),
    "config.yaml a list": (lambda f: (f / "config.yaml").write_text("- 1\n- 2\n"), "is unreadable: "),
    "tokenizer.json garbage": (lambda f: (f / "tokenizer.json").write_text("{not json"),
                               "not a readable tokenizer.json"),
}
NAMED = {"config.yaml garbage": "config.yaml", "config.yaml a list": "config.yaml",
         "tokenizer.json garbage": "tokenizer.json"}


def check(exc: BaseException, *fragments: str) -> None:
    text = str(exc)
    assert type(exc) is CheckpointError and "\n" not in text, text
    for fragment in fragments:
        assert fragment in text, (fragment, text)


@pytest.mark.parametrize("given", ["checkpoint folder", "run folder"])
@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_checkpoint_is_refused_by_name(run, damage, given):
    run_dir, folder = run
    spoil, words = DAMAGE[damage]
    spoil(folder)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(folder if given == "checkpoint folder" else run_dir, device="cpu")
    named = NAMED.get(damage, W)
    check(info.value, words, named, str(folder))


@pytest.mark.parametrize("missing", [["config.yaml"], ["tokenizer.json"], ["config.yaml", "tokenizer.json"]])
def test_a_checkpoint_folder_missing_a_file(run, missing):
    run_dir, folder = run
    for name in missing:
        (folder / name).unlink()
    verb = "is" if len(missing) == 1 else "are"
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(folder, device="cpu")
    check(info.value, f"{folder} is an incomplete checkpoint: {' and '.join(missing)} {verb} missing there")
    with pytest.raises(CheckpointError) as info:  # the run's latest checkpoint: the run has no other
        load_checkpoint(run_dir, device="cpu")
    check(info.value, f"{folder} is an incomplete checkpoint", "the run has no other checkpoint")


def test_a_damaged_latest_checkpoint_is_named_not_skipped(run):
    run_dir, folder = run
    newer = folder.parent / "step-00000004"
    shutil.copytree(folder, newer)
    (newer / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError) as info:
        resolve(run_dir)
    check(info.value, f"{newer} is an incomplete checkpoint", "delete it to use the one before")


@pytest.mark.parametrize("path, words", [("nowhere", "checkpoint not found"),
                                         ("a-file", "is a file: give a checkpoint folder"),
                                         ("empty", "no checkpoint in")])
def test_a_path_that_is_not_a_checkpoint(tmp_path, path, words):
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / path, device="cpu")
    check(info.value, words, str(tmp_path / path))


def test_missing_step_metadata_means_step_0(run):
    _, folder = run
    rewrite(folder / W, change_meta=lambda m: m.pop("step"))
    assert load_checkpoint(folder, device="cpu").step == 0


# --------------------------------------------------------------------------------- the weights helpers
WEIGHT_DAMAGE = ["weights cut short", "weights empty", "weights garbage", "step not a number", "weights all NaN",
                 "an infinite weight"]


@pytest.mark.parametrize("damage", WEIGHT_DAMAGE)
def test_the_weight_readers_refuse_damage_by_name(run, trained, damage):
    """What `--init-from` and a resume read: `load_weights` (a model), `read_weights` (a classifier's
    encoders) and `weight_shapes` (the names), for the trainer's `init_weights`."""
    _, folder = run
    spoil, words = DAMAGE[damage]
    spoil(folder)
    tok = Tokenizer.byte_level()
    model = build_model(trained[1], tok.image_id, tok.audio_id, tok)
    readers = [lambda: load_weights(model, folder / W), lambda: load_weights(model, folder / W, strict=False),
               lambda: read_weights(folder / W)]
    if "NaN" not in damage and "infinite" not in damage:  # the header alone shows the others
        readers.append(lambda: weight_shapes(folder / W))
    for read in readers:
        with pytest.raises(CheckpointError) as info:
            read()
        check(info.value, f"{W} in {folder} {words}")


def test_the_weight_readers_read_a_sound_file(run, trained):
    _, folder = run
    tok = Tokenizer.byte_level()
    model = build_model(trained[1], tok.image_id, tok.audio_id, tok)
    assert load_weights(model, folder / W) == ([], [])
    assert set(read_weights(folder / W)) == set(weight_shapes(folder / W))


# ------------------------------------------------------------------------------------------ trainer state
def _meta(change):
    def spoil(folder: Path) -> None:
        def edit(meta: dict) -> None:
            data = json.loads(meta["json"])
            change(data)
            meta["json"] = json.dumps(data)
        rewrite(folder / FILE, change_meta=edit)
    return spoil


def _tensors(change):
    return lambda folder: rewrite(folder / FILE, change_tensors=change)


def _nan_moment(tensors: dict) -> None:
    name = sorted(k for k in tensors if k.startswith("optimizer."))[0]
    tensors[name] = torch.full_like(tensors[name], float("nan"))


STATE_DAMAGE = {  # name -> (what is done to the trainer state, the message's words)
    "no optimizer": (_meta(lambda d: d.pop("optimizer")), "its metadata lacks 'optimizer'"),
    "no step": (_meta(lambda d: d.pop("step")), "its metadata lacks 'step'"),
    "no step nor optimizer": (_meta(lambda d: [d.pop("step"), d.pop("optimizer")]),
                              "its metadata lacks 'step' and 'optimizer'"),
    "step as text": (_meta(lambda d: d.update(step="2")), "its step is '2', not a whole number"),
    "step negative": (_meta(lambda d: d.update(step=-1)), "its step is -1"),
    "seconds as text": (_meta(lambda d: d.update(seconds="soon")), "its seconds is 'soon', not a number"),
    "optimizer without groups": (_meta(lambda d: d.update(optimizer={})), "lacks param_groups"),
    "a group without params": (_meta(lambda d: d["optimizer"]["param_groups"][0].pop("params")),
                               "lacks its list of parameter numbers"),
    "a scalar misnamed": (_meta(lambda d: d["optimizer"]["scalars"].update(step=1)),
                          "not 'NUMBER.NAME': 'step'"),
    "precision as text": (_meta(lambda d: d.update(precision="bf16")), "its precision is 'bf16'"),
    "grad scaler as a number": (_meta(lambda d: d.update(grad_scaler=3)), "its grad_scaler is 3"),
    "metadata empty": (_meta(lambda d: d.clear()), "its metadata lacks 'step' and 'optimizer'"),
    "metadata not JSON": (lambda f: rewrite(f / FILE, change_meta=lambda m: m.update(json="{cut")),
                          "its metadata is not valid JSON"),
    "metadata JSON a list": (lambda f: rewrite(f / FILE, change_meta=lambda m: m.update(json="[1, 2]")),
                             "its metadata is a JSON list, not an object"),
    "no metadata": (lambda f: rewrite(f / FILE, change_meta=lambda m: m.clear()), "has no 'json' entry"),
    "file cut short": (lambda f: cut_short(f / FILE), "is not a readable safetensors file"),
    "file garbage": (lambda f: (f / FILE).write_bytes(b"\x00" * 7), "is not a readable safetensors file"),
    "no random state": (_tensors(lambda t: [t.pop(k) for k in list(t) if k.startswith("rank")]),
                        "it holds no random state"),
    "random state as floats": (_tensors(lambda t: t.update({"rank0.rng.torch": t["rank0.rng.torch"].float()})),
                               "its random state rank0.rng.torch is F32, not bytes"),
    "a tensor misnamed": (_tensors(lambda t: t.update(stray=torch.zeros(1))), "a tensor named 'stray'"),
    "a NaN moment": (_tensors(_nan_moment), "it holds non-finite values in optimizer."),
}


@pytest.mark.parametrize("damage", sorted(STATE_DAMAGE))
def test_a_damaged_trainer_state_is_refused_by_name(run, trained, damage):
    run_dir, folder = run
    spoil, words = STATE_DAMAGE[damage]
    spoil(folder)
    for tensors in (True, False):
        if damage == "a NaN moment" and not tensors:
            assert load_trainer_state(folder, tensors=False)["meta"]["step"] == 2  # values are not read
            continue
        with pytest.raises(CheckpointError) as info:
            load_trainer_state(folder, tensors=tensors)
        check(info.value, f"{FILE} in {folder}", words)
    with pytest.raises(CheckpointError) as info:  # what `--resume` meets, before anything is built
        train(trained[1], run_dir, resume=True, progress=False)
    check(info.value, f"{FILE} in {folder}", words)


def test_no_trainer_state(run):
    _, folder = run
    (folder / FILE).unlink()
    with pytest.raises(CheckpointError, match=f"{folder} has no {FILE}: it cannot resume training"):
        load_trainer_state(folder)


def test_a_trainer_state_of_other_parameters(run):
    _, folder = run
    state = load_trainer_state(folder)
    other = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(3))])
    with pytest.raises(CheckpointError) as info:
        optimizer_from_tensors(other, state["tensors"], state["meta"]["optimizer"], folder / FILE)
    check(info.value, f"{folder / FILE} does not fit this model's optimizer")


# ------------------------------------------------------------------------------ through the trainer and CLI
TRAINER_READS = ["weights cut short", "weights garbage", "step not a number", "weights all NaN"]  # with load_weights


@pytest.mark.parametrize("damage", TRAINER_READS)
def test_init_from_a_damaged_checkpoint(run, trained, tmp_path, damage):
    _, folder = run
    spoil, words = DAMAGE[damage]
    spoil(folder)
    cfg = tiny_config(trained[1].data.corpus[0], max_steps=2, init_from=str(folder))
    with pytest.raises(CheckpointError) as info:
        train(cfg, tmp_path / "new", progress=False)
    check(info.value, f"{W} in {folder} {words}")


@pytest.mark.parametrize("damage", TRAINER_READS)
def test_resume_from_damaged_weights(run, trained, damage):
    run_dir, folder = run
    spoil, words = DAMAGE[damage]
    spoil(folder)
    with pytest.raises(CheckpointError) as info:
        train(trained[1], run_dir, resume=True, progress=False)
    check(info.value, f"{W} in {folder} {words}")


@pytest.mark.parametrize("damage", ["weights cut short", "step not a number", "weights all NaN",
                                    "a tensor of another shape"])
def test_generate_from_a_damaged_checkpoint_through_the_cli(run, damage, capsys):
    from omnigpt import cli

    run_dir, folder = run
    spoil, words = DAMAGE[damage]
    spoil(folder)
    with pytest.raises(SystemExit) as info:
        cli.main(["generate", "--checkpoint", str(run_dir), "--prompt", "The", "--device", "cpu"])
    assert info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {W} in {folder} {words}"), err
