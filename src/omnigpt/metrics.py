"""Caption and visual-question-answering metrics: BLEU-4, CIDEr-D, exact match, VQA accuracy, and the
per-question-type majority baseline a VQA model must beat; speech recognition metrics: WER and CER;
classification: accuracy, per-class precision / recall / F1, macro-F1 and the confusion matrix; the text tasks:
translation (sacreBLEU BLEU and chrF), summarization (ROUGE-1/2/L F-measure, rouge-score), question answering
(SQuAD exact match and token F1), moderation (the flagged share of each class).

Pure functions of strings; no model code, so `evaluate.py` and tests can use them alike.
"""
from __future__ import annotations

import math
import re
import string
import unicodedata
from collections import Counter, defaultdict
from typing import Hashable, Sequence, Union

from .extras import optional

jiwer = optional("jiwer")
sacrebleu_metrics = optional("sacrebleu.metrics")
rouge_scorer = optional("rouge_score.rouge_scorer")


Answers = Union[str, Sequence[str]]  # one answer, or the several human answers of a VQA v2 question

ARTICLES = {"a", "an", "the"}
APOSTROPHES = ("'", "\u2019", "\u02bc")  # ASCII, right single quotation mark, modifier letter apostrophe
NUMBER_WORDS = {"zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
                "seven": "7", "eight": "8", "nine": "9", "ten": "10"}


def normalize_caption(text: str) -> str:
    """Lower case; apostrophes removed (so "dog's" -> "dogs", "don't" -> "dont" stay one word); every other
    punctuation character (Unicode category P*: .,;:!?-"()[] ...) replaced by a space; runs of whitespace
    collapsed to one space, none at the ends. Symbols such as $ + = are kept."""
    text = text.lower().replace("'", "").replace("\u2019", "")
    text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text)
    return " ".join(text.split())


def normalize_answer(text: str) -> str:
    """A VQA answer for exact matching: `normalize_caption`, then articles (a, an, the) dropped and number
    words zero..ten written as digits ("Two dogs." -> "2 dogs")."""
    words = [NUMBER_WORDS.get(w, w) for w in normalize_caption(text).split() if w not in ARTICLES]
    return " ".join(words)


def _check_pairs(predictions: Sequence[str], references: Sequence, name: str) -> None:
    if isinstance(predictions, str) or isinstance(references, str):
        raise TypeError(f"predictions and {name} must be lists, not a single string")
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} {name}: "
                         f"need one entry of {name} per prediction")
    if not predictions:
        raise ValueError("nothing to score: predictions is empty")


def _check_reference_lists(references: Sequence[Sequence[str]]) -> None:
    for i, refs in enumerate(references):
        if isinstance(refs, str):  # a string is a sequence too: one caption would become many 1-letter ones
            raise TypeError(f"references[{i}] must be a list of strings, got the string {refs!r}")
        if len(refs) == 0:
            raise ValueError(f"references[{i}] is empty: every prediction needs at least one reference")


def bleu4(predictions: list[str], references: list[list[str]]) -> float:
    """Corpus BLEU-4 (0..100) by sacrebleu with its defaults (13a tokenizer, case-sensitive, exponential
    smoothing); normalize both sides with `normalize_caption` first for the usual caption setting.

    references[i] holds the reference captions of prediction i; the counts may differ. sacrebleu takes
    reference *streams* (stream k = the k-th reference of every segment) and drops `None` entries per segment,
    so shorter lists are padded with None; a padded segment is scored exactly as with its own references.
    """
    _check_pairs(predictions, references, "references")
    _check_reference_lists(references)
    width = max(len(refs) for refs in references)
    streams = [[refs[k] if k < len(refs) else None for refs in references] for k in range(width)]
    return float(sacrebleu_metrics.BLEU(max_ngram_order=4).corpus_score(list(predictions), streams).score)


