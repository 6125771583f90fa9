"""A user's own labelled photos, scored by a model, all in memory.

    zip bytes --read_photoset--> PhotoSet (decoded photos, per-photo problems)
              --classmap-------> a class name per photo (folder -> class, editable)
              --score----------> ModelScore (accuracy, recall, confusion per condition, worst photos)
              --summary_record / summary_png--> JSON and PNG for download, without any photo

Nothing here writes a file or logs a name or a byte of a photo: a clinic's photos are patient
data. The zip is read from bytes and never unpacked to disk. Its declared sizes are checked
before anything is decompressed, and each member is read no further than its declared size, so a
zip bomb is refused rather than inflated.

The noise and blur conditions are training/conditions.py's `sp_upto5` and `blur5` (the paper's
"at most 5% of the pixels, 3:1" and 5x5 Gaussian), drawn per photo from generators seeded the
same way, at the model's input resolution; tests/test_photoset.py checks they stay equal.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import time
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import cv2
import numpy as np

from dermcore import classmap
from dermcore.comparison import NOTICE
from dermcore.corruptions import CorruptionSpec, apply_corruption
from dermcore.explain import Predictor
from dermcore.imageio import SUPPORTED_EXTENSIONS, WORKING_SIDE_PX, ImageLoadError, load_image
from dermcore.reports import row_normalised

Progress = Callable[[int, int], None]  # (done, total), called after each step
SET_NAME = "photos"  # seeds the per-photo draws, as the report's set names do


# ---- reading a zip -------------------------------------------------------------------------


@dataclass(frozen=True)
class PhotoSetLimits:
    """What one upload may hold. The zip's own size and its members' declared sizes are checked
    before any member is decompressed."""

    max_photos: int = 500
    max_zip_bytes: int = 200_000_000  # the uploaded file
    max_unpacked_bytes: int = 200_000_000  # the photos' declared uncompressed sizes, summed
    max_photo_bytes: int = 50_000_000  # one photo, as dermcore.imageio.load_image's default
    max_entries: int = 10_000  # every entry the zip lists (folders and other files included)

    def describe(self) -> str:
        return (
            f"{self.max_photos} photos, {self.max_zip_bytes / 1e6:g} MB zipped and "
            f"{self.max_unpacked_bytes / 1e6:g} MB unpacked"
        )


DEFAULT_LIMITS = PhotoSetLimits()


class PhotoSetError(ValueError):
    """The whole upload is refused; the message is one sentence, safe to show."""


@dataclass(frozen=True)
class Photo:
    name: str  # path inside the zip; shown on the page only, never logged or downloaded
    folder: str  # the user's label: the folder named by label_folder
    sha256: str  # of the file's bytes; names the photo in downloads
    image: np.ndarray  # uint8 HxWx3, the shorter side at most PhotoSet.short_side_px


@dataclass(frozen=True)
class Problem:
    name: str  # path inside the zip
    message: str  # one sentence


@dataclass
class PhotoSet:
    photos: list[Photo]
    failed: list[Problem]  # photos that could not be read
    skipped: list[Problem]  # entries that are not photos in a class folder, and repeated files
    short_side_px: int

    def folder_counts(self) -> dict[str, int]:
        """{folder: number of photos}, folders sorted by name."""
        return dict(sorted(Counter(photo.folder for photo in self.photos).items()))


def read_photoset(
    data: bytes,
    limits: PhotoSetLimits = DEFAULT_LIMITS,
    short_side_px: int = 224,
    progress: Progress | None = None,
) -> PhotoSet:
    """Decode every photo of a zip laid out as a folder per class (at any depth; see
    label_folder for which folder labels a photo).

    Each photo is decoded as the app decodes an upload (load_image, longer side at most
    WORKING_SIDE_PX) and shrunk so that its shorter side is at most `short_side_px`: with
    `short_side_px` >= a model's resize_size, its `to_input_resolution` gives the same input as
    from the working copy. Raises PhotoSetError when the zip itself is refused; a photo that
    cannot be read is listed in `failed` and the rest go on.
    """
    if short_side_px < 8:
        raise ValueError(f"short_side_px must be at least 8, got {short_side_px}")
    with _open_zip(data, limits) as archive:
        members, skipped = _photo_members(archive.infolist(), limits)
        photos, failed, first_of = [], [], {}
        for done, info in enumerate(members, start=1):
            try:
                photo = _read_photo(archive, info, limits, short_side_px)
            except ImageLoadError as error:
                failed.append(Problem(info.filename, str(error)))
            else:
                # the same file twice would be scored twice (and, in two folders, under two labels)
                if (first := first_of.setdefault(photo.sha256, photo)) is not photo:
                    skipped.append(
                        Problem(info.filename, f"The same file as {first.name}; counted once.")
                    )
                else:
                    photos.append(photo)
            if progress is not None:
                progress(done, len(members))
    return PhotoSet(photos, failed, skipped, short_side_px)


def _open_zip(data: bytes, limits: PhotoSetLimits) -> zipfile.ZipFile:
    size = memoryview(data).nbytes
    if size > limits.max_zip_bytes:
        raise PhotoSetError(
            f"This zip is {size / 1e6:.1f} MB; the limit is {limits.describe()}. "
            "Please split it into smaller zips."
        )
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError):
        raise PhotoSetError(
            "This file is not a zip archive we can read. Please zip a folder per class and "
            "upload the .zip file."
        ) from None
    return archive


def _photo_members(
    infos: list[zipfile.ZipInfo], limits: PhotoSetLimits
) -> tuple[list[zipfile.ZipInfo], list[Problem]]:
    """The photo entries, checked against the limits on their declared sizes; and the others."""
    if len(infos) > limits.max_entries:
        raise PhotoSetError(
            f"This zip lists {len(infos)} entries; the limit is {limits.max_entries}. "
            "Please zip only the class folders."
        )
    suffixes = {f".{ext}" for ext in SUPPORTED_EXTENSIONS}
    members, skipped = [], []
    for info in infos:
        path = PurePosixPath(info.filename.replace("\\", "/"))
        if info.is_dir() or any(p.startswith(".") or p == "__MACOSX" for p in path.parts):
            continue  # folders, and the hidden files that macOS and Windows add
        if path.suffix.lower() not in suffixes:
            skipped.append(Problem(info.filename, "Not a photo type we read; left out."))
        elif len(path.parts) < 2:
            skipped.append(
                Problem(info.filename, "Not inside a class folder, so it has no label; left out.")
            )
        else:
            members.append(info)
    if not members:
        raise PhotoSetError(
            "This zip holds no photos in folders. Put each class's photos in a folder named "
            "after the class (for example Acne/ or Urticaria/) and zip those folders."
        )
    if len(members) > limits.max_photos:
        raise PhotoSetError(
            f"This zip holds {len(members)} photos; the limit is {limits.describe()}. "
            "Please split it into smaller zips."
        )
    declared = sum(info.file_size for info in members)
    if declared > limits.max_unpacked_bytes:
        raise PhotoSetError(
            f"This zip's photos unpack to {declared / 1e6:.1f} MB; the limit is "
            f"{limits.describe()}. Please split it into smaller zips."
        )
    return sorted(members, key=lambda info: info.filename), skipped


def _read_photo(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, limits: PhotoSetLimits, short_side_px: int
) -> Photo:
    """One member -> Photo; ImageLoadError with a one-sentence reason otherwise."""
    if info.flag_bits & 0x1:
        raise ImageLoadError(
            "This photo is encrypted in the zip; please zip it without a password."
        )
    if info.file_size > limits.max_photo_bytes:
        raise ImageLoadError(
            f"This photo is too large ({info.file_size / 1e6:.1f} MB); the limit is "
            f"{limits.max_photo_bytes / 1e6:g} MB."
        )
    try:
        with archive.open(info) as member:
            data = member.read(info.file_size + 1)  # never past its declared size
    except (zipfile.BadZipFile, zlib.error, NotImplementedError, EOFError, OSError):
        raise ImageLoadError("This photo is damaged inside the zip and cannot be read.") from None
    if len(data) > info.file_size:
        raise ImageLoadError("This photo unpacks to more than the zip says; it was not read.")
    image = load_image(data, max_bytes=limits.max_photo_bytes, max_side=WORKING_SIDE_PX)
    folder = label_folder(PurePosixPath(info.filename.replace("\\", "/")))
    sha256 = hashlib.sha256(data).hexdigest()
    return Photo(info.filename, folder, sha256, shrink_to_short_side(image, short_side_px))


def label_folder(path: PurePosixPath) -> str:
    """The folder that labels a photo: the nearest enclosing folder whose name the default
    mapping knows (so 'clinic/Acne/visit 2/x.jpg' is Acne), else its whole folder path, so that
    'Psoriasis/images' and 'Melanoma/images' stay two rows of the mapping, not one 'images'."""
    folders = path.parts[:-1]
    known = [name for name in folders if classmap.default_label(name) != classmap.LEAVE_OUT]
    return known[-1] if known else "/".join(folders)


def shrink_to_short_side(image: np.ndarray, side_px: int) -> np.ndarray:
    """uint8 HxWx3 -> the image with its shorter side at most `side_px`, area-averaged, sides
    rounded as Preprocessing.to_input_resolution rounds them (so that a later resize to the same
    side is the identity). An image already small enough is returned as it is."""
    height, width = image.shape[:2]
    if min(height, width) <= side_px:
        return image
    scale = side_px / min(height, width)
    size = (max(side_px, round(width * scale)), max(side_px, round(height * scale)))  # (w, h)
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


# ---- conditions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    """A way of showing the photos to a model, as training/conditions.py's Condition."""

    name: str
    description: str
    spec: CorruptionSpec = field(default_factory=CorruptionSpec)
    max_density: float | None = None  # noise density drawn per photo from U[0, max_density]

    def spec_for(self, rng: np.random.Generator) -> CorruptionSpec:
        if self.max_density is None:
            return self.spec
        return dataclasses.replace(self.spec, noise_density=float(rng.uniform(0, self.max_density)))


