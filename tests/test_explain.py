import copy
import io
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from dermcore.checkpoint import ModelCard, save_checkpoint
from dermcore.corruptions import CorruptionSpec, corrupt_for_model, salt_and_pepper
from dermcore.explain import METHODS, Explanation, Predictor, cam_shift, overlay
from dermcore.labels import CLASSES
from dermcore.models import build_model, get_arch, get_module
from dermcore.preprocessing import Preprocessing, remove_impulses

SIZE = 96  # small inputs keep the CPU tests fast; the CAM maths does not depend on the size
STEMS = {"efficientnet_lite0": "conv_stem", "resnet34": "conv1"}
BELOW_CAM = {"efficientnet_lite0": "conv_head", "resnet34": "layer3"}  # feeds the CAM layer


def small_preprocessing(arch: str, size: int = SIZE) -> Preprocessing:
    preset = get_arch(arch).preprocessing
    return Preprocessing(size, size, preset.mean, preset.std)


@pytest.fixture(scope="module", params=["efficientnet_lite0", "resnet34"])
def predictor_and_reference(request):
    """A predictor and an untouched copy of its model (parameters still require grad), which is
    what pytorch-grad-cam needs."""
    arch = request.param
    torch.manual_seed(0)
    model = build_model(arch, num_classes=10, pretrained=False)
    reference = copy.deepcopy(model)
    return Predictor(model, arch, small_preprocessing(arch)), reference


@pytest.fixture(scope="module")
def lite0():
    torch.manual_seed(1)
    model = build_model("efficientnet_lite0", num_classes=10, pretrained=False)
    return Predictor(model, "efficientnet_lite0", small_preprocessing("efficientnet_lite0", 64))


@pytest.fixture(scope="module")
def tiny_cnn():
    """Eight CAM-layer channels: Score-CAM runs one forward pass per channel (1280 for lite0)."""
    torch.manual_seed(3)
    model = torch.nn.Sequential(
        OrderedDict(
            features=torch.nn.Sequential(
                torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3)
            ),
            pool=torch.nn.AdaptiveAvgPool2d(1),
            flatten=torch.nn.Flatten(),
            head=torch.nn.Linear(8, 10),
        )
    )
    preprocessing = small_preprocessing("resnet34", 64)
    return Predictor(model, "resnet34", preprocessing, cam_layer="features")


def random_image(seed: int, shape=(SIZE, SIZE)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(*shape, 3), dtype=np.uint8)


def leftover_hooks(model: torch.nn.Module) -> list[str]:
    kinds = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    return [
        f"{name}.{kind}" for name, m in model.named_modules() for kind in kinds if getattr(m, kind)
    ]


def assert_model_untouched(predictor: Predictor) -> None:
    model = predictor.model
    assert not model.training and not any(m.training for m in model.modules())
    assert not any(p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())
    assert leftover_hooks(model) == []


@contextmanager
def forward_hook(module, hook):
    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@pytest.mark.parametrize("seed, target", [(0, None), (1, 3), (2, 7), (3, "Tumor")])
def test_fast_gradcam_equals_pytorch_grad_cam(predictor_and_reference, seed, target):
    predictor, reference = predictor_and_reference
    image = random_image(seed)
    explanation = predictor.explain(image, target=target)
    layer = get_module(reference, get_arch(predictor.arch).cam_layer)
    x = predictor.preprocessing.to_tensor(image)
    with GradCAM(reference, [layer]) as grad_cam:
        expected = grad_cam(x, targets=[ClassifierOutputTarget(explanation.target)])[0]
    assert explanation.cam.dtype == np.float32 and explanation.cam.shape == (SIZE, SIZE)
    assert explanation.cam.max() > 0.99  # a real map, not an all-zero one
    np.testing.assert_allclose(explanation.cam, expected, atol=1e-4)
    if target is None:
        assert explanation.target == explanation.top_class
    assert_model_untouched(predictor)


