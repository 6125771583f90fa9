"""Folder and disease names -> our ten classes: the one mapping the app and the importer share.

A user's photos come labelled by whatever their clinic or data set calls the disease ("Acne
vulgaris", "urticaria", "Halo_Nevus"). The default maps such a name to one of our ten
morphological classes by the paper's Table 2 (the dermatologist's grouping of SD-198 diseases,
`../shared/paper/`), by the source names of our own training pool (`../shared/data/grouping.csv`)
and by the class names themselves; anything else is left out until the user chooses a class.
Matching ignores case, spacing, `_`/`.` and every kind of dash, apostrophes, British spellings
and a plural last word ("Pressure ulcers", "Melanocytic naevi").
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections.abc import Iterable, Mapping

from dermcore.labels import CLASSES

LEAVE_OUT = "leave out"
CHOICES: tuple[str, ...] = (*CLASSES, LEAVE_OUT)  # what a folder may map to

# Table 2 of Mishra et al. 2020, each disease spelled out (the paper abbreviates "Ery.", "Obl.",
# "Hailey Disease" and runs "Congenital Nevus" and "Dermatosis Papulosa Nigra" together).
# Syringoma, which Table 2 lists under Ulcer, is left to _TRAINING_POOL (Tumor): it is a benign
# adnexal tumour, and our models learnt it as Tumor.
TABLE2: dict[str, tuple[str, ...]] = {
    "Acne": ("acne keloidalis nuchae", "acne vulgaris", "steroid acne", "favre racouchot",
             "nevus comedonicus", "pomade acne"),
    "Alopecia": ("alopecia areata", "androgenetic alopecia", "follicular mucinosis", "kerion",
                 "scar alopecia"),
    "Blister": ("dyshidrosiform eczema", "hailey hailey disease", "hailey disease",
                "herpes simplex", "herpes zoster", "varicella", "mucha habermann disease"),
    "Crust": ("angular cheilitis", "bowens disease", "impetigo"),
    "Erythema": ("acute eczema", "candidiasis", "erythema ab igne",
                 "erythema annulare centrifugum", "erythema annulare centrifigum",
                 "erythema craquele", "erythema multiforme", "rosacea",
                 "exfoliative erythroderma"),
    "Leukoderma": ("balanitis xerotica obliterans", "beaus lines", "halo nevus", "leukonychia",
                   "pityriasis alba", "vitiligo"),
    "Pigmented Macula": ("actinic solar damage", "beckers nevus", "becker nevus", "blue nevus",
                         "cafe au lait macula", "compound nevus", "congenital nevus",
                         "dermatosis papulosa nigra", "epidermal nevus", "green nail"),
    "Tumor": ("angioma", "apocrine hydrocystoma", "lipoma", "dermatofibroma", "digital fibroma",
              "fibroma", "leiomyoma"),
    "Ulcer": ("aphthous ulcer", "behcets disease", "stasis ulcer", "mal perforans",
              "pyoderma gangrenosum"),
    "Wheal": ("urticaria", "stasis edema"),
}  # fmt: skip

# The source names of our training pool and SD-198 set (grouping.csv), where Table 2 is silent.
_TRAINING_POOL: dict[str, tuple[str, ...]] = {
    "Acne": ("acne",),
    "Blister": ("herpes simplex virus", "chickenpox", "chicken pox", "shingles"),
    "Erythema": ("eczema", "cellulitis"),
    "Pigmented Macula": ("nevus", "nevi", "nevus spilus", "melanocytic nevus"),
    "Tumor": ("seborrheic keratosis", "keloid", "syringoma", "pyogenic granuloma"),
    "Ulcer": ("venous ulcer", "diabetic ulcer", "pressure ulcer", "foot ulcer",
              "diabetic foot ulcer"),
    "Wheal": ("hives",),
}  # fmt: skip

_SPELLINGS = (
    ("naevus", "nevus"),
    ("naevi", "nevi"),
    ("tumour", "tumor"),
    ("tumours", "tumors"),
    ("oedema", "edema"),
    ("seborrhoeic", "seborrheic"),
    ("leucoderma", "leukoderma"),
)


def normalise_name(name: str) -> str:
    """'Becker’s_Naevus ' -> 'beckers nevus': lower case, accents, apostrophes, `_.` and dashes
    (en dash, em dash, ...) gone, British spellings made American, runs of spaces collapsed."""
    text = "".join(
        " " if unicodedata.category(c) == "Pd" else c
        for c in unicodedata.normalize("NFKD", str(name))
    )
    text = text.encode("ascii", "ignore").decode()
    text = re.sub(r"['`]", "", text.lower())
    text = re.sub(r"[\s_\-.]+", " ", text).strip()
    words = [dict(_SPELLINGS).get(word, word) for word in text.split(" ")]
    return " ".join(words)


def _known_names() -> dict[str, tuple[str, str]]:
    """normalised name -> (class, where the name comes from)."""
    known: dict[str, tuple[str, str]] = {}
    for label in CLASSES:
        for form in (label, label + "s", label + "es"):
            known[normalise_name(form)] = (label, "class name")
    for source, table in (("the paper's Table 2", TABLE2), ("grouping.csv", _TRAINING_POOL)):
        for label, names in table.items():
            for name in names:
                known.setdefault(normalise_name(name), (label, source))
    known[normalise_name("syringoma")] = ("Tumor", "grouping.csv")
    known[normalise_name("p macula")] = ("Pigmented Macula", "class name")
    return known


KNOWN_NAMES: dict[str, tuple[str, str]] = _known_names()


def default_label(name: str) -> str:
    """The class a folder or disease name maps to by default, else LEAVE_OUT. A name not known
    as written is tried with its last word singular ('nevi' -> 'nevus', 'ulcers' -> 'ulcer')."""
    normalised = normalise_name(name)
    for candidate in (normalised, *_singulars(normalised)):
        if candidate in KNOWN_NAMES:
            return KNOWN_NAMES[candidate][0]
    return LEAVE_OUT


def _singulars(name: str) -> list[str]:
    """The name with its last word made singular, in the ways English plurals of these names
    go: naevi/nevi -> nevus, lesions -> lesion, ..."""
    head, _, last = name.rpartition(" ")
    forms = []
    if last.endswith("i") and len(last) > 3:
        forms.append(last[:-1] + "us")
    if last.endswith("es") and len(last) > 4:
        forms.append(last[:-2])
    if last.endswith("s") and not last.endswith("ss") and len(last) > 3:
        forms.append(last[:-1])
    return [f"{head} {form}".strip() for form in forms]


def default_mapping(names: Iterable[str]) -> dict[str, str]:
    """{name: default_label(name)} for each distinct name, in first-seen order."""
    return {name: default_label(name) for name in dict.fromkeys(names)}


def check_mapping(mapping: Mapping[str, str]) -> dict[str, str]:
    """A plain dict copy of `mapping`; ValueError naming the first value that is neither one of
    the ten classes nor LEAVE_OUT."""
    for name, label in mapping.items():
        if label not in CHOICES:
            raise ValueError(
                f"{name!r} is mapped to {label!r}, which is not one of {', '.join(CHOICES)}."
            )
    return dict(mapping)


def read_mapping_csv(text: str) -> dict[str, str]:
    """A user's mapping table (CSV with columns `name` and `label`) -> {name: label}, checked.
    Labels match our class names case-insensitively; an empty label means LEAVE_OUT."""
    rows = csv.DictReader(io.StringIO(text))
    if not rows.fieldnames or not {"name", "label"} <= set(rows.fieldnames):
        raise ValueError("A mapping CSV needs the columns 'name' and 'label'.")
    by_lower = {choice.lower(): choice for choice in CHOICES}
    mapping = {}
    for row in rows:
        label = (row["label"] or LEAVE_OUT).strip()
        mapping[row["name"]] = by_lower.get(label.lower(), label)
    return check_mapping(mapping)
