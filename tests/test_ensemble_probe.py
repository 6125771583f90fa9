"""The ensemble probe's uncertainty scores and its table, on seeded probabilities."""

import numpy as np
import pytest

from training.ensemble_probe import SETS, score_rows, uncertainty_scores


def test_members_that_agree_have_no_mutual_information_and_disagreement_has_some():
    probs = np.array([[[0.7, 0.2, 0.1], [0.4, 0.3, 0.3]]] * 3)  # three identical members
    top, scores = uncertainty_scores(probs)
    assert top.tolist() == [0, 0]
    np.testing.assert_allclose(scores["confidence"], [0.7, 0.4])
    np.testing.assert_allclose(scores["neg_mutual_info"], 0, atol=1e-12)
    assert scores["neg_entropy"][0] > scores["neg_entropy"][1]  # the peaked row is more certain

    split = np.array([[[0.9, 0.05, 0.05]], [[0.05, 0.9, 0.05]]])  # two confident, opposed
    _, scores = uncertainty_scores(split)
    assert scores["neg_mutual_info"][0] < -0.4  # they disagree: much less certain
    _, alone = uncertainty_scores(split[:1])
    assert "neg_mutual_info" not in alone  # one member has no disagreement to measure


def test_score_rows_rank_right_above_wrong_and_answer_the_validation_share():
    rng = np.random.default_rng(0)
    probs, labels = {}, {}
    for name in SETS:
        n = 200
        labels[name] = rng.integers(0, 4, n)
        confident = rng.random(n) < 0.5
        logits = rng.normal(0, 0.3, (n, 4))
        logits[np.arange(n), labels[name]] += np.where(confident, 4.0, 0.0)  # right when sure
        p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        probs[name] = p[None]
    row = score_rows(probs, labels)
    assert row["test_auroc_confidence"] > 0.8
    assert row["shift_sd198_top1_answered_confidence"] > row["shift_sd198_top1"]
    assert row["test_answered_confidence"] == pytest.approx(0.9, abs=0.08)
    assert 0 <= row["test_ece"] <= 1
    assert "test_all_agree" not in row  # one member

    two = score_rows({n: np.concatenate([p, p[:, ::-1]]) for n, p in probs.items()}, labels)
    assert two["test_all_agree"] < 1  # the second member reads the photos in reverse order
