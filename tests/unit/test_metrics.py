import math

import pytest

from omnigpt.metrics import (accuracy_by_type, bleu4, cer, cider_d, exact_match, majority_baseline, normalize_answer,
                             normalize_caption, normalize_transcript, vqa_accuracy, wer, word_errors)

L3 = math.log(3)  # idf of an n-gram found in the references of exactly 1 of 3 images: log(3) - log(1)


def test_normalize_caption():
    assert normalize_caption("  A Dog's   ball,\tred-and-white!  ") == "a dogs ball red and white"
    assert normalize_caption("...") == ""


def test_normalize_answer_drops_articles_and_writes_numbers():
    assert normalize_answer("Two dogs.") == "2 dogs"
    assert normalize_answer("The TEN of an apple") == "10 of apple"


def test_bleu4_of_identical_and_disjoint_captions():
    assert bleu4(["a red ball on the green grass"], [["a red ball on the green grass"]]) == pytest.approx(100.0)
    assert bleu4(["blue sky above"], [["a red ball on the green grass"]]) == pytest.approx(0.0)


def test_bleu4_accepts_a_variable_number_of_references():
    preds = ["a red ball on the green grass today", "two cats sit on a warm mat"]
    ragged = [["a red ball lies on green grass today"],
              ["two cats are sitting on a mat", "a pair of cats sit on the warm mat"]]
    # Padding the short list by repeating its reference changes neither clipped counts nor the closest length,
    # so it must give the same score as sacrebleu's None padding.
    repeated = [ragged[0] * 2, ragged[1]]
    assert bleu4(preds, ragged) == pytest.approx(bleu4(preds, repeated))
    assert 0 < bleu4(preds, ragged) < 100


def test_bleu4_errors():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        bleu4(["a", "b"], [["a"]])
    with pytest.raises(TypeError, match=r"references\[0\] must be a list of strings"):
        bleu4(["a cat"], ["a cat"])
    with pytest.raises(ValueError, match=r"references\[0\] is empty"):
        bleu4(["a cat"], [[]])


# A 3-image corpus. No n-gram is shared between the reference sets of different images, so every reference
# n-gram has df = 1 and idf = log 3 (image 3's two references both say "dog": df counts images, not captions).
REFS = [["red ball on grass"], ["blue sky"], ["dog runs fast", "dog sleeps"]]


def test_cider_d_identical_caption_with_distinct_ngrams_scores_ten():
    mean, per_image = cider_d(["Red ball on grass.", "green tree", "dog dog"], REFS)
    # Image 1: the vectors of prediction and reference are equal for every order k = 1..4 (all weights log 3),
    # so each clipped cosine is 1, the lengths match (penalty 1): 10 * (1+1+1+1)/4 = 10.
    assert per_image[0] == pytest.approx(10.0)
    # Image 2: "green", "tree", "green tree" occur in no reference: every product has a zero factor.
    assert per_image[1] == 0.0
    # Image 3, clipping: "dog dog" has unigram vector {dog: 2 L3}, norm 2 L3, and bigram {dog dog: L3}.
    #   ref "dog runs fast": unigrams {dog, runs, fast} each L3, norm sqrt(3) L3;
    #     k=1: min(2 L3, L3) * L3 / (2 L3 * sqrt(3) L3) = 1 / (2 sqrt 3); k=2: "dog dog" not in ref -> 0;
    #     length 2 vs 3 -> penalty exp(-1 / (2 * 6^2)) = exp(-1/72)
    #   ref "dog sleeps": norm sqrt(2) L3; k=1: L3 * L3 / (2 L3 * sqrt(2) L3) = 1 / (2 sqrt 2); same length.
    #   score = 10 * [(1/(2 sqrt 3)) exp(-1/72) + 1/(2 sqrt 2)] / 4 orders / 2 references
    expected3 = 10 * ((1 / (2 * math.sqrt(3))) * math.exp(-1 / 72) + 1 / (2 * math.sqrt(2))) / 4 / 2
    assert per_image[2] == pytest.approx(expected3)
    # Without the min() clipping the unigram terms would be 2 L3 * L3 / ..., twice as large.
    assert per_image[2] < 10 * ((1 / math.sqrt(3)) * math.exp(-1 / 72) + 1 / math.sqrt(2)) / 4 / 2
    assert mean == pytest.approx((10.0 + 0.0 + expected3) / 3)


def test_cider_d_repeating_a_word_earns_no_more_than_saying_it_once():
    _, once = cider_d(["red ball on grass", "blue sky", "dog"], REFS)
    _, twice = cider_d(["red ball on grass", "blue sky", "dog dog"], REFS)
    # "dog": unigram cosine L3*L3 / (L3 * sqrt(3) L3) = 1/sqrt 3 (ref 1, length 1 vs 3: exp(-4/72))
    #        and 1/sqrt 2 (ref 2, length 1 vs 2: exp(-1/72)).
    expected_once = 10 * ((1 / math.sqrt(3)) * math.exp(-4 / 72) + (1 / math.sqrt(2)) * math.exp(-1 / 72)) / 4 / 2
    assert once[2] == pytest.approx(expected_once)
    assert twice[2] < once[2]