def _ngrams(words: list[str], n: int) -> Counter:
    """Counts of every 1..n-gram (tuples of words)."""
    return Counter(tuple(words[i:i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1))


def _tfidf(counts: Counter, idf: dict, default_idf: float, n: int) -> tuple[list[dict], list[float]]:
    """Per n-gram order: the vector {g: count * idf(g)} and its Euclidean norm."""
    vecs: list[dict] = [{} for _ in range(n)]
    for g, tf in counts.items():
        vecs[len(g) - 1][g] = tf * idf.get(g, default_idf)
    return vecs, [math.sqrt(sum(w * w for w in v.values())) for v in vecs]


def _clipped_cosine(pred: dict, pred_norm: float, ref: dict, ref_norm: float) -> float:
    if pred_norm == 0.0 or ref_norm == 0.0:
        return 0.0
    dot = sum(min(w, ref.get(g, 0.0)) * ref.get(g, 0.0) for g, w in pred.items())
    return dot / (pred_norm * ref_norm)


def cider_d(predictions: list[str], references: list[list[str]], sigma: float = 6.0,
            n: int = 4) -> tuple[float, list[float]]:
    """CIDEr-D (Vedantam et al. 2015, as in the coco-caption code): the corpus mean and the score of each image.

    Captions are tokenized as `normalize_caption(text).split()`. With N = number of images (predictions),
    R_i the references of image i, and g an n-gram of order k = 1..n:

        df(g)      = number of images i whose references R_i contain g (reference sets of this corpus only)
        idf(g)     = log(N) - log(max(1, df(g)))          (n-grams seen in no reference get log N)
        v_k(s)[g]  = count of g in s * idf(g)             (raw counts, only n-grams of order k)
        sim_k(c,r) = sum_g min(v_k(c)[g], v_k(r)[g]) * v_k(r)[g] / (|v_k(c)| |v_k(r)|)   (0 if a norm is 0)
        penalty    = exp(-(len(c) - len(r))^2 / (2 sigma^2))                              (len in words)
        CIDEr-D(c_i, R_i) = 10 * (1/n) sum_k (1/|R_i|) sum_{r in R_i} sim_k(c_i, r) * penalty

    The min() clipping keeps a repeated word from earning more than the references hold. A one-image corpus
    scores 0 (log N = 0): CIDEr-D is a corpus-relative metric.
    """
    _check_pairs(predictions, references, "references")
    _check_reference_lists(references)
    if n < 1 or sigma <= 0:
        raise ValueError(f"need n >= 1 and sigma > 0, got n={n}, sigma={sigma}")
    pred_words = [normalize_caption(p).split() for p in predictions]
    ref_words = [[normalize_caption(r).split() for r in refs] for refs in references]
    ref_counts = [[_ngrams(w, n) for w in refs] for refs in ref_words]
    df: Counter = Counter()
    for counts in ref_counts:
        df.update(set().union(*counts))
    log_n = math.log(len(predictions))
    idf = {g: log_n - math.log(d) for g, d in df.items()}

    scores = []
    for words, refs, counts in zip(pred_words, ref_words, ref_counts):
        p_vec, p_norm = _tfidf(_ngrams(words, n), idf, log_n, n)
        total = 0.0
        for r_words, r_counts in zip(refs, counts):
            r_vec, r_norm = _tfidf(r_counts, idf, log_n, n)
            penalty = math.exp(-((len(words) - len(r_words)) ** 2) / (2 * sigma ** 2))
            total += sum(_clipped_cosine(p_vec[k], p_norm[k], r_vec[k], r_norm[k]) for k in range(n)) * penalty
        scores.append(10.0 * total / n / len(refs))
    return sum(scores) / len(scores), scores


def _vqa_score(prediction: str, answers: Answers) -> float:
    """1/0 exact match against one answer; min(1, matches / 3) against a list of human answers (VQA v2)."""
    pred = normalize_answer(prediction)
    if isinstance(answers, str):
        return float(pred == normalize_answer(answers))
    if len(answers) == 0:
        raise ValueError("an empty list of answers cannot score a prediction")
    matches = sum(pred == normalize_answer(a) for a in answers)
    return min(1.0, matches / 3)


def vqa_accuracy(predictions: list[str], answers: list[Answers]) -> float:
    """Mean VQA score (0..1) after `normalize_answer`. An entry of `answers` is one answer (exact match) or the
    list of human answers of VQA v2, scored min(1, matches / 3): three annotators agreeing earn full credit.
    (The official VQA script averages this over the 10 leave-one-annotator-out subsets, which differs slightly
    when 1..3 of 10 annotators match.)"""
    _check_pairs(predictions, answers, "answers")
    return sum(_vqa_score(p, a) for p, a in zip(predictions, answers)) / len(predictions)


def exact_match(predictions: list[str], references: list[Answers]) -> float:
    """Fraction (0..1) of predictions equal to their reference after `normalize_caption`; a list of references
    counts as a match when any one of them matches."""
    _check_pairs(predictions, references, "references")
    hits = 0
    for pred, refs in zip(predictions, references):
        options = [refs] if isinstance(refs, str) else refs
        hits += normalize_caption(pred) in {normalize_caption(r) for r in options}
    return hits / len(predictions)


def accuracy_by_type(predictions: list[str], answers: list[Answers], types: list[Hashable]) -> dict:
    """{question type: mean VQA score (0..1)} in order of first appearance, scored as in `vqa_accuracy`."""
    _check_pairs(predictions, answers, "answers")
    _check_pairs(predictions, types, "types")
    per_type: dict = defaultdict(list)
    for pred, ans, kind in zip(predictions, answers, types):
        per_type[kind].append(_vqa_score(pred, ans))
    return {kind: sum(s) / len(s) for kind, s in per_type.items()}


def _consensus(answers: Answers) -> str:
    """The answer of a question: itself, or the most common of its human answers (first seen wins ties)."""
    if isinstance(answers, str):
        return normalize_answer(answers)
    return Counter(normalize_answer(a) for a in answers).most_common(1)[0][0]


def majority_baseline(train_answers: list[Answers], train_types: list[Hashable], test_answers: list[Answers],
                      test_types: list[Hashable]) -> dict:
    """{question type: accuracy (0..1)} on the test set of always answering, for each question type, the most
    common training answer of that type (each training question contributes its consensus answer; ties go to
    the answer seen first). A type absent from training gets the most common training answer overall."""
    _check_pairs(train_answers, train_types, "train_types")
    _check_pairs(test_answers, test_types, "test_types")
    by_type: dict = defaultdict(Counter)
    overall: Counter = Counter()
    for ans, kind in zip(train_answers, train_types):
        answer = _consensus(ans)
        by_type[kind][answer] += 1
        overall[answer] += 1
    fallback = overall.most_common(1)[0][0]
    guesses = [by_type[k].most_common(1)[0][0] if k in by_type else fallback for k in test_types]
    return accuracy_by_type(guesses, test_answers, test_types)


# ------------------------------------------------------------------------------------------ speech recognition

def normalize_transcript(text: str) -> str:
    """A transcript as WER and CER compare it:

    1. Unicode NFKC (full-width and compatibility forms become their plain letters and digits: "Ａ" -> "A");
    2. lower case (after NFKC, so the letters NFKC produced are lowered too);
    3. apostrophes removed (', ’ and ʼ), so "don't" -> "dont" and "dog's" -> "dogs" stay one word;
    4. every other punctuation character (Unicode category P*, hyphens and dashes included) replaced by a
       space: "well-known" -> "well known", "yes, sir." -> "yes sir";
    5. runs of whitespace collapsed to one space, none at the ends.

    Nothing else: symbols ($ % +) are kept and numbers are not spelled out, so "2" against "two" is an error.
    """
    text = unicodedata.normalize("NFKC", text).lower()
    for apostrophe in APOSTROPHES:
        text = text.replace(apostrophe, "")
    text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text)
    return " ".join(text.split())