PAPER_CONDITIONS: tuple[Condition, ...] = (
    Condition("clean", "as uploaded"),
    Condition("sp_upto5", "salt and pepper on up to 5% of the pixels, 3:1", max_density=0.05),
    Condition("blur5", "5×5 Gaussian blur", CorruptionSpec(blur_kernel=5)),
)


def image_rng(seed: int, condition: str, index: int) -> np.random.Generator:
    """The generator for one photo under one condition (training/conditions.py's image_rng)."""
    keys = [seed, zlib.crc32(condition.encode()), zlib.crc32(SET_NAME.encode()), index]
    return np.random.default_rng(keys)


# ---- scoring -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConditionScore:
    name: str
    description: str
    accuracy: float  # top-1, over every photo
    balanced_accuracy: float  # mean recall over the classes that have photos
    recall: np.ndarray  # float64 (C,), NaN for a class without photos
    confusion: np.ndarray  # int64 (C, C), rows = true class, columns = predicted
    predictions: np.ndarray  # int64 (N,)


@dataclass(frozen=True)
class WorstPhoto:
    """A photo the model got most wrong (lowest probability for its true class, clean)."""

    index: int  # into the images given to score()
    label: int
    predicted: int
    true_probability: float
    predicted_probability: float
    input_image: np.ndarray  # uint8 (S, S, 3), what the model saw
    cam: np.ndarray  # float32 (S, S) in [0, 1], Grad-CAM of the predicted class


