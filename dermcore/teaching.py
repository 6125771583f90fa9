"""Teaching decks as plain data: the cases, their JSON record, the room's and a learner's
guesses, the tally and the score, and one sentence per case from the model's test report.

No Streamlit here; pages/teaching.py draws what this module computes. A deck names each photo by
the SHA-256 of its file bytes (and a shipped sample also by its file name), never by pixels, so
an exported deck carries nothing of an uploaded photo but its hash.

The exported record (deck_json; read_deck reads it back to an equal Deck):

    {"format": "derm-lab-teaching-deck", "version": 1, "app", "dermcore_version", "created",
     "cam_method": "gradcam",
     "cases": [{"photo": {"source": "sample", "sha256", "sample_file", "true_label"}
                         | {"source": "upload", "sha256"},
                "model": {"name", "weights_sha256"},
                "corruption": {every CorruptionSpec field, seed included, "where"},
                "corruption_description": "3% salt-and-pepper (3:1)"}],
     "notice"}
"""

from __future__ import annotations

import io
import json
import math
import re
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

import dermcore
from dermcore.comparison import NOTICE
from dermcore.corruptions import CORRUPTION_SITES, CorruptionSpec
from dermcore.reports import ConditionResult, SetReport

DECK_FORMAT = "derm-lab-teaching-deck"
DECK_VERSION = 1

# Ready-made corruptions for a deck, by the name the builder shows. The paper's noise is
# salt-and-pepper at black:white 3:1; its "motion blur" is a 5x5 Gaussian kernel.
PRESETS: dict[str, CorruptionSpec] = {
    "Paper noise 1%": CorruptionSpec(noise_density=0.01),
    "Paper noise 3%": CorruptionSpec(noise_density=0.03),
    "Paper noise 5%": CorruptionSpec(noise_density=0.05),
    "5×5 blur (paper)": CorruptionSpec(blur_kernel=5),
    "9×9 blur": CorruptionSpec(blur_kernel=9),
    "Motion blur 15 px": CorruptionSpec(motion_length_px=15, motion_angle_deg=30.0),
    "Noise 3% + 5×5 blur": CorruptionSpec(noise_density=0.03, blur_kernel=5),
}


RANDOM_ANGLE = re.compile(r", angle U\[[^\]]*\)( per image)?")


class DeckError(ValueError):
    """A deck file that cannot be read; the message says what is wrong, in one sentence."""


@dataclass(frozen=True)
class Case:
    """One photo under one corruption, seen by one model."""

    photo_sha256: str  # of the photo file's bytes
    spec: CorruptionSpec
    model_name: str  # the model card's name, e.g. "clean"
    weights_sha256: str  # the card's weights hash: the deck names the exact weights
    where: str = "input"  # dermcore.corruptions.corrupt_for_model's site
    sample_file: str | None = None  # a shipped sample's file name; None for an uploaded photo
    true_label: str | None = None  # the sample's true class where known; None for an upload

    def __post_init__(self) -> None:
        if self.where not in CORRUPTION_SITES:
            raise ValueError(f"where must be one of {CORRUPTION_SITES}, got {self.where!r}")
        if len(self.photo_sha256) != 64 or not set(self.photo_sha256) <= set("0123456789abcdef"):
            raise ValueError(f"photo_sha256 must be 64 lowercase hex digits, got {self.photo_sha256!r}")  # fmt: skip

    @property
    def uploaded(self) -> bool:
        return self.sample_file is None


@dataclass(frozen=True)
class Deck:
    cases: tuple[Case, ...] = ()
    cam_method: str = "gradcam"  # key of dermcore.explain.METHODS, for every heatmap

    def with_case(self, case: Case) -> Deck:
        return Deck((*self.cases, case), self.cam_method)

    def without(self, index: int) -> Deck:
        return Deck(self.cases[:index] + self.cases[index + 1 :], self.cam_method)


def moves_without(count: int, index: int) -> dict[int, int]:
    """Each case's deck index before -> after case `index` of `count` is removed
    (Deck.without): the cases after it move up one, the removed one has no place. Taken from
    the removal itself, not by comparing cases, so of two equal cases the right one goes."""
    return {i: i - (i > index) for i in range(count) if i != index}


# ---- the JSON record ------------------------------------------------------------------------


def deck_record(deck: Deck) -> dict:
    """Everything that reproduces the deck exactly; of an uploaded photo only its hash."""
    return {
        "format": DECK_FORMAT,
        "version": DECK_VERSION,
        "app": "Derm Robustness Lab",
        "dermcore_version": dermcore.__version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "cam_method": deck.cam_method,
        "cases": [_case_record(case) for case in deck.cases],
        "notice": NOTICE,
    }


def _case_record(case: Case) -> dict:
    photo = {"source": "upload" if case.uploaded else "sample", "sha256": case.photo_sha256}
    if not case.uploaded:
        photo |= {"sample_file": case.sample_file, "true_label": case.true_label}
    return {
        "photo": photo,
        "model": {"name": case.model_name, "weights_sha256": case.weights_sha256},
        "corruption": {**case.spec.to_dict(), "where": case.where},
        "corruption_description": case.spec.describe(),
    }


