"""A write that fails (a full disk, a read-only folder, an output path under a file) raises a one-line
`WriteError` naming the path and what was written, leaves no partial or empty file behind, and keeps the
file or checkpoint that was there. The full disk is faked by making the writer raise ENOSPC."""
import builtins
import errno
import os
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError

from conftest import tiny_config
from omnigpt import atomic, checkpoint
from omnigpt.atomic import WriteError, write_atomic
from omnigpt.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from omnigpt.model.omni import build_model
from omnigpt.recipes.report import write_report
from omnigpt.tokenizer import Tokenizer
from omnigpt.train import state
from omnigpt.viz import confusion_figure, fusion_bars, loss_curve, plot_run

FULL = "No space left on device"


def raising(exc: BaseException):
    def fail(*args, **kwargs):
        raise exc
    return fail


enospc = raising(OSError(errno.ENOSPC, FULL))


class _FullFile:
    """A file opened for real (so it exists, empty) whose writes fail as on a full disk."""

    def __init__(self, path, mode="r", *args, **kwargs):
        self.fh = builtins.open(path, mode, *args, **kwargs)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.fh.close()

    def write(self, data):
        raise OSError(errno.ENOSPC, FULL)

    def __getattr__(self, name):
        return getattr(self.fh, name)


def disk_full_on_write(monkeypatch):
    monkeypatch.setattr(atomic, "open", _FullFile, raising=False)


def leftovers(folder: Path) -> list[str]:
    """Temporary files and folders, and empty files, anywhere under `folder`."""
    bad = []
    for p in folder.rglob("*"):
        if ".tmp-" in p.name or p.name.startswith(".old-") or (p.is_file() and p.stat().st_size == 0):
            bad.append(str(p.relative_to(folder)))
    return sorted(bad)


def assert_one_line(exc: BaseException, *fragments: str) -> None:
    text = str(exc)
    assert "\n" not in text and "Errno" not in text, text
    for fragment in fragments:
        assert fragment in text, (fragment, text)


# ------------------------------------------------------------------------------------------- write_atomic
FAILURES = {  # what fails -> (how to make it fail, the errno raised, words of the reason)
    "folder": (lambda mp: mp.setattr(Path, "mkdir", raising(OSError(errno.EROFS, "Read-only file system"))),
               errno.EROFS, "read-only"),
    "open": (lambda mp: mp.setattr(atomic, "open", raising(PermissionError(errno.EACCES, "Permission denied")),
                                   raising=False), errno.EACCES, "permission denied"),
    "write": (disk_full_on_write, errno.ENOSPC, FULL),
    "fsync": (lambda mp: mp.setattr(atomic.os, "fsync", enospc), errno.ENOSPC, FULL),
    "rename": (lambda mp: mp.setattr(atomic.os, "replace", raising(OSError(errno.EIO, "Input/output error"))),
               errno.EIO, "Input/output error"),
}


