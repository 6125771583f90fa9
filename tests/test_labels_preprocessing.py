import numpy as np
import pytest
import torch

from dermcore.corruptions import salt_and_pepper
from dermcore.labels import CLASSES, DESCRIPTIONS, NUM_CLASSES, class_index
from dermcore.models import ARCHITECTURES
from dermcore.preprocessing import Preprocessing, remove_impulses


def test_classes_fixed_order_with_descriptions():
    assert CLASSES == (
        "Acne", "Alopecia", "Blister", "Crust", "Erythema",
        "Leukoderma", "Pigmented Macula", "Tumor", "Ulcer", "Wheal",
    )  # fmt: skip
    assert NUM_CLASSES == 10
    assert all(DESCRIPTIONS[c].strip().endswith(".") for c in CLASSES)
    assert class_index("Ulcer") == 8
    with pytest.raises(ValueError, match="unknown class"):
        class_index("Melanoma")


@pytest.mark.parametrize("shape", [(300, 500), (500, 300), (224, 224), (100, 90), (4000, 3000)])
def test_to_input_resolution_shape_and_centre(shape):
    preset = Preprocessing(input_size=224, resize_size=224)
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, size=(*shape, 3), dtype=np.uint8)
    before = photo.copy()
    out = preset.to_input_resolution(photo)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    np.testing.assert_array_equal(photo, before)  # input never mutated


def test_input_sized_image_passes_through_unchanged():
    preset = Preprocessing(input_size=224, resize_size=224)
    image = np.random.default_rng(1).integers(0, 256, size=(224, 224, 3), dtype=np.uint8)
    assert preset.input_passes_through
    np.testing.assert_array_equal(preset.to_input_resolution(image), image)
    # resize then crop (torchvision style): an input-sized image is enlarged and cropped again
    cropping = Preprocessing(input_size=224, resize_size=256)
    assert not cropping.input_passes_through
    assert not np.array_equal(cropping.to_input_resolution(image), image)


def test_centre_crop_keeps_the_middle():
    preset = Preprocessing(input_size=8, resize_size=8)
    photo = np.zeros((8, 20, 3), np.uint8)
    photo[:, 6:14] = 255  # the central 8 columns
    np.testing.assert_array_equal(preset.to_input_resolution(photo), np.full((8, 8, 3), 255))


def test_to_tensor_normalises_with_mean_std():
    preset = Preprocessing(input_size=8, resize_size=8, mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))
    image = np.full((8, 8, 3), 255, np.uint8)
    x = preset.to_tensor(image)
    assert x.shape == (1, 3, 8, 8) and x.dtype == torch.float32
    torch.testing.assert_close(x[0, :, 0, 0], torch.tensor([1.0, 3.0, 1.0]))
    with pytest.raises(ValueError):
        preset.to_tensor(image.astype(np.float32))


def test_presets_round_trip_and_are_defined_per_arch():
    for spec in ARCHITECTURES.values():
        assert Preprocessing.from_dict(spec.preprocessing.to_dict()) == spec.preprocessing
    with pytest.raises(ValueError):
        Preprocessing(input_size=224, resize_size=200)


def _smooth_image(size: int = 64) -> np.ndarray:
    """A gradient with no pure black or white pixel: values 40..215."""
    ramp = np.linspace(40, 215, size)
    return np.stack(np.broadcast_arrays(ramp[:, None], ramp[None, :], 128), -1).astype(np.uint8)


def test_remove_impulses_undoes_salt_and_pepper_and_touches_nothing_else():
    image = _smooth_image()
    noisy = salt_and_pepper(image, 0.05, 0.75, rng=np.random.default_rng(0))
    impulses = np.all(noisy == 0, axis=-1) | np.all(noisy == 255, axis=-1)
    assert impulses.sum() == round(0.05 * 64 * 64)
    batch = np.stack([noisy, image])
    before = batch.copy()
    out = remove_impulses(batch)
    np.testing.assert_array_equal(batch, before)  # input never mutated
    np.testing.assert_array_equal(out[0][~impulses], noisy[~impulses])  # only impulses change
    np.testing.assert_array_equal(out[1], image)  # a clean image passes through
    error = np.abs(out[0].astype(int) - image).max(-1)
    assert error[impulses].mean() < 5 < np.abs(noisy.astype(int) - image).max(-1)[impulses].mean()


def test_remove_impulses_keeps_black_borders_and_highlights():
    image = _smooth_image()
    image[:, :10] = 0  # a dermoscope's black vignette
    image[30:36, 30:36] = 255  # a blown highlight
    out = remove_impulses(image[None])[0]
    np.testing.assert_array_equal(out[:, :9], 0)  # inside the border the median is black
    np.testing.assert_array_equal(out[31:35, 31:35], 255)
    with pytest.raises(ValueError):
        remove_impulses(image)  # one image without its batch axis


def test_impulse_filter_runs_inside_to_tensor_and_round_trips():
    noisy = salt_and_pepper(_smooth_image(), 0.05, 0.75, rng=np.random.default_rng(1))
    plain = Preprocessing(64, 64)
    filtered = Preprocessing(64, 64, impulse_filter=True)
    torch.testing.assert_close(
        filtered.to_tensor(noisy), plain.to_tensor(remove_impulses(noisy[None]))
    )
    assert not torch.equal(filtered.to_tensor(noisy), plain.to_tensor(noisy))
    assert Preprocessing.from_dict(filtered.to_dict()) == filtered
    older_card = {k: v for k, v in filtered.to_dict().items() if k != "impulse_filter"}
    assert Preprocessing.from_dict(older_card) == plain