def deck_json(deck: Deck) -> str:
    return json.dumps(deck_record(deck), indent=2, ensure_ascii=False) + "\n"


def read_deck(text: str | bytes) -> Deck:
    """deck_json's inverse: read_deck(deck_json(deck)) == deck. Raises DeckError."""
    try:
        record = json.loads(text)
    except (ValueError, UnicodeDecodeError) as error:
        raise DeckError(f"The file is not valid JSON ({error}).") from None
    if not isinstance(record, dict) or record.get("format") != DECK_FORMAT:
        raise DeckError("The file is not a teaching deck exported by this app.")
    if record.get("version") != DECK_VERSION:
        raise DeckError(
            f"The deck is format version {record.get('version')!r}; "
            f"this app reads version {DECK_VERSION}."
        )
    cases = record.get("cases")
    if not isinstance(cases, list):
        raise DeckError("The deck has no list of cases.")
    parsed = []
    for number, raw in enumerate(cases, start=1):
        try:
            parsed.append(_read_case(raw))
        except (KeyError, TypeError, ValueError) as error:
            raise DeckError(f"Case {number} of the deck cannot be read ({error}).") from None
    return Deck(tuple(parsed), str(record.get("cam_method", "gradcam")))


def _read_case(raw: dict) -> Case:
    photo, model = raw["photo"], raw["model"]
    corruption = dict(raw["corruption"])
    where = corruption.pop("where", "input")
    if photo["source"] not in ("sample", "upload"):
        raise ValueError(f"unknown photo source {photo['source']!r}")
    sample = photo["source"] == "sample"
    return Case(
        photo_sha256=str(photo["sha256"]),
        spec=CorruptionSpec.from_dict(corruption),
        model_name=str(model["name"]),
        weights_sha256=str(model["weights_sha256"]),
        where=str(where),
        sample_file=str(photo["sample_file"]) if sample else None,
        true_label=photo.get("true_label") if sample else None,
    )


def missing_photos(deck: Deck, available_sha256: Iterable[str]) -> list[int]:
    """Indices of the cases whose photo is not among `available_sha256` (uploaded photos to be
    uploaded again, or a sample that is no longer shipped as it was)."""
    available = set(available_sha256)
    return [i for i, case in enumerate(deck.cases) if case.photo_sha256 not in available]


# ---- guesses, tally and score ---------------------------------------------------------------


@dataclass(frozen=True)
class Guess:
    """What the room (or one learner) said before the reveal; None = no answer given."""

    class_name: str | None = None
    survives: bool | None = None  # will the model's clean answer survive the corruption?


@dataclass(frozen=True)
class Outcome:
    """What the model said about one case, and the truth where it is known. A view the model
    declines ("Not sure") is no answer: it is never counted right, and a clean answer that the
    corruption turns into a decline did not hold (as the case screen says)."""

    clean_class: str  # the top class, answered or not
    corrupted_class: str
    true_label: str | None = None
    clean_abstain: bool = False
    corrupted_abstain: bool = False

    @property
    def survived(self) -> bool:
        if self.corrupted_abstain and not self.clean_abstain:
            return False
        return self.clean_class == self.corrupted_class

    @property
    def clean_right(self) -> bool:
        return not self.clean_abstain and self.clean_class == self.true_label

    @property
    def corrupted_right(self) -> bool:
        return not self.corrupted_abstain and self.corrupted_class == self.true_label

    def answer(self, corrupted: bool) -> str:
        """ "Acne", or "Not sure (Acne)" where the model declines that view."""
        name, declines = (
            (self.corrupted_class, self.corrupted_abstain)
            if corrupted
            else (self.clean_class, self.clean_abstain)
        )
        return f"Not sure ({name})" if declines else name


@dataclass(frozen=True)
class Tally:
    """The room (or learner) against the model over a deck. Counts only: fractions are for the
    page to format. Class counts are over the cases whose true class is known."""

    n_cases: int
    n_labelled: int  # cases with a known true class
    guess_class_right: int
    model_clean_right: int
    model_corrupted_right: int
    survival_called: int  # cases where a survival guess was given
    survival_right: int
    survived: int  # cases where the model's answer held
    per_case: list[dict] = field(default_factory=list)

    @property
    def score(self) -> int:
        """One point per right class and one per right survival call."""
        return self.guess_class_right + self.survival_right

    @property
    def max_score(self) -> int:
        return self.n_labelled + self.n_cases


