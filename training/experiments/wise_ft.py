"""Weight-space ensembles of a linear probe and its fine-tuned model (WiSE-FT, Wortsman et al.
2022): theta(alpha) = (1 - alpha) * theta_probe + alpha * theta_finetuned. Fine-tuning can trade
robustness to distribution shift for in-distribution accuracy; interpolating back toward the
ImageNet backbone recovers some of it at little in-distribution cost. Measured here as one of the
SD-198 levers (training/experiments/README.md).

The probe is the end of phase 1 of the same seed (backbone frozen, so its backbone is the ImageNet
one), rerun bit-identically with --stop-after-epochs:

    python training/train.py --name clean --seeds 2 --lr 0.03 --stop-after-epochs 5 \\
        --out-dir runs/exp/lp --weights-dir runs/exp/lp_w
    python training/experiments/wise_ft.py --probe runs/exp/lp/clean/seed2/last.pt \\
        --finetuned runs/clean/seed2/clean.json --alphas 0 0.25 0.5 0.75 1 --out runs/exp/wise_w

Writes one checkpoint + card per alpha (`<name>-wise<alpha>`), to be scored on validation with
training/experiments/val_select.py and reported once with training/evaluate.py. With BatchNorm
statistics frozen in phase 2 both endpoints share the ImageNet running statistics, so the
interpolation is of trained parameters only.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from dermcore.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from training.checkpointing import load_state  # noqa: E402


def interpolate(probe: dict, finetuned: dict, alpha: float) -> dict:
    """(1 - alpha) * probe + alpha * finetuned for floating tensors; integer buffers (BatchNorm's
    num_batches_tracked) come from the fine-tuned model."""
    if probe.keys() != finetuned.keys():
        raise ValueError("the two state dicts have different keys: not the same architecture")
    out = {}
    for key, tuned in finetuned.items():
        base = probe[key]
        if tuned.shape != base.shape:
            raise ValueError(f"{key}: shape {tuple(base.shape)} vs {tuple(tuned.shape)}")
        out[key] = torch.lerp(base, tuned, alpha) if tuned.is_floating_point() else tuned.clone()
    return out


def main(args: argparse.Namespace) -> list[Path]:
    model, card = load_checkpoint(args.finetuned)
    finetuned = {k: v.clone() for k, v in model.state_dict().items()}
    state = load_state(args.probe)
    if state.get("phase") != "frozen":
        raise ValueError(f"{args.probe} is not a phase-1 (frozen backbone) checkpoint")
    written = []
    for alpha in args.alphas:
        model.load_state_dict(interpolate(state["model"], finetuned, alpha))
        name = f"{card.name}-wise{alpha:g}"
        training = {
            **card.training,
            "wise_ft": {
                "alpha": alpha,
                "probe": str(args.probe),
                "finetuned": str(args.finetuned),
                "command": "python training/experiments/wise_ft.py " + " ".join(sys.argv[1:]),
            },
        }
        variant = dataclasses.replace(
            card,
            name=name,
            title=f"{card.title}; WiSE-FT alpha {alpha:g}",
            training=training,
            metrics={},  # the fine-tuned model's numbers are not this model's
            calibration={},
            weights_file="",
            weights_sha256="",
            created="",
        )
        written.append(save_checkpoint(model, variant, args.out))
        print(written[-1])
    return written


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="WiSE-FT: interpolate a phase-1 probe and its fine-tuned checkpoint.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--probe", type=Path, required=True, help="phase-1 last.pt of the seed")
    parser.add_argument("--finetuned", type=Path, required=True, help="the seed's model card")
    parser.add_argument(
        "--alphas", type=float, nargs="+", default=[0.5], help="weights of the fine-tuned model"
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for the new checkpoints")
    return parser


if __name__ == "__main__":
    main(get_args_parser().parse_args())
