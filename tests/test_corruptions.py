"""Corruptions: exact counts, exact OpenCV equivalence, invariants and argument validation."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from dermcore.corruptions import (
    CORRUPTION_SITES,
    CORRUPTIONS,
    CorruptionSpec,
    apply_batch,
    apply_corruption,
    corrupt_for_model,
    exposure,
    gaussian_blur,
    jpeg_compression,
    motion_blur,
    motion_kernel,
    salt_and_pepper,
)
from dermcore.preprocessing import Preprocessing

BLACK, WHITE = 0, 255


def make_image(height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    """Seeded photo-like uint8 image: smooth gradients plus texture, values in [1, 254] so no
    pixel is pure black or white before noise is added."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    base = np.stack([xs / width, ys / height, (xs + ys) / (width + height)], axis=-1) * 200 + 20
    texture = rng.normal(0, 15, size=(height, width, 3))
    return np.clip(base + texture, 1, 254).astype(np.uint8)


def changed_mask(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    return np.any(before != after, axis=-1)


def is_black(image: np.ndarray) -> np.ndarray:
    return np.all(image == BLACK, axis=-1)


def is_white(image: np.ndarray) -> np.ndarray:
    return np.all(image == WHITE, axis=-1)


# ---------------------------------------------------------------------------- salt and pepper


@pytest.mark.parametrize(
    ("height", "width", "density"),
    [
        (32, 32, 0.05),
        (31, 57, 0.023),
        (57, 31, 0.01),
        (1, 1, 1.0),
        (10, 7, 0.5),
        (224, 224, 0.05),
        (40, 30, 0.0),
        (40, 30, 1.0),
        (13, 17, 0.003),  # rounds to 1 pixel
    ],
)
@pytest.mark.parametrize("pepper_fraction", [0.75, 0.0, 1.0, 0.5])
def test_salt_and_pepper_changes_exact_counts(height, width, density, pepper_fraction):
    image = make_image(height, width)
    out = salt_and_pepper(image, density, pepper_fraction, rng=np.random.default_rng(1))
    n_changed = round(density * height * width)
    n_black = round(pepper_fraction * n_changed)
    changed = changed_mask(image, out)
    assert changed.sum() == n_changed
    assert (is_black(out) & changed).sum() == n_black
    assert (is_white(out) & changed).sum() == n_changed - n_black
    # Every changed pixel is fully black or fully white: channels change together.
    assert np.all(is_black(out) | is_white(out) | ~changed)
    assert np.array_equal(out[~changed], image[~changed])
    assert out.dtype == np.uint8 and out.shape == image.shape


def test_salt_and_pepper_default_is_the_papers_three_to_one():
    image = make_image(100, 100)
    out = salt_and_pepper(image, 0.05, rng=np.random.default_rng(0))
    assert is_black(out).sum() == 375 and is_white(out).sum() == 125


def test_salt_and_pepper_positions_are_spread_and_seeded():
    image = make_image(64, 64)
    a = salt_and_pepper(image, 0.1, rng=np.random.default_rng(7))
    b = salt_and_pepper(image, 0.1, rng=np.random.default_rng(7))
    c = salt_and_pepper(image, 0.1, rng=np.random.default_rng(8))
    assert np.array_equal(a, b)
    assert not np.array_equal(changed_mask(image, a), changed_mask(image, c))
    rows = np.flatnonzero(changed_mask(image, a).any(axis=1))
    assert rows.min() < 16 and rows.max() > 48  # not clustered at the start of the image


def test_salt_and_pepper_pepper_positions_are_random_among_changed():
    # Black and white must be interleaved, not e.g. black always on the first rows.
    image = make_image(64, 64)
    out = salt_and_pepper(image, 0.2, 0.5, rng=np.random.default_rng(3))
    black_rows = np.nonzero(is_black(out))[0]
    white_rows = np.nonzero(is_white(out))[0]
    assert abs(black_rows.mean() - white_rows.mean()) < 5


def test_salt_and_pepper_does_not_consume_global_numpy_state():
    np.random.seed(0)
    expected = np.random.random()
    np.random.seed(0)
    salt_and_pepper(make_image(), 0.05, rng=np.random.default_rng(0))
    assert np.random.random() == expected


# ---------------------------------------------------------------------------- blurs


@pytest.mark.parametrize("kernel_size", [3, 5, 7, 9, 11])
@pytest.mark.parametrize("sigma", [0.0, 1.0, 2.5])
def test_gaussian_blur_equals_opencv(kernel_size, sigma):
    image = make_image(37, 53)
    expected = cv2.GaussianBlur(image, (kernel_size, kernel_size), sigma)
    assert np.array_equal(gaussian_blur(image, kernel_size, sigma), expected)


def test_gaussian_blur_kernel_one_is_identity_copy():
    image = make_image()
    out = gaussian_blur(image, 1)
    assert np.array_equal(out, image) and not np.shares_memory(out, image)


def test_gaussian_blur_default_is_papers_5x5():
    image = make_image()
    assert np.array_equal(gaussian_blur(image), cv2.GaussianBlur(image, (5, 5), 0))


@pytest.mark.parametrize("length_px", [2, 3, 4, 5, 8, 15, 31])
@pytest.mark.parametrize("angle_deg", [0.0, 17.0, 30.0, 45.0, 90.0, 123.0, -60.0])
def test_motion_kernel_is_normalised_odd_and_symmetric(length_px, angle_deg):
    kernel = motion_kernel(length_px, angle_deg)
    assert kernel.dtype == np.float32
    assert kernel.shape[0] == kernel.shape[1] and kernel.shape[0] % 2 == 1
    assert kernel.sum() == pytest.approx(1.0, abs=1e-5)
    assert kernel.min() >= 0
    # Point-symmetric about the centre, so filter2D's correlation equals convolution.
    np.testing.assert_allclose(kernel, kernel[::-1, ::-1], atol=1e-7)
    # Rotating the motion by 90 degrees rotates the kernel (counter-clockwise on screen).
    np.testing.assert_allclose(
        motion_kernel(length_px, angle_deg + 90), np.rot90(kernel), atol=1e-6
    )


@pytest.mark.parametrize("length_px", [2, 3, 5, 6, 9])
def test_motion_kernel_horizontal_is_one_row_and_vertical_its_transpose(length_px):
    kernel = motion_kernel(length_px, 0)
    centre = kernel.shape[0] // 2
    off_row = np.delete(kernel, centre, axis=0)
    assert np.all(off_row == 0)
    assert np.count_nonzero(kernel[centre]) == (length_px if length_px % 2 else length_px + 1)
    assert np.array_equal(motion_kernel(length_px, 90), kernel.T)
    assert np.array_equal(motion_kernel(length_px, 180), kernel)


def test_motion_kernel_odd_length_is_a_box_of_that_length():
    np.testing.assert_allclose(motion_kernel(5, 0)[2], np.full(5, 0.2, np.float32))


@pytest.mark.parametrize("length_px", [0, 1])
def test_motion_kernel_short_is_identity(length_px):
    assert np.array_equal(motion_kernel(length_px, 33.0), np.ones((1, 1), np.float32))
    image = make_image()
    out = motion_blur(image, length_px, 33.0)
    assert np.array_equal(out, image) and not np.shares_memory(out, image)


def single_white_pixel(size: int = 41) -> np.ndarray:
    image = np.zeros((size, size, 3), np.uint8)
    image[size // 2, size // 2] = 255
    return image


@pytest.mark.parametrize(
    ("angle_deg", "row_step", "col_step"),
    [(0, 0, 1), (90, 1, 0), (45, -1, 1), (135, 1, 1)],
)
def test_motion_blur_spreads_a_point_along_the_motion(angle_deg, row_step, col_step):
    length = 9
    image = single_white_pixel()
    out = motion_blur(image, length, angle_deg)
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 0], out[..., 2])
    rows, cols = np.nonzero(out[..., 0])
    centre = image.shape[0] // 2
    dr, dc = rows - centre, cols - centre
    # Everything lit lies within a pixel of the line through the centre along (row_step, col_step)
    # and the lit pixels reach out to the segment's end.
    direction = np.array([row_step, col_step], float) / np.hypot(row_step, col_step)
    along = dr * direction[0] + dc * direction[1]
    across = np.abs(dr * direction[1] - dc * direction[0])
    assert across.max() <= 1.0
    assert along.max() >= (length - 1) / 2 - 0.5 and along.min() <= -(length - 1) / 2 + 0.5
    weights = out[rows, cols, 0].astype(float)
    if row_step and col_step:  # diagonal: signs of row and column offsets tell which diagonal
        assert np.sign(np.sum(weights * dr * dc)) == row_step * col_step


