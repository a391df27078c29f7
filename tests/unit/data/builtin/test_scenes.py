"""Generated shape scenes: determinism, splits, the caption grammar, and answers checked against the objects."""
import random
import re
from collections import Counter

import numpy as np
import pytest

from omnigpt.data.builtin.scenes import (CELLS, COLORS, HELD_OUT, NOISE_SIGMA, SPLITS, Obj, answer_matches,
                                         background, caption_matches, caption_of, cell_bounds, parse_caption,
                                         scene, scenes)
from scene_files import load_scene_manifest, write_scene_dataset
from omnigpt.data.prompts import CAPTION_PROMPT, target_text, vqa_prompt


@pytest.fixture(scope="module")
def train500():
    return scenes("train", 500)


def pairs(s):
    return {(o.color, o.shape) for o in s.objects}


def test_same_seed_and_index_give_bit_identical_scenes():
    a, b = scene(3, 17), scene(3, 17)
    assert a.image.tobytes() == b.image.tobytes()
    assert (a.caption, a.objects, a.qas) == (b.caption, b.objects, b.qas)
    assert scene(4, 17).image.tobytes() != a.image.tobytes()
    assert scene(3, 18).image.tobytes() != a.image.tobytes()


def test_scenes_have_one_to_three_objects_in_distinct_cells_in_raster_order(train500):
    assert Counter(len(s.objects) for s in train500).keys() == {1, 2, 3}
    for s in train500:
        cells = [CELLS.index(o.cell) for o in s.objects]
        assert cells == sorted(set(cells))
        assert s.image.mode == "RGB" and s.image.size == (64, 64)
    assert len(scene(0, 0, n_objects=3).objects) == 3


def test_held_out_pairs_only_in_the_compositional_split():
    for split in ("train", "val", "test"):
        for s in scenes(split, 300):
            assert not pairs(s) & set(HELD_OUT)
            assert not any(f"{c} {h}" in q.question for q in s.qas for c, h in HELD_OUT)
    comp = scenes("compositional", 300)
    assert all(pairs(s) & set(HELD_OUT) for s in comp)
    assert set().union(*(pairs(s) for s in comp)) >= set(HELD_OUT)


def test_splits_never_share_an_image():
    seen = {split: {s.image.tobytes() for s in scenes(split, 200)} for split in SPLITS}
    for i, a in enumerate(SPLITS):
        assert len(seen[a]) == 200
        for b in SPLITS[i + 1:]:
            assert not seen[a] & seen[b]


def test_caption_grammar_for_one_two_and_three_objects():
    a = Obj("small", "red", "circle", "top left")
    b = Obj("large", "blue", "square", "center")
    c = Obj("small", "white", "star", "bottom")
    assert caption_of([a]) == "a small red circle at the top left"
    assert caption_of([b, a]) == "a small red circle at the top left and a large blue square in the center"
    assert caption_of([c, a, b]) == ("a small red circle at the top left, a large blue square in the center "
                                     "and a small white star at the bottom")


def test_parse_caption_round_trips_every_scene_and_rejects_garbage(train500):
    for s in train500 + scenes("compositional", 100):
        assert parse_caption(s.caption) == tuple(sorted(s.objects))
    assert parse_caption("  A small red circle\tat the  top left. ") == (Obj("small", "red", "circle", "top left"),)
    for bad in ["", "hello", "a small red circle at the top left and", "a tiny red circle at the top left",
                "a small red circle in the top left", "a small red circle at the top left, a cat"]:
        assert parse_caption(bad) is None, bad


def test_caption_matches_ignores_order_but_not_objects():
    ref = "a small red circle at the top left and a large blue square in the center"
    assert caption_matches("a large blue square in the center and a small red circle at the top left", ref)
    assert not caption_matches("a small red circle at the top left", ref)
    assert not caption_matches(ref + " and a small red circle at the top left", ref)
    assert not caption_matches("garbage", ref)
    with pytest.raises(ValueError, match="reference caption"):
        caption_matches(ref, "garbage")


