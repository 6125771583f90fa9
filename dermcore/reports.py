"""Read the precomputed evaluation reports under weights/reports/ into plain, uniform records.

training/evaluate.py writes them; this module only reads, and reads defensively: a missing key
becomes None (the page then says "not in this report"), a file that is not valid JSON is skipped
and named in `problems`. No Streamlit here.

    reports/<model>/test.json, shift_sd198.json, shift_sd198_lenient.json   one per image set
    reports/<model>/table4.json, drift.json, training_curves.jsonl, lr_find.csv
    reports/table5.json, reports/paper.json
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dermcore.paper import PAPER_NUMBERS

NO_REPORTS = "No precomputed reports found in weights/reports/ — run training/evaluate.py"
SETS = {
    "test": "In-distribution test split",
    "shift_sd198": "External SD-198 (the paper's Table 2 grouping)",
    "shift_sd198_lenient": "External SD-198 (every row)",
}
FAMILIES = ("noise", "blur", "motion", "jpeg", "exposure")


@dataclass(frozen=True)
class ConditionResult:
    """One test condition's metrics on one image set; any metric may be None."""

    name: str
    family: str
    severity: float | None
    description: str
    accuracy: float | None
    balanced_accuracy: float | None
    macro_auroc: float | None
    ece: float | None
    nll: float | None
    flip_rate: float | None
    confusion: np.ndarray | None  # int (C, C), rows = true class, columns = predicted
    per_class: dict[str, list]  # metric -> one value (or None) per class
    roc: list  # per class: (fpr, tpr) lists, or None where undefined
    reliability: dict | None  # {"confidence", "accuracy", "count"}: one value per bin


@dataclass(frozen=True)
class SetReport:
    model: str
    dataset: str
    n_images: int | None
    classes: list[str]
    conditions: dict[str, ConditionResult]
    sweeps: dict[str, list[str]]  # family -> condition names, mildest first, "clean" included
    calibration: dict
    # per source condition (e.g. SD-198 "Angioma"), clean photos: label, n_images, recall,
    # predicted {class: count}; empty for reports written before evaluate.py recorded it
    by_condition: dict[str, dict] = field(default_factory=dict)


@dataclass
class ModelReports:
    name: str
    sets: dict[str, SetReport] = field(default_factory=dict)
    confused_pairs: list[dict] = field(default_factory=list)
    drift: dict | None = None
    training_curves: list[dict] = field(default_factory=list)
    lr_find: list[dict] = field(default_factory=list)
    # abstention.json (training/abstention_report.py): per set and condition, coverage, accuracy
    # on answered photos, risk-coverage curve, flip-catch rate; None for a model without one
    abstention: dict | None = None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _per_class(value: object, classes: list[str]) -> dict[str, list]:
    """{"recall": [...]} (evaluate.py) or {class: {"recall": ...}} -> metric -> list by class."""
    if not isinstance(value, dict):
        return {}
    if all(isinstance(v, list) for v in value.values()):
        return {metric: [_number(x) for x in values] for metric, values in value.items()}
    metrics = sorted({m for v in value.values() if isinstance(v, dict) for m in v})
    return {m: [_number((value.get(c) or {}).get(m)) for c in classes] for m in metrics}


def _roc(value: object, classes: list[str]) -> list:
    if isinstance(value, dict):
        value = [value.get(c) for c in classes]
    if not isinstance(value, list):
        return [None] * len(classes)
    return [
        (curve["fpr"], curve["tpr"])
        if isinstance(curve, dict) and "fpr" in curve and "tpr" in curve
        else None
        for curve in value
    ]


def _reliability(value: object) -> dict | None:
    if not isinstance(value, dict):
        return None
    out = {}
    for key in ("confidence", "accuracy", "count"):
        values = value.get(key, value.get(f"bin_{key}"))
        if not isinstance(values, list):
            return None
        out[key] = [_number(v) for v in values]
    return out