def test_library_method_with_frozen_model_equals_plain_library(predictor_and_reference):
    """Our leaf hook stops the library's backward pass at the CAM layer; the map is the same."""
    predictor, reference = predictor_and_reference
    image = random_image(4)
    explanation = predictor.explain(image, target=2, method="gradcam++")
    layer = get_module(reference, get_arch(predictor.arch).cam_layer)
    with GradCAMPlusPlus(reference, [layer]) as grad_cam_pp:
        expected = grad_cam_pp(
            predictor.preprocessing.to_tensor(image), [ClassifierOutputTarget(2)]
        )
    np.testing.assert_allclose(explanation.cam, expected[0], atol=1e-4)


def test_explain_is_one_forward_pass_with_no_graph_below_the_cam_layer(predictor_and_reference):
    predictor, _ = predictor_and_reference
    stem_calls, below_needs_grad = [], []
    stem = get_module(predictor.model, STEMS[predictor.arch])
    below = get_module(predictor.model, BELOW_CAM[predictor.arch])
    with (
        forward_hook(stem, lambda m, i, o: stem_calls.append(o.requires_grad)),
        forward_hook(below, lambda m, i, o: below_needs_grad.append(o.requires_grad)),
    ):
        predictor.explain(random_image(5))
    assert stem_calls == [False]  # exactly one forward pass, and no graph at the stem
    assert below_needs_grad == [False]  # nor just below the CAM layer: backward cannot go there
    assert_model_untouched(predictor)


