import numpy as np
import pytest
import torch
from torch import nn

from dermcore.corruptions import CorruptionSpec
from dermcore.explain import Predictor
from dermcore.models import build_model
from dermcore.preprocessing import Preprocessing
from dermcore.robustness import robustness_curve

SIZE = 40  # 1600 pixels: every density on the default grid sets a whole number of them


class BlackPixelCounter(nn.Module):
    """Two classes, "Light" and "Dark": "Dark" wins once more than `threshold` of the pixels
    are pure black. Deterministic, so the tipping point is known in advance."""

    def __init__(self, threshold: float) -> None:
        super().__init__()
        self.threshold = threshold
        self.features = nn.Identity()  # the "CAM layer" a Predictor needs

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, H, W) in [-1, 1]
        black = (self.features(x) <= -0.999).all(dim=1).float().mean(dim=(1, 2))  # (N,)
        return torch.stack([torch.zeros_like(black), 100 * (black - self.threshold)], dim=1)


class EdgeCounter(nn.Module):
    """ "Sharp" while the mean horizontal pixel step exceeds `threshold`, else "Smooth"."""

    def __init__(self, threshold: float) -> None:
        super().__init__()
        self.threshold = threshold
        self.features = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps = (x[..., 1:] - x[..., :-1]).abs().mean(dim=(1, 2, 3))  # (N,)
        return torch.stack([torch.zeros_like(steps), 10 * (self.threshold - steps)], dim=1)


def crafted_predictor(model: nn.Module, classes: tuple[str, str]) -> Predictor:
    preprocessing = Preprocessing(SIZE, SIZE, mean=(0.5,) * 3, std=(0.5,) * 3)
    return Predictor(
        model, "efficientnet_lite0", preprocessing, classes=classes, cam_layer="features"
    )


@pytest.fixture(scope="module")
def lite0():
    torch.manual_seed(0)
    model = build_model("efficientnet_lite0", num_classes=10, pretrained=False)
    return Predictor(model, "efficientnet_lite0", Preprocessing(48, 48, (0.5,) * 3, (0.5,) * 3))


def test_noise_tipping_point_on_a_crafted_model():
    # 75% of the noisy pixels turn black: density 0.02 blackens 1.5% of the pixels, 0.0225 1.69%.
    predictor = crafted_predictor(BlackPixelCounter(threshold=0.016), ("Light", "Dark"))
    grey = np.full((SIZE, SIZE, 3), 128, np.uint8)
    curve = robustness_curve(predictor, grey)
    assert curve.clean_class == 0
    assert curve.noise_tipping_point == pytest.approx(0.0225)
    assert curve.blur_tipping_point is None  # blurring a flat grey image changes nothing
    assert list(curve.noise_top_classes[:9]) == [0] * 9 and (curve.noise_top_classes[9:] == 1).all()
    assert curve.describe() == (
        "The top class changes from Light to Dark at 2.25% noise; it holds under every blur kernel."
    )
    robust = robustness_curve(crafted_predictor(BlackPixelCounter(0.5), ("Light", "Dark")), grey)
    assert robust.noise_tipping_point is None
    assert robust.describe() == (
        "The top class, Light, holds at every noise density up to 5% and under every blur kernel."
    )


def test_blur_tipping_point_on_a_crafted_model():
    stripes = np.zeros((SIZE, SIZE, 3), np.uint8)
    for column in range(0, SIZE, 6):
        stripes[:, column : column + 3] = 255  # 3-pixel stripes: each larger kernel smooths more
    blurred_steps = {}
    for kernel in (5, 7):
        predictor = crafted_predictor(EdgeCounter(threshold=0.0), ("Sharp", "Smooth"))
        view = predictor.prepare(stripes, CorruptionSpec(blur_kernel=kernel))
        x = predictor.preprocessing.to_tensor(view)
        blurred_steps[kernel] = float((x[..., 1:] - x[..., :-1]).abs().mean())
    threshold = (blurred_steps[5] + blurred_steps[7]) / 2  # sharp enough at 5x5, not at 7x7
    predictor = crafted_predictor(EdgeCounter(threshold), ("Sharp", "Smooth"))
    curve = robustness_curve(predictor, stripes, densities=[0.0, 0.01], seeds=[0])
    assert curve.clean_class == 0 and curve.blur_tipping_point == 7
    assert curve.describe().endswith("; a 7x7 blur changes it to Smooth.")


