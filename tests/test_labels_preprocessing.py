import numpy as np
import pytest
import torch

from dermcore.labels import CLASSES, DESCRIPTIONS, NUM_CLASSES, class_index
from dermcore.models import ARCHITECTURES
from dermcore.preprocessing import Preprocessing


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
    np.testing.assert_array_equal(preset.to_input_resolution(image), image)


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
