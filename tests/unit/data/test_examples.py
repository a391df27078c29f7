"""Example sets: held-out parts that cover every class."""
from omnigpt.data.prompts import CLASSIFY_PROMPT


def test_held_out_class_folder_examples_cover_every_class():
    from pathlib import Path

    from omnigpt.data.sources import AudioText
    from omnigpt.data.examples import AudioFileExamples

    items = [AudioText(Path(f"{c}/{i}.wav"), c, None, "root", c) for c in ("a", "b", "c") for i in range(20)]
    train_set, val_set = AudioFileExamples(items).split_off(0.1)
    assert len(val_set) == 6 and len(train_set) == 54
    assert {it.label for it in val_set.items} == {"a", "b", "c"}
    assert not {it.audio for it in val_set.items} & {it.audio for it in train_set.items}
    assert val_set.example(0, None).text == CLASSIFY_PROMPT


def test_held_out_rows_cover_every_class_and_training_keeps_each():
    from omnigpt.data.examples import stratified_split

    labels = [f"c{k}" for k in range(10) for _ in range(10)] + ["rare"]
    train, val = stratified_split(labels, 0.1)
    assert {labels[i] for i in val} == {f"c{k}" for k in range(10)}  # one of each; the single "rare" stays
    assert {labels[i] for i in train} == set(labels) and not set(train) & set(val)


def test_a_model_that_sees_and_hears_reads_an_audio_manifest_as_audio(tmp_path):
    from conftest import tiny_classifier_config

    from omnigpt.data.examples import _is_audio_source

    cfg = tiny_classifier_config()
    (tmp_path / "speech.jsonl").write_text('{"audio": "a.wav", "text": "hi"}\n')
    (tmp_path / "pictures.jsonl").write_text('\n{"image": "a.png", "text": "red"}\n')
    assert _is_audio_source(str(tmp_path / "speech.jsonl"), cfg)
    assert not _is_audio_source(str(tmp_path / "pictures.jsonl"), cfg)
    cfg.audio = None
    assert not _is_audio_source(str(tmp_path / "speech.jsonl"), cfg)  # a model that only sees: its reader says why
