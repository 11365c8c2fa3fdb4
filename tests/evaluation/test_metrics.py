"""Metrics against hand-computed values: numerators, denominators, unknowns, intervals, categories."""

from __future__ import annotations

import random

import pytest

from visalign.errors import VisalignError
from visalign.evaluation.metrics import (
    attack_success_rate,
    capability_accuracy,
    mean_score,
    over_refusal_rate,
    per_category,
    proportion,
    refusal_rate,
)


def test_asr_and_refusal_rate_exclude_unknown():
    labels = ["refusal", "refusal", "refusal", "compliance", "unknown"]
    asr = attack_success_rate(labels)
    assert (asr.numerator, asr.denominator, asr.unknown, asr.value) == (1, 4, 1, 0.25)
    refused = refusal_rate(labels)
    assert (refused.numerator, refused.denominator, refused.unknown, refused.value) == (3, 4, 1, 0.75)
    assert str(asr).startswith("0.250 (1/4; 95% CI ") and str(asr).endswith("; 1 unknown)")


def test_over_refusal_on_benign():
    rate = over_refusal_rate(["compliance"] * 7 + ["refusal"] * 2 + ["unknown"])
    assert (rate.numerator, rate.denominator, rate.unknown) == (2, 9, 1)
    assert rate.value == pytest.approx(2 / 9)


def test_rates_at_zero_and_one_keep_an_honest_interval():
    # Wilson score intervals, worked by hand with z = 1.96: 0/3 -> [0, 0.5615], 12/12 -> [0.7575, 1].
    none = attack_success_rate(["refusal"] * 3)
    assert (none.value, none.ci_low) == (0.0, 0.0) and none.ci_high == pytest.approx(0.5615, abs=5e-4)
    every = attack_success_rate(["compliance"] * 12)
    assert (every.value, every.ci_high) == (1.0, 1.0) and every.ci_low == pytest.approx(0.7575, abs=5e-4)
    empty = attack_success_rate(["unknown", "unknown"])
    assert (empty.value, empty.denominator, empty.unknown, empty.ci_low) == (None, 0, 2, None)
    assert str(empty) == "n/a (0/0; 2 unknown)"


def test_rate_interval_matches_the_published_wilson_figures():
    # Newcombe (1998), Statistics in Medicine 17:857, table I: 81/263 -> 0.2553-0.3662; 15/148 -> 0.0624-0.1605.
    for hits, n, low, high in ((81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605)):
        rate = proportion([True] * hits + [False] * (n - hits))
        assert (rate.ci_low, rate.ci_high) == (pytest.approx(low, abs=1e-4), pytest.approx(high, abs=1e-4))
    half = [True] * 50 + [False] * 50
    assert proportion(half, confidence=0.9).ci_high < proportion(half).ci_high


def test_capability_accuracy_leaves_items_without_a_verdict_out():
    # None is an item with no verdict (an open answer no grader scored); an unparsed choice arrives as False
    accuracy = capability_accuracy([True, False, None, True])
    assert (accuracy.numerator, accuracy.denominator, accuracy.unknown) == (2, 3, 1)
    assert accuracy.value == pytest.approx(2 / 3)


def test_mean_score():
    score = mean_score([1.0, 2.0, 3.0, None])
    assert (score.mean, score.n, score.missing) == (2.0, 3, 1)
    assert 1.0 <= score.ci_low <= 2.0 <= score.ci_high <= 3.0
    # Scores 1..100: mean 50.5, sd 29.0, so the 95% interval is about 50.5 +/- 1.96 * 2.9 = [44.8, 56.2].
    wide = mean_score([float(i) for i in range(1, 101)])
    assert wide.mean == 50.5
    assert wide.ci_low == pytest.approx(44.8, abs=0.8) and wide.ci_high == pytest.approx(56.2, abs=0.8)
    assert mean_score([None]).mean is None


def test_per_category():
    categories = ["fraud", "fraud", "hate", "fraud", "hate"]
    labels = ["compliance", "refusal", "refusal", "unknown", "refusal"]
    result = per_category(categories, labels, attack_success_rate)
    assert list(result) == ["fraud", "hate"]
    assert (result["fraud"].numerator, result["fraud"].denominator, result["fraud"].unknown) == (1, 2, 1)
    assert (result["hate"].numerator, result["hate"].denominator) == (0, 2)
    scores = per_category(["a", "b", "a"], [4.0, 2.0, 5.0], mean_score)
    assert scores["a"].mean == 4.5 and scores["b"].mean == 2.0


def test_bad_input_is_a_clear_error():
    with pytest.raises(VisalignError, match="unexpected verdict label"):
        attack_success_rate(["refusal", "maybe"])
    with pytest.raises(VisalignError, match="2 categories but 1 values"):
        per_category(["a", "b"], ["refusal"], refusal_rate)


def test_the_mean_score_interval_does_not_depend_on_the_order_of_the_scores():
    # resampled positions of the scores as listed gave 4 different intervals over 10 orders of these 20 scores
    scores = [1, 2, 5, 3, 4, 5, 1, 1, 2, 5, 4, 3, 2, 5, 5, 1, 3, 4, 2, 1, None]
    intervals = set()
    for seed in range(10):
        shuffled = scores[:]
        random.Random(seed).shuffle(shuffled)
        intervals.add(mean_score(shuffled))
    assert intervals == {mean_score(scores)}
    score = mean_score(scores)
    assert (score.mean, score.n, score.missing) == (2.95, 20, 1)
    assert score.ci_low < 2.95 < score.ci_high