def expected_answer(question, objects):
    """The answer recomputed from the objects, independently of the generator."""
    if question == "how many objects?":
        return str(len(objects))
    if m := re.fullmatch(r"how many (\w+)s\?", question):
        return str(sum(o.shape == m[1] for o in objects))
    if m := re.fullmatch(r"how many (\w+) objects\?", question):
        return str(sum(o.color == m[1] for o in objects))
    if m := re.fullmatch(r"what color is the (\w+)\?", question):
        (match,) = [o for o in objects if o.shape == m[1]]
        return match.color
    if m := re.fullmatch(r"what shape is (?:at|in) the ([\w ]+)\?", question):
        (match,) = [o for o in objects if o.cell == m[1]]
        return match.shape
    if m := re.fullmatch(r"is there a (\w+) (\w+)\?", question):
        return "yes" if any((o.color, o.shape) == (m[1], m[2]) for o in objects) else "no"
    if m := re.fullmatch(r"where is the (\w+) (\w+)\?", question):
        (match,) = [o for o in objects if (o.color, o.shape) == (m[1], m[2])]
        return match.cell
    raise AssertionError(f"unexpected question {question!r}")


def test_answers_are_correct_for_the_objects(train500):
    for s in train500 + scenes("compositional", 100):
        types = [q.type for q in s.qas]
        assert {"count", "shape", "exist"} <= set(types)
        for qa in s.qas:
            assert qa.answer == expected_answer(qa.question, s.objects), (s.caption, qa)


def test_answers_are_balanced(train500):
    exist = Counter(q.answer for s in train500 for q in s.qas if q.type == "exist")
    assert 0.45 < exist["yes"] / sum(exist.values()) < 0.55
    count = Counter(q.answer for s in train500 for q in s.qas if q.type == "count")
    assert set(count) == {"0", "1", "2", "3"}
    assert count.most_common(1)[0][1] / sum(count.values()) < 0.5


def test_each_object_has_its_colour_at_the_centre_of_its_cell():
    for size in (64, 96):
        b = cell_bounds(size)
        for s in scenes("val", 100, size=size):
            pixels = np.asarray(s.image)
            for o in s.objects:
                row, col = divmod(CELLS.index(o.cell), 3)
                y, x = (b[row] + b[row + 1]) // 2, (b[col] + b[col + 1]) // 2
                assert tuple(pixels[y, x]) == COLORS[o.color], (s.caption, o)


def test_background_is_far_from_every_object_colour():
    checked = 0
    for s in scenes("train", 100):
        if not any(o.cell.startswith("top") for o in s.objects):  # then the top rows are all background
            strip = np.asarray(s.image)[:4].reshape(-1, 3).astype(int)
            for rgb in COLORS.values():
                assert np.abs(strip - rgb).sum(axis=1).min() > 60
            checked += 1
    assert checked > 20


def test_backgrounds_are_noise_of_the_stated_spread_and_differ_between_scenes():
    """Each background is a window of one shared noise texture: its spread must still be NOISE_SIGMA around a
    base colour in 40-110, and no two scenes may share the same window."""
    grounds = [background(random.Random(k), 64).astype(float) for k in range(50)]
    for g in grounds:
        assert 40 - 3 * NOISE_SIGMA < g.mean() < 110 + 3 * NOISE_SIGMA
        assert abs(g.std(axis=(0, 1)).mean() - NOISE_SIGMA) < 1.0
    noise = [(g - g.mean(axis=(0, 1))).round().tobytes() for g in grounds]
    assert len(set(noise)) == len(noise)
    assert background(random.Random(1), 300).shape == (300, 300, 3)  # larger than the shared texture's default


def test_prompts_and_targets():
    assert CAPTION_PROMPT == "<image> caption:"
    assert vqa_prompt("how many stars?") == "question: how many stars? <image> answer:"
    assert target_text("3") == " 3"
    assert answer_matches(" Top Left. ", "top left") and not answer_matches("top", "top left")


def test_manifest_round_trip(tmp_path):
    manifest = write_scene_dataset(tmp_path, "test", 5, seed=2)
    assert manifest == tmp_path / "test.jsonl"
    assert not list(tmp_path.glob(".*.tmp"))
    loaded = load_scene_manifest(manifest)
    for i, s in enumerate(loaded):
        ref = scene(2, i, "test")
        assert s.image.tobytes() == ref.image.tobytes()
        assert (s.caption, s.objects, s.qas) == (ref.caption, ref.objects, ref.qas)


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="'training'"):
        scene(0, 0, "training")
    with pytest.raises(ValueError, match="n_objects"):
        scene(0, 0, n_objects=4)