@dataclass(frozen=True)
class ModelScore:
    model: str
    title: str
    weights_sha256: str
    classes: tuple[str, ...]
    labels: np.ndarray  # int64 (N,)
    conditions: dict[str, ConditionScore]
    worst: list[WorstPhoto]
    seconds: float

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(self.classes))
        return {name: int(n) for name, n in zip(self.classes, counts, strict=True) if n}


def score(
    predictor: Predictor,
    images: Sequence[np.ndarray],
    labels: Sequence[str],
    conditions: Sequence[Condition] = PAPER_CONDITIONS,
    *,
    seed: int = 0,
    n_worst: int = 6,
    batch_size: int = 32,
    progress: Progress | None = None,
) -> ModelScore:
    """Predict every uint8 HxWx3 image under every condition and explain the worst ones.

    `labels` are class names of `predictor.classes`. Progress counts one step per photo and
    condition plus one per worst photo explained.
    """
    if len(images) != len(labels) or not images:
        raise ValueError(
            f"need as many labels as images (>= 1), got {len(labels)} and {len(images)}"
        )
    label_index = np.array([_class_index(predictor, name) for name in labels], dtype=np.int64)
    start = time.perf_counter()
    inputs = np.stack([predictor.prepare(image) for image in images])  # (N, S, S, 3)
    n_worst = min(n_worst, len(images))
    total, done = len(images) * len(conditions) + n_worst, 0
    results, clean_probabilities = {}, None
    for condition in conditions:
        probabilities = np.empty((len(inputs), len(predictor.classes)), dtype=np.float32)
        for lo in range(0, len(inputs), batch_size):
            batch = _corrupted(inputs[lo : lo + batch_size], condition, seed, lo)
            probabilities[lo : lo + len(batch)] = predictor.predict(batch, batch_size)
            done += len(batch)
            if progress is not None:
                progress(done, total)
        results[condition.name] = condition_score(condition, label_index, probabilities)
        if clean_probabilities is None:
            clean_probabilities = probabilities
    worst = []
    for index in worst_indices(clean_probabilities, label_index, n_worst):
        worst.append(_explain_worst(predictor, inputs[index], int(index), int(label_index[index])))
        done += 1
        if progress is not None:
            progress(done, total)
    card = predictor.card
    return ModelScore(
        model=card.name if card else predictor.arch,
        title=(card.title or card.name) if card else predictor.arch,
        weights_sha256=card.weights_sha256 if card else "",
        classes=predictor.classes,
        labels=label_index,
        conditions=results,
        worst=worst,
        seconds=time.perf_counter() - start,
    )


