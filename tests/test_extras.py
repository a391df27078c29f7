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
