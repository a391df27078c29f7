"""The built-in matching task: a label that needs the text, the image and the audio together."""
from collections import Counter, defaultdict

import numpy as np
import pytest

from omnigpt.data.builtin import matching
from omnigpt.data.builtin.scenes import COLORS


def _best_table_accuracy(rows, key) -> float:
    """What the best predictor that sees only key(row) can score: the majority label per key value."""
    table = defaultdict(Counter)
    for r in rows:
        table[key(r)][r.label] += 1
    return sum(max(c.values()) for c in table.values()) / len(rows)


def test_the_matching_task_needs_all_three_modalities():
    rows = [matching.sample(0, i, "train", draw=False) for i in range(20000)]
    assert 0.48 < sum(r.label == "match" for r in rows) / len(rows) < 0.52
    colors = lambda r: tuple(sorted({o.color for o in r.objects}))  # noqa: E731
    # Each pair of modalities, summarised by what could reveal the label (at most 90 table cells each).
    assert _best_table_accuracy(rows, lambda r: (r.text, r.number)) < 0.54  # question + spoken number
    assert _best_table_accuracy(rows, lambda r: (r.text, r.count)) < 0.54  # question + the image's answer
    assert _best_table_accuracy(rows, lambda r: (colors(r), r.number)) < 0.54  # image + spoken number
    assert _best_table_accuracy(rows, lambda r: (r.count, r.number)) == 1.0  # all three decide it
    r = rows[0]
    for r in rows[:200]:
        values = [getattr(o, "color" if r.attribute in COLORS else "shape") for o in r.objects]
        assert values.count(r.attribute) == r.count and (r.count == r.number) == (r.label == "match")
    assert sorted(Counter(o.color for o in r.objects).values()) == [1, 2]
    assert {r.count for r in rows} == {r.number for r in rows} == {0, 1, 2}


def test_matching_samples_are_reproducible_and_drawn():
    a, b = matching.sample(3, 11, "test"), matching.sample(3, 11, "test")
    assert a.text == b.text and np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert a.image.size == (64, 64) and matching.sample(3, 11, "val").objects != a.objects
    with pytest.raises(ValueError, match="unknown matching split"):
        matching.sample(0, 0, "compositional")