def test_probabilities_are_softmax_of_logits_over_temperature(predictor_and_reference):
    predictor, _ = predictor_and_reference
    warm = Predictor(predictor.model, predictor.arch, predictor.preprocessing, temperature=2.5)
    image = random_image(6)
    with torch.inference_mode():
        logits = predictor.model(predictor.preprocessing.to_tensor(image))[0]
    expected = torch.softmax(logits / 2.5, dim=-1).numpy()
    explanation = warm.explain(image)
    assert explanation.probabilities.dtype == np.float32 and explanation.logits.dtype == np.float32
    np.testing.assert_allclose(explanation.logits, logits.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(explanation.probabilities, expected, rtol=1e-5, atol=1e-6)
    assert explanation.probabilities.sum() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(warm.predict(image)[0], expected, rtol=1e-5, atol=1e-6)
    assert explanation.top_probability == pytest.approx(float(expected.max()), abs=1e-6)


@pytest.mark.parametrize("method", [m for m in METHODS if m != "gradcam"])
def test_other_methods_give_valid_maps_and_leave_no_trace(lite0, tiny_cnn, method):
    predictor = tiny_cnn if method == "scorecam" else lite0
    image = random_image(7, (64, 64))
    image.flags.writeable = False  # any write into the caller's array would raise
    explanation = predictor.explain(image, target=1, method=method)
    cam = explanation.cam
    assert cam.dtype == np.float32 and cam.shape == (64, 64) and np.isfinite(cam).all()
    assert cam.min() >= 0 and cam.max() <= 1
    assert explanation.method == method and explanation.target == 1
    plain = predictor.explain(image, target=1)
    np.testing.assert_allclose(explanation.logits, plain.logits, rtol=1e-5, atol=1e-5)
    assert_model_untouched(predictor)


def test_hooks_released_and_lock_freed_after_errors(lite0):
    image = random_image(8, (64, 64))
    with pytest.raises(ValueError, match="out of range"):
        lite0.explain(image, target=10)
    with pytest.raises(ValueError, match="unknown class"):
        lite0.explain(image, target="Melanoma")
    with pytest.raises(ValueError, match="unknown CAM method"):
        lite0.explain(image, method="guessed-cam")

    def fail(module, inputs, output):
        raise RuntimeError("boom in the head")

    for method in ("gradcam", "gradcam++"):
        with forward_hook(lite0.model.classifier, fail), pytest.raises(RuntimeError, match="boom"):
            lite0.explain(image, method=method)
        assert_model_untouched(lite0)
    assert lite0.explain(image).cam.shape == (64, 64)  # the lock was released


def test_input_not_mutated_and_resized_when_needed(lite0):
    photo = random_image(9, (90, 120))
    before = photo.copy()
    explanation = lite0.explain(photo, target=CLASSES[4])
    np.testing.assert_array_equal(photo, before)
    assert explanation.target == 4
    np.testing.assert_array_equal(
        explanation.input_image, lite0.preprocessing.to_input_resolution(photo)
    )
    at_size = random_image(10, (64, 64))
    explanation = lite0.explain(at_size)
    np.testing.assert_array_equal(explanation.input_image, at_size)
    assert explanation.input_image is not at_size  # the explanation keeps its own copy


def test_sixteen_threads_equal_sequential(lite0):
    images = [random_image(100 + i, (64, 64)) for i in range(16)]
    sequential = [lite0.explain(image) for image in images]
    with ThreadPoolExecutor(max_workers=16) as pool:
        concurrent = list(pool.map(lite0.explain, images))
    # Each answer is its own image's, not another thread's: equal up to float rounding. Bit
    # equality is not promised: a convolution called from 16 threads at once may split its sums
    # differently (seen once in CI: 5e-7 on a CAM in [0, 1]). Two different images' CAMs differ
    # by ~0.1-1, far above these tolerances.
    for a, b in zip(sequential, concurrent, strict=True):
        assert isinstance(b, Explanation)
        assert a.top_class == b.top_class
        np.testing.assert_allclose(a.cam, b.cam, rtol=0, atol=1e-5)
        np.testing.assert_allclose(a.probabilities, b.probabilities, rtol=0, atol=1e-6)
        np.testing.assert_allclose(a.logits, b.logits, rtol=0, atol=1e-5)
        assert a.target == b.target
    assert not np.allclose(sequential[0].cam, sequential[1].cam, rtol=0, atol=1e-5)
    assert_model_untouched(lite0)


def test_predict_batches_equal_single_predictions(lite0):
    images = np.stack([random_image(200 + i, (64, 64)) for i in range(5)])
    batched = lite0.predict(images, batch_size=2)
    assert batched.shape == (5, 10) and batched.dtype == np.float32
    np.testing.assert_allclose(batched.sum(axis=1), 1.0, atol=1e-6)
    for image, row in zip(images, batched, strict=True):
        np.testing.assert_allclose(lite0.predict(image)[0], row, rtol=1e-5, atol=1e-6)
    photo = random_image(11, (80, 100))
    np.testing.assert_array_equal(lite0.predict(photo), lite0.predict(lite0.prepare(photo)))
    assert lite0.predict_logits(images[:1]).shape == (1, 10)
    with pytest.raises(ValueError):
        lite0.predict(images.astype(np.float32))


def test_a_list_of_photos_of_any_sizes_is_one_batch(lite0):
    """An atlas's photos come in many sizes: a list of them gives what each gives alone."""
    photos = [
        random_image(30 + i, shape) for i, shape in enumerate([(90, 120), (64, 64), (200, 70)])
    ]
    together = lite0.predict(photos, batch_size=2)
    assert together.shape == (3, 10)
    for photo, row in zip(photos, together, strict=True):
        np.testing.assert_allclose(lite0.predict(photo)[0], row, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(lite0.predict_logits(tuple(photos)), lite0.predict_logits(photos))


def test_pillow_images_in_any_mode_are_photos_too(lite0):
    """A scorer that opens files with Pillow passes them as they are: grey, palette and
    transparent images become the RGB photos load_image would make of them."""
    from PIL import Image

    from dermcore.imageio import load_image

    def as_file(image: Image.Image) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()

    rgb = random_image(40, (70, 90))
    grey = Image.fromarray(rgb[:, :, 0])
    transparent = Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)]))
    images = [Image.fromarray(rgb), grey, grey.convert("P"), transparent]
    expected = [load_image(as_file(image)) for image in images]
    np.testing.assert_array_equal(expected[0], rgb)
    np.testing.assert_allclose(lite0.predict(images), lite0.predict(expected), atol=1e-6)
    np.testing.assert_allclose(lite0.predict(Image.fromarray(rgb)), lite0.predict(rgb), atol=1e-6)