def _condition(name: str, raw: dict, classes: list[str]) -> ConditionResult:
    matrix = raw.get("confusion_matrix")
    try:
        confusion = np.asarray(matrix, dtype=np.int64) if matrix is not None else None
    except (TypeError, ValueError):
        confusion = None
    if confusion is not None and (confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]):
        confusion = None
    return ConditionResult(
        name=name,
        family=str(raw.get("family", "clean" if name == "clean" else "other")),
        severity=_number(raw.get("severity")),
        description=str(raw.get("description", "")),
        accuracy=_number(raw.get("top1", raw.get("accuracy"))),
        balanced_accuracy=_number(raw.get("balanced_accuracy")),
        macro_auroc=_number(raw.get("macro_auroc")),
        ece=_number(raw.get("ece")),
        nll=_number(raw.get("nll")),
        flip_rate=_number(raw.get("flip_rate")),
        confusion=confusion,
        per_class=_per_class(raw.get("per_class"), classes),
        roc=_roc(raw.get("roc"), classes),
        reliability=_reliability(raw.get("reliability")),
    )


def _derived_sweeps(conditions: dict[str, ConditionResult]) -> dict[str, list[str]]:
    """Family -> names by severity, one per severity, with "clean" where it belongs."""
    sweeps = {}
    for family in FAMILIES:
        members: dict[float, str] = {}
        for c in sorted(conditions.values(), key=lambda c: c.name):
            if c.family == family and c.severity is not None:
                members.setdefault(c.severity, c.name)
        if not members:
            continue
        reverse = family == "jpeg"  # lower quality is worse
        names = [members[s] for s in sorted(members, reverse=reverse)]
        if "clean" in conditions:
            if family == "exposure":
                below = sum(1 for s in members if s < 1)
                names.insert(below, "clean")
            else:
                names.insert(0, "clean")
        sweeps[family] = names
    return sweeps


def _sweep_names(entries: object, conditions: dict[str, ConditionResult]) -> list[str]:
    """A sweep as condition names: entries are names or {"condition": name, "severity": ...}."""
    if not isinstance(entries, list):
        return []
    names = [e.get("condition") if isinstance(e, dict) else e for e in entries]
    return [n for n in names if isinstance(n, str) and n in conditions]


def parse_set_report(raw: dict, model: str, dataset: str) -> SetReport:
    from dermcore.labels import CLASSES

    classes = [str(c) for c in raw.get("classes") or CLASSES]
    conditions = {
        name: _condition(name, value, classes)
        for name, value in (raw.get("conditions") or {}).items()
        if isinstance(value, dict)
    }
    sweeps = raw.get("sweeps")
    if isinstance(sweeps, dict):
        sweeps = {f: _sweep_names(entries, conditions) for f, entries in sweeps.items()}
    else:
        sweeps = _derived_sweeps(conditions)
    n_images = raw.get("n_images")
    return SetReport(
        model=str(raw.get("model", model)),
        dataset=dataset,
        n_images=int(n_images) if isinstance(n_images, int) else None,
        classes=classes,
        conditions=conditions,
        sweeps={f: names for f, names in sweeps.items() if names},
        calibration=raw.get("calibration") if isinstance(raw.get("calibration"), dict) else {},
        by_condition=_by_condition(raw.get("clean_by_condition")),
    )


def _by_condition(raw: object) -> dict[str, dict]:
    """The well-formed entries of a report's clean_by_condition; anything else is skipped."""
    if not isinstance(raw, dict):
        return {}
    out = {}
    for name, entry in raw.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("predicted"), dict):
            continue
        n_images, recall = entry.get("n_images"), _number(entry.get("recall"))
        if not isinstance(n_images, int) or recall is None:
            continue
        predicted = {
            str(k): v for k, v in entry["predicted"].items() if isinstance(v, int) and v > 0
        }
        out[str(name)] = {
            "label": str(entry.get("label", "")),
            "n_images": n_images,
            "recall": recall,
            "predicted": predicted,
        }
    return out


def _read_json(path: Path, problems: list[str]) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        problems.append(
            f"{path.name} in {path.parent.name}/ could not be read ({type(error).__name__})."
        )
        return None
    return data if isinstance(data, dict) else None


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        rows = []
        for row in csv.DictReader(f):
            values = {k: _float_or_none(v) for k, v in row.items() if k}
            if all(v is not None for v in values.values()):
                rows.append(values)
        return rows


