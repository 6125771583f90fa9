"""What the training augmentation costs a linear head: a logistic-regression probe on the
frozen ImageNet backbone (`probe.fit_probe`), fitted on the training images seen either as the
evaluation centre crop in its 8 rotations and reflections or through draws of train.py's
augmentation, and scored on the validation split (never test or SD-198). The numbers and the
decision are in training/experiments/README.md ("A linear probe first").

    python training/experiments/probe_study.py                            # 8 centre-crop views
    python training/experiments/probe_study.py --views augment --draws 4  # 4 augmentation draws
    python training/experiments/probe_study.py --views augment --train-size 224 --no-photometric --crop-min 0.6
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

# The imports below need the sys.path line above:
# ruff: noqa: E402
from dermcore.labels import NUM_CLASSES
from dermcore.malloc import keep_freed_memory
from dermcore.models import build_model, get_arch, get_module
from training import data as D
from training import metrics
from training.augment import AugmentConfig, augment
from training.config import RunPaths, TrainConfig
from training.experiments.probe import fit_probe, head_features
from training.loaders import prepare_data


def main(args: argparse.Namespace) -> float:
    """Validation balanced accuracy of a probe fitted as `args` says, on the ImageNet backbone."""
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