def tally(guesses: Sequence[Guess | None], outcomes: Sequence[Outcome]) -> Tally:
    """The guesses against the outcomes, case by case (same order, same length). A missing
    guess scores nothing; a class is right when it equals the true class."""
    if len(guesses) != len(outcomes):
        raise ValueError(f"{len(guesses)} guesses for {len(outcomes)} cases")
    counts = dict.fromkeys(
        ("labelled", "class", "clean", "corrupted", "called", "survival", "survived"), 0
    )
    per_case = []
    for guess, outcome in zip(guesses, outcomes, strict=True):
        guess = guess or Guess()
        class_right = None
        if outcome.true_label is not None:
            counts["labelled"] += 1
            class_right = guess.class_name == outcome.true_label
            counts["class"] += class_right
            counts["clean"] += outcome.clean_right
            counts["corrupted"] += outcome.corrupted_right
        survival_right = None
        if guess.survives is not None:
            counts["called"] += 1
            survival_right = guess.survives == outcome.survived
            counts["survival"] += survival_right
        counts["survived"] += outcome.survived
        per_case.append(
            {"class_right": class_right, "survival_right": survival_right,
             "survived": outcome.survived}
        )  # fmt: skip
    return Tally(
        n_cases=len(outcomes),
        n_labelled=counts["labelled"],
        guess_class_right=counts["class"],
        model_clean_right=counts["clean"],
        model_corrupted_right=counts["corrupted"],
        survival_called=counts["called"],
        survival_right=counts["survival"],
        survived=counts["survived"],
        per_case=per_case,
    )


def familiarity_sentence(explanation: object) -> str | None:
    """ "The model finds this photo more familiar than 34% of its validation photos." (at 0:
    "less familiar than every one of its validation photos") where the
    explanation carries a `familiarity` in [0, 1]; None for a model without familiarity
    statistics (no attribute, or NaN). Whether the model answers is said by the answer line
    ("Not sure") and its badge, not here."""
    familiarity = getattr(explanation, "familiarity", None)
    if familiarity is None or math.isnan(float(familiarity)):
        return None
    if float(familiarity) <= 0:
        return "The model finds this photo less familiar than every one of its validation photos."
    return (
        f"The model finds this photo more familiar than {float(familiarity):.0%} of its "
        "validation photos."
    )


# ---- what the report says about a corruption ------------------------------------------------


def report_sentences(report: SetReport, spec: CorruptionSpec) -> list[str]:
    """One sentence per corruption in spec, from the model's test report: how many test photos
    it flips and the accuracy it leaves, at the report's nearest measured severity. E.g.
    "3% salt-and-pepper (3:1) flips 55% of test photos for this model (accuracy 81% -> 41%)."
    Stages the report does not measure are left out; an identity spec gives []."""
    clean = report.conditions.get("clean")
    stages = (
        ("noise", spec.noise_density, spec.noise_density > 0),
        ("blur", float(spec.blur_kernel), spec.blur_kernel > 1),
        ("motion", float(spec.motion_length_px), spec.motion_length_px > 1),
        ("jpeg", float(spec.jpeg_quality or 0), spec.jpeg_quality is not None),
        ("exposure", spec.exposure, spec.exposure != 1),
    )
    sentences = []
    for family, severity, present in stages:
        if not present:
            continue
        condition = _nearest(report, family, severity)
        if condition is None or condition.flip_rate is None:
            continue
        sentences.append(_sentence(condition, clean, severity, report.n_images))
    return sentences


def _nearest(report: SetReport, family: str, severity: float) -> ConditionResult | None:
    """The report's condition of this family nearest in severity (per-image random severities,
    such as sp_upto5, are skipped: they are not one severity)."""
    names = report.sweeps.get(family) or [
        name for name, c in report.conditions.items() if c.family == family
    ]
    candidates = [
        report.conditions[name]
        for name in names
        if name in report.conditions
        and report.conditions[name].family == family
        and report.conditions[name].severity is not None
        and "U[" not in report.conditions[name].description.split("angle")[0]
    ]
    if not candidates:
        return None
    return min(candidates, key=lambda c: (abs(c.severity - severity), c.name))


def _sentence(
    condition: ConditionResult, clean: ConditionResult | None, severity: float, n: int | None
) -> str:
    # evaluate.py draws each photo's motion angle at random: "15 px motion blur, angle U[0, 180)
    # per image" reads "15 px motion blur at a random angle".
    what = RANDOM_ANGLE.sub(" at a random angle", condition.description or condition.name)
    nearest = "" if abs(condition.severity - severity) < 1e-9 else " (the nearest level measured)"
    photos = f"of the {n} test photos" if n else "of test photos"
    text = f"{what}{nearest} flips {condition.flip_rate:.0%} {photos} for this model"
    if clean is not None and clean.accuracy is not None and condition.accuracy is not None:
        text += f" (accuracy {clean.accuracy:.0%} clean → {condition.accuracy:.0%})"
    return text + "."


# ---- slides ---------------------------------------------------------------------------------


def slides_zip(slides: Mapping[str, bytes]) -> bytes:
    """A zip of PNG slides (file name -> PNG bytes), built in memory."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, data in slides.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def slides_pdf(slides: Sequence[bytes]) -> bytes:
    """The PNG slides as a PDF, one per page, built in memory with matplotlib's object API."""
    from matplotlib.backends.backend_pdf import PdfPages
    from matplotlib.figure import Figure
    from PIL import Image

    buffer = io.BytesIO()
    with PdfPages(buffer) as pdf:
        for data in slides:
            image = Image.open(io.BytesIO(data)).convert("RGB")
            width, height = image.size
            figure = Figure(figsize=(width / 100, height / 100), dpi=100)
            figure.figimage(np.asarray(image), resize=False)
            pdf.savefig(figure)
    return buffer.getvalue()
