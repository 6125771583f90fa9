"""Print the README's results tables (Markdown) from the shipped cards and reports in weights/.

    python training/results_table.py [--weights-dir weights]

Every number comes from the model cards (`weights/<name>.json`, written by train.py) and the
reports (`weights/reports/`, written by evaluate.py), so the README can be regenerated rather
than retyped. The paper's numbers come from dermcore.paper.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: python training/results_table.py
    sys.path.insert(0, str(REPO))

from dermcore import paper  # noqa: E402
from dermcore.familiarity import BADGES  # noqa: E402

MODELS = ("clean", "noise-trained", "robust")
ROBUSTNESS = {  # report condition -> column title
    "clean": "clean",
    "sp_upto5": "S&P <= 5%",
    "sp5": "S&P 5%",
    "blur5": "blur 5x5",
    "blur11": "blur 11x11",
    "motion15": "motion 15 px",
    "jpeg10": "JPEG q10",
    "exposure0.5": "exposure x0.5",
}


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def mean_std(card: dict, set_name: str, metric: str, scale: float = 100) -> str:
    metrics = card["metrics"]
    mean = metrics[f"{set_name}_mean"][metric]
    n = len(metrics["per_seed"])
    if n < 2:
        return f"{scale * mean:.1f}" if scale != 1 else f"{mean:.3f}"
    std = metrics[f"{set_name}_std"][metric]
    if scale == 1:
        return f"{mean:.3f} +/- {std:.3f}"
    return f"{scale * mean:.1f} +/- {scale * std:.1f}"


def training_table(cards: dict[str, dict]) -> list[str]:
    rows = [
        "| model | seeds | test top-1 % | test balanced % | test macro AUROC | SD-198 top-1 % | SD-198 balanced % | shipped seed | kept epoch per seed | minutes per seed |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, card in cards.items():
        seeds = [r["seed"] for r in card["metrics"]["per_seed"]]
        seconds = card["training"]["seconds"]
        minutes = ", ".join(f"{seconds[str(s)]['total'] / 60:.1f}" for s in seeds)
        kept = ", ".join(str(r.get("kept_epoch", "?")) for r in card["metrics"]["per_seed"])
        rows.append(
            f"| {name} | {' '.join(map(str, seeds))} "
            f"| {mean_std(card, 'test', 'accuracy')} "
            f"| {mean_std(card, 'test', 'balanced_accuracy')} "
            f"| {mean_std(card, 'test', 'macro_auroc', 1)} "
            f"| {mean_std(card, 'shift_sd198', 'accuracy')} "
            f"| {mean_std(card, 'shift_sd198', 'balanced_accuracy')} "
            f"| {card['training']['shipped_seed']} | {kept} | {minutes} |"
        )
    return rows


def table3(cards: dict[str, dict]) -> list[str]:
    rows = [
        "| architecture | top-1 %: mean +/- std over 3 trials | data |",
        "|---|---|---|",
    ]
    for r in paper.PAPER_NUMBERS["table3"]["rows"]:
        rows.append(
            f"| {r['arch']} (paper) | {r['mean']:.1f} +/- {r['std']:.1f} | the authors' own |"
        )
    if "clean" in cards:
        card = cards["clean"]
        rows.append(
            f"| {card['arch']} (ours, `clean`, {len(card['metrics']['per_seed'])} seeds) "
            f"| {mean_std(card, 'test', 'accuracy')} | our test split |"
        )
    rows.append(
        "| resnet34/50/101/152 (ours) | not trained: no ImageNet weights offline "
        "(command in this README) | |"
    )
    return rows


def robustness_table(reports: Path, names: list[str]) -> list[str]:
    rows = [
        "| model (shipped seed), set | " + " | ".join(ROBUSTNESS.values()) + " |",
        "|---" * (len(ROBUSTNESS) + 1) + "|",
    ]
    for name in names:
        for set_name in ("test", "shift_sd198"):
            path = reports / name / f"{set_name}.json"
            if not path.is_file():
                continue
            conditions = json.loads(path.read_text())["conditions"]
            cells = [
                pct(conditions[c]["balanced_accuracy"]) if c in conditions else "n/a"
                for c in ROBUSTNESS
            ]
            rows.append(f"| {name}, {set_name} | " + " | ".join(cells) + " |")
    return rows


def table5(reports: Path) -> list[str]:
    path = reports / "table5.json"
    rows = [
        "| our model | test condition | ours: top-1 % (balanced %) | paper (ResNet-50, its data): train / test | paper top-1 % |",
        "|---|---|---|---|---|",
    ]
    for r in json.loads(path.read_text())["rows"] if path.is_file() else []:
        theirs = (
            f"{r['paper_train']} / {r['paper_test']}" if r["paper_train"] else "(no such model)"
        )
        paper_top1 = "" if r["paper_top1_percent"] is None else f"{r['paper_top1_percent']:.2f}"
        rows.append(
            f"| {r['model']} | {r['test_description']} "
            f"| {r['top1_percent']:.1f} ({r['balanced_accuracy_percent']:.1f}) | {theirs} | {paper_top1} |"
        )
    return rows


def table4(reports: Path, name: str = "clean", top: int = 5) -> list[str]:
    path = reports / name / "table4.json"
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    pairs = data["seed_pairs"] or data["pairs"]
    rows = [
        f"| our pairs ({name}, test, {len(data['seeds_available']) or 1} seeds) | errors: mean +/- std | paper's pairs | paper: mean +/- std |",
        "|---|---|---|---|",
    ]
    theirs = paper.PAPER_NUMBERS["table4"]["rows"]
    for i, pair in enumerate(pairs[:top]):
        ours = (
            f"{pair['mean']:.1f} +/- {pair['std']:.1f}" if "mean" in pair else f"{pair['errors']}"
        )
        p = theirs[i] if i < len(theirs) else None
        paper_cells = f"{p['a']} - {p['b']} | {p['mean']:.2f} +/- {p['std']:.2f}" if p else " | "
        rows.append(f"| {pair['a']} - {pair['b']} | {ours} | {paper_cells} |")
    return rows


def calibration(reports: Path, names: list[str]) -> list[str]:
    """Each model's temperature: validation's, times the held-out-source shift factor when the
    card has one; validation ECE before scaling, at validation's own T and at the shipped T."""
    rows = [
        "| model | T fitted on val | shift factor | shipped T | val ECE before | val ECE at val's T | val ECE at shipped T |",
        "|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for name in names:
        path = reports / name / "summary.json"
        if path.is_file():
            cal = json.loads(path.read_text())["calibration"]
            factor = cal.get("shift_factor", 1.0)
            own_t = cal.get("in_source_temperature", cal["temperature"])
            own_ece = cal.get("ece_in_source", cal["ece_after"])
            rows.append(
                f"| {name} | {own_t:.3f} | {factor:.3f} | {cal['temperature']:.3f} | "
                f"{cal['ece_before']:.3f} | {own_ece:.3f} | {cal['ece_after']:.3f} |"
            )
    return rows


def shift_proxies(reports: Path) -> list[str]:
    """Each held-out-source proxy (weights/reports/shift_proxy.json): its accuracy on its own
    validation and on its held-out source, its own shift factor, and the held-out ECE at its
    validation T, at the pooled factor and at its own; then the pooled factor."""
    path = reports / "shift_proxy.json"
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    pooled = data["temperature"]
    rows = [
        "| held-out source | proxy validation / held-out photos | validation top-1 % | held-out top-1 % | its own factor | held-out ECE at validation T | at the pooled factor | at its own factor |",
        "|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for proxy in data.get("proxies", []):
        source, t = proxy["heldout_source"], proxy["temperature"]
        counts = proxy["counts"]
        at_pooled = pooled.get("sources", {}).get(source, {}).get("ece_heldout_at_pooled")
        rows.append(
            f"| {source} | {counts['clean']} / {counts['heldout']} | "
            f"{pct(t['val_accuracy'])} | {pct(t['heldout_accuracy'])} | "
            f"{t['shift_factor']:.2f} | {t['ece_heldout_at_t_val']:.3f} | "
            f"{'' if at_pooled is None else f'{at_pooled:.3f}'} | "
            f"{t['ece_heldout_at_t_heldout']:.3f} |"
        )
    rows.append(
        f"\nPooled shift factor: {pooled['shift_factor']:.3f} ({pooled.get('fitted_on', '')})."
    )
    return rows


def sd198_conditions(reports: Path, names: list[str]) -> list[str]:
    """Recall per SD-198 condition on clean photos (every row, lenient ones included), and the
    shipped clean model's most frequent answers."""
    by_model = {}
    for name in names:
        path = reports / name / "shift_sd198_lenient.json"
        if path.is_file():
            by_model[name] = json.loads(path.read_text()).get("clean_by_condition", {})
    if not by_model.get("clean"):
        return ["(no clean_by_condition in the reports: rerun training/evaluate.py)"]
    rows = [
        "| SD-198 condition | our label | Table 2 | images | "
        + " | ".join(f"{m} recall %" for m in by_model)
        + " | clean answered (top 3) |",
        "|---|---|---|---|" + "---|" * len(by_model) + "---|",
    ]
    strict = reports / "clean" / "shift_sd198.json"
    table2 = set(json.loads(strict.read_text()).get("clean_by_condition", {}))
    for condition, entry in by_model["clean"].items():
        recalls = " | ".join(pct(m.get(condition, {}).get("recall")) for m in by_model.values())
        top = Counter(entry["predicted"]).most_common(3)
        answered = ", ".join(f"{label} {n}" for label, n in top)
        rows.append(
            f"| {condition.replace('_', ' ')} | {entry['label']} | "
            f"{'yes' if condition in table2 else 'no'} | {entry['n_images']} | {recalls} | "
            f"{answered} |"
        )
    return rows


SWEEP = ("clean", "sp0.5", "sp1", "sp2", "sp3", "sp4", "sp5", "blur3", "blur5", "blur7", "blur9", "blur11")  # fmt: skip
ABSTENTION_SETS = {"test": "test", "shift_sd198": "SD-198", "non_skin": "non-skin"}


def _abstention(reports: Path, names: list[str]) -> dict[str, dict]:
    paths = {name: reports / name / "abstention.json" for name in names}
    return {name: json.loads(path.read_text()) for name, path in paths.items() if path.is_file()}


def abstention_targets(reports: Path, names: list[str]) -> list[str]:
    """training/abstention_report.py's measures against issue 14's targets, one column a model."""
    data = _abstention(reports, names)

    def cell(name: str, set_name: str, condition: str, key: str, scale: float = 100) -> str:
        value = data[name]["sets"][set_name][condition].get(key)
        return "" if value is None else f"{scale * value:.1f}" if scale == 100 else f"{value:.3f}"

    def row(label: str, target: str, values: list[str]) -> str:
        return f"| {label} | {target} | " + " | ".join(values) + " |"

    def answered_and_all(name: str, set_name: str, condition: str = "clean") -> str:
        answered = cell(name, set_name, condition, "top1_answered")
        return f"{answered} ({cell(name, set_name, condition, 'top1_all')})"

    table2 = "shift_sd198_table2_clean"
    rows = [
        "| measure (all 263 SD-198 rows) | target | " + " | ".join(data) + " |",
        "|---|---|" + "---|" * len(data),
        row("test: answered %", ">= 90", [cell(n, "test", "clean", "coverage") for n in data]),
        row(
            "test: top-1 % on answered (on all)",
            "> all",
            [answered_and_all(n, "test") for n in data],
        ),  # fmt: skip
        row(
            "non-skin: abstains %",
            ">= 95",
            [f"{100 - float(cell(n, 'non_skin', 'clean', 'coverage')):.1f}" for n in data],
        ),  # fmt: skip
        row(
            "SD-198: AUROC right vs wrong",
            ">= 0.75",
            [cell(n, "shift_sd198", "clean", "auroc_right_wrong", 1) for n in data],
        ),  # fmt: skip
        row(
            "SD-198: answered %",
            ">= 25",
            [cell(n, "shift_sd198", "clean", "coverage") for n in data],
        ),  # fmt: skip
        row(
            "SD-198: top-1 % on answered (on all)",
            ">= 45",
            [answered_and_all(n, "shift_sd198") for n in data],
        ),  # fmt: skip
        row(
            "test: flip-catch % at 5 % salt-and-pepper",
            ">= 60",
            [cell(n, "test", "sp5", "flip_catch") for n in data],
        ),  # fmt: skip
        row(
            "test: flip-catch % under the 11x11 blur",
            ">= 60",
            [cell(n, "test", "blur11", "flip_catch") for n in data],
        ),  # fmt: skip
        row(
            "SD-198: ECE on answered photos",
            "<= 0.15",
            [cell(n, "shift_sd198", "clean", "ece_answered", 1) for n in data],
        ),  # fmt: skip
        row(
            "SD-198: ECE on all photos",
            "",
            [cell(n, "shift_sd198", "clean", "ece_all", 1) for n in data],
        ),  # fmt: skip
        row(
            "test: ECE on answered (all)",
            "",
            [
                f"{cell(n, 'test', 'clean', 'ece_answered', 1)} ({cell(n, 'test', 'clean', 'ece_all', 1)})"
                for n in data
            ],
        ),  # fmt: skip
        row(
            "validation: ECE on answered (all)",
            "",
            [
                f"{data[n]['validation']['ece_answered']:.3f} ({data[n]['validation']['ece_all']:.3f})"
                for n in data
            ],
        ),  # fmt: skip
        row("test: AURC (clean)", "", [cell(n, "test", "clean", "aurc", 1) for n in data]),
        row("SD-198: AURC", "", [cell(n, "shift_sd198", "clean", "aurc", 1) for n in data]),
        row(
            "SD-198 Table-2 rows (147): answered %, top-1 % answered",
            "",
            [
                f"{100 * data[n]['sets'][table2]['coverage']:.1f}, {100 * data[n]['sets'][table2]['top1_answered']:.1f}"
                for n in data
            ],
        ),  # fmt: skip
        row(
            "SD-198: badges familiar / unusual / unlike %",
            "",
            [
                " / ".join(
                    f"{100 * data[n]['sets']['shift_sd198']['clean']['badges'][b]:.0f}"
                    for b in BADGES
                )
                for n in data
            ],
        ),  # fmt: skip
    ]
    return rows


def abstention_sweeps(reports: Path, names: list[str]) -> list[str]:
    """Per model: answered %, top-1 % on the answered photos and flip-catch % along the noise
    and blur sweeps, for the test split, SD-198 and the non-skin set (n/a: nothing answered or
    nothing flipped)."""
    rows = []
    for name, report in _abstention(reports, names).items():
        rows += [f"`{name}`", "", "| set | " + " | ".join(SWEEP) + " |", "|---|" + "---|" * len(SWEEP)]  # fmt: skip
        for set_name, label in ABSTENTION_SETS.items():
            blocks = report["sets"][set_name]
            measures = [("answered", "coverage"), ("top-1 answered", "top1_answered"), ("flip-catch", "flip_catch")]  # fmt: skip
            for what, key in measures:
                if set_name == "non_skin" and key != "coverage":
                    continue
                cells = []
                for condition in SWEEP:
                    value = blocks[condition].get(key, "")
                    if condition == "clean" and key == "flip_catch":
                        value = ""
                    cells.append("n/a" if value is None else value if value == "" else f"{100 * value:.0f}")  # fmt: skip
                rows.append(f"| {label} {what} | " + " | ".join(cells) + " |")
        rows.append("")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights-dir", type=Path, default=REPO / "weights")
    args = parser.parse_args()
    cards = {
        name: json.loads((args.weights_dir / f"{name}.json").read_text())
        for name in MODELS
        if (args.weights_dir / f"{name}.json").is_file()
    }
    reports = args.weights_dir / "reports"
    names = list(cards)
    for title, rows in (
        ("Training (model cards; mean +/- std over seeds, sample std)", training_table(cards)),
        ("Table 3", table3(cards)),
        ("Balanced accuracy % under corruption (reports)", robustness_table(reports, names)),
        ("Table 5", table5(reports)),
        ("Table 4", table4(reports)),
        ("Calibration (ECE on the validation split, 15 bins)", calibration(reports, names)),
        ("Held-out-source proxies (the temperature's shift factor)", shift_proxies(reports)),
        ("SD-198 by condition (clean photos)", sd198_conditions(reports, names)),
        ("Abstention against issue 14's targets", abstention_targets(reports, names)),
        (
            "Abstention along the sweeps: answered %, top-1 % answered, flip-catch %",
            abstention_sweeps(reports, names),
        ),  # fmt: skip
    ):
        print(f"### {title}\n")
        print("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
