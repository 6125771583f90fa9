"""What one explanation costs, as a multiple of one bare forward pass, per architecture.

    python -m benchmarks.bench_explain                      # from the repo root: every arch
    python -m benchmarks.bench_explain --archs efficientnet_lite0 resnet50 --repeats 10

Timed on one 224x224 image with random weights (speed does not depend on the weights):

    forward      model(x) under torch.inference_mode()                      the floor, 1.00x
    explain      Predictor.explain(image): prediction + fast Grad-CAM         target <= 1.2x
    explain-fam  the same with familiarity statistics and abstention          target <= 1.2x
    assess       Predictor.assess(image): probabilities, familiarity, abstain (no CAM)
    slider       apply_corruption (5% salt-and-pepper + 5x5 blur) + explain   one slider change
    slider-filter  the same, for a model with the impulse filter (`robust`)   target <= 1.05x slider
    gradcam      pytorch-grad-cam: a fresh GradCAM(model, [layer]) per call   what a naive app does
    gradcam-reuse  the same GradCAM object called again                       no hook set-up
    graph-forward  the model as the app runs it: its ONNX graph in ONNX Runtime, logits only
    explain-graph  explain-fam on that graph (use_graph_runtime), as the app  target <= 1.2x
                   runs it: the CAM from the graph's CAM-layer output          graph-forward

The variants run round-robin within each repeat, so a burst of load from other jobs hits them
all alike. Medians are still noisy on a busy machine, so the minimum (the run least disturbed
by other jobs) is printed too.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch

from dermcore.corruptions import CorruptionSpec, apply_corruption
from dermcore.explain import Predictor
from dermcore.familiarity import FamiliarityStats
from dermcore.models import ARCHITECTURES, build_model, fold_batchnorm, get_arch, get_module

VARIANTS = (
    "forward",
    "explain",
    "explain-fam",
    "assess",
    "slider",
    "slider-filter",
    "gradcam",
    "gradcam-reuse",
    "graph-forward",
    "explain-graph",
)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--archs",
        nargs="+",
        default=list(ARCHITECTURES),
        choices=list(ARCHITECTURES),
        help="architectures to time (default: all)",
    )
    parser.add_argument(
        "--repeats", type=int, default=20, help="timed calls per variant (default: 20)"
    )
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls first (default: 3)")
    parser.add_argument("--seed", type=int, default=0, help="seeds weights and image (default: 0)")
    return parser


def variants(arch: str, seed: int) -> dict[str, Callable[[int], object]]:
    """Each variant as a callable of the repeat index (which seeds the slider's noise)."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(seed)
    model = build_model(arch, pretrained=False)
    fold_batchnorm(model, probe_size=get_arch(arch).preprocessing.input_size)  # as the app runs it
    # pytorch-grad-cam needs parameters that require grad; one copy each for the fresh and the
    # reused GradCAM, so neither runs the other's hooks.
    fresh_model, reused_model = copy.deepcopy(model), copy.deepcopy(model)
    predictor = Predictor(model, arch)
    familiar = Predictor(model, arch, familiarity=random_stats(model, arch), abstain_below=0.05)
    filtered = Predictor(model, arch, replace(predictor.preprocessing, impulse_filter=True))
    in_graph = Predictor(model, arch, familiarity=familiar.familiarity_stats, abstain_below=0.05)
    if not in_graph.use_graph_runtime():
        raise RuntimeError(f"{arch}: the ONNX graph could not be exported (see the log)")
    image = np.random.default_rng(seed).integers(0, 256, size=(224, 224, 3), dtype=np.uint8)
    x = predictor.preprocessing.to_tensor(image)
    target = [ClassifierOutputTarget(predictor.explain(image).target)]
    cam_layer = get_arch(arch).cam_layer
    fresh_layer = [get_module(fresh_model, cam_layer)]
    reused = GradCAM(reused_model, [get_module(reused_model, cam_layer)])

    def forward(i: int) -> object:
        with torch.inference_mode():
            return model(x)

    def slider(i: int, predictor: Predictor = predictor) -> object:
        spec = CorruptionSpec(noise_density=0.05, blur_kernel=5, seed=i)
        return predictor.explain(apply_corruption(image, spec))

    def fresh_gradcam(i: int) -> object:
        with GradCAM(fresh_model, fresh_layer) as grad_cam:
            return grad_cam(x, targets=target)

    return {
        "forward": forward,
        "explain": lambda i: predictor.explain(image),
        "explain-fam": lambda i: familiar.explain(image),
        "assess": lambda i: familiar.assess(image),
        "slider": slider,
        "slider-filter": lambda i: slider(i, filtered),
        "gradcam": fresh_gradcam,
        "gradcam-reuse": lambda i: reused(x, targets=target),
        "graph-forward": lambda i: in_graph._graph.run(x, ("logits",)),
        "explain-graph": lambda i: in_graph.explain(image),
    }


def random_stats(model: torch.nn.Module, arch: str, n_val: int = 365) -> FamiliarityStats:
    """Statistics of the right shapes with random values: the cost does not depend on them."""
    spec = get_arch(arch)
    probe = Predictor(model, arch)
    x = np.zeros((1, spec.preprocessing.input_size, spec.preprocessing.input_size, 3), np.uint8)
    _, features, texture = probe.embed(x)
    generator = torch.Generator().manual_seed(0)
    d, e = features.shape[1], texture.shape[1]

    def ref() -> torch.Tensor:
        return torch.sort(torch.rand(n_val, generator=generator)).values

    return FamiliarityStats(
        torch.randn(10, d, generator=generator),
        torch.eye(d),
        ref(),
        torch.randn(10, e, generator=generator),
        torch.eye(e),
        ref(),
        ref(),
        ref(),
        texture_layer=spec.texture_layer,
    )


def time_arch(arch: str, repeats: int, warmup: int, seed: int) -> dict[str, list[float]]:
    """Milliseconds of every timed call, per variant."""
    calls = variants(arch, seed)
    for i in range(warmup):
        for call in calls.values():
            call(i)
    times: dict[str, list[float]] = {name: [] for name in calls}
    for i in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call(i)
            times[name].append((time.perf_counter() - start) * 1000)
    return times


def format_table(results: dict[str, dict[str, float]], statistic: str) -> str:
    header = f"{statistic:<20}" + "".join(f"{name:>22}" for name in VARIANTS)
    lines = [header, "-" * len(header)]
    for arch, medians in results.items():
        floor = medians["forward"]
        cells = [f"{medians[name]:9.1f} ms {medians[name] / floor:5.2f}x" for name in VARIANTS]
        lines.append(f"{arch:<20}" + "".join(f"{cell:>22}" for cell in cells))
    return "\n".join(lines)


def main(args: argparse.Namespace) -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.repeats} repeats")
    results = {}
    for arch in args.archs:
        results[arch] = time_arch(arch, args.repeats, args.warmup, args.seed)
        print(f"{arch}: done", flush=True)
    for statistic, reduce in (("median", statistics.median), ("minimum", min)):
        table = {arch: {n: reduce(t) for n, t in times.items()} for arch, times in results.items()}
        print(format_table(table, statistic))
        for arch, t in table.items():
            ratio = t["explain-fam"] / t["forward"]
            print(f"{arch}: explain with familiarity / forward = {ratio:.2f}x (target <= 1.2x)")
            ratio = t["explain-graph"] / t["graph-forward"]
            print(
                f"{arch}: the app's explanation on the ONNX graph / the graph's forward = "
                f"{ratio:.2f}x (target <= 1.2x)"
            )


if __name__ == "__main__":
    main(get_args_parser().parse_args())