@pytest.mark.parametrize(
    ("images", "message"),
    [
        ([], "at least one image, got an empty sequence"),
        (
            [np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8)],
            "image 1: .*uint8 array of shape \\(8, 8\\)",
        ),
        ([np.zeros((8, 8, 4), np.uint8)], "image 0: .*RGB.*shape \\(8, 8, 4\\)"),
        ([np.zeros((8, 8, 3), np.float32)], "image 0: .*float32 array"),
        (["no-such-photo.jpg"], "image 0: cannot be read: .*No such file"),
        (np.zeros((0, 8, 8, 3), np.uint8), "at least one image with pixels, got \\(0, 8, 8, 3\\)"),
        (np.zeros((8, 0, 3), np.uint8), "at least one image with pixels, got \\(1, 8, 0, 3\\)"),
        (np.zeros((8, 8, 4), np.uint8), "expected uint8 \\(N, H, W, 3\\) .*got \\(8, 8, 4\\)"),
        (np.zeros((2, 8, 8, 3), np.uint16), "expected uint8 images, got uint16 array of shape"),
    ],
)
def test_bad_inputs_are_named_by_shape_and_type_never_by_pixels(lite0, images, message):
    with pytest.raises(ValueError, match=message) as error:
        lite0.predict(images)
    assert len(str(error.value)) < 200  # no array printed into the message


@pytest.mark.parametrize("batch_size", [None, 2.0, True, 0])
def test_a_batch_size_that_is_not_a_whole_number_is_refused_clearly(lite0, batch_size):
    with pytest.raises(ValueError, match="batch_size must be"):
        lite0.assess(random_image(1, (64, 64)), batch_size=batch_size)


def test_a_file_path_reads_as_the_app_reads_an_upload(lite0, tmp_path):
    """A path (str or Path, alone or in a list) is decoded by load_image: upright by its EXIF
    orientation, like the Pillow image of the same file, unlike its raw pixels."""
    from PIL import Image

    from dermcore.imageio import load_image

    path = tmp_path / "sideways.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: turn 90 degrees to view
    Image.fromarray(random_image(21, (48, 80))).save(path, quality=95, exif=exif)
    expected = lite0.predict(load_image(path.read_bytes()))
    np.testing.assert_array_equal(lite0.predict(str(path)), expected)
    np.testing.assert_allclose(lite0.predict([path, str(path)])[1], expected[0], atol=1e-6)
    with Image.open(path) as opened:
        np.testing.assert_array_equal(lite0.predict(opened), expected)
        raw = np.asarray(opened)
    assert not np.allclose(lite0.predict(raw), expected, atol=1e-6)  # EXIF ignored there
    assessed = lite0.assess([path])
    np.testing.assert_array_equal(assessed.probabilities, expected)


def test_a_pillow_integer_image_made_from_8_bit_pixels_is_not_read_as_16_bit(lite0):
    from PIL import Image

    grey = Image.fromarray(random_image(22, (64, 64))[:, :, 0])
    np.testing.assert_array_equal(lite0.predict(grey.convert("I")), lite0.predict(grey))


def test_prepare_corrupts_with_the_models_preprocessing(lite0):
    photo = random_image(12, (100, 80))
    np.testing.assert_array_equal(
        lite0.prepare(photo), lite0.preprocessing.to_input_resolution(photo)
    )
    spec = CorruptionSpec(noise_density=0.05, blur_kernel=5, seed=3)
    for where in ("input", "photo"):
        expected = corrupt_for_model(photo, spec, lite0.preprocessing, where)
        np.testing.assert_array_equal(lite0.prepare(photo, spec, where), expected)