EDIT_KINDS = ("substitutions", "deletions", "insertions", "hits")


def _edit_counts(predictions: Sequence[str], references: Sequence[str], unit: str) -> dict[str, int]:
    """Summed alignment counts of normalized pairs, in words or characters (spaces count as characters).

    An empty side is counted here, not by jiwer (jiwer 3 raises on an empty reference): against an empty
    reference every unit of the prediction is an insertion; an empty prediction deletes every reference unit.
    """
    size = (lambda s: len(s.split())) if unit == "words" else len
    counts = dict.fromkeys(EDIT_KINDS, 0)
    pairs = []
    for pred, ref in zip(map(normalize_transcript, predictions), map(normalize_transcript, references)):
        if not ref:
            counts["insertions"] += size(pred)
        elif not pred:
            counts["deletions"] += size(ref)
        else:
            pairs.append((pred, ref))
    if pairs:
        process = jiwer.process_words if unit == "words" else jiwer.process_characters
        out = process([r for _, r in pairs], [p for p, _ in pairs])  # jiwer takes references first
        for kind in EDIT_KINDS:
            counts[kind] += getattr(out, kind)
    return counts


def _error_rate(predictions: list[str], references: list[str], unit: str) -> float:
    _check_pairs(predictions, references, "references")
    c = _edit_counts(predictions, references, unit)
    length = c["substitutions"] + c["deletions"] + c["hits"]  # units in the references
    if length == 0:
        raise ValueError(f"every reference is empty after normalize_transcript: the error rate has no "
                         f"denominator (0 reference {unit})")
    return (c["substitutions"] + c["deletions"] + c["insertions"]) / length


