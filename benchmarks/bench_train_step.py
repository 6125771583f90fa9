"""What one training step costs with glibc's default allocator settings, against
dermcore.malloc.keep_freed_memory() (no mmap, no trimming), which training/train.py and
training/evaluate.py call at start.

    python -m benchmarks.bench_train_step [--steps 6] [--rounds 2] [--batch-size 32] [--size 192]

Each side runs in its own fresh process (malloc settings are per process and cannot be undone
cleanly), alternating, so a burst of load from other jobs hits both alike. A step is a forward + backward + SGD update of
EfficientNet-Lite0 (random weights: speed does not depend on them) on a random batch, in both of
the recipe's phases: phase 1 (backbone frozen, head trained) and phase 2 (every layer).

Why: with the defaults, every activation over glibc's mmap threshold (32 MB at most; the first
convolution's output for 32 images at 192 px is 37 MB) is mapped fresh and returned on free, so
each step page-faults and zeroes gigabytes; `top` shows the training at ~100% system time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time


def one_side(steps: int, batch_size: int, size: int, phase: str, tuned: bool) -> list[float]:
    """Seconds per step, measured in this process (the first step is a warm-up, dropped)."""
    import torch

    from dermcore.malloc import keep_freed_memory
    from dermcore.models import build_model

    if tuned and not keep_freed_memory():
        raise SystemExit("mallopt is not available here (not glibc): nothing to compare")

    torch.manual_seed(0)
    model = build_model("efficientnet_lite0", num_classes=10, pretrained=False)
    head = model.get_classifier()
    if phase == "frozen":
        for p in model.parameters():
            p.requires_grad_(False)
        for p in head.parameters():
            p.requires_grad_(True)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    inputs = torch.randn(batch_size, 3, size, size)
    targets = torch.randint(0, 10, (batch_size,))
    model.train()
    times = []
    for _ in range(steps + 1):
        tic = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - tic)
    return times[1:]


def run_side(tuned: bool, args: argparse.Namespace, phase: str) -> list[float]:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.bench_train_step",
        "--child",
        phase,
        "--steps",
        str(args.steps),
        "--batch-size",
        str(args.batch_size),
        "--size",
        str(args.size),
        *(["--tuned"] if tuned else []),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="timed steps per process")
    parser.add_argument("--rounds", type=int, default=2, help="processes per side and phase")
    parser.add_argument("--batch-size", type=int, default=32, help="images per step")
    parser.add_argument("--size", type=int, default=192, help="training crop side, px")
    parser.add_argument("--child", choices=["frozen", "full"], help=argparse.SUPPRESS)
    parser.add_argument("--tuned", action="store_true", help=argparse.SUPPRESS)
    return parser


def main(args: argparse.Namespace) -> None:
    if args.child:
        print(json.dumps(one_side(args.steps, args.batch_size, args.size, args.child, args.tuned)))
        return
    print(f"batch {args.batch_size} at {args.size} px, {args.steps} steps x {args.rounds} rounds")
    for phase in ("frozen", "full"):
        sides: dict[str, list[float]] = {"default": [], "tuned": []}
        for _ in range(args.rounds):
            sides["default"] += run_side(False, args, phase)
            sides["tuned"] += run_side(True, args, phase)
        default = statistics.median(sides["default"])
        tuned = statistics.median(sides["tuned"])
        print(
            f"phase {phase:<6}: default malloc {default:.2f} s/step, "
            f"keep_freed_memory {tuned:.2f} s/step -> {default / tuned:.2f}x"
        )


if __name__ == "__main__":
    main(get_args_parser().parse_args())