def _class_index(predictor: Predictor, name: str) -> int:
    if name not in predictor.classes:
        raise ValueError(f"{name!r} is not one of this model's classes")
    return predictor.classes.index(name)


def _corrupted(inputs: np.ndarray, condition: Condition, seed: int, offset: int) -> np.ndarray:
    """uint8 (B, S, S, 3) -> corrupted copy; photo i of the batch is photo offset + i."""
    if condition.spec.is_identity and condition.max_density is None:
        return inputs
    out = np.empty_like(inputs)
    for i, image in enumerate(inputs):
        rng = image_rng(seed, condition.name, offset + i)
        out[i] = apply_corruption(image, condition.spec_for(rng), rng)
    return out


def condition_score(
    condition: Condition, labels: np.ndarray, probabilities: np.ndarray
) -> ConditionScore:
    """Metrics of one condition from int labels (N,) and probabilities (N, C)."""
    n_classes = probabilities.shape[1]
    predictions = probabilities.argmax(axis=1).astype(np.int64)
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (labels, predictions), 1)
    per_class = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(per_class > 0, np.diag(confusion) / per_class, np.nan)
    return ConditionScore(
        name=condition.name,
        description=condition.description,
        accuracy=float(np.mean(predictions == labels)),
        balanced_accuracy=float(np.nanmean(recall)),
        recall=recall,
        confusion=confusion,
        predictions=predictions,
    )


def worst_indices(probabilities: np.ndarray, labels: np.ndarray, n: int) -> list[int]:
    """Up to n of the photos the model gets wrong, lowest probability for their true class
    first (ties by index, so the order is stable); fewer when fewer are wrong."""
    true_probability = probabilities[np.arange(len(labels)), labels]
    wrong = probabilities.argmax(axis=1) != labels
    order = np.argsort(true_probability, kind="stable")
    return [int(i) for i in order[wrong[order]][:n]]


def _explain_worst(predictor: Predictor, image: np.ndarray, index: int, label: int) -> WorstPhoto:
    explanation = predictor.explain(image)  # the predicted class: why the model said that
    return WorstPhoto(
        index=index,
        label=label,
        predicted=explanation.top_class,
        true_probability=float(explanation.probabilities[label]),
        predicted_probability=explanation.top_probability,
        input_image=explanation.input_image,
        cam=explanation.cam,
    )


# ---- summaries -----------------------------------------------------------------------------


