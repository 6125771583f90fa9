"""The ONNX Runtime forward pass answers as PyTorch's: same top classes, probabilities within
1e-4, the same familiarity and abstention; Grad-CAM stays in PyTorch."""

import numpy as np
import pytest
import torch

import dermcore.graph_runtime as graph_runtime
from dermcore.checkpoint import ModelCard, save_checkpoint, save_familiarity
from dermcore.explain import Predictor
from dermcore.models import build_model
from dermcore.robustness import classify_views, curve_parts
from tests.conftest import lesion_photo, with_random_batchnorm_statistics
from tests.test_familiarity import PREP, fit_stats, ood_batch, skin_batch


@pytest.fixture(scope="module")
def card_path(tmp_path_factory):
    """A tiny Lite0 with trained-looking BatchNorm statistics, familiarity and thresholds."""
    directory = tmp_path_factory.mktemp("graph")
    torch.manual_seed(5)
    net = with_random_batchnorm_statistics(build_model("efficientnet_lite0", pretrained=False))
    card = ModelCard(name="graph", arch="efficientnet_lite0", preprocessing=PREP.to_dict())
    card.abstention = {"threshold": 0.05, "confidence_min": 0.2}
    card.calibration = {"temperature": 0.8}
    path = save_checkpoint(net, card, directory)
    stats = fit_stats(Predictor(net, "efficientnet_lite0", PREP))
    save_familiarity(stats, card, path, fitted_on="synthetic test photos")
    return path


def test_graph_runtime_answers_as_torch(card_path):
    in_torch = Predictor.from_checkpoint(card_path)
    in_graph = Predictor.from_checkpoint(card_path, graph_runtime=True)
    assert (in_torch.runtime, in_graph.runtime) == ("torch", "onnxruntime")
    images = np.concatenate([skin_batch(range(200, 216)), ood_batch()])
    for batch_size in (1, 5, 64):  # the graph's batch dimension is dynamic
        fast, slow = in_graph.assess(images, batch_size), in_torch.assess(images, batch_size)
        np.testing.assert_allclose(fast.probabilities, slow.probabilities, rtol=0, atol=1e-4)
        np.testing.assert_array_equal(fast.top_classes, slow.top_classes)
        np.testing.assert_allclose(fast.familiarity, slow.familiarity, rtol=0, atol=1 / 30)
        np.testing.assert_array_equal(fast.abstain, slow.abstain)
    assert fast.abstain.any() and not fast.abstain.all()
    for a, b in zip(in_graph.embed(images), in_torch.embed(images), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(
        in_graph.predict_logits(images), in_torch.predict_logits(images), rtol=0, atol=1e-4
    )


def test_explain_and_the_robustness_curve_with_the_graph(card_path):
    in_torch = Predictor.from_checkpoint(card_path)
    in_graph = Predictor.from_checkpoint(card_path, graph_runtime=True)
    assert in_graph._graph_explains  # a timm model: Grad-CAM reads the graph's CAM layer
    for seed in range(3):
        photo = lesion_photo(seed, 96, 128)
        for target in (None, 3):
            a, b = in_graph.explain(photo, target), in_torch.explain(photo, target)
            assert a.target == b.target and a.abstain == b.abstain
            np.testing.assert_allclose(a.cam, b.cam, rtol=0, atol=1e-4)
            np.testing.assert_allclose(a.probabilities, b.probabilities, rtol=0, atol=1e-4)
            np.testing.assert_allclose(a.familiarity, b.familiarity, rtol=0, atol=1 / 30)
    a, b = in_graph.explain(photo, method="gradcam++"), in_torch.explain(photo, method="gradcam++")
    np.testing.assert_array_equal(a.cam, b.cam)  # the library's methods stay in PyTorch
    specs = [spec for part in curve_parts(n_seeds=1) for spec in part]
    fast, slow = classify_views(in_graph, photo, specs), classify_views(in_torch, photo, specs)
    np.testing.assert_array_equal(fast.top_classes, slow.top_classes)
    np.testing.assert_array_equal(fast.abstain, slow.abstain)
    # the impulse-filter twin shares the graph: preprocessing runs before it
    twin = in_graph.with_preprocessing(PREP)
    assert twin.runtime == "onnxruntime"


def test_without_onnx_runtime_torch_answers(card_path, monkeypatch):
    def missing(*args, **kwargs):
        raise ImportError("No module named 'onnxruntime'")

    monkeypatch.setattr(graph_runtime.EmbeddingGraph, "export", missing)
    predictor = Predictor.from_checkpoint(card_path, graph_runtime=True)
    assert predictor.runtime == "torch"
    assert predictor.assess(skin_batch(range(3))).probabilities.shape == (3, 10)


def test_grad_cam_from_the_graph_for_a_pooled_linear_head_only():
    """torchvision's ResNet ends in average pooling and one linear layer after its CAM layer,
    so its Grad-CAM comes from the graph; with the CAM layer moved down a block the gradient
    is no longer the classifier's weights, the probe disagrees, and Grad-CAM stays in PyTorch."""
    torch.manual_seed(2)
    net = with_random_batchnorm_statistics(build_model("resnet34", pretrained=False))
    photo = lesion_photo(1, 96, 128)
    for cam_layer, from_graph in ((None, True), ("layer3", False)):
        reference = Predictor(net, "resnet34", PREP, cam_layer=cam_layer)
        predictor = Predictor(net, "resnet34", PREP, cam_layer=cam_layer)
        assert predictor.use_graph_runtime() and predictor._graph_explains is from_graph
        # two classes whose maps are not flat (with random weights, some are all zero)
        targets = [t for t in range(10) if reference.explain(photo, t).cam.std() > 0.05][:2]
        assert len(targets) == 2
        for target in targets:
            ours, theirs = predictor.explain(photo, target), reference.explain(photo, target)
            atol = 1e-4 if from_graph else 0  # PyTorch's own path: the same map exactly
            np.testing.assert_allclose(ours.cam, theirs.cam, rtol=0, atol=atol)
            np.testing.assert_allclose(ours.probabilities, theirs.probabilities, rtol=0, atol=1e-4)
    fast, slow = predictor.predict(photo[None, :64, :64]), reference.predict(photo[None, :64, :64])
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-4)