def test_curve_shapes_and_batching_equals_one_by_one(lite0):
    photo = np.random.default_rng(0).integers(0, 256, size=(60, 80, 3), dtype=np.uint8)
    densities, kernels, seeds = [0.0, 0.01, 0.05], [1, 5], [0, 7]
    fractions = []
    curve = robustness_curve(
        lite0, photo, densities, kernels, seeds, progress=fractions.append, batch_size=3
    )
    assert curve.noise_probs.shape == (2, 3, 10) and curve.blur_probs.shape == (2, 10)
    assert curve.noise_probs.dtype == np.float32
    np.testing.assert_allclose(curve.noise_probs.sum(axis=-1), 1.0, atol=1e-5)
    assert fractions == sorted(fractions) and fractions[-1] == 1.0

    def one(spec: CorruptionSpec) -> np.ndarray:
        return lite0.predict(lite0.prepare(photo, spec))[0]

    for s, seed in enumerate(seeds):
        for d, density in enumerate(densities):
            expected = one(CorruptionSpec(noise_density=density, seed=seed))
            np.testing.assert_allclose(curve.noise_probs[s, d], expected, rtol=1e-4, atol=1e-6)
    for k, kernel in enumerate(kernels):
        expected = one(CorruptionSpec(blur_kernel=kernel))
        np.testing.assert_allclose(curve.blur_probs[k], expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(curve.clean_probs, one(CorruptionSpec()), rtol=1e-4, atol=1e-6)
    assert curve.clean_class == int(curve.clean_probs.argmax())


def test_photo_site_and_bad_arguments(lite0):
    photo = np.random.default_rng(1).integers(0, 256, size=(96, 64, 3), dtype=np.uint8)
    before = photo.copy()
    curve = robustness_curve(lite0, photo, [0.0, 0.05], [1, 3], [0], where="photo")
    np.testing.assert_array_equal(photo, before)
    expected = lite0.predict(lite0.prepare(photo, CorruptionSpec(noise_density=0.05), "photo"))
    np.testing.assert_allclose(curve.noise_probs[0, 1], expected[0], rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="where"):
        robustness_curve(lite0, photo, where="sensor")
    with pytest.raises(ValueError):
        robustness_curve(lite0, photo, kernels=[2])
    with pytest.raises(ValueError, match="non-empty"):
        robustness_curve(lite0, photo, seeds=[])


def test_abstain_runs_end_where_the_model_answers_again():
    """A model that declines at 1-2 % noise and answers again at 3-5 % shades 1-2 % only."""
    from dermcore.robustness import RobustnessCurve

    densities = np.array([0.0, 0.01, 0.02, 0.03, 0.04, 0.05])
    noise_abstain = np.array(
        [
            [False, True, True, False, False, True],
            [False, True, False, False, True, True],
            [False, False, True, False, False, True],
        ]
    )  # majority of the three seeds: 1 %, 2 % and 5 %
    blur_abstain = np.array([False, False, True, True])
    curve = RobustnessCurve(
        densities=densities, kernels=np.array([1, 3, 5, 7]), seeds=np.arange(3),
        noise_probs=np.full((3, 6, 2), 0.5, np.float32), blur_probs=np.full((4, 2), 0.5, np.float32),
        clean_probs=np.full(2, 0.5, np.float32), clean_class=0, classes=("a", "b"),
        noise_abstain=noise_abstain, blur_abstain=blur_abstain, clean_abstain=False,
        noise_familiarity=np.zeros((3, 6)), blur_familiarity=np.zeros(4), clean_familiarity=1.0,
    )  # fmt: skip
    assert curve.noise_abstain_runs == [(1, 2), (5, 5)]
    assert curve.blur_abstain_runs == [(2, 3)]
    assert curve.noise_abstention_onset == 0.01 and curve.blur_abstention_onset == 5