@pytest.mark.parametrize("point", sorted(FAILURES))
def test_a_failed_write_names_the_path_and_keeps_the_old_file(tmp_path, monkeypatch, point):
    make_it_fail, code, reason = FAILURES[point]
    target = tmp_path / "out" / "report.json"
    write_atomic(target, '{"old": true}')
    make_it_fail(monkeypatch)
    with pytest.raises(WriteError) as info:
        write_atomic(target, '{"new": true}', what="the report")
    monkeypatch.undo()
    assert isinstance(info.value, OSError) and info.value.errno == code
    assert_one_line(info.value, f"could not write the report to {target}: ", reason)
    assert target.read_text() == '{"old": true}'
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("point", ["write", "fsync"])
def test_a_failed_first_write_leaves_no_file(tmp_path, monkeypatch, point):
    FAILURES[point][0](monkeypatch)
    target = tmp_path / "new.json"
    with pytest.raises(WriteError, match=f"could not write {target}: {FULL}"):
        write_atomic(target, "{}")
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("layout, rel, reason", [
    ("file", "blocker/sub/out.json", "blocker is a file, not a folder"),
    ("file", "blocker/out.json", "blocker is a file, not a folder"),
    ("folder", "blocker", "it is a folder"),
])
def test_an_output_path_under_a_file_or_onto_a_folder(tmp_path, layout, rel, reason):
    blocker = tmp_path / "blocker"
    blocker.write_text("x") if layout == "file" else blocker.mkdir()
    with pytest.raises(WriteError) as info:
        write_atomic(tmp_path / rel, "data", what="the plot")
    assert_one_line(info.value, f"could not write the plot to {tmp_path / rel}", reason)
    assert leftovers(tmp_path) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["blocker"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(WriteError) as info:
            write_atomic(folder / "a.json", "{}", what="the results")
    finally:
        folder.chmod(0o755)
    assert_one_line(info.value, f"could not write the results to {folder / 'a.json'}", "permission denied")
    assert list(folder.iterdir()) == []


def test_a_write_error_survives_pickling():
    import pickle

    exc = atomic.write_error("the plot", "x/loss.png", OSError(errno.ENOSPC, FULL))
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is WriteError and str(back) == str(exc) and back.errno == errno.ENOSPC


# ------------------------------------------------------------------------------------- plots and reports
def _metrics(folder: Path) -> Path:
    path = folder / "metrics.jsonl"
    path.write_text('{"step": 1, "split": "train", "loss": 5.0}\n{"step": 2, "split": "val", "loss": 4.0}\n'
                    '{"step": 3, "split": "tr')  # the last line cut short by a killed process
    return path


PLOTS = {
    "loss curve": lambda folder, png: loss_curve(_metrics(folder), png),
    "confusion matrix": lambda folder, png: confusion_figure([[3, 1], [0, 4]], ["a", "b"], png),
    "fusion bars": lambda folder, png: fusion_bars([{"strategy": "concat", "accuracy": 0.7}], png),
    "report": lambda folder, png: write_report(folder, {"steps": 1, "train_seconds": 1.0, "seconds": 2.0}, {}, {},
                                               tiny_config(str(folder / "c.txt"))),
}


@pytest.mark.parametrize("kind", sorted(PLOTS))
def test_plots_and_the_report_fail_cleanly_on_a_full_disk(tmp_path, monkeypatch, kind):
    png = tmp_path / "out.png"
    disk_full_on_write(monkeypatch)
    with pytest.raises(WriteError) as info:
        PLOTS[kind](tmp_path, png)
    monkeypatch.undo()
    what = "the report" if kind == "report" else "the plot"
    written = tmp_path / "report.html" if kind == "report" else png
    assert_one_line(info.value, f"could not write {what} to {written}: {FULL}")
    assert not written.exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("kind", ["loss curve", "confusion matrix", "fusion bars"])
def test_a_plot_is_written_whole(tmp_path, kind):
    png = PLOTS[kind](tmp_path, tmp_path / "pics" / "out.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and leftovers(tmp_path) == []


def test_a_plot_onto_a_folder_names_the_folder(tmp_path):
    (tmp_path / "plots").mkdir()
    with pytest.raises(WriteError, match="could not write the plot to .*plots: it is a folder"):
        loss_curve(_metrics(tmp_path), tmp_path / "plots")


def test_the_loss_plot_of_a_training_run_is_skipped_with_a_note_when_it_cannot_be_written(tmp_path, monkeypatch,
                                                                                         capsys):
    _metrics(tmp_path)
    disk_full_on_write(monkeypatch)
    plot_run(tmp_path)
    plot_run(tmp_path)  # told once
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert err.count("loss.png not drawn: could not write the plot to") == 1 and FULL in err
    assert list(tmp_path.glob("*.png")) == [] and leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------------- checkpoints
@pytest.fixture
def saved(tmp_path):
    """A run folder holding checkpoint 5 of a tiny model; returns (run, model, config, tokenizer)."""
    cfg = tiny_config(str(tmp_path / "corpus.txt"))
    tok = Tokenizer.byte_level()
    torch.manual_seed(0)
    model = build_model(cfg, tok.image_id, tok.audio_id, tok)
    run = tmp_path / "run"
    save_checkpoint(run, 5, model, cfg, tok, lambda folder: state.save_trainer_state(
        folder, {"rank0.rng.torch": torch.get_rng_state()}, {"step": 5}))
    return run, model, cfg, tok


def _rust_enospc(*args, **kwargs):
    raise SafetensorError(f"Error while serializing: I/O error: {FULL} (os error 28) at path \"x/.tmpAbC\"")


def _half_written_weights(model, filename, **kwargs):
    Path(filename).write_bytes(b"")  # the file exists, empty, when the disk fills up
    _rust_enospc()


_rename = Path.rename


def _rename_but_not_into_place(self, target):
    """Moving the old folder aside (or back) works; renaming the new one into place fails."""
    if self.name.startswith(".tmp-"):
        raise OSError(errno.EIO, "Input/output error")
    return _rename(self, target)


CHECKPOINT_FAILURES = {  # the point of the save that fails -> (how, its errno, the reason's words)
    "checkpoints folder": (lambda mp: mp.setattr(Path, "mkdir", raising(PermissionError(errno.EACCES, "Permission denied"))),
                           errno.EACCES, "permission denied"),
    "model.safetensors": (lambda mp: mp.setattr(checkpoint, "save_model", _half_written_weights),
                          errno.ENOSPC, FULL),
    "config.yaml": (disk_full_on_write, errno.ENOSPC, FULL),
    "trainer state": (lambda mp: mp.setattr(state, "save_file", _rust_enospc), errno.ENOSPC, FULL),
    "flush": (lambda mp: mp.setattr(checkpoint, "_fsync_tree", enospc), errno.ENOSPC, FULL),
    "rename": (lambda mp: mp.setattr(Path, "rename", raising(OSError(errno.EIO, "Input/output error"))),
               errno.EIO, "Input/output error"),
    "rename into place": (lambda mp: mp.setattr(Path, "rename", _rename_but_not_into_place), errno.EIO,
                          "Input/output error"),
}


@pytest.mark.parametrize("step", [10, 5], ids=["new step", "same step again"])
@pytest.mark.parametrize("point", sorted(CHECKPOINT_FAILURES))
def test_a_failed_checkpoint_leaves_the_last_good_one(saved, monkeypatch, point, step):
    run, model, cfg, tok = saved
    make_it_fail, code, reason = CHECKPOINT_FAILURES[point]
    make_it_fail(monkeypatch)
    with pytest.raises(WriteError) as info:
        save_checkpoint(run, step, model, cfg, tok, lambda folder: state.save_trainer_state(
            folder, {"rank0.rng.torch": torch.get_rng_state()}, {"step": step}), keep=1)
    monkeypatch.undo()
    assert info.value.errno == code
    assert_one_line(info.value, f"could not write the checkpoint to {run / 'checkpoints' / f'step-{step:08d}'}: ",
                    reason)
    assert leftovers(run) == []
    assert [p.name for p in list_checkpoints(run)] == ["step-00000005"]
    assert load_checkpoint(run, device="cpu").step == 5


def test_a_run_folder_under_a_file(saved, tmp_path):
    _, model, cfg, tok = saved
    (tmp_path / "taken").write_text("x")
    with pytest.raises(WriteError) as info:
        save_checkpoint(tmp_path / "taken" / "run", 1, model, cfg, tok)
    assert_one_line(info.value, "could not write the checkpoint to", f"{tmp_path / 'taken'} is a file, not a folder")


def test_a_checkpoint_killed_midway_is_cleaned_up_by_the_next_save(saved):
    run, model, cfg, tok = saved
    stale = run / "checkpoints" / ".tmp-step-00000007-99999"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"")
    save_checkpoint(run, 10, model, cfg, tok)
    assert leftovers(run) == [] and [p.name for p in list_checkpoints(run)] == ["step-00000005", "step-00000010"]


def test_a_full_disk_during_training_through_the_cli(tmp_path, monkeypatch, capsys, corpus_file):
    """The real entry point: one line on stderr naming the checkpoint, exit 1, the earlier checkpoint kept."""
    from omnigpt import cli

    cfg = tiny_config(str(corpus_file), max_steps=10, save_interval=5, eval_interval=5)
    cfg.save(tmp_path / "tiny.yaml")
    real = checkpoint.save_model
    calls = []

    def fills_up(model, filename, **kwargs):
        calls.append(filename)
        if len(calls) > 1:
            _half_written_weights(model, filename)
        real(model, filename, **kwargs)

    monkeypatch.setattr(checkpoint, "save_model", fills_up)
    with pytest.raises(SystemExit) as info:
        cli.main(["pretrain", "--config", str(tmp_path / "tiny.yaml"), "--out", str(tmp_path / "run"), "--quiet"])
    monkeypatch.undo()
    assert info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"error: could not write the checkpoint to {tmp_path / 'run' / 'checkpoints' / 'step-00000010'}"
                       f": {FULL}")
    assert leftovers(tmp_path / "run") == []
    assert load_checkpoint(tmp_path / "run", device="cpu").step == 5