def wer(predictions: list[str], references: list[str]) -> float:
    """Corpus word error rate: (substitutions + deletions + insertions) / reference words, all summed over the
    corpus (not a mean of per-utterance rates), after `normalize_transcript`; 0 is perfect and it can exceed 1.

    A reference that is empty after normalization adds nothing to the denominator, but every word of its
    prediction counts as an insertion (a hallucination over silence is an error). A corpus whose references
    are all empty has no WER: ValueError.
    """
    return _error_rate(predictions, references, "words")


def cer(predictions: list[str], references: list[str]) -> float:
    """Corpus character error rate, as `wer` but over the characters of the normalized text (the single spaces
    between words included, as jiwer counts them); empty references are handled as in `wer`."""
    return _error_rate(predictions, references, "characters")


def word_errors(prediction: str, reference: str) -> dict[str, int]:
    """{"substitutions", "deletions", "insertions", "hits"}: the word alignment of one normalized pair (the
    counts whose sums make `wer`). An empty reference gives only insertions."""
    if not isinstance(prediction, str) or not isinstance(reference, str):
        raise TypeError(f"prediction and reference must be strings, got {type(prediction).__name__} and "
                        f"{type(reference).__name__}")
    return _edit_counts([prediction], [reference], "words")


def classification_scores(predictions: Sequence[str], labels: Sequence[str],
                          classes: Sequence[str] | None = None) -> dict:
    """Accuracy, macro-F1 (the mean F1 over the classes that occur among the labels or the predictions, as
    scikit-learn does; `classes`, default the labels' classes in sorted order, fixes the table's rows),
    per-class precision / recall / F1 / support, and the confusion matrix: confusion[i][j] counts examples of
    class i predicted as class j, with a last column for predictions outside the classes. A class never
    predicted has precision 0; never present, recall 0. Strings compare exactly: normalize them first."""
    _check_pairs(predictions, labels, "labels")
    classes = list(classes) if classes is not None else sorted(set(labels))
    index = {c: i for i, c in enumerate(classes)}
    missing = sorted(set(labels) - set(index))
    if missing:
        raise ValueError(f"labels outside the classes: {missing[:5]}")
    confusion = [[0] * (len(classes) + 1) for _ in classes]
    for pred, label in zip(predictions, labels):
        confusion[index[label]][index.get(pred, len(classes))] += 1
    per_class = {}
    for i, c in enumerate(classes):
        hits = confusion[i][i]
        predicted = sum(row[i] for row in confusion)
        support = sum(confusion[i])
        precision = hits / predicted if predicted else 0.0
        recall = hits / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[c] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    return {"accuracy": sum(p == t for p, t in zip(predictions, labels)) / len(labels),
            "macro_f1": _mean([per_class[c]["f1"] for c in classes if c in set(labels) | set(predictions)]),
            "per_class": per_class, "classes": classes, "confusion": confusion}


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


