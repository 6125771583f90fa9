"""Checkpoints: weights in safetensors plus a JSON model card beside them.

    weights/clean.safetensors   the state dict
    weights/clean.json          the card: how to rebuild, preprocess, and what it scored

    weights/clean.familiarity.safetensors   familiarity statistics (dermcore/familiarity.py),
                                            optional; the card's `familiarity` names and hashes it

The card carries the SHA-256 of the weights file and of the statistics file; loading recomputes
both and refuses a missing, truncated or altered file with a sentence that names the file.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch import nn

from dermcore.familiarity import FamiliarityStats
from dermcore.labels import CLASSES
from dermcore.models import build_model, get_arch
from dermcore.preprocessing import Preprocessing

log = logging.getLogger(__name__)

CARD_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint could not be loaded; the message names the file and says what to do."""


@dataclass
class ModelCard:
    name: str  # short id, also the file stem: "clean", "noise-trained", "robust"
    arch: str  # key of dermcore.models.ARCHITECTURES
    classes: list[str] = field(default_factory=lambda: list(CLASSES))
    preprocessing: dict = field(default_factory=dict)  # Preprocessing.to_dict()
    title: str = ""  # one line for the model picker
    training: dict = field(default_factory=dict)  # config, command, seeds, time, machine
    data: dict = field(default_factory=dict)  # manifest hash, split file and its hashes
    metrics: dict = field(default_factory=dict)  # test metrics (mean/std over seeds, shipped seed)
    calibration: dict = field(default_factory=dict)  # {"temperature": T} fitted on validation
    intended_use: str = (
        "Teaching and research on the robustness of skin-lesion classifiers. "
        "Not a diagnostic device; never use it for patient care."
    )
    limitations: list[str] = field(default_factory=list)
    # {"method", "file", "sha256", "bytes", "fitted_on", ...}: the familiarity statistics beside
    # the weights (save_familiarity); empty for a model without them
    familiarity: dict = field(default_factory=dict)
    # {"threshold": abstain below this abstention score, "confidence_min": the calibrated top
    # probability used alone when there are no statistics, "rule", "chosen_on", ...}
    abstention: dict = field(default_factory=dict)
    weights_file: str = ""  # file name beside the card
    weights_sha256: str = ""
    weights_bytes: int = 0
    created: str = ""
    version: int = CARD_VERSION

    def get_preprocessing(self) -> Preprocessing:
        if self.preprocessing:
            return Preprocessing.from_dict(self.preprocessing)
        return get_arch(self.arch).preprocessing

    @property
    def temperature(self) -> float:
        return float(self.calibration.get("temperature", 1.0))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelCard:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(model: nn.Module, card: ModelCard, directory: str | Path) -> Path:
    """Write <directory>/<card.name>.safetensors and .json; returns the card's path."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model = model.module if hasattr(model, "module") else model
    weights_path = directory / f"{card.name}.safetensors"
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(weights_path), metadata={"arch": card.arch, "name": card.name})
    card.preprocessing = card.preprocessing or get_arch(card.arch).preprocessing.to_dict()
    card.weights_file = weights_path.name
    card.weights_sha256 = sha256_file(weights_path)
    card.weights_bytes = weights_path.stat().st_size
    card.created = card.created or datetime.now(UTC).isoformat(timespec="seconds")
    card_path = directory / f"{card.name}.json"
    write_card(card, card_path)
    return card_path


def write_card(card: ModelCard, path: str | Path) -> None:
    Path(path).write_text(json.dumps(card.to_dict(), indent=2, sort_keys=False) + "\n")


def read_card(path: str | Path) -> ModelCard:
    """The card alone (no weights read): for listing models and drawing the model card page."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"The model card {path.name} is missing.")
    try:
        card = ModelCard.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"The model card {path.name} is not valid JSON: {exc}.") from None
    if not card.weights_file or not card.weights_sha256:
        raise CheckpointError(f"The model card {path.name} does not name its weights file.")
    return card


def verify_weights(card: ModelCard, directory: str | Path) -> Path:
    """The weights file's path, once its size and SHA-256 match the card's."""
    return _verify_file(
        Path(directory) / card.weights_file,
        card.weights_sha256,
        card.weights_bytes,
        f"The weights file {{name}} for model '{card.name}'",
        "retrain it (see training/README.md)",
    )


