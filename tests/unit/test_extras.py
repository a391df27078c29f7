"""Optional packages: imported on first use, and a missing one names the pip extra that installs it."""
import sys

import pytest

from omnigpt.extras import MissingExtraError, optional, require


def test_a_missing_optional_package_names_its_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "soxr", None)  # what `import soxr` finds when soxr is not installed
    lazy = optional("soxr")
    with pytest.raises(MissingExtraError, match=r"pip install 'omnigpt\[audio\]'"):
        lazy.resample
    monkeypatch.setitem(sys.modules, "PIL.Image", None)
    with pytest.raises(MissingExtraError, match=r"pillow .*omnigpt\[vision\]"):
        require("PIL.Image")


def test_an_installed_optional_package_is_imported_on_first_use():
    import PIL.Image

    lazy = optional("PIL.Image")
    assert "_module" not in vars(lazy) or vars(lazy)["_module"] is None
    assert lazy.Image is PIL.Image.Image
    assert vars(lazy)["_module"] is PIL.Image


def test_training_without_matplotlib_goes_on_and_says_why_there_is_no_plot(tiny, tmp_path, monkeypatch, capsys):
    from omnigpt import train

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = train(tiny(max_steps=4, eval_interval=2, save_interval=4), tmp_path / "run", progress=False)
    assert result.step == 4 and not (tmp_path / "run" / "loss.png").exists()
    err = capsys.readouterr().err
    assert err.count("loss.png not drawn") == 1 and "omnigpt[plots]" in err


def test_a_text_only_install_imports_and_trains(tmp_path, corpus_file):
    """Without Pillow, soundfile, soxr, espeak-ng, sacrebleu, jiwer and matplotlib (`pip install omnigpt`)."""
    import subprocess

    script = f"""
import sys
for name in ("PIL", "PIL.Image", "soundfile", "soxr", "espeakng_loader", "sacrebleu", "sacrebleu.metrics",
             "jiwer", "matplotlib", "matplotlib.pyplot"):
    sys.modules[name] = None
import omnigpt.cli, omnigpt.recipes.demo, omnigpt.chat, omnigpt.transcribe, omnigpt.evaluate, omnigpt.recipes.compare
sys.path.insert(0, {str(__import__("pathlib").Path(__file__).resolve().parents[1])!r})
from conftest import tiny_config
from omnigpt import generate, load_checkpoint, train
train(tiny_config({str(corpus_file)!r}, max_steps=3, save_interval=3), {str(tmp_path / "run")!r}, progress=False)
ckpt = load_checkpoint({str(tmp_path / "run")!r})
print("generated", repr(generate(ckpt.model, ckpt.tokenizer, "The quick", max_new_tokens=4)))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "generated" in done.stdout and "omnigpt[plots]" in done.stderr


# Skipped without a package that the `test` extra does not install: reference scorers the project does not ship.
NOT_IN_THE_TEST_EXTRA = {"pycocoevalcap.cider.cider"}


def test_the_test_extra_installs_every_package_a_test_would_skip_without():
    """A test module skipped for a missing package is a test that silently stops running (an `openai` release
    that dropped `httpx` from its requirements once skipped the whole API test in CI): every package the tests
    `importorskip` must come with `pip install -e '.[test]'`, which `make test` runs."""
    import ast
    import importlib
    from pathlib import Path

    wanted = set()
    for path in Path(__file__).resolve().parents[1].rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "importorskip"
                    and node.args and isinstance(node.args[0], ast.Constant)):
                wanted.add(node.args[0].value)
    assert {"httpx", "openai", "transformers", "playwright.sync_api"} <= wanted
    missing = []
    for name in sorted(wanted - NOT_IN_THE_TEST_EXTRA):
        try:
            importlib.import_module(name)
        except ImportError as exc:
            missing.append(f"{name} ({exc})")
    assert not missing, f"not installed: {', '.join(missing)}; add them to the test extra in pyproject.toml"