def test_cider_d_gaussian_length_penalty():
    preds = ["red ball", "blue sky", "dog sleeps"]
    # Image 1, "red ball" against "red ball on grass":
    #   k=1: dot = L3^2 + L3^2, norms sqrt(2) L3 and 2 L3: cosine 2 / (2 sqrt 2) = 1/sqrt 2
    #   k=2: dot = L3^2 ("red ball"), norms L3 and sqrt(3) L3: 1/sqrt 3;  k=3, 4: the prediction has none: 0
    #   length 2 vs 4: penalty exp(-(2^2) / (2 * sigma^2))
    cosines = 1 / math.sqrt(2) + 1 / math.sqrt(3)
    _, default = cider_d(preds, REFS)
    assert default[0] == pytest.approx(10 * cosines * math.exp(-4 / 72) / 4)
    _, narrow = cider_d(preds, REFS, sigma=1.0)
    assert narrow[0] == pytest.approx(10 * cosines * math.exp(-4 / 2) / 4)
    _, wide = cider_d(preds, REFS, sigma=1e6)
    assert wide[0] == pytest.approx(10 * cosines / 4)


def test_cider_d_weights_common_ngrams_down():
    # "a" appears in every image's references: idf = log 3 - log 3 = 0, so it adds nothing to either vector.
    refs = [["a cat"], ["a dog"], ["a bird"]]
    _, scores = cider_d(["a cat", "a dog", "a fish"], refs)
    # "a cat" vs "a cat": unigram vectors {a: 0, cat: L3}: cosine 1; bigram {a cat: L3}: 1; orders 3, 4: 0.
    assert scores[0] == pytest.approx(10 * (1 + 1) / 4)
    # "a fish": only "a" is shared, and it weighs 0.
    assert scores[2] == 0.0


def test_cider_d_errors():
    with pytest.raises(ValueError, match="1 predictions but 2 references"):
        cider_d(["a"], [["a"], ["b"]])
    with pytest.raises(ValueError, match="predictions is empty"):
        cider_d([], [])


def test_vqa_accuracy_single_answers_after_normalization():
    assert vqa_accuracy(["Two.", "a dog", "yes"], ["2", "Dog", "no"]) == pytest.approx(2 / 3)


def test_vqa_accuracy_with_several_human_answers():
    humans = ["yes", "yes", "no", "yes", "yes", "no", "no", "yes", "yes", "yes"]  # 7 yes, 3 no
    assert vqa_accuracy(["yes"], [humans]) == 1.0  # 7 matches -> min(1, 7/3)
    assert vqa_accuracy(["no"], [humans]) == 1.0  # 3 matches -> 1
    assert vqa_accuracy(["No"], [["no", "yes", "yes", "yes"]]) == pytest.approx(1 / 3)
    assert vqa_accuracy(["maybe"], [humans]) == 0.0
    assert vqa_accuracy(["two", "red"], [["2", "2", "3"], "Red"]) == pytest.approx((2 / 3 + 1) / 2)


def test_exact_match():
    assert exact_match(["A cat.", "dog", "Two birds"], ["a cat", "cat", ["2 birds", "two birds!"]]) == \
        pytest.approx(2 / 3)


def test_accuracy_by_type():
    result = accuracy_by_type(["yes", "2", "red", "no"], ["yes", "3", "Red", ["no", "no", "no"]],
                              ["yes/no", "number", "color", "yes/no"])
    assert result == {"yes/no": 1.0, "number": 0.0, "color": 1.0}


def test_majority_baseline_answers_the_most_common_training_answer_per_type():
    train_answers = ["yes", "Yes", "no", "2", "two", "3", ["red", "blue", "red"], "red", "yes"]
    train_types = ["yes/no", "yes/no", "yes/no", "number", "number", "number", "color", "color", "yes/no"]
    # Majorities: yes/no -> "yes" (3 of 4), number -> "2" (2 of 3), color -> "red"; overall -> "yes" (3).
    test_answers = ["yes", "no", "2", "4", "red", "yes"]
    test_types = ["yes/no", "yes/no", "number", "number", "color", "what"]
    result = majority_baseline(train_answers, train_types, test_answers, test_types)
    assert result == {"yes/no": 0.5, "number": 0.5, "color": 1.0, "what": 1.0}  # "what" unseen: overall "yes"


# ------------------------------------------------------------------------------------------ speech recognition

def test_normalize_transcript():
    assert normalize_transcript("  Don't STOP\u2014the well-known \u201cCafe\u0301\u201d,  NOW!! ") == \
        "dont stop the well known caf\u00e9 now"
    assert normalize_transcript("\uff28\uff29 \ufb01ne dog\u2019s 3$") == "hi fine dogs 3$"  # NFKC, then lower case
    assert normalize_transcript("...--") == ""