def verify_familiarity(card: ModelCard, directory: str | Path) -> Path | None:
    """The familiarity statistics file's path once its size and SHA-256 match the card's, or
    None when the card names no statistics."""
    if not card.familiarity:
        return None
    if not card.familiarity.get("file") or not card.familiarity.get("sha256"):
        raise CheckpointError(
            f"The model card of '{card.name}' has familiarity settings but names no statistics "
            "file or checksum. Restore the card from the repository."
        )
    return _verify_file(
        Path(directory) / card.familiarity["file"],
        card.familiarity["sha256"],
        int(card.familiarity.get("bytes", 0)),
        f"The familiarity statistics file {{name}} for model '{card.name}'",
        "refit it (training/familiarity.py)",
    )


def _verify_file(path: Path, sha256: str, n_bytes: int, what: str, remedy: str) -> Path:
    what = what.format(name=path.name)
    if not path.is_file():
        raise CheckpointError(f"{what} is missing. Restore it from the repository or {remedy}.")
    size = path.stat().st_size
    if n_bytes and size != n_bytes:
        raise CheckpointError(
            f"{what} is {size:,} bytes but its card says {n_bytes:,}: it is truncated or "
            "replaced. Restore it from the repository."
        )
    if sha256_file(path) != sha256:
        raise CheckpointError(
            f"{what} does not match the checksum in its model card: it was altered or "
            "corrupted. Restore it from the repository."
        )
    return path


def save_familiarity(
    stats: FamiliarityStats, card: ModelCard, card_path: str | Path, **details
) -> None:
    """Write <name>.familiarity.safetensors beside the card and record its name, size and
    SHA-256 (plus `details`, e.g. fitted_on) in the card's `familiarity`; rewrites the card."""
    card_path = Path(card_path)
    path = card_path.parent / f"{card.name}.familiarity.safetensors"
    stats.save(path)
    card.familiarity = {
        "method": stats.method,
        "dims": stats.dims,
        **details,
        "file": path.name,
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
    }
    write_card(card, card_path)


def load_familiarity(card: ModelCard, directory: str | Path) -> FamiliarityStats | None:
    """The verified statistics named by the card, or None when it names none."""
    path = verify_familiarity(card, directory)
    if path is None:
        return None
    try:
        return FamiliarityStats.load(path)
    except Exception as exc:  # safetensors header errors, missing tensors, wrong shapes
        raise CheckpointError(
            f"The familiarity statistics file {path.name} could not be read: {exc}"
        ) from None


def load_checkpoint(card_path: str | Path) -> tuple[nn.Module, ModelCard]:
    """Verify and load a checkpoint; the model is returned in eval mode on the CPU."""
    from safetensors.torch import load_file

    card_path = Path(card_path)
    card = read_card(card_path)
    weights_path = verify_weights(card, card_path.parent)
    verify_familiarity(card, card_path.parent)  # a tampered statistics file is refused here too
    try:
        state = load_file(str(weights_path))
        model = build_model(card.arch, num_classes=len(card.classes), pretrained=False)
        model.load_state_dict(state, strict=True)
    except Exception as exc:  # safetensors header errors, missing keys, shape mismatch
        raise CheckpointError(
            f"The weights file {weights_path.name} could not be loaded into a {card.arch} "
            f"model: {exc}"
        ) from None
    log.info("loaded %s (%s, sha256 %s...)", card.name, card.arch, card.weights_sha256[:12])
    return model.eval(), card


def list_cards(directory: str | Path) -> list[Path]:
    """Every model card in a weights folder, sorted by name (reports and splits are skipped)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(
        p
        for p in directory.glob("*.json")
        if (p.with_suffix(".safetensors")).exists() or _looks_like_card(p)
    )


def _looks_like_card(path: Path) -> bool:
    try:
        stat = path.stat()
    except OSError:
        return False
    return _parses_as_card(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _parses_as_card(path: str, size: int, mtime_ns: int) -> bool:
    """Keyed on the file's size and time as well, so a changed file is read again. The app
    lists the models on every slider move, and a weights folder's split.json (~0.6 MB) took
    ~1.5 ms to parse each time."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "weights_sha256" in data and "arch" in data


def state_dict_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
