"""The ten morphological lesion classes, in the fixed order every model and report uses."""

from __future__ import annotations

CLASSES: tuple[str, ...] = (
    "Acne",
    "Alopecia",
    "Blister",
    "Crust",
    "Erythema",
    "Leukoderma",
    "Pigmented Macula",
    "Tumor",
    "Ulcer",
    "Wheal",
)
NUM_CLASSES = len(CLASSES)

# One line each, written for the UI; morphology, not diagnosis.
DESCRIPTIONS: dict[str, str] = {
    "Acne": "Comedones, papules and pustules around hair follicles, typically on the face, chest or back.",
    "Alopecia": "Loss of hair from an area where it normally grows (here: androgenetic, male-pattern loss).",
    "Blister": "A raised, fluid-filled lesion such as a vesicle or bulla (here: herpes zoster, varicella).",
    "Crust": "Dried serum, blood or pus on the skin surface, often honey-coloured (here: impetigo).",
    "Erythema": "Redness of the skin from dilated superficial vessels, blanching on pressure.",
    "Leukoderma": "Areas of lost pigment that look white or paler than the surrounding skin (here: vitiligo).",
    "Pigmented Macula": "A flat, pigmented spot that differs in colour from the surrounding skin (here: naevi).",
    "Tumor": "A solid growth raised above the skin (here: seborrhoeic keratosis, keloid, syringoma).",
    "Ulcer": "Loss of the epidermis and part of the dermis, leaving an open wound (here: venous, diabetic, pressure).",
    "Wheal": "A transient, itchy, pale-to-red oedematous swelling of the skin, as in urticaria (hives).",
}

assert tuple(DESCRIPTIONS) == CLASSES


def class_index(name: str) -> int:
    """Index of a class name in CLASSES; raises ValueError for an unknown name."""
    try:
        return CLASSES.index(name)
    except ValueError:
        raise ValueError(f"unknown class {name!r}; expected one of {', '.join(CLASSES)}") from None