def test_motion_blur_matches_filter2d_with_the_kernel():
    image = make_image()
    kernel = motion_kernel(7, 20)
    expected = cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT_101)
    assert np.array_equal(motion_blur(image, 7, 20), expected)


# ---------------------------------------------------------------------------- JPEG and exposure


def test_jpeg_quality_orders_the_error():
    # Grey, so the error is the quantisation that quality controls, not 4:2:0 chroma subsampling.
    image = np.repeat(make_image(64, 80)[..., :1], 3, axis=-1)
    errors = [
        np.abs(jpeg_compression(image, q).astype(int) - image).mean() for q in (10, 30, 60, 90, 100)
    ]
    assert errors == sorted(errors, reverse=True)
    assert errors[-1] < 0.5 and errors[0] > 5


@pytest.mark.parametrize("quality", [1, 50, 100])
@pytest.mark.parametrize(("height", "width"), [(8, 8), (13, 29)])
def test_jpeg_shape_dtype_and_reference(quality, height, width):
    image = make_image(height, width)
    out = jpeg_compression(image, quality)
    assert out.dtype == np.uint8 and out.shape == image.shape
    _, encoded = cv2.imencode(
        ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    expected = cv2.cvtColor(cv2.imdecode(encoded, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert np.array_equal(out, expected)


def test_exposure_one_is_identity_and_monotone_lut():
    image = np.arange(256, dtype=np.uint8).repeat(3).reshape(16, 16, 3)
    assert np.array_equal(exposure(image, 1.0), image)
    for factor in (0.25, 0.5, 0.9, 1.1, 2.0, 4.0):
        out = exposure(image, factor)[..., 0].ravel()
        assert np.all(np.diff(out.astype(int)) >= 0)  # still monotone in brightness
        assert out[0] == 0
        if factor > 1:
            assert np.all(out >= np.arange(256)) and out[-1] == 255
        else:
            assert np.all(out <= np.arange(256)) and out[-1] < 255


@pytest.mark.parametrize(("value", "factor", "expected"), [(188, 2.0, 255), (255, 0.5, 188)])
def test_exposure_works_in_linear_light(value, factor, expected):
    # sRGB 188 is ~0.50 linear: doubling saturates it, halving 1.0 lands back on it.
    image = np.full((2, 2, 3), value, np.uint8)
    assert np.all(exposure(image, factor) == expected)


def test_exposure_one_stop_down_of_mid_grey():
    # sRGB 118 is ~18% grey; half the light is ~9% -> sRGB ~84, far from a naive 59.
    out = exposure(np.full((1, 1, 3), 118, np.uint8), 0.5)
    assert 82 <= out[0, 0, 0] <= 86


# ---------------------------------------------------------------------------- invariants


def all_corruptions(image: np.ndarray) -> list[np.ndarray]:
    return [
        salt_and_pepper(image, 0.05, rng=np.random.default_rng(0)),
        gaussian_blur(image, 5),
        motion_blur(image, 7, 30),
        jpeg_compression(image, 40),
        exposure(image, 0.6),
        apply_corruption(image, CorruptionSpec(noise_density=0.05, blur_kernel=5, jpeg_quality=50)),
        corrupt_for_model(image, CorruptionSpec(noise_density=0.05), Preprocessing(32, 32)),
        corrupt_for_model(
            image, CorruptionSpec(noise_density=0.05), Preprocessing(32, 32), "photo"
        ),
    ]


@pytest.mark.parametrize("read_only", [False, True])
def test_inputs_are_never_mutated_and_outputs_are_new_writable(read_only):
    image = make_image(40, 56)
    original = image.copy()
    if read_only:
        image.setflags(write=False)
    for out in all_corruptions(image):
        assert np.array_equal(image, original)
        assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
        assert out.flags.writeable and not np.shares_memory(out, image)


def test_non_contiguous_input_works():
    image = make_image(40, 112)[:, ::2]
    out = salt_and_pepper(image, 0.1, rng=np.random.default_rng(0))
    assert changed_mask(image, out).sum() == round(0.1 * 40 * 56)
    assert np.array_equal(gaussian_blur(image, 5), gaussian_blur(image.copy(), 5))


def test_registry_names_every_corruption_in_application_order():
    assert list(CORRUPTIONS) == [
        "gaussian_blur",
        "motion_blur",
        "exposure",
        "salt_and_pepper",
        "jpeg_compression",
    ]
    assert CORRUPTIONS["salt_and_pepper"] is salt_and_pepper


# ---------------------------------------------------------------------------- invalid arguments

IMAGE = make_image(16, 16)
RNG = np.random.default_rng(0)


@pytest.mark.parametrize(
    "call",
    [
        lambda: salt_and_pepper(IMAGE, -0.01, rng=RNG),
        lambda: salt_and_pepper(IMAGE, 1.01, rng=RNG),
        lambda: salt_and_pepper(IMAGE, float("nan"), rng=RNG),
        lambda: salt_and_pepper(IMAGE, "0.05", rng=RNG),
        lambda: salt_and_pepper(IMAGE, 0.05, -0.1, rng=RNG),
        lambda: salt_and_pepper(IMAGE, 0.05, 1.5, rng=RNG),
        lambda: salt_and_pepper(IMAGE, 0.05, rng=None),
        lambda: salt_and_pepper(IMAGE, 0.05, rng=0),
        lambda: salt_and_pepper(IMAGE, 0.05, rng=np.random.RandomState(0)),
        lambda: salt_and_pepper(IMAGE.astype(np.float32), 0.05, rng=RNG),
        lambda: salt_and_pepper(IMAGE[..., 0], 0.05, rng=RNG),
        lambda: salt_and_pepper(np.zeros((4, 4, 4), np.uint8), 0.05, rng=RNG),
        lambda: salt_and_pepper(np.zeros((0, 4, 3), np.uint8), 0.05, rng=RNG),
        lambda: salt_and_pepper(IMAGE.tolist(), 0.05, rng=RNG),
        lambda: gaussian_blur(IMAGE, 4),
        lambda: gaussian_blur(IMAGE, 0),
        lambda: gaussian_blur(IMAGE, -3),
        lambda: gaussian_blur(IMAGE, 5.0),
        lambda: gaussian_blur(IMAGE, True),
        lambda: gaussian_blur(IMAGE, 5, -1.0),
        lambda: gaussian_blur(IMAGE, 5, float("inf")),
        lambda: motion_kernel(-1, 0),
        lambda: motion_kernel(5.5, 0),
        lambda: motion_kernel(5, float("nan")),
        lambda: motion_blur(IMAGE, -2, 0),
        lambda: motion_blur(IMAGE, 5, None),
        lambda: jpeg_compression(IMAGE, 0),
        lambda: jpeg_compression(IMAGE, 101),
        lambda: jpeg_compression(IMAGE, 50.0),
        lambda: exposure(IMAGE, 0),
        lambda: exposure(IMAGE, -1.0),
        lambda: exposure(IMAGE, float("inf")),
        lambda: apply_corruption(IMAGE, {"noise_density": 0.05}),
        lambda: apply_corruption(IMAGE, CorruptionSpec(), rng=42),
        lambda: corrupt_for_model(IMAGE, CorruptionSpec(), Preprocessing(8, 8), where="sensor"),
        lambda: corrupt_for_model(IMAGE, CorruptionSpec(), None),
        lambda: corrupt_for_model(IMAGE.astype(np.int16), CorruptionSpec(), Preprocessing(8, 8)),
    ],
)
def test_invalid_arguments_raise_value_error(call):
    with pytest.raises(ValueError):
        call()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"noise_density": -0.1},
        {"noise_density": 1.5},
        {"noise_density": float("nan")},
        {"pepper_fraction": 2.0},
        {"blur_kernel": 0},
        {"blur_kernel": 4},
        {"blur_kernel": 5.0},
        {"blur_sigma": -0.5},
        {"motion_length_px": -1},
        {"motion_length_px": 3.5},
        {"motion_angle_deg": float("inf")},
        {"jpeg_quality": 0},
        {"jpeg_quality": 101},
        {"jpeg_quality": 50.5},
        {"exposure": 0.0},
        {"exposure": -2.0},
        {"seed": -1},
        {"seed": 1.5},
        {"seed": True},
    ],
)
def test_corruption_spec_rejects_invalid_fields(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        CorruptionSpec(**kwargs)


# ---------------------------------------------------------------------------- CorruptionSpec


@pytest.mark.parametrize(
    "spec",
    [
        CorruptionSpec(),
        CorruptionSpec(noise_density=0.05, blur_kernel=5, seed=3),
        CorruptionSpec(
            noise_density=0.023,
            pepper_fraction=0.5,
            blur_kernel=7,
            blur_sigma=1.5,
            motion_length_px=9,
            motion_angle_deg=30.0,
            jpeg_quality=40,
            exposure=0.5,
            seed=123,
        ),
    ],
)
def test_corruption_spec_round_trips_through_json(spec):
    data = json.loads(json.dumps(spec.to_dict()))
    assert CorruptionSpec.from_dict(data) == spec


def test_corruption_spec_stores_builtin_types_for_numpy_inputs():
    spec = CorruptionSpec(
        noise_density=np.float32(0.05), blur_kernel=np.int64(5), jpeg_quality=np.int32(30)
    )
    json.dumps(spec.to_dict())  # would raise on numpy scalars
    assert type(spec.noise_density) is float and type(spec.blur_kernel) is int
    assert CorruptionSpec(noise_density=0, exposure=2).to_dict()["exposure"] == 2.0


def test_corruption_spec_from_dict_defaults_and_unknown_keys():
    assert CorruptionSpec.from_dict({"noise_density": 0.05}) == CorruptionSpec(noise_density=0.05)
    with pytest.raises(ValueError, match="noise_level"):
        CorruptionSpec.from_dict({"noise_level": 0.05})
    with pytest.raises(ValueError, match="dict"):
        CorruptionSpec.from_dict([("noise_density", 0.05)])


@pytest.mark.parametrize(
    ("spec", "identity"),
    [
        (CorruptionSpec(), True),
        (CorruptionSpec(pepper_fraction=0.1, blur_sigma=2.0, motion_angle_deg=45, seed=9), True),
        (CorruptionSpec(motion_length_px=1), True),
        (CorruptionSpec(noise_density=0.001), False),
        (CorruptionSpec(blur_kernel=3), False),
        (CorruptionSpec(motion_length_px=2), False),
        (CorruptionSpec(jpeg_quality=100), False),
        (CorruptionSpec(exposure=0.99), False),
    ],
)
def test_corruption_spec_is_identity(spec, identity):
    assert spec.is_identity is identity
    image = make_image()
    assert np.array_equal(apply_corruption(image, spec), image) is identity


@pytest.mark.parametrize(
    ("spec", "text"),
    [
        (CorruptionSpec(), "no corruption"),
        (
            CorruptionSpec(noise_density=0.023, blur_kernel=5),
            "5x5 Gaussian blur, 2.3% salt-and-pepper (3:1)",
        ),
        (CorruptionSpec(noise_density=0.05), "5% salt-and-pepper (3:1)"),
        (CorruptionSpec(noise_density=0.01, pepper_fraction=0.5), "1% salt-and-pepper (1:1)"),
        (
            CorruptionSpec(noise_density=0.01, pepper_fraction=1.0),
            "1% salt-and-pepper (black only)",
        ),
        (CorruptionSpec(blur_kernel=7, blur_sigma=2.0), "7x7 Gaussian blur (sigma 2 px)"),
        (
            CorruptionSpec(motion_length_px=9, motion_angle_deg=30, exposure=0.5, jpeg_quality=30),
            "9 px motion blur at 30°, exposure x0.5 (-1.0 EV), JPEG quality 30",
        ),
    ],
)
def test_corruption_spec_describe(spec, text):
    assert spec.describe() == text


# ---------------------------------------------------------------------------- apply_corruption


def test_apply_corruption_composes_in_camera_order():
    image = make_image(50, 70)
    spec = CorruptionSpec(
        noise_density=0.05,
        blur_kernel=5,
        motion_length_px=7,
        motion_angle_deg=30,
        exposure=1.5,
        jpeg_quality=60,
        seed=11,
    )
    manual = gaussian_blur(image, 5)
    manual = motion_blur(manual, 7, 30)
    manual = exposure(manual, 1.5)
    manual = salt_and_pepper(manual, 0.05, 0.75, rng=np.random.default_rng(11))
    manual = jpeg_compression(manual, 60)
    assert np.array_equal(apply_corruption(image, spec), manual)


def test_apply_corruption_adds_noise_after_blur():
    image = make_image(50, 70)
    spec = CorruptionSpec(noise_density=0.05, blur_kernel=5, seed=4)
    out = apply_corruption(image, spec)
    blurred = gaussian_blur(image, 5)
    # Noise on top of the blur: exactly n pixels differ from the blurred image, all pure.
    changed = changed_mask(blurred, out)
    assert changed.sum() == round(0.05 * 50 * 70)
    assert np.all(is_black(out)[changed] | is_white(out)[changed])
    noise_then_blur = gaussian_blur(salt_and_pepper(image, 0.05, rng=np.random.default_rng(4)), 5)
    assert not np.array_equal(out, noise_then_blur)


def test_apply_corruption_seed_and_rng():
    image = make_image()
    spec = CorruptionSpec(noise_density=0.05, seed=5)
    assert np.array_equal(apply_corruption(image, spec), apply_corruption(image, spec))
    assert not np.array_equal(
        apply_corruption(image, spec), apply_corruption(image, CorruptionSpec(noise_density=0.05))
    )
    explicit = apply_corruption(image, spec, rng=np.random.default_rng(99))
    assert np.array_equal(explicit, salt_and_pepper(image, 0.05, rng=np.random.default_rng(99)))


def test_apply_corruption_identity_returns_a_copy():
    image = make_image()
    out = apply_corruption(image, CorruptionSpec())
    assert np.array_equal(out, image) and not np.shares_memory(out, image)


def test_apply_batch_matches_apply_corruption_row_by_row():
    image = make_image(32, 40)
    specs = [CorruptionSpec(noise_density=d, seed=1) for d in (0.0, 0.01, 0.03, 0.05)]
    specs.append(CorruptionSpec(blur_kernel=5, jpeg_quality=30))
    batch = apply_batch(image, specs)
    assert batch.shape == (5, 32, 40, 3) and batch.dtype == np.uint8
    for row, spec in zip(batch, specs, strict=True):
        assert np.array_equal(row, apply_corruption(image, spec))
    assert apply_batch(image, []).shape == (0, 32, 40, 3)


# ---------------------------------------------------------------------------- where to corrupt


def test_corrupt_for_model_sites_are_named():
    assert CORRUPTION_SITES == ("input", "photo")


def test_corrupt_for_model_input_path_has_exact_noise_at_model_resolution():
    preprocessing = Preprocessing(input_size=48, resize_size=48)
    photo = make_image(192, 256)  # 4x the input resolution, landscape
    spec = CorruptionSpec(noise_density=0.05, seed=2)
    out = corrupt_for_model(photo, spec, preprocessing)
    clean = preprocessing.to_input_resolution(photo)
    assert out.shape == (48, 48, 3)
    assert np.array_equal(out, apply_corruption(clean, spec))
    changed = changed_mask(clean, out)
    assert changed.sum() == round(0.05 * 48 * 48)
    assert is_black(out).sum() == round(0.75 * round(0.05 * 48 * 48))


def test_corrupt_for_model_photo_path_noise_averages_away_in_the_downscale():
    preprocessing = Preprocessing(input_size=48, resize_size=48)
    photo = make_image(192, 256)
    spec = CorruptionSpec(noise_density=0.05, seed=2)
    out = corrupt_for_model(photo, spec, preprocessing, where="photo")
    assert out.shape == (48, 48, 3)
    assert np.array_equal(out, preprocessing.to_input_resolution(apply_corruption(photo, spec)))
    assert not np.array_equal(out, corrupt_for_model(photo, spec, preprocessing))
    # Each input pixel averages 16 photo pixels: almost none stay pure black or white.
    assert (is_black(out) | is_white(out)).sum() < 0.1 * round(0.05 * 48 * 48)


def test_corrupt_for_model_paths_agree_at_input_resolution():
    preprocessing = Preprocessing(input_size=32, resize_size=32)
    photo = make_image(32, 32)
    spec = CorruptionSpec(noise_density=0.05, blur_kernel=3)
    assert np.array_equal(
        corrupt_for_model(photo, spec, preprocessing, "input"),
        corrupt_for_model(photo, spec, preprocessing, "photo"),
    )