def test_from_checkpoint_uses_card_preprocessing_and_temperature(tmp_path):
    torch.manual_seed(2)
    model = build_model("efficientnet_lite0", num_classes=10, pretrained=False)
    card = ModelCard(name="tiny", arch="efficientnet_lite0", calibration={"temperature": 1.7})
    card.preprocessing = small_preprocessing("efficientnet_lite0", 64).to_dict()
    card_path = save_checkpoint(model, card, tmp_path)
    predictor = Predictor.from_checkpoint(card_path)
    assert predictor.temperature == 1.7 and predictor.input_size == 64
    assert predictor.card.name == "tiny" and predictor.classes == CLASSES
    image = random_image(13, (64, 64))
    with torch.inference_mode():
        logits = model(predictor.preprocessing.to_tensor(image))
    np.testing.assert_allclose(
        predictor.predict(image), torch.softmax(logits / 1.7, -1).numpy(), rtol=1e-5, atol=1e-6
    )


def test_overlay_blends_and_validates():
    image = random_image(14, (40, 50))
    before = image.copy()
    cam = np.random.default_rng(0).random((40, 50), dtype=np.float32)
    out = overlay(image, cam, alpha=0.4)
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(image, before)
    np.testing.assert_array_equal(overlay(image, cam, alpha=0.0), image)
    hot = overlay(image, np.ones((5, 5), np.float32), alpha=1.0)  # resized to the image
    top_colour = cv2.applyColorMap(np.full((1, 1), 255, np.uint8), cv2.COLORMAP_JET)[0, 0, ::-1]
    assert hot.shape == image.shape and (hot == top_colour).all()
    for bad_alpha in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="alpha"):
            overlay(image, cam, alpha=bad_alpha)
    with pytest.raises(ValueError):
        overlay(image.astype(np.float32), cam)
    with pytest.raises(ValueError):
        overlay(image, np.full((40, 50), np.nan, np.float32))


def test_cam_shift_scores():
    cam = np.random.default_rng(0).random((7, 7))
    same = cam_shift(cam, cam.copy())
    assert same.correlation == pytest.approx(1.0) and same.top_iou == 1.0
    assert same.shift == pytest.approx(0.0, abs=1e-12)
    inverted = cam_shift(cam, 1 - cam)
    assert inverted.correlation == pytest.approx(-1.0) and inverted.shift == 1.0
    assert inverted.top_iou == 0.0
    flat = np.zeros((7, 7))
    assert cam_shift(flat, flat).shift == 0.0 and cam_shift(flat, cam).correlation == 0.0
    moved = np.zeros((10, 10))
    moved[:2] = 1
    shifted = np.zeros((10, 10))
    shifted[1:3] = 1
    assert cam_shift(moved, shifted).top_iou == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        cam_shift(cam, np.zeros((5, 5)))


def test_with_preprocessing_shares_the_model_and_lock_and_changes_only_the_input(lite0):
    predictor = lite0
    filtered = predictor.with_preprocessing(replace(predictor.preprocessing, impulse_filter=True))
    assert filtered.model is predictor.model and filtered._lock is predictor._lock
    assert filtered.preprocessing.impulse_filter and not predictor.preprocessing.impulse_filter
    image = np.random.default_rng(0).integers(1, 255, (64, 64, 3), dtype=np.uint8)
    noisy = salt_and_pepper(image, 0.05, rng=np.random.default_rng(1))
    expected = predictor.predict(remove_impulses(noisy[None]))
    np.testing.assert_allclose(filtered.predict(noisy), expected, atol=1e-6)
    assert not np.allclose(predictor.predict(noisy), expected, atol=1e-4)
    with pytest.raises(ValueError, match="Preprocessing"):
        predictor.with_preprocessing({"impulse_filter": True})
