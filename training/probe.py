"""Phase 1 as a converged linear probe, for linear-probe-then-fine-tune (LP-FT).

Kumar et al. 2022 ("Fine-Tuning can Distort Pretrained Features and Underperform
Out-of-Distribution") fit the new head to convergence on the frozen backbone before anything
else trains, so that fine-tuning starts from a head that already fits and changes the features
less. The paper's phase 1 (a few SGDR epochs of the head on augmented crops) is the same idea
run short. Here the head is an L2-regularised multinomial logistic regression
(scikit-learn, L-BFGS) on the backbone's features of the training images:

* every training image is seen as the evaluation preset's centre crop (what the app feeds the
  model) in its 8 rotations and reflections, each view a sample (Alopecia photos were rotated
  at random by the exporter, and a lesion has no up);
* samples carry the training sampler's weights (`data.sampling_weights`), so every class, and
  every source within a class, counts as it does in training;
* with a training corruption (`sp`, `robust`) every view gets one draw of it, from its own
  seeded stream, as training would;
* features are standardised for the fit and the standardisation is folded back into the head,
  so the model is an ordinary network with an ordinary linear head.

    weight, bias, info = fit_probe(features, labels, sample_weight, c=0.01, num_classes=10)

train.py --probe-c uses it; off by default: on set A, fine-tuning from the probe lost 4-9
points of the probe's own validation score (training/README.md).

As a script it scores such a probe on the validation split (never test or SD-198), with the
training images seen either as above or through the training augmentation, to measure what the
augmentation costs a linear head (training/README.md, "A linear probe first"):

    python training/probe.py                            # 8 views of the centre crop
    python training/probe.py --views augment --draws 4  # 4 draws of train.py's augmentation
    python training/probe.py --views augment --train-size 224 --no-photometric --crop-min 0.6
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from torch import nn

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from dermcore.preprocessing import Preprocessing  # noqa: E402

VIEWS = 8  # the square's rotations and reflections


def dihedral(images: np.ndarray, view: int) -> np.ndarray:
    """View `view` (0-7) of uint8 (N, H, W, 3) square images: rotation by 90 * (view % 4)
    degrees, mirrored left-right for views 4-7. View 0 is the images themselves."""
    out = np.rot90(images, view % 4, axes=(1, 2))
    return out[:, :, ::-1] if view >= 4 else out


@torch.no_grad()
def head_inputs(
    model: nn.Module, head: nn.Module, batches: Iterable, count: int, device: torch.device
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """[(float (N, F) features entering `head`, int64 (N,) targets)] for `count` batches."""
    captured = []

    def keep_input(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        captured.append(inputs[0].detach().float())

    handle = head.register_forward_hook(keep_input)
    try:
        out = []
        for _, (inputs, targets) in zip(range(count), batches, strict=False):
            with torch.autocast(device.type, torch.float16, enabled=device.type == "cuda"):
                model(inputs.to(device))
            out.append((captured.pop(), targets))
        return out
    finally:
        handle.remove()


def head_features(
    model: nn.Module,
    head: nn.Module,
    images: np.ndarray,
    prep: Preprocessing,
    device: torch.device,
    *,
    views: int = VIEWS,
    corrupt: Callable[[np.ndarray, int, int], np.ndarray] | None = None,
    batch_size: int = 64,
) -> np.ndarray:
    """float32 (N, views, F): the inputs of `head` for every view of every image, the model in
    eval mode. corrupt(image, view, index) -> image, when given, is applied to each view."""

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for view in range(views):
            for start in range(0, len(images), batch_size):
                batch = np.ascontiguousarray(dihedral(images[start : start + batch_size], view))
                if corrupt is not None:
                    batch = np.stack(
                        [corrupt(image, view, start + i) for i, image in enumerate(batch)]
                    )
                yield prep.to_tensor(batch), torch.empty(0)

    count = views * -(-len(images) // batch_size)
    was_training = model.training
    model.eval()
    try:
        captured = head_inputs(model, head, batches(), count, device)
    finally:
        model.train(was_training)
    features = np.concatenate([f.cpu().numpy() for f, _ in captured])
    return features.reshape(views, len(images), -1).transpose(1, 0, 2)


def fit_probe(
    features: np.ndarray,
    labels: np.ndarray,
    sample_weight: np.ndarray | None,
    c: float,
    num_classes: int,
    max_iter: int = 1000,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Multinomial logistic regression on (N, V, F) features of N images (V views each).

    Returns the head's weight (num_classes, F) and bias (num_classes,) on the *unstandardised*
    features, and info (iterations, converged). `c` is scikit-learn's inverse regularisation
    strength on the standardised features; sample_weight (N,) is spread over each image's views
    and rescaled to mean 1 so that `c` means the same whatever the weights sum to. A class with
    no training image gets a zero weight row and a bias 10 below the lowest, so it is never
    the answer (its probability is at most e^-10 of another's).
    """
    n, views, dim = features.shape
    x = features.reshape(n * views, dim)
    y = np.repeat(np.asarray(labels), views)
    w = None
    if sample_weight is not None:
        w = np.repeat(np.asarray(sample_weight, dtype=np.float64), views)
        w = w / w.mean()
    scaler = StandardScaler().fit(x, sample_weight=w)
    clf = LogisticRegression(C=c, max_iter=max_iter)
    clf.fit(scaler.transform(x), y, sample_weight=w)
    coef, intercept = clf.coef_, clf.intercept_
    if len(clf.classes_) == 2:  # scikit-learn fits one logit: p(second) = sigmoid(w x + b)
        coef = np.concatenate([np.zeros_like(coef), coef])
        intercept = np.concatenate([np.zeros_like(intercept), intercept])
    fitted_w = coef / scaler.scale_  # (classes present, F)
    fitted_b = intercept - fitted_w @ scaler.mean_
    weight = np.zeros((num_classes, dim), np.float32)
    bias = np.full(num_classes, fitted_b.min() - 10.0, np.float32)
    weight[clf.classes_] = fitted_w
    bias[clf.classes_] = fitted_b
    iterations = int(np.max(clf.n_iter_))
    info = {"c": c, "iterations": iterations, "converged": iterations < max_iter}
    return weight, bias, info