def summary_record(
    scores: Sequence[ModelScore],
    photos: Sequence[Photo],
    mapping: dict[str, str],
    n_failed: int = 0,
    n_skipped: int = 0,
    seed: int = 0,
) -> dict:
    """A JSON-ready record of the scores; `photos` are the ones scored, in the order given to
    score(). Photos are named by a SHA-256 prefix only: a file
    name may name the patient. Holds no pixels."""
    models = []
    for result in scores:
        conditions = {}
        for name, condition in result.conditions.items():
            conditions[name] = {
                "description": condition.description,
                "accuracy": condition.accuracy,
                "balanced_accuracy": condition.balanced_accuracy,
                "recall": {
                    c: (None if np.isnan(r) else float(r))
                    for c, r in zip(result.classes, condition.recall, strict=True)
                },
                "confusion_matrix": condition.confusion.tolist(),
            }
        worst = [
            {
                "photo_sha256_prefix": photos[w.index].sha256[:12],
                "label": result.classes[w.label],
                "predicted": result.classes[w.predicted],
                "true_class_probability": round(w.true_probability, 4),
                "predicted_probability": round(w.predicted_probability, 4),
            }
            for w in result.worst
        ]
        models.append(
            {
                "model": result.model,
                "title": result.title,
                "weights_sha256": result.weights_sha256,
                "classes": list(result.classes),
                "confusion_rows": "true class",
                "conditions": conditions,
                "worst_photos": worst,
            }
        )
    return {
        "notice": NOTICE,
        "n_photos": len(photos),
        "n_photos_per_class": scores[0].class_counts() if scores else {},
        "n_failed_to_load": n_failed,
        "n_skipped": n_skipped,
        "folder_mapping": public_mapping(mapping),
        "conditions_seed": seed,
        "models": models,
    }


def public_mapping(mapping: dict[str, str]) -> dict[str, str]:
    """The folder -> class mapping as a download may carry it: a folder whose name the default
    mapping knows (a disease name) keeps it; any other name could name a patient or a clinic,
    so it becomes "folder 1", "folder 2", ... in the mapping's order."""
    public, others = {}, 0
    for folder, label in mapping.items():
        if "/" not in folder and classmap.default_label(folder) != classmap.LEAVE_OUT:
            public[folder] = label
        else:
            others += 1
            public[f"folder {others}"] = label
    return public


def summary_json(record: dict) -> str:
    return json.dumps(record, indent=2, ensure_ascii=False) + "\n"


def summary_png(scores: Sequence[ModelScore], title: str = "Your photos") -> bytes:
    """One row per model: balanced and top-1 accuracy per condition, and the clean confusion
    matrix (rows: the classes uploaded, coloured by share of the row, with counts). PNG bytes drawn in memory (matplotlib's object API); no photos."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = max(1, len(scores))
    figure = Figure(figsize=(12, 4.6 * rows + 0.6), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(rows, 2, width_ratios=(1, 1.25))
    for row, result in enumerate(scores):
        names = list(result.conditions)
        x = np.arange(len(names))
        balanced = [result.conditions[n].balanced_accuracy for n in names]
        top1 = [result.conditions[n].accuracy for n in names]
        ax = figure.add_subplot(grid[row, 0])
        ax.bar(x - 0.2, balanced, 0.4, label="balanced accuracy", color="#4c78a8")
        ax.bar(x + 0.2, top1, 0.4, label="top-1 accuracy", color="#f58518")
        for xi, value in zip(x, balanced, strict=True):
            ax.text(xi - 0.2, value + 0.01, f"{value:.0%}", ha="center", fontsize=8)
        ax.set_xticks(x, names)
        ax.set_ylim(0, 1.05)
        ax.yaxis.set_major_formatter("{x:.0%}")
        ax.set_title(f"{result.title}: {len(result.labels)} photos", fontsize=10)
        ax.legend(loc="upper right", fontsize=8)
        ax = figure.add_subplot(grid[row, 1])
        present = [i for i, name in enumerate(result.classes) if name in result.class_counts()]
        confusion = result.conditions[names[0]].confusion[present]
        shares = row_normalised(confusion)
        ax.imshow(shares, cmap="Blues", vmin=0, vmax=1, aspect="auto")
        for (y, x), count in np.ndenumerate(confusion):
            if count:
                colour = "white" if shares[y, x] > 0.5 else "#333333"
                ax.text(x, y, str(count), ha="center", va="center", fontsize=8, color=colour)
        ax.set_xticks(
            np.arange(len(result.classes)), result.classes, rotation=40, ha="right", fontsize=8
        )
        ax.set_yticks(np.arange(len(present)), [result.classes[i] for i in present], fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"Confusion, {names[0]} (share of each true class)", fontsize=10)
    figure.suptitle(title, fontsize=12)
    figure.text(0.5, 0.002, NOTICE, ha="center", va="bottom", fontsize=8, color="#666666")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
