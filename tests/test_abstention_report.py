"""The abstention report's measures, checked on hand-made assessments."""

import numpy as np
import pytest

from dermcore.explain import Assessment
from training.abstention_report import condition_block, risk_coverage
from training.familiarity import choose_threshold, flip_catch, non_skin_refusals


def assessment(top: list[int], abstain: list[bool], score: list[float]) -> Assessment:
    probabilities = np.full((len(top), 3), 0.1, np.float32)
    probabilities[np.arange(len(top)), top] = 0.8
    familiarity = np.asarray(score, np.float64)
    return Assessment(probabilities, familiarity, np.asarray(abstain), familiarity.copy())


def test_risk_coverage_and_aurc():
    score = np.array([0.9, 0.8, 0.7, 0.1])
    correct = np.array([True, True, False, False])
    curve, aurc = risk_coverage(score, correct)
    np.testing.assert_allclose(curve["coverage"], [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(curve["risk"], [0, 0, 1 / 3, 0.5])
    assert aurc == pytest.approx((0 + 0 + 1 / 3 + 0.5) / 4)


def test_condition_block_coverage_accuracy_and_flip_catch():
    labels = np.array([0, 1, 2, 0])
    clean = assessment([0, 1, 2, 0], [False] * 4, [0.9, 0.8, 0.7, 0.6])
    noisy = assessment([0, 2, 1, 0], [False, True, False, False], [0.9, 0.01, 0.5, 0.6])
    block = condition_block(noisy, labels, clean)
    assert block["coverage"] == 0.75 and block["n_answered"] == 3
    assert block["top1_all"] == 0.5 and block["top1_answered"] == pytest.approx(2 / 3)
    assert block["flip_rate"] == 0.5 and block["flip_catch"] == 0.5
    assert block["flip_catch_wrong"] == 0.5
    unlabelled = condition_block(noisy, None, None)
    assert "top1_all" not in unlabelled and unlabelled["coverage"] == 0.75


def test_threshold_keeps_the_coverage_and_flip_catch_counts_flips_only():
    score = np.linspace(0, 1, 101)[:-1]  # 100 validation scores 0.00 .. 0.99
    threshold = choose_threshold(score, 0.9)
    assert threshold == pytest.approx(0.1) and (score >= threshold).mean() == 0.9
    assert flip_catch(np.array([0, 1, 2]), np.array([0, 2, 2]), np.array([True, True, False])) == 1
    assert np.isnan(flip_catch(np.array([0]), np.array([0]), np.array([True])))


def test_non_skin_refusals_follow_each_candidates_own_score():
    """A texture-like score that sees the non-skin images refuses them all; a score that cannot
    tell them from validation refuses about its 10 % budget, and so does confidence alone."""
    rng = np.random.default_rng(0)
    n, m = 400, 40
    logits = np.zeros((n + m, 3))
    logits[:, 0] = 6.0 + rng.normal(0, 0.5, n + m)  # skin or not, the same confidences
    texture = np.r_[rng.normal(0, 1, n), rng.normal(8, 1, m)]  # far away for the non-skin ones
    blind = rng.normal(0, 1, n + m)  # the same for both

    def score(values):
        return lambda lg, feats, tex: -np.abs(values[: len(lg)] if len(lg) == n else values[n:])

    views = [(logits[:n], np.zeros((n, 1)), np.zeros((n, 1))),
             (logits[n:], np.zeros((m, 1)), np.zeros((m, 1)))]  # fmt: skip
    refused = non_skin_refusals(
        {"texture": [score(texture)], "blind": [score(blind)]}, *views, 1.0, 0.9
    )
    assert refused["texture"] == 1.0
    assert refused["blind"] < 0.3
    assert refused["confidence"] < 0.3
