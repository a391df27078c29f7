"""Scores against the reference implementations: CIDEr-D against pycocoevalcap (when installed), WER and CER
against jiwer."""
import jiwer
import pytest

from omnigpt.metrics import cer, cider_d, wer


def test_cider_d_matches_pycocoevalcap_when_installed():
    cider = pytest.importorskip("pycocoevalcap.cider.cider")
    preds = ["a red ball on the grass", "blue sky", "dog dog runs"]
    refs = [["a red ball on grass", "a ball on the lawn"], ["the blue sky"], ["dog runs fast", "a dog sleeps"]]
    theirs, their_scores = cider.Cider().compute_score({i: r for i, r in enumerate(refs)},
                                                       {i: [p] for i, p in enumerate(preds)})
    ours, our_scores = cider_d(preds, refs)
    assert ours == pytest.approx(theirs) and our_scores == pytest.approx(list(their_scores))


def test_wer_matches_jiwer_on_normalized_text():
    preds = ["the quick brown fox", "jumps over a dog", "hello there world"]
    refs = ["the quick brown fox jumps", "over the lazy dog", "hello world"]
    assert wer(preds, refs) == pytest.approx(jiwer.wer(refs, preds))
    assert cer(preds, refs) == pytest.approx(jiwer.cer(refs, preds))
