"""The text tasks' metrics: BLEU and chrF (sacrebleu), ROUGE (rouge-score), SQuAD exact match and F1, and the
flagged shares of moderation, each checked by hand and against the reference package."""
import pytest
import sacrebleu
from rouge_score import rouge_scorer

from omnigpt.metrics import (flagged_shares, normalize_squad, rouge_scores, squad_f1_one, squad_scores,
                             translation_scores)

PREDS = ["the cat sat on the mat", "a dog runs in the park today", "il pleut beaucoup ce matin"]
REFS = ["the cat sat on a mat", "the dog is running in the park", "il pleut fort ce matin"]


def test_bleu_by_hand():
    # 1..4-gram precisions 5/6, 3/5, 2/4, 1/3 (same length: no brevity penalty); BLEU is their geometric mean.
    got = translation_scores(["the cat sat on the mat"], ["the cat sat on a mat"])
    assert got["bleu"] == pytest.approx(100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25, abs=1e-9)
    assert translation_scores(["a b c d e"], ["a b c d e"])["bleu"] == pytest.approx(100.0)


def test_chrf_by_hand():
    # character 1-, 2-, 3-grams match 2/3, 1/2, 0 both ways (no 4..6-grams): precision = recall = 7/18 on
    # average, so the F-score (any beta) is 7/18.
    assert translation_scores(["abc"], ["abd"])["chrf"] == pytest.approx(100 * 7 / 18, abs=1e-9)
    assert translation_scores(["same words"], ["same words"])["chrf"] == pytest.approx(100.0)


def test_bleu_and_chrf_are_sacrebleus_corpus_scores():
    got = translation_scores(PREDS, REFS)
    assert got["bleu"] == pytest.approx(sacrebleu.corpus_bleu(PREDS, [REFS]).score, abs=1e-9)
    assert got["chrf"] == pytest.approx(sacrebleu.corpus_chrf(PREDS, [REFS]).score, abs=1e-9)


def test_rouge_by_hand():
    # unigrams: the x2, cat, on, mat = 5 of 6 each way; bigrams: the-cat, on-the, the-mat = 3 of 5; the longest
    # common subsequence "the cat on the mat" is 5 of 6.
    got = rouge_scores(["the cat sat on the mat"], ["the cat was on the mat"])
    assert got == pytest.approx({"rouge1": 5 / 6, "rouge2": 3 / 5, "rougeL": 5 / 6})
    assert rouge_scores(["Cats!"], ["cat"])["rouge1"] == 1.0  # lower-cased, punctuation dropped, stemmed
    assert rouge_scores(["Cats!"], ["cat"], stemmer=False)["rouge1"] == 0.0


def test_rouge_is_the_mean_of_rouge_scores_f_measures():
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    expected = {k: sum(scorer.score(r, p)[k].fmeasure for p, r in zip(PREDS, REFS)) / 3
                for k in ("rouge1", "rouge2", "rougeL")}
    assert rouge_scores(PREDS, REFS) == pytest.approx(expected, abs=1e-12)


def test_squad_normalization():
    assert normalize_squad("  The Eiffel-Tower, in   Paris! ") == "eiffeltower in paris"
    assert normalize_squad("an apple a day") == "apple day"
    assert normalize_squad("theory") == "theory"  # an article only as a whole word


def test_squad_exact_match_and_f1_by_hand():
    assert squad_f1_one("in Paris, France", "Paris") == pytest.approx(0.5)  # precision 1/3, recall 1
    assert squad_f1_one("the the cat", "cat cat") == pytest.approx(2 / 3)  # one shared "cat": 1/1 and 1/2
    assert squad_f1_one("blue", "red") == 0.0
    assert squad_f1_one("The", "a") == 1.0 and squad_f1_one("the", "cat") == 0.0  # empty after normalizing
    got = squad_scores(["The Eiffel Tower!", "in Paris, France", "1889"], ["eiffel tower", "Paris", ["1887", "1889"]])
    assert got == pytest.approx({"exact_match": 2 / 3, "f1": (1 + 0.5 + 1) / 3})


def test_flagged_shares_per_class():
    assert flagged_shares([True, False, True, True, False], ["toxic", "toxic", "ok", "toxic", "ok"]) == \
        pytest.approx({"ok": 0.5, "toxic": 2 / 3})


def test_text_metrics_refuse_mismatched_lists():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        translation_scores(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="nothing to score"):
        rouge_scores([], [])
    with pytest.raises(TypeError):
        squad_scores("abc", "abc")
