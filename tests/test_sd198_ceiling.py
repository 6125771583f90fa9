"""The SD-198 ceiling's measures, on seeded scores and logits."""

import numpy as np
import pytest

from training import metrics
from training.sd198_ceiling import (
    TARGET_ECE,
    best_top1_quarter,
    signal_row,
    softest_temperature,
    softmax_signals,
)


def test_best_top1_quarter_reads_the_best_prefix_of_at_least_a_quarter():
    correct = np.array([True, False, True, True, False, False, False, False])
    score = np.arange(8, 0, -1)  # already in trust order
    # prefixes of >= 2 photos: 1/2, 2/3, 3/4, 3/5, ... -> the best is 3/4
    assert best_top1_quarter(score, correct, 0.25) == pytest.approx(0.75)
    # with every photo required, the plain top-1
    assert best_top1_quarter(score, correct, 1.0) == pytest.approx(3 / 8)
    # the order comes from the score, not from the rows
    assert best_top1_quarter(score[::-1], correct, 0.25) == pytest.approx(3 / 8)


def test_signal_row_separates_a_score_that_knows_from_one_that_does_not():
    rng = np.random.default_rng(0)
    correct = rng.random(400) < 0.3
    knowing = correct + rng.normal(0, 0.3, 400)
    blind = rng.normal(0, 1, 400)
    good, bad = signal_row(knowing, correct), signal_row(blind, correct)
    assert good["auroc_right_wrong"] > 0.9 and abs(bad["auroc_right_wrong"] - 0.5) < 0.1
    assert good["best_top1_quarter"] > 0.9 > bad["best_top1_quarter"]
    assert "auroc_val_vs_shift" not in good
    shifted = signal_row(blind - 1, correct, val_score=rng.normal(0, 1, 300))
    assert shifted["auroc_val_vs_shift"] > 0.7  # validation scores higher: the shift is seen


def test_softmax_signals_are_higher_for_the_peaked_row():
    logits = np.array([[5.0, 0.0, 0.0], [1.0, 0.9, 0.8]])
    signals = softmax_signals(logits, temperature=1.0)
    for values in signals.values():
        assert values[0] > values[1]
    np.testing.assert_allclose(signals["confidence"], metrics.softmax(logits).max(axis=1))


def test_softest_temperature_softens_an_overconfident_shift_and_reports_the_cost():
    rng = np.random.default_rng(1)
    n, classes = 600, 5

    def logits_for(labels: np.ndarray, right: np.ndarray) -> np.ndarray:
        top = np.where(right, labels, (labels + 1) % classes)
        z = rng.normal(0, 0.2, (len(labels), classes))
        z[np.arange(len(labels)), top] += 4.0  # always confident
        return z

    val_labels, shift_labels = rng.integers(0, classes, n), rng.integers(0, classes, n)
    logits = {
        "val": logits_for(val_labels, rng.random(n) < 0.95),
        "shift": logits_for(shift_labels, rng.random(n) < 0.3),  # confident, mostly wrong
    }
    labels = {"val": val_labels, "shift": shift_labels}
    found = softest_temperature(logits, labels, temperature=1.0)
    assert found["factor"] > 1.5
    assert found["shift_ece"] <= TARGET_ECE
    before, _ = metrics.expected_calibration_error(val_labels, metrics.softmax(logits["val"]))
    assert found["val_ece"] > before  # the validation photos pay for it

    calibrated = softest_temperature(
        {"val": logits["val"], "shift": logits["val"]},
        {"val": val_labels, "shift": val_labels},
        1.0,
    )
    assert calibrated["factor"] == 1.0  # already within the target: no softening
