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

`python training/train.py --probe-c 0.01` uses it (`fit_training_probe`); off by default: on
set A, fine-tuning from the probe lost 4-9 points of the probe's own validation score
(training/experiments/README.md). `probe_study.py` scores such probes on validation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from torch import nn

from dermcore.labels import NUM_CLASSES
from dermcore.preprocessing import Preprocessing
from training import data as D
from training.augment import corrupt_for_training
from training.config import TrainConfig
from training.loaders import Data
from training.lr_find import head_inputs

VIEWS = 8  # the square's rotations and reflections
PROBE_EPOCH = 2_000_000  # corruption stream of the linear probe's views, apart from real epochs


def dihedral(images: np.ndarray, view: int) -> np.ndarray:
    """View `view` (0-7) of uint8 (N, H, W, 3) square images: rotation by 90 * (view % 4)
    degrees, mirrored left-right for views 4-7. View 0 is the images themselves."""
    out = np.rot90(images, view % 4, axes=(1, 2))
    return out[:, :, ::-1] if view >= 4 else out


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


def fit_training_probe(
    model: nn.Module,
    head: nn.Module,
    config: TrainConfig,
    data: Data,
    seed: int,
    device: torch.device,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """train.py --probe-c: the probe on every training image's centre crop in its 8 views,
    corrupted as `config.train_corruption` says (seeded by (seed, PROBE_EPOCH, view, index)),
    weighted like the training sampler. Returns fit_probe's (weight, bias, info)."""
    rows = data.rows("train")
    train = D.EvalDataset(data.images, rows)  # the centre crops, as validation sees them
    images = data.images.eval_images[train.cache_index]
    corrupt = None
    if config.train_corruption != "none":

        def corrupt(image: np.ndarray, view: int, index: int) -> np.ndarray:
            rng = np.random.default_rng([seed, PROBE_EPOCH, view, index])
            return corrupt_for_training(
                image, config.train_corruption, rng, config.robust_clean_share
            )

    features = head_features(model, head, images, data.preprocessing, device, corrupt=corrupt)
    weights = D.sampling_weights(rows, config.sampling)
    return fit_probe(features, train.labels, weights, config.probe_c, NUM_CLASSES)
