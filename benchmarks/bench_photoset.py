"""Throughput of scoring a user's photo zip (dermcore.photoset, what the Your photos page runs)
against plain batched prediction of the same photos, measured in the same run.

    python -m benchmarks.bench_photoset                   # 300 photos, EfficientNet-Lite0, 1 thread
    python -m benchmarks.bench_photoset --photos 100 --threads 2
    python -m benchmarks.bench_photoset --through-page        # the Your photos page, under AppTest

The zip holds seeded synthetic lesion photos (640x480 JPEG), built in memory. "Score" is
photoset.score for one model: resize every photo to the model input, predict it clean, under the
paper's noise (sp_upto5) and under its blur (blur5), compute the metrics and explain the six worst
photos with Grad-CAM. "Plain" is Predictor.predict on the same inputs, measured two ways, as
benchmarks/bench_report.py does: in-run, the scoring's own predict calls (so the ratio is the share
of scoring time spent in the model, immune to other work on the machine; the verdict uses it), and
three separate passes over the clean inputs before and after the scoring (mean kept;
load-sensitive). All are photos per second, a photo counting once for its three views.
Target: score >= 0.8 of plain. With --through-page the whole page runs under Streamlit's
AppTest (upload the zip, press Score) for the two fixture checkpoints of tests/conftest.py at
224 px, written to a temporary folder that is deleted afterwards; its rate is set against three
plain predict passes per model. Reading the zip (decoding) is
timed and shown apart: the report pipeline decodes its photos too, outside its measured loop.
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dermcore import photoset
from dermcore.explain import Predictor
from dermcore.labels import CLASSES
from dermcore.models import DEFAULT_ARCH, build_model

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from conftest import lesion_photo  # noqa: E402

TARGET_RATIO = 0.8


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--photos", type=int, default=300, help="photos in the zip")
    parser.add_argument("--arch", default=DEFAULT_ARCH, help="architecture (random weights)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the app uses 1)")
    parser.add_argument("--through-page", action="store_true", help="run the page under AppTest")
    return parser


def synthetic_zip(n_photos: int) -> tuple[bytes, list[str]]:
    """A zip of n seeded 640x480 JPEG lesions, spread over the ten class folders."""
    buffer, labels = io.BytesIO(), []
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for k in range(n_photos):
            label = CLASSES[k % len(CLASSES)]
            photo = io.BytesIO()
            Image.fromarray(lesion_photo(k, 480, 640)).save(photo, format="JPEG", quality=90)
            archive.writestr(f"{label}/photo-{k:04d}.jpg", photo.getvalue())
            labels.append(label)
    return buffer.getvalue(), labels


def plain_seconds(predictor: Predictor, inputs: np.ndarray, passes: int) -> float:
    start = time.perf_counter()
    for _ in range(passes):
        predictor.predict(inputs, 32)
    return time.perf_counter() - start


def through_page(args: argparse.Namespace) -> float:
    """Upload the zip to the Your photos page and press Score; photos per second per model
    against plain predict passes of the same checkpoints."""
    import os
    import tempfile

    from conftest import write_tiny_checkpoints
    from streamlit.testing.v1 import AppTest

    data, _ = synthetic_zip(args.photos)
    app = str(Path(__file__).resolve().parent.parent / "app.py")
    with tempfile.TemporaryDirectory() as folder:
        cards = write_tiny_checkpoints(Path(folder), input_size=224)
        os.environ["DERM_WEIGHTS_DIR"] = folder
        os.environ["DERM_TORCH_THREADS"] = str(args.threads)
        at = AppTest.from_file(app, default_timeout=3600).run()
        at.switch_page("pages/your_photos.py").run()
        start = time.perf_counter()
        at.file_uploader(key="photos_upload").set_value(("bench.zip", data, "application/zip"))
        at.run()
        read_s = time.perf_counter() - start
        start = time.perf_counter()
        with timed_predict(Predictor) as forward:  # every model's predict calls in the page
            at.button(key="photos_score").click().run()
        page_s = time.perf_counter() - start
        assert not at.exception and not at.error, "the page failed"
        predictors = [Predictor.from_checkpoint(card) for card in cards]
    photos = [photo.image for photo in photoset.read_photoset(data).photos]
    passes = len(photoset.PAPER_CONDITIONS)
    plain_s = 0.0
    for predictor in predictors:
        inputs = np.stack([predictor.prepare(image) for image in photos])
        predictor.predict(inputs[:32], 32)  # warm-up
        plain_s += plain_seconds(predictor, inputs, passes)
    n, models = len(photos), len(predictors)
    page, plain, in_run = n * models / page_s, n * models / plain_s, n * models / forward[0]
    ratio = page / in_run
    print(f"{n} photos, {models} models at 224 px (random weights), {args.threads} thread(s)")
    print(f"page read  : {n / read_s:6.1f} photos/s  (upload and decode, {read_s:.1f} s)")
    print(f"page score : {page:6.1f} photos/s per model  ({page_s:.1f} s for {models} models)")
    print(f"plain, in-run   : {in_run:6.1f} photos/s per model  (the page's own predict calls, {forward[0]:.1f} s)")  # fmt: skip
    print(f"plain, separate : {plain:6.1f} photos/s per model  ({passes} predict passes each, {plain_s:.1f} s)")  # fmt: skip
    verdict = "meets" if ratio >= TARGET_RATIO else "misses"
    print(f"ratio page / plain in-run   = {ratio:.2f} ({verdict} the target >= {TARGET_RATIO})")
    print(f"ratio page / plain separate = {page / plain:.2f} (load-sensitive)")
    return ratio


def main(args: argparse.Namespace) -> float:
    if args.through_page:
        return through_page(args)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    predictor = Predictor(build_model(args.arch, pretrained=False), args.arch)
    data, _ = synthetic_zip(args.photos)
    print(f"{args.arch} (random weights), {args.photos} photos, zip {len(data) / 1e6:.1f} MB, "
          f"{torch.get_num_threads()} thread(s)")  # fmt: skip

    start = time.perf_counter()
    photo_set = photoset.read_photoset(data)
    read_s = time.perf_counter() - start
    images = [photo.image for photo in photo_set.photos]
    labels = [photo.folder for photo in photo_set.photos]
    inputs = np.stack([predictor.prepare(image) for image in images])
    passes = len(photoset.PAPER_CONDITIONS)

    predictor.predict(inputs[:32], 32)  # warm-up
    before = plain_seconds(predictor, inputs, passes)
    with timed_predict(predictor) as forward:
        result = photoset.score(predictor, images, labels)
    after = plain_seconds(predictor, inputs, passes)

    n = len(images)
    plain = n / ((before + after) / 2)
    in_run = n / forward[0]
    scored = n / result.seconds
    ratio = scored / in_run
    print(f"read zip : {n / read_s:6.1f} photos/s  ({n} photos decoded in {read_s:.1f} s)")
    print(f"score    : {scored:6.1f} photos/s  ({result.seconds:.1f} s: {passes} conditions, "
          f"{len(result.worst)} Grad-CAMs, metrics)")  # fmt: skip
    print(f"plain, in-run   : {in_run:6.1f} photos/s  (the scoring's own predict calls, {forward[0]:.1f} s)")  # fmt: skip
    print(f"plain, separate : {plain:6.1f} photos/s  ({passes} predict passes; before {before:.1f} s, "
          f"after {after:.1f} s)")  # fmt: skip
    print(f"end to end (read + score): {n / (read_s + result.seconds):.1f} photos/s")
    verdict = "meets" if ratio >= TARGET_RATIO else "misses"
    print(f"ratio score / plain in-run   = {ratio:.2f} ({verdict} the target >= {TARGET_RATIO})")
    print(f"ratio score / plain separate = {scored / plain:.2f} (load-sensitive)")
    return ratio


@contextmanager
def timed_predict(owner: Predictor | type[Predictor]) -> Iterator[list[float]]:
    """Sums the seconds spent in `predict` meanwhile, of one predictor (an instance attribute
    shadows the method) or of every predictor (the class's method is swapped); restored after."""
    seconds = [0.0]
    predict = owner.__dict__.get("predict") if isinstance(owner, type) else owner.predict

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return predict(*args, **kwargs)
        finally:
            seconds[0] += time.perf_counter() - start

    owner.predict = timed
    try:
        yield seconds
    finally:
        if isinstance(owner, type):
            owner.predict = predict
        else:
            del owner.predict


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main(get_args_parser().parse_args())
