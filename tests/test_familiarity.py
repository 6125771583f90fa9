"""Familiarity statistics, abstention, the one-pass `assess` API and the non-skin set."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from dermcore.checkpoint import (
    CheckpointError,
    ModelCard,
    load_checkpoint,
    load_familiarity,
    save_checkpoint,
    save_familiarity,
)
from dermcore.explain import Assessment, Explanation, Predictor
from dermcore.familiarity import (
    BADGES,
    FamiliarityStats,
    abstention_score,
    familiarity_badge,
    fit_mahalanobis,
    percentile,
)
from dermcore.models import build_model
from dermcore.nonskin import non_skin_images
from dermcore.preprocessing import Preprocessing
from dermcore.robustness import robustness_curve
from tests.conftest import lesion_photo, with_random_batchnorm_statistics

SIZE = 64
PREP = Preprocessing(SIZE, SIZE, (0.5,) * 3, (0.5,) * 3)
NUM_CLASSES = 10


def skin_batch(seeds: range) -> np.ndarray:
    return np.stack([PREP.to_input_resolution(lesion_photo(s, 96, 128)) for s in seeds])


def ood_batch(n: int = 8) -> np.ndarray:
    rng = np.random.default_rng(99)
    noise = rng.integers(0, 256, (n // 2, SIZE, SIZE, 3), dtype=np.uint8)
    flat = np.broadcast_to(
        rng.integers(0, 256, (n - n // 2, 1, 1, 3), dtype=np.uint8), (n - n // 2, SIZE, SIZE, 3)
    )
    return np.concatenate([noise, flat]).astype(np.uint8)


VAL_SEEDS = range(100, 130)


def fit_stats(predictor: Predictor) -> FamiliarityStats:
    """Statistics of a tiny model on seeded synthetic lesion photos: 40 'training' photos with
    labels k % 10, 30 'validation' photos."""
    _, *train = predictor.embed(skin_batch(range(40)))
    val_logits, *val = predictor.embed(skin_batch(VAL_SEEDS))
    val_confidence = predictor.predict(skin_batch(VAL_SEEDS)).max(axis=1)
    labels = np.arange(40) % NUM_CLASSES
    return FamiliarityStats.fit(train, labels, val, val_confidence, NUM_CLASSES, "blocks.2")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("efficientnet_lite0", num_classes=NUM_CLASSES, pretrained=False)


@pytest.fixture(scope="module")
def stats(model):
    return fit_stats(Predictor(model, "efficientnet_lite0", PREP))


@pytest.fixture(scope="module")
def predictor(model, stats):
    return Predictor(model, "efficientnet_lite0", PREP, familiarity=stats, abstain_below=0.05)


@pytest.fixture(scope="module")
def checkpoint(model, stats, tmp_path_factory):
    directory = tmp_path_factory.mktemp("weights")
    card = ModelCard(name="tiny", arch="efficientnet_lite0", preprocessing=PREP.to_dict())
    card.abstention = {"threshold": 0.05, "confidence_min": 0.2}
    card_path = save_checkpoint(model, card, directory)
    save_familiarity(stats, card, card_path, fitted_on="synthetic test photos")
    return card_path


def copy_checkpoint(card_path, directory):
    for path in card_path.parent.iterdir():
        (directory / path.name).write_bytes(path.read_bytes())
    return directory / card_path.name


def leftover_hooks(model: torch.nn.Module) -> list[str]:
    kinds = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    return [
        f"{name}.{kind}" for name, m in model.named_modules() for kind in kinds if getattr(m, kind)
    ]


def test_stats_round_trip_through_the_checkpoint(checkpoint, stats, predictor):
    card = json.loads(checkpoint.read_text())
    assert card["familiarity"]["file"] == "tiny.familiarity.safetensors"
    assert card["familiarity"]["method"] == stats.method
    assert card["familiarity"]["fitted_on"] == "synthetic test photos"
    assert len(card["familiarity"]["sha256"]) == 64
    _, loaded_card = load_checkpoint(checkpoint)
    loaded = load_familiarity(loaded_card, checkpoint.parent)
    for key, tensor in stats.tensors().items():
        assert torch.equal(loaded.tensors()[key], tensor), key
    restored = Predictor.from_checkpoint(checkpoint)
    assert restored.abstain_below == 0.05 and restored.confidence_min == 0.2
    images = np.concatenate([skin_batch(range(200, 204)), ood_batch(4)])
    a, b = predictor.assess(images), restored.assess(images)
    np.testing.assert_allclose(a.probabilities, b.probabilities, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(a.familiarity, b.familiarity)
    np.testing.assert_array_equal(a.abstain, b.abstain)


def test_texture_only_stats_store_no_content_view(model, tmp_path):
    predictor = Predictor(model, "efficientnet_lite0", PREP)
    _, *train = predictor.embed(skin_batch(range(20)))
    _, *val = predictor.embed(skin_batch(VAL_SEEDS))
    labels = np.arange(20) % NUM_CLASSES
    stats = FamiliarityStats.fit(
        train, labels, val, np.ones(len(VAL_SEEDS)), NUM_CLASSES, "blocks.2", ("texture",)
    )
    assert stats.precision.numel() == 0 and stats.views == ("texture",)
    stats.save(tmp_path / "stats.safetensors")
    loaded = FamiliarityStats.load(tmp_path / "stats.safetensors")
    assert loaded.views == ("texture",) and loaded.texture_layer == "blocks.2"
    texture_only = Predictor(model, "efficientnet_lite0", PREP, familiarity=loaded)
    familiarity = texture_only.assess(ood_batch(4)).familiarity
    assert (familiarity == 0).all()


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_a_tampered_stats_file_is_refused_like_tampered_weights(checkpoint, tmp_path, damage):
    card_path = copy_checkpoint(checkpoint, tmp_path)
    stats_path = tmp_path / "tiny.familiarity.safetensors"
    data = bytearray(stats_path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
        stats_path.write_bytes(bytes(data))
    elif damage == "truncate":
        stats_path.write_bytes(bytes(data[:-10]))
    else:
        stats_path.unlink()
    match = {"flip": "checksum", "truncate": "truncated", "delete": "missing"}[damage]
    with pytest.raises(CheckpointError, match=f"familiarity statistics.*{match}"):
        load_checkpoint(card_path)
    with pytest.raises(CheckpointError, match="tiny.familiarity.safetensors"):
        Predictor.from_checkpoint(card_path)


def test_a_card_naming_no_stats_file_is_refused(checkpoint, tmp_path):
    card_path = copy_checkpoint(checkpoint, tmp_path)
    card = json.loads(card_path.read_text())
    card["familiarity"] = {"method": "mahalanobis"}
    card_path.write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="names no statistics file"):
        load_checkpoint(card_path)


def test_abstains_on_a_synthetic_out_of_distribution_batch(predictor):
    skin = predictor.assess(skin_batch(range(300, 320)))
    ood = predictor.assess(ood_batch(8))
    assert isinstance(ood, Assessment)
    assert ood.abstain.all() and (ood.familiarity == 0).all()
    assert skin.abstain.mean() <= 0.25 and np.median(skin.familiarity) > 0.2
    assert ood.probabilities.shape == (8, NUM_CLASSES) and ood.abstain.dtype == bool
    assert ((skin.familiarity >= 0) & (skin.familiarity <= 1)).all()
    np.testing.assert_array_equal(skin.abstain, skin.score < 0.05)


def test_assessment_from_cached_outputs_equals_assess(predictor):
    images = np.concatenate([skin_batch(range(500, 503)), ood_batch(2)])
    direct, cached = predictor.assess(images), predictor.assessment_from(*predictor.embed(images))
    for field in ("probabilities", "familiarity", "abstain", "score"):
        np.testing.assert_array_equal(getattr(direct, field), getattr(cached, field))


def test_validation_photos_spread_over_zero_to_one(predictor, stats):
    familiarity = predictor.assess(skin_batch(VAL_SEEDS)).familiarity
    assert familiarity.min() == 0 and familiarity.max() >= 0.8
    assert 0.3 < familiarity.mean() < 0.7
    scores = stats.val_scores
    np.testing.assert_allclose(percentile(scores, scores), np.arange(len(scores)) / len(scores))


def test_mahalanobis_fit_recovers_class_means():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 50)
    features = rng.normal(size=(150, 4)) + np.eye(3, 4)[labels] * 10
    means, precision = fit_mahalanobis(features, labels, 3)
    np.testing.assert_allclose(means, np.eye(3, 4) * 10, atol=0.5)
    assert precision.shape == (4, 4) and np.allclose(precision, precision.T)
    with pytest.raises(ValueError, match="every class"):
        fit_mahalanobis(features, labels, 4)


@pytest.mark.parametrize("call", ["assess", "explain"])
def test_exactly_one_forward_pass_per_call(predictor, call):
    calls = []
    handle = predictor.model.register_forward_hook(lambda *args: calls.append(1))
    try:
        if call == "assess":
            predictor.assess(np.concatenate([skin_batch(range(5)), ood_batch(4)]), batch_size=64)
        else:
            predictor.explain(skin_batch(range(1))[0])
    finally:
        handle.remove()
    assert len(calls) == 1
    assert leftover_hooks(predictor.model) == []


def test_explanation_carries_familiarity_and_abstention(predictor, model):
    skin, odd = skin_batch(range(400, 401))[0], ood_batch(2)[0]
    for image in (skin, odd):
        explanation = predictor.explain(image)
        assessment = predictor.assess(image)
        assert isinstance(explanation, Explanation)
        assert explanation.familiarity == pytest.approx(assessment.familiarity[0])
        assert explanation.abstain == bool(assessment.abstain[0])
        np.testing.assert_allclose(
            explanation.probabilities, assessment.probabilities[0], rtol=1e-4, atol=1e-6
        )
    assert predictor.explain(odd).abstain and predictor.explain(odd, method="gradcam++").abstain
    assert leftover_hooks(model) == []


def test_without_stats_familiarity_is_nan_and_confidence_decides(model):
    bare = Predictor(model, "efficientnet_lite0", PREP)
    image = skin_batch(range(1))
    assessment = bare.assess(image)
    assert np.isnan(assessment.familiarity).all() and not assessment.abstain.any()
    explanation = bare.explain(image[0])
    assert np.isnan(explanation.familiarity) and explanation.abstain is False
    strict = Predictor(model, "efficientnet_lite0", PREP, confidence_min=1.01)
    assert strict.assess(image).abstain.all() and strict.explain(image[0]).abstain


def test_abstention_score_is_the_smaller_percentile():
    score = abstention_score(np.array([0.1, 0.9, np.nan]), np.array([0.5, 0.2, 0.3]))
    np.testing.assert_allclose(score, [0.1, 0.2, 0.3])


def test_abstention_score_ranks_familiar_photos_by_confidence_and_keeps_the_decisions():
    rng = np.random.default_rng(0)
    familiarity, confidence = rng.random(500), rng.random(500)
    familiarity[:5] = np.nan  # no statistics: the confidence alone
    plain = abstention_score(familiarity, confidence)
    for threshold in (0.0, 0.05, 0.3):
        gated = abstention_score(familiarity, confidence, threshold)
        np.testing.assert_array_equal(gated < threshold, plain < threshold)
        passed = familiarity >= threshold
        np.testing.assert_array_equal(gated[passed], confidence[passed])
        np.testing.assert_array_equal(gated[~passed], plain[~passed])
    np.testing.assert_array_equal(abstention_score([0.9, 0.01], [0.2, 0.8], 0.05), [0.2, 0.01])


@pytest.mark.parametrize(
    ("familiarity", "badge"),
    [(0.9, BADGES[0]), (0.05, BADGES[0]), (0.049, BADGES[1]), (0.001, BADGES[1]), (0.0, BADGES[2])],
)
def test_familiarity_badge(familiarity, badge):
    assert familiarity_badge(familiarity) == badge


def test_familiarity_badge_without_stats_and_out_of_range():
    assert familiarity_badge(None) is None and familiarity_badge(float("nan")) is None
    with pytest.raises(ValueError):
        familiarity_badge(1.5)


def test_robustness_curve_marks_abstention(model, stats):
    # every validation answer as unsure as can be: only familiarity decides here
    unsure = dataclasses.replace(stats, val_confidence=torch.zeros_like(stats.val_confidence))
    predictor = Predictor(model, "efficientnet_lite0", PREP, familiarity=unsure, abstain_below=0.05)
    curve = robustness_curve(predictor, lesion_photo(1, 96, 128), [0.0, 0.5], [1, 3], [0, 1])
    assert curve.noise_abstain.shape == (2, 2) and curve.noise_abstain.dtype == bool
    assert curve.blur_abstain.shape == (2,) and curve.noise_familiarity.shape == (2, 2)
    # half the pixels as impulses is nothing like a lesion photo
    assert curve.noise_abstain[:, 1].all() and curve.noise_abstention_onset == 0.5
    assert not curve.clean_abstain and not curve.noise_abstain[:, 0].any()
    assert curve.clean_familiarity > 0.05 and (curve.noise_familiarity[:, 1] == 0).all()


def test_non_skin_set_is_deterministic_and_large_enough():
    first, second = non_skin_images(seed=0), non_skin_images(seed=0)
    assert len(first) >= 40 and list(first) == list(second)
    for name, image in first.items():
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, name
        np.testing.assert_array_equal(image, second[name])
    other = non_skin_images(seed=1)
    assert any(not np.array_equal(first[n], other[n]) for n in first)


def test_from_checkpoint_folds_batchnorm_and_answers_as_the_unfolded_model(tmp_path):
    """Predictor.from_checkpoint folds BatchNorm into the convolutions for speed: the same top
    classes, probabilities within 1e-4, the same familiarity, abstention and Grad-CAM."""
    torch.manual_seed(3)
    net = with_random_batchnorm_statistics(build_model("efficientnet_lite0", pretrained=False))
    reference = Predictor(net, "efficientnet_lite0", PREP)
    card = ModelCard(name="folded", arch="efficientnet_lite0", preprocessing=PREP.to_dict())
    card.abstention = {"threshold": 0.05, "confidence_min": 0.2}
    card_path = save_checkpoint(net, card, tmp_path)
    save_familiarity(fit_stats(reference), card, card_path, fitted_on="synthetic test photos")
    folded = Predictor.from_checkpoint(card_path)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.model.modules())
    model, loaded_card = load_checkpoint(card_path)
    unfolded = Predictor(
        model,
        "efficientnet_lite0",
        PREP,
        familiarity=load_familiarity(loaded_card, tmp_path),
        abstain_below=0.05,
    )
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in unfolded.model.modules())
    images = np.concatenate([skin_batch(range(200, 216)), ood_batch()])
    fast, slow = folded.assess(images), unfolded.assess(images)
    np.testing.assert_allclose(fast.probabilities, slow.probabilities, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(fast.probabilities.argmax(1), slow.probabilities.argmax(1))
    np.testing.assert_allclose(fast.familiarity, slow.familiarity, rtol=0, atol=1 / 30)
    np.testing.assert_array_equal(fast.abstain, slow.abstain)
    assert fast.abstain.any() and not fast.abstain.all()
    for image in images[[0, -1]]:
        a, b = folded.explain(image), unfolded.explain(image)
        assert a.target == b.target
        np.testing.assert_allclose(a.cam, b.cam, rtol=0, atol=1e-3)


def test_assess_takes_a_list_of_photos_of_any_sizes(predictor):
    photos = [lesion_photo(1, 96, 128), lesion_photo(2, 120, 90), skin_batch([3])[0]]
    assessment = predictor.assess(photos)
    assert assessment.probabilities.shape == (3, NUM_CLASSES)
    for k, photo in enumerate(photos):
        alone = predictor.assess(photo)
        np.testing.assert_allclose(assessment.probabilities[k], alone.probabilities[0], atol=1e-6)
        np.testing.assert_allclose(assessment.familiarity[k], alone.familiarity[0], atol=1e-6)
        assert assessment.abstain[k] == alone.abstain[0]