@torch.no_grad()
def set_linear(head: nn.Linear, weight: np.ndarray, bias: np.ndarray) -> None:
    """Copy a fitted (K, F) weight and (K,) bias into `head`."""
    if tuple(head.weight.shape) != weight.shape or tuple(head.bias.shape) != bias.shape:
        raise ValueError(
            f"probe of shape {weight.shape} does not fit a head of shape {tuple(head.weight.shape)}"
        )
    head.weight.copy_(torch.from_numpy(weight))
    head.bias.copy_(torch.from_numpy(bias))


def main(args: argparse.Namespace) -> float:
    """Validation balanced accuracy of a probe fitted as `args` says, on the ImageNet backbone."""
    from dermcore.labels import NUM_CLASSES
    from dermcore.malloc import keep_freed_memory
    from dermcore.models import build_model, get_arch, get_module
    from training import data as D
    from training import metrics
    from training.augment import AugmentConfig, augment
    from training.train import RunPaths, TrainConfig, prepare_data

    keep_freed_memory()
    config = TrainConfig()
    paths = RunPaths.from_args(args.data_root, args.split_file, args.cache_dir)
    data = prepare_data(config, paths)
    model = build_model(config.arch, NUM_CLASSES, pretrained=True).eval()
    head = get_module(model, get_arch(config.arch).head)
    device = torch.device("cpu")
    train = D.EvalDataset(data.images, data.rows("train"))
    if args.views == "centre":
        images = data.images.eval_images[train.cache_index]
        features = head_features(model, head, images, data.preprocessing, device)
    else:
        crop = (args.crop_min, 1.0)
        photometric = {} if args.photometric else dict.fromkeys(PHOTOMETRIC, 0.0)
        aug = AugmentConfig(size=args.train_size, crop_scale=crop, **photometric)
        draws = []
        for draw in range(args.draws):
            batch = np.stack(
                [
                    augment(data.images.train_image(i), aug, np.random.default_rng([0, draw, i]))
                    for i in train.cache_index
                ]
            )
            draws.append(head_features(model, head, batch, data.preprocessing, device, views=1))
        features = np.concatenate(draws, axis=1)
    weights = D.sampling_weights(data.rows("train"), config.sampling)
    weight, bias, info = fit_probe(features, train.labels, weights, args.c, NUM_CLASSES)
    val_images = data.images.eval_images[data.val.cache_index]
    val = head_features(model, head, val_images, data.preprocessing, device, views=1)
    predictions = (val[:, 0] @ weight.T + bias).argmax(1)
    balanced = metrics.balanced_accuracy(data.val.labels, predictions, NUM_CLASSES)
    print(f"{vars(args)} -> validation balanced accuracy {100 * balanced:.1f}% ({info})")
    return balanced


PHOTOMETRIC = ("brightness", "contrast", "saturation", "hue", "downscale_p", "jpeg_p")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default=None, help="set A (default: ../shared/data/train)")
    parser.add_argument("--split-file", default="weights/split.json")
    parser.add_argument("--cache-dir", default="runs/cache")
    parser.add_argument("--c", type=float, default=0.01, help="inverse regularisation")
    parser.add_argument(
        "--views",
        choices=["centre", "augment"],
        default="centre",
        help="training images as the 8 views of the evaluation centre crop, or as draws of "
        "the training augmentation",
    )
    parser.add_argument("--draws", type=int, default=4, help="augmentation draws per image")
    parser.add_argument("--train-size", type=int, default=192, help="augmented crop side, px")
    parser.add_argument("--crop-min", type=float, default=0.35, help="random crop minimum area")
    parser.add_argument(
        "--no-photometric",
        dest="photometric",
        action="store_false",
        help="augmentation without colour jitter, down-and-up scaling and JPEG",
    )
    return parser


if __name__ == "__main__":
    main(get_args_parser().parse_args())
