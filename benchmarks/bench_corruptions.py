"""Time dermcore's salt-and-pepper and Gaussian blur against the imagecorruptions package.

    python -m benchmarks.bench_corruptions [--repeats 7] [--large 4000x3000]   # from the repo root

Both sides take and return uint8 HxWx3: theirs is called through `imagecorruptions.corrupt()`,
its own validated entry point. Settings are matched as closely as the package allows (it only has
integer severities): impulse_noise severity 2 is skimage's s&p at amount 0.06 (half salt, half
pepper), so ours runs at density 0.06, pepper_fraction 0.5; gaussian_blur severity 1 is skimage's
gaussian at sigma 1, truncated at 4 sigma (a 9x9 kernel), so ours runs 9x9 at sigma 1, and also
the paper's 5x5 for reference. imagecorruptions is a benchmark-only dependency:
`pip install imagecorruptions==1.1.2`.
"""

from __future__ import annotations

import argparse
import importlib.resources
import importlib.util
import inspect
import statistics
import sys
import time
import types
from collections.abc import Callable

import numpy as np

from dermcore.corruptions import gaussian_blur, salt_and_pepper


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=True)
    parser.add_argument(
        "--repeats", type=int, default=7, help="timed calls per op and size, median kept (7)"
    )
    parser.add_argument(
        "--large", default="4000x3000", help="WIDTHxHEIGHT of the large photo (4000x3000, 12 MP)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the test images (0)")
    return parser


def import_imagecorruptions() -> types.ModuleType | None:
    """Import imagecorruptions 1.1.2 on a modern stack, or None when it is not installed.

    Two shims, local to this process: setuptools >= 81 no longer ships `pkg_resources` (used only
    for `resource_filename` of its frost images), and scikit-image >= 0.19 replaced gaussian's
    `multichannel=True` by `channel_axis=-1`.
    """
    if importlib.util.find_spec("imagecorruptions") is None:
        return None
    if importlib.util.find_spec("pkg_resources") is None:
        shim = types.ModuleType("pkg_resources")
        shim.resource_filename = lambda package, name: str(
            importlib.resources.files(package) / name
        )
        sys.modules["pkg_resources"] = shim
    import imagecorruptions
    from imagecorruptions import corruptions as module

    skimage_gaussian = module.gaussian
    if "multichannel" not in inspect.signature(skimage_gaussian).parameters:

        def gaussian(image, *args, multichannel=None, **kwargs):
            if multichannel:
                kwargs.setdefault("channel_axis", -1)
            return skimage_gaussian(image, *args, **kwargs)

        module.gaussian = gaussian
    return imagecorruptions


def median_ms(call: Callable[[], object], repeats: int) -> float:
    call()  # warm-up: first-call allocations and lazy imports are not what we measure
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main(args: argparse.Namespace) -> int:
    imagecorruptions = import_imagecorruptions()
    if imagecorruptions is None:
        print(
            "imagecorruptions is not installed; it is needed only for this benchmark:\n"
            "    pip install imagecorruptions==1.1.2",
            file=sys.stderr,
        )
        return 2
    width, height = (int(v) for v in args.large.lower().split("x"))
    rng = np.random.default_rng(args.seed)
    images = {
        "224x224": rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),
        f"{width}x{height}": rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
    }
    corrupt = imagecorruptions.corrupt
    ops = [
        (
            "s&p d=0.06 vs impulse_noise sev2",
            lambda im: salt_and_pepper(im, 0.06, 0.5, rng=rng),
            lambda im: corrupt(im, severity=2, corruption_name="impulse_noise"),
        ),
        (
            "blur 9x9 s=1 vs gaussian_blur sev1",
            lambda im: gaussian_blur(im, 9, 1.0),
            lambda im: corrupt(im, severity=1, corruption_name="gaussian_blur"),
        ),
        (
            "blur 5x5 (paper) vs gaussian_blur sev1",
            lambda im: gaussian_blur(im, 5),
            lambda im: corrupt(im, severity=1, corruption_name="gaussian_blur"),
        ),
    ]
    print(f"{'op':<40} {'size':>10} {'ours ms':>10} {'theirs ms':>10} {'ratio':>8}")
    for name, ours, theirs in ops:
        for size, image in images.items():
            ours_ms = median_ms(lambda ours=ours, image=image: ours(image), args.repeats)
            theirs_ms = median_ms(lambda theirs=theirs, image=image: theirs(image), args.repeats)
            print(
                f"{name:<40} {size:>10} {ours_ms:>10.2f} {theirs_ms:>10.2f} "
                f"{theirs_ms / ours_ms:>7.1f}x"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