# ------------------------------------------------------------------------------------------------ text tasks
def translation_scores(predictions: list[str], references: list[str]) -> dict:
    """{"bleu", "chrf"}: corpus BLEU (0..100) and chrF (0..100, character 6-grams, beta 2) by sacrebleu with its
    defaults (13a tokenizer, case-sensitive, no normalization of the text): the numbers `sacrebleu` prints
    for the same hypotheses and one reference each."""
    _check_pairs(predictions, references, "references")
    preds, refs = list(predictions), [list(references)]
    return {"bleu": float(sacrebleu_metrics.BLEU().corpus_score(preds, refs).score),
            "chrf": float(sacrebleu_metrics.CHRF().corpus_score(preds, refs).score)}


ROUGE_KEYS = ("rouge1", "rouge2", "rougeL")


def rouge_scores(predictions: list[str], references: list[str], stemmer: bool = True) -> dict:
    """{"rouge1", "rouge2", "rougeL"}: the mean over the pairs of each ROUGE F-measure (0..1) by Google's
    rouge-score package: unigram and bigram overlap, and the longest common subsequence (sentence-level rougeL,
    not rougeLsum). Its tokenizer lower-cases and keeps only a-z and 0-9 (other letters are dropped), and the
    Porter stemmer (stemmer) makes "cats" match "cat", as in the original ROUGE's -m."""
    _check_pairs(predictions, references, "references")
    scorer = rouge_scorer.RougeScorer(list(ROUGE_KEYS), use_stemmer=stemmer)
    totals = dict.fromkeys(ROUGE_KEYS, 0.0)
    for pred, ref in zip(predictions, references):
        for key, score in scorer.score(ref, pred).items():  # rouge-score takes the reference first
            totals[key] += score.fmeasure
    return {key: total / len(predictions) for key, total in totals.items()}


SQUAD_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_squad(text: str) -> str:
    """A SQuAD answer as the official evaluation script compares it: lower case, ASCII punctuation
    (string.punctuation) removed, the articles a, an, the removed, whitespace collapsed."""
    text = "".join(ch for ch in text.lower() if ch not in string.punctuation)
    return " ".join(SQUAD_ARTICLES.sub(" ", text).split())


def squad_f1_one(prediction: str, answer: str) -> float:
    """Token-overlap F1 (0..1) of one normalized pair: with `common` the multiset intersection of their
    tokens, precision = common / prediction tokens, recall = common / answer tokens. When either side is empty
    after normalization, 1 if both are, else 0 (as SQuAD 2.0's script)."""
    pred, gold = normalize_squad(prediction).split(), normalize_squad(answer).split()
    if not pred or not gold:
        return float(pred == gold)
    same = sum((Counter(pred) & Counter(gold)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: list[str], answers: list[Answers]) -> dict:
    """{"exact_match", "f1"} (0..1): SQuAD's exact match of `normalize_squad`ed strings and token F1
    (`squad_f1_one`), each the best over a question's answers (one string, or a list of them), averaged over
    the questions."""
    _check_pairs(predictions, answers, "answers")
    em = f1 = 0.0
    for pred, ans in zip(predictions, answers):
        options = [ans] if isinstance(ans, str) else list(ans)
        if not options:
            raise ValueError("an empty list of answers cannot score a prediction")
        em += max(float(normalize_squad(pred) == normalize_squad(a)) for a in options)
        f1 += max(squad_f1_one(pred, a) for a in options)
    return {"exact_match": em / len(predictions), "f1": f1 / len(predictions)}


def flagged_shares(flagged: Sequence[bool], labels: Sequence[str]) -> dict:
    """{class: the share (0..1) of that class's examples that are flagged}, classes in sorted order: for the
    positive class its recall, for the others the rate of false alarms."""
    _check_pairs(flagged, labels, "labels")
    out = {}
    for c in sorted(set(labels)):
        marks = [f for f, label in zip(flagged, labels) if label == c]
        out[c] = sum(marks) / len(marks)
    return out