def test_wer_counts_a_missing_word_as_one_deletion_over_the_reference_length():
    assert wer(["the cat sat"], ["the cat sat down"]) == pytest.approx(1 / 4)
    assert word_errors("the cat sat", "the cat sat down") == \
        {"substitutions": 0, "deletions": 1, "insertions": 0, "hits": 3}


def test_wer_ignores_case_and_punctuation():
    assert wer(["The cat, sat -- DOWN!"], ["the cat sat down"]) == 0.0
    assert wer(["don't"], ["dont"]) == 0.0  # apostrophes removed, not turned into a space


def test_word_errors_of_an_insertion_and_a_deletion():
    # ref "the cat sat down" vs "the black cat sat": the, cat, sat match; "black" inserted, "down" deleted
    # (2 edits, fewer than the 3 substitutions of aligning word by word).
    assert word_errors("the black cat sat", "the cat sat down") == \
        {"substitutions": 0, "deletions": 1, "insertions": 1, "hits": 3}


def test_wer_is_corpus_level_and_can_exceed_one():
    # 1 substitution in 4 + 1 = 5 reference words: 0.2 (the mean of the per-utterance rates would be 0.5).
    assert wer(["a b c d", "x"], ["a b c d", "y"]) == pytest.approx(1 / 5)
    # "a b c" against "x": 1 substitution + 2 insertions over 1 reference word.
    assert wer(["a b c"], ["x"]) == pytest.approx(3.0)


def test_cer_counted_by_hand():
    # "kitten" -> "sitting": k/s and e/i substituted, the final "g" deleted: 3 edits / 7 characters.
    assert cer(["kitten"], ["sitting"]) == pytest.approx(3 / 7)
    # The space between words is a character: "ab c" against "abc" is 1 insertion over 3.
    assert cer(["ab c"], ["abc"]) == pytest.approx(1 / 3)
    assert cer(["Hello, World!"], ["hello world"]) == 0.0
    # Corpus level: (3 + 0) edits over 7 + 5 characters.
    assert cer(["kitten", "hello"], ["sitting", "HELLO"]) == pytest.approx(3 / 12)


def test_empty_reference_adds_its_prediction_as_insertions_and_nothing_to_the_denominator():
    # The second reference is empty after normalization: "uh huh" is 2 insertions; the denominator stays 2 words.
    assert wer(["the cat", "uh huh"], ["the cat", "..."]) == pytest.approx(2 / 2)
    assert word_errors("uh huh", "") == {"substitutions": 0, "deletions": 0, "insertions": 2, "hits": 0}
    assert wer(["the cat", ""], ["the cat", ""]) == 0.0  # silence transcribed as silence costs nothing
    assert cer(["abc", "ab"], ["abc", "?"]) == pytest.approx(2 / 3)
    # An empty prediction deletes every reference word.
    assert word_errors("", "the cat") == {"substitutions": 0, "deletions": 2, "insertions": 0, "hits": 0}
    assert wer([""], ["the cat"]) == 1.0


def test_wer_and_cer_errors():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        wer(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="1 predictions but 2 references"):
        cer(["a"], ["a", "b"])
    with pytest.raises(TypeError, match="must be lists, not a single string"):
        wer("the cat", "the cat")
    with pytest.raises(ValueError, match="predictions is empty"):
        cer([], [])
    with pytest.raises(ValueError, match="every reference is empty after normalize_transcript"):
        wer(["uh"], ["?!"])
    with pytest.raises(TypeError, match="must be strings, got list and str"):
        word_errors(["a"], "a")


def test_classification_scores_by_hand():
    from omnigpt.metrics import classification_scores

    preds = ["cat", "cat", "dog", "dog", "bird", "fish"]
    labels = ["cat", "dog", "dog", "dog", "cat", "bird"]
    r = classification_scores(preds, labels)
    assert r["classes"] == ["bird", "cat", "dog"]
    assert r["accuracy"] == pytest.approx(3 / 6)
    # cat: precision 1/2, recall 1/2; dog: precision 2/2, recall 2/3; bird: never right -> 0
    assert r["per_class"]["cat"]["f1"] == pytest.approx(0.5)
    assert r["per_class"]["dog"]["f1"] == pytest.approx(2 * 1 * (2 / 3) / (1 + 2 / 3))
    assert r["per_class"]["bird"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert r["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert r["confusion"] == [[0, 0, 0, 1], [1, 1, 0, 0], [0, 1, 2, 0]]  # last column: "fish", not a class
    with pytest.raises(ValueError, match="labels outside the classes"):
        classification_scores(["a"], ["b"], classes=["a"])


def test_macro_f1_averages_over_the_classes_that_occur():
    from omnigpt.metrics import classification_scores

    r = classification_scores(["red", "red"], ["red", "red"], ["blue", "red"])
    assert r["accuracy"] == 1.0 and r["macro_f1"] == 1.0  # "blue" neither occurs nor is predicted
    assert classification_scores(["blue", "red"], ["red", "red"], ["blue", "red"])["macro_f1"] == pytest.approx(
        (0.0 + 2 / 3) / 2)