def _float_or_none(text: str | None) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def load_model_reports(folder: Path, problems: list[str]) -> ModelReports:
    reports = ModelReports(folder.name)
    for dataset in SETS:
        path = folder / f"{dataset}.json"
        if path.is_file() and (raw := _read_json(path, problems)) is not None:
            reports.sets[dataset] = parse_set_report(raw, folder.name, dataset)
    table4 = folder / "table4.json"
    if table4.is_file() and (raw := _read_json(table4, problems)) is not None:
        pairs = raw.get("seed_pairs") or raw.get("pairs") or []
        reports.confused_pairs = [p for p in pairs if isinstance(p, dict)]
    elif (test := folder / "test.json").is_file() and (raw := _read_json(test, [])) is not None:
        pairs = raw.get("confused_pairs") or []
        reports.confused_pairs = [p for p in pairs if isinstance(p, dict)]
    drift = folder / "drift.json"
    if drift.is_file():
        reports.drift = _read_json(drift, problems)
    if (curves := folder / "training_curves.jsonl").is_file():
        reports.training_curves = _read_jsonl(curves)
    if (lr_find := folder / "lr_find.csv").is_file():
        reports.lr_find = _read_csv(lr_find)
    if (abstention := folder / "abstention.json").is_file():
        raw = _read_json(abstention, problems)
        reports.abstention = (
            raw if isinstance(raw, dict) and isinstance(raw.get("sets"), dict) else None
        )
    return reports


def abstention_condition(reports: ModelReports, dataset: str, condition: str) -> dict:
    """One condition's abstention measures ({} where the report has none)."""
    sets = (reports.abstention or {}).get("sets", {})
    value = sets.get(dataset, {}).get(condition)
    return value if isinstance(value, dict) else {}


def load_reports(reports_dir: Path) -> tuple[dict[str, ModelReports], list[str]]:
    """Every model folder with at least one set report, by name; and the files that failed."""
    problems: list[str] = []
    if not reports_dir.is_dir():
        return {}, problems
    models = {}
    for folder in sorted(p for p in reports_dir.iterdir() if p.is_dir()):
        reports = load_model_reports(folder, problems)
        if reports.sets:
            models[folder.name] = reports
    return models, problems


def load_paper_numbers(reports_dir: Path) -> dict:
    """reports/paper.json when present and readable, else dermcore.paper's transcription."""
    path = reports_dir / "paper.json"
    if path.is_file():
        data = _read_json(path, [])
        if data:
            return {**PAPER_NUMBERS, **data}
    return PAPER_NUMBERS


def load_shift_proxies(reports_dir: Path) -> tuple[list[dict], float] | None:
    """reports/shift_proxy.json (training/shift_proxy.py) as one row per held-out source
    (photos, top-1 on the proxy's own validation and on the held-out source, the factor that
    source alone needs) and the pooled factor; None when absent, unreadable or malformed."""
    path = reports_dir / "shift_proxy.json"
    data = _read_json(path, []) if path.is_file() else None
    try:
        rows = [
            {
                "source left out": proxy["heldout_source"],
                "photos": int(proxy["counts"]["heldout"]),
                "right on own validation": float(proxy["temperature"]["val_accuracy"]),
                "right on left-out photos": float(proxy["temperature"]["heldout_accuracy"]),
                "factor needed": float(proxy["temperature"]["shift_factor"]),
            }
            for proxy in data["proxies"]
        ]
        pooled = float(data["temperature"]["shift_factor"])
    except (TypeError, KeyError, ValueError):
        return None
    return (rows, pooled) if rows else None


def reports_signature(reports_dir: Path) -> tuple:
    """(file, size, mtime) of everything under reports_dir: the cache key for the loaders."""
    if not reports_dir.is_dir():
        return ()
    return tuple(
        (str(p.relative_to(reports_dir)), p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(reports_dir.rglob("*"))
        if p.is_file()
    )


def row_normalised(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (recall per true class); empty rows stay 0."""
    totals = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, totals, out=np.zeros(matrix.shape, dtype=np.float64), where=totals > 0)
