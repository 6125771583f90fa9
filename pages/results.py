"""Results: the precomputed evaluation of every shipped model, with the paper's numbers beside ours.

Everything here is read from weights/reports/ (written by training/evaluate.py); this page never
runs a model.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from dermcore.reports import (
    NO_REPORTS,
    SETS,
    ConditionResult,
    ModelReports,
    SetReport,
    abstention_condition,
    load_paper_numbers,
    load_reports,
    load_shift_proxies,
    reports_signature,
    row_normalised,
)
from ui import common

# family -> (x-axis title, severity -> tick label, tick label of the clean condition)
SEVERITY_LABELS = {
    "noise": ("noisy pixels", lambda s: f"{s:.1%}", "0%"),
    "blur": ("Gaussian kernel", lambda s: f"{s:g}×{s:g}", "off"),
    "motion": ("motion length", lambda s: f"{s:g} px", "off"),
    "jpeg": ("JPEG quality", lambda s: f"q{s:g}", "original"),
    "exposure": ("exposure", lambda s: f"×{s:g}", "×1"),
}


def severity_label(family: str, name: str, severity: float | None) -> str:
    _, label, clean = SEVERITY_LABELS.get(family, ("", lambda s: f"{s:g}", "clean"))
    if name == "clean" or severity is None:
        return clean if name == "clean" else name
    return label(severity)


FAMILY_TITLES = {
    "noise": "Salt-and-pepper noise",
    "blur": "Gaussian blur",
    "motion": "Motion blur",
    "jpeg": "JPEG compression",
    "exposure": "Exposure",
}
# Paper condition -> how to find ours in a report: by name first, else by family and severity.
HEADLINE = {
    "Clean test": (("clean",), ("clean", 0.0)),
    "S&P ≤ 5%": (("sp_upto5", "sp5"), ("noise", 0.05)),
    "Blur 5×5": (("blur5",), ("blur", 5.0)),
}
PAPER_TESTS = {"N.A.": "Clean test", "Clean w/o Noise": "Clean test", "S&P Corrupted": "S&P ≤ 5%", "Blurred": "Blur 5×5"}  # fmt: skip
PAPER_TRAINING = {"Clean w/o Noise": "Paper: trained clean", "S&P Corrupted": "Paper: trained with S&P"}  # fmt: skip
METRIC_NAMES = {"accuracy": "top-1 accuracy", "balanced_accuracy": "balanced accuracy", "flip_rate": "flip rate"}  # fmt: skip


def display_name(model: str) -> str:
    """A report folder's model by the name the sidebar uses ('Robust (impulse filter)')."""
    return common.MODEL_NAMES.get(model, (model,))[0]


def paper_rows(paper: dict) -> dict[str, dict[str, float]]:
    """Table 5 (ResNet-50 on the authors' data) and section 3.4 (SD-198) as top-1 %, one row per
    training condition, in the headline table's columns."""
    rows: dict[str, dict[str, float]] = {}
    for row in (paper.get("table5") or {}).get("rows", []):
        name, column = PAPER_TRAINING.get(row.get("train")), PAPER_TESTS.get(row.get("test"))
        if name and column and isinstance(row.get("top1_percent"), int | float):
            rows.setdefault(name, {})[column] = row["top1_percent"]
    sd198 = (paper.get("sd198") or {}).get("top1_percent")
    if isinstance(sd198, int | float):
        rows.setdefault("Paper: trained clean", {})["SD-198"] = sd198
    return rows


_EMPTY = SetReport("", "", None, [], {}, {}, {})  # stands in for a model without the chosen set


@st.cache_data(show_spinner=False)
def cached_reports(reports_dir: str, signature: tuple) -> tuple[dict[str, ModelReports], list[str]]:
    return load_reports(Path(reports_dir))


def find_condition(report: SetReport, headline: str) -> ConditionResult | None:
    names, (family, severity) = HEADLINE[headline]
    for name in names:
        if name in report.conditions:
            return report.conditions[name]
    return next(
        (c for c in report.conditions.values() if c.family == family and c.severity == severity),
        None,
    )


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def _decimal(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


# ---- headline ------------------------------------------------------------------------------


def headline_table(models: dict[str, ModelReports], metric: str, paper: dict) -> pd.DataFrame:
    rows = {}
    if metric == "accuracy":
        for name, values in paper_rows(paper).items():
            rows[name] = {k: f"{v:g}%" for k, v in values.items()}  # as printed in the paper
    for name, model in models.items():
        row = {}
        if test := model.sets.get("test"):
            for column in HEADLINE:
                condition = find_condition(test, column)
                row[column] = _percent(getattr(condition, metric) if condition else None)
        if (shift := model.sets.get("shift_sd198")) and "clean" in shift.conditions:
            row["SD-198"] = _percent(getattr(shift.conditions["clean"], metric))
        rows[f"Ours: {display_name(name)}"] = row
    columns = [*HEADLINE, "SD-198"]
    return pd.DataFrame.from_dict(rows, orient="index").reindex(columns=columns).fillna("—")


def render_headline(models: dict[str, ModelReports], paper: dict) -> None:
    st.subheader("Ours beside the paper")
    st.caption(
        "Read the drops along each row, not the absolute numbers: the paper's ResNet-50 saw the "
        "authors' own photos, ours see public collections. The last column, SD-198, is the "
        "honest test for both."
    )
    metric = st.segmented_control(
        "Metric", ["accuracy", "balanced_accuracy"], default="accuracy", required=True,
        format_func={"accuracy": "Top-1 accuracy (the paper's)", "balanced_accuracy": "Balanced accuracy"}.get,
        key="results_headline_metric",
    )  # fmt: skip
    st.dataframe(headline_table(models, metric, paper), width="stretch")
    st.caption(
        "Paper rows: Table 5 and section 3.4 (ResNet-50, the authors' own photos, 'S&P ≤ 5%' = "
        "up to 5% of pixels, black:white 3:1). Our rows: the in-distribution test split and the "
        "external SD-198 set, corrupted at the model's input resolution as in the paper. Different "
        "data, so compare the drops, not the absolute numbers."
    )


# ---- per-condition views -------------------------------------------------------------------


def report_controls(
    models: dict[str, ModelReports],
) -> tuple[ModelReports, SetReport, ConditionResult]:
    model_column, set_column, condition_column = st.columns(3)
    names = list(models)
    model = models[
        model_column.selectbox(
            "Model",
            names,
            index=names.index("clean") if "clean" in names else 0,
            format_func=display_name,
            key="results_model",
        )
    ]
    datasets = list(model.sets)
    dataset = set_column.selectbox(
        "Image set", datasets, format_func=lambda d: SETS.get(d, d), key="results_set"
    )
    report = model.sets[dataset]
    conditions = list(report.conditions)
    condition = condition_column.selectbox(
        "Condition", conditions, index=conditions.index("clean") if "clean" in conditions else 0,
        format_func=lambda n: f"{n} — {report.conditions[n].description}" if report.conditions[n].description else n,
        key="results_condition",
    )  # fmt: skip
    return model, report, report.conditions[condition]


def confusion_figure(
    matrix: np.ndarray, classes: list[str], normalise: bool, title: str
) -> go.Figure:
    values = row_normalised(matrix) if normalise else matrix
    text = [[f"{v:.0%}" if normalise else f"{int(v)}" for v in row] for row in values]
    figure = go.Figure(
        go.Heatmap(
            z=values,
            x=classes,
            y=classes,
            text=text,
            texttemplate="%{text}",
            colorscale="Blues",
            showscale=False,
            hovertemplate="true %{y}, predicted %{x}: %{text}<extra></extra>",
        )  # fmt: skip
    )
    figure.update_layout(
        title=title, height=480, margin={"l": 0, "r": 0, "t": 40, "b": 0},
        xaxis={"title": "predicted", "tickangle": -40}, yaxis={"title": "true", "autorange": "reversed"},
    )  # fmt: skip
    return figure


def render_confusion(report: SetReport, condition: ConditionResult, paper: dict) -> None:
    normalise = st.toggle("Row-normalised (share of each true class)", key="results_normalise")
    if condition.confusion is None:
        st.caption("No confusion matrix in this report.")
        return
    figure19 = (paper.get("sd198") or {}).get("figure19") or {}
    show_paper = report.dataset.startswith("shift_sd198") and condition.name == "clean" and figure19
    ours, theirs = st.columns(2) if show_paper else (st.container(), None)
    title = f"Ours: {display_name(report.model)}, {condition.name} ({_percent(condition.accuracy)} top-1)"
    ours.plotly_chart(
        confusion_figure(condition.confusion, report.classes, normalise, title),
        key="results_confusion",
    )
    if theirs is not None:
        matrix = np.asarray(figure19["confusion_matrix"], dtype=np.int64)
        figure = confusion_figure(
            matrix, figure19["classes"], normalise, "Paper: Figure 19 (32% top-1)"
        )
        theirs.plotly_chart(figure, key="results_confusion_paper")
    else:
        st.caption(
            "The paper draws its confusion matrices for the clean model (Fig. 8), under S&P "
            "noise (Fig. 17) and blur (Fig. 18) without printing their counts; it prints only "
            "SD-198's (Fig. 19, shown beside ours when you pick an SD-198 set and 'clean')."
        )


def render_by_condition(report: SetReport) -> None:
    """SD-198 recall per source condition: which diseases under one of our labels fail."""
    if not report.by_condition:
        return
    rows = []
    for name, entry in sorted(report.by_condition.items(), key=lambda kv: kv[1]["recall"]):
        top = Counter(entry["predicted"]).most_common(3)
        rows.append(
            {
                "SD-198 condition": name.replace("_", " "),
                "our label": entry["label"],
                "photos": entry["n_images"],
                "recall %": round(100 * entry["recall"], 1),
                "the model answered": ", ".join(f"{label} ({n})" for label, n in top),
            }
        )
    st.markdown("**By SD-198 condition (clean photos)**")
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    st.caption(
        "One of our labels gathers several SD-198 diseases. Some never appear in our training "
        "data under that label (Angioma and Dermatofibroma under Tumor, Rosacea under Erythema); "
        "others do (Cellulitis, Keloid), but from other photographers. A low recall on the "
        "second kind is the source-style problem; on the first it is a new disease."
    )


def render_roc(report: SetReport, condition: ConditionResult) -> None:
    figure = go.Figure()
    auroc = condition.per_class.get("auroc", [])
    for index, name in enumerate(report.classes):
        curve = condition.roc[index] if index < len(condition.roc) else None
        if curve is None:
            continue
        score = auroc[index] if index < len(auroc) else None
        label = f"{name} ({score:.3f})" if score is not None else name
        figure.add_scatter(x=curve[0], y=curve[1], name=label, mode="lines")
    if not figure.data:
        st.caption("No ROC curves in this report.")
        return
    figure.add_scatter(
        x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dot", "color": "grey"}, showlegend=False
    )
    figure.update_layout(
        height=460, margin={"l": 0, "r": 0, "t": 10, "b": 0},
        xaxis={"title": "false positive rate"}, yaxis={"title": "true positive rate"},
        legend={"title": "class (AUROC)"},
    )  # fmt: skip
    st.plotly_chart(figure, key="results_roc")
    st.caption(
        f"One-vs-rest, per class; macro AUROC {_decimal(condition.macro_auroc)}. Classes without "
        "both positives and negatives in this set have no curve. The paper's Figure 9 shows the "
        "same for its clean model."
    )


def severity_figure(
    models: dict[str, ModelReports], dataset: str, family: str, metric: str, paper: dict
) -> go.Figure:
    axis_title = SEVERITY_LABELS[family][0]
    figure = go.Figure()
    for name, model in models.items():
        report = model.sets.get(dataset)
        if report is None or family not in report.sweeps:
            continue
        conditions = [report.conditions[n] for n in report.sweeps[family]]
        figure.add_scatter(
            x=_severity_axis(family, conditions), y=[getattr(c, metric) for c in conditions],
            name=display_name(name), mode="lines+markers",
        )  # fmt: skip
    trained_clean = paper_rows(paper).get("Paper: trained clean", {})
    if (
        dataset == "test"
        and metric == "accuracy"
        and family == "blur"
        and "Blur 5×5" in trained_clean
    ):
        figure.add_scatter(
            x=[severity_label("blur", "blur5", 5.0)], y=[trained_clean["Blur 5×5"] / 100], name="paper, ResNet-50",
            mode="markers", marker={"symbol": "star", "size": 14, "color": "black"},
        )  # fmt: skip
    if (
        dataset == "test"
        and metric == "accuracy"
        and family == "noise"
        and "S&P ≤ 5%" in trained_clean
    ):
        value = trained_clean["S&P ≤ 5%"]
        figure.add_hline(
            y=value / 100, line_dash="dot", annotation_text=f"paper, S&P up to 5%: {value:g}%",
            annotation_position="bottom left",
        )  # fmt: skip
    # Noise density is a number: a linear axis from 0, so 1% and 5% sit where they belong.
    xaxis = (
        {
            "title": "noisy pixels (%)",
            "type": "linear",
            "rangemode": "nonnegative",
            "ticksuffix": "%",
        }
        if family == "noise"
        else {"title": axis_title, "type": "category"}
    )
    figure.update_layout(
        height=360, margin={"l": 0, "r": 0, "t": 30, "b": 0}, title=FAMILY_TITLES.get(family, family),
        xaxis=xaxis, legend={"orientation": "h", "yanchor": "top", "y": -0.28},
        yaxis={"title": METRIC_NAMES.get(metric, metric), "range": [0, 1], "tickformat": ".0%"},
    )  # fmt: skip
    return figure


def _severity_axis(family: str, conditions: list[ConditionResult]) -> list:
    """Noise: density in percent (a linear axis); other families: category labels."""
    if family == "noise":
        return [0.0 if c.name == "clean" else (c.severity or 0.0) * 100 for c in conditions]
    return [severity_label(family, c.name, c.severity) for c in conditions]


def render_severity(models: dict[str, ModelReports], dataset: str, paper: dict) -> None:
    metric = st.segmented_control(
        "Metric", ["accuracy", "balanced_accuracy", "flip_rate"], default="accuracy",
        required=True, key="results_severity_metric",
        format_func={"accuracy": "Top-1", "balanced_accuracy": "Balanced", "flip_rate": "Flip rate"}.get,
    )  # fmt: skip
    families = [
        f
        for f in SEVERITY_LABELS
        if any(f in m.sets.get(dataset, _EMPTY).sweeps for m in models.values())
    ]
    if not families:
        st.caption("No severity sweeps in these reports.")
        return
    for start in range(0, len(families), 2):
        for column, family in zip(st.columns(2), families[start : start + 2], strict=False):
            column.plotly_chart(
                severity_figure(models, dataset, family, metric, paper),
                key=f"results_severity_{family}",
            )
    st.caption(
        f"Every model on one chart; {SETS.get(dataset, dataset)}. Flip rate = share of images whose top class differs from the clean prediction."
    )
    filtered = [
        display_name(e.card.name)
        for e in common.available_models()
        if e.card is not None
        and e.card.name in models
        and e.card.preprocessing.get("impulse_filter")
    ]
    if filtered:
        st.caption(
            f"{', '.join(filtered)}: an impulse filter replaces pure black and white pixels "
            "before the network, so its salt-and-pepper curves show the filter as much as the "
            "network (Explore can switch it off)."
        )


def render_calibration(report: SetReport, condition: ConditionResult) -> None:
    chart, numbers = st.columns([3, 2], gap="large")
    bins = condition.reliability
    if bins is None:
        chart.caption("No reliability data in this report.")
    else:
        edges = np.linspace(0, 1, len(bins["accuracy"]) + 1)
        centres = (edges[:-1] + edges[1:]) / 2
        figure = go.Figure()
        figure.add_bar(x=centres, y=bins["accuracy"], width=1 / len(centres), name="accuracy", marker_color="#4c78a8",
                       customdata=bins["count"], hovertemplate="confidence %{x:.2f}: accuracy %{y:.1%} (%{customdata} images)<extra></extra>")  # fmt: skip
        figure.add_scatter(
            x=[0, 1],
            y=[0, 1],
            mode="lines",
            line={"dash": "dot", "color": "grey"},
            name="perfect calibration",
        )
        figure.update_layout(
            height=360, margin={"l": 0, "r": 0, "t": 10, "b": 0}, bargap=0.05,
            xaxis={"title": "confidence (top-class probability)", "range": [0, 1]},
            yaxis={"title": "accuracy", "range": [0, 1]}, legend={"orientation": "h", "y": -0.2},
        )  # fmt: skip
        chart.plotly_chart(figure, key="results_reliability")
    calibration = report.calibration
    numbers.metric(
        "ECE (this condition)",
        _percent(condition.ece),
        help="Expected calibration error: the gap between confidence and accuracy, averaged over confidence bins.",
    )
    numbers.metric("NLL", _decimal(condition.nll))
    temperature = calibration.get("temperature")
    if isinstance(temperature, int | float):
        numbers.metric(
            "Temperature", f"{temperature:.2f}",
            help="Every probability here is softmax(logits / T). " + _temperature_origin(calibration),
        )  # fmt: skip
        before, after = calibration.get("ece_before"), calibration.get("ece_after")
        in_source = calibration.get("ece_in_source")
        if isinstance(before, int | float) and isinstance(after, int | float):
            if isinstance(in_source, int | float):
                numbers.caption(
                    f"Validation ECE {before:.1%} before temperature scaling, {in_source:.1%} "
                    f"at validation's own temperature, {after:.1%} at this one: softened for "
                    "photos from other clinics, so a little underconfident on its own sources."
                )
            else:
                numbers.caption(
                    f"Validation ECE {before:.1%} before temperature scaling, {after:.1%} after."
                )


def render_shift_proxies(reports_dir: Path) -> None:
    """Where the temperature's shift factor comes from: the recipe retrained without each
    source in turn (training/shift_proxy.py), one row per left-out source."""
    loaded = load_shift_proxies(reports_dir)
    if loaded is None:
        return
    rows, pooled = loaded
    st.markdown("**Where the softer temperature comes from**")
    st.caption(
        f"The same recipe, retrained {len(rows)} times with one photo source left out each time, "
        "then shown that source's photos as a new clinic's. Each row: how much softer its "
        f"temperature had to be there. Fitted on all {len(rows)} at once, each source weighted "
        f"equally, the factor is {pooled:.2f}; every shipped temperature carries it."
    )
    table = pd.DataFrame(rows)
    shares = ["right on own validation", "right on left-out photos"]
    table[shares] *= 100
    st.dataframe(
        table,
        hide_index=True,
        column_config={
            **{name: st.column_config.NumberColumn(format="%.1f%%") for name in shares},
            "factor needed": st.column_config.NumberColumn(format="%.2fx"),
        },
        key="results_shift_proxies",
    )


def _temperature_origin(calibration: dict) -> str:
    factor = calibration.get("shift_factor")
    if not isinstance(factor, int | float):
        return "Fitted on the clean validation split."
    sources = len(calibration.get("shift_sources") or [None])
    left_out = f" ({sources} sources, each left out in turn)" if sources > 1 else ""
    return (
        f"Fitted on the clean validation split, then multiplied by {factor:.2f}: how much "
        f"softer the same recipe had to be on photos from sources it never trained on{left_out}."
    )


def render_pairs(model: ModelReports, paper: dict) -> None:
    ours, theirs = st.columns(2, gap="large")
    seeds = " (mean over seeds)" if any("mean" in pair for pair in model.confused_pairs) else ""
    ours.markdown(f"**Ours: {display_name(model.name)}, clean test split{seeds}**")
    if model.confused_pairs:
        rows = []
        for pair in model.confused_pairs[:8]:
            if "mean" in pair:
                std = pair.get("std")
                errors = f"{pair['mean']:.2f}" + (
                    f" ± {std:.2f}" if isinstance(std, int | float) else ""
                )
            else:
                errors = str(pair.get("errors", "—"))
            rows.append({"labels": f"{pair.get('a')} and {pair.get('b')}", "errors": errors})
        ours.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    else:
        ours.caption("No confused pairs in this report.")
    theirs.markdown("**Paper: Table 4**")
    rows = [
        {"labels": f"{r['a']} and {r['b']}", "errors": f"{r['mean']:.2f} ± {r['std']:.2f}"}
        for r in (paper.get("table4") or {}).get("rows", [])
    ]
    theirs.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    st.caption(
        "Errors = images of one class predicted as the other, both ways. Our test split is smaller than the paper's, so compare the pairs, not the counts."
    )


def training_figure(rows: list[dict], word: str, title: str) -> go.Figure | None:
    """Every numeric column whose name contains `word`, against the epoch; a dotted line where
    the training phase changes (the paper's head-only phase, then the whole network)."""
    keys = sorted({k for row in rows for k, v in row.items() if word in k and _is_number(v)})
    if not keys:
        return None
    x = [row.get("epoch", index + 1) for index, row in enumerate(rows)]
    figure = go.Figure()
    for key in keys:
        figure.add_scatter(
            x=x, y=[row.get(key) for row in rows], name=key.replace("_", " "), mode="lines+markers"
        )
    for previous, row, epoch in zip(rows, rows[1:], x[1:], strict=False):
        if row.get("phase") != previous.get("phase"):
            figure.add_vline(
                x=epoch - 0.5, line_dash="dot", annotation_text=str(row.get("phase", ""))
            )
    figure.update_layout(height=320, margin={"l": 0, "r": 0, "t": 30, "b": 0}, title=title,
                         xaxis={"title": "epoch"}, legend={"orientation": "h", "y": -0.25})  # fmt: skip
    return figure


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def lr_caption(model_name: str) -> str:
    """How the shipped first-phase rate relates to the range test, from the model's card."""
    cards = [e.card for e in common.available_models() if e.card and e.card.name == model_name]
    lr = (cards[0].training or {}).get("lr") if cards else None
    if not isinstance(lr, dict) or not _is_number(lr.get("phase1")):
        return (
            "As the paper's Figures 1-2: the loss against the learning rate, rising to divergence."
        )
    if lr.get("source") == "--lr":
        suggested = lr.get("suggested_lr")
        test = f"The test suggested {suggested:.2g}; " if _is_number(suggested) else ""
        return (
            f"As the paper's Figures 1-2. {test}the shipped first-phase rate, {lr['phase1']:g}, "
            "was chosen among candidates on the validation split (training/README.md)."
        )
    return (
        f"As the paper's Figures 1-2: the first-phase rate, {lr['phase1']:.2g}, is read off "
        "this test, a tenth of the rate at the lowest loss."
    )


def render_training(model: ModelReports) -> None:
    curves, lr_column = st.columns(2, gap="large")
    rows = model.training_curves
    figures = [training_figure(rows, "loss", "Loss"), training_figure(rows, "acc", "Accuracy")]
    if any(figures):
        for index, figure in enumerate(f for f in figures if f is not None):
            curves.plotly_chart(figure, key=f"results_training_{index}")
        curves.caption(
            "As the paper's Figure 7: training and validation curves of the shipped seed."
        )
    else:
        curves.caption("No training curves (training_curves.jsonl) for this model.")
    lr_rows = [row for row in model.lr_find if "lr" in row]
    if lr_rows:
        figure = go.Figure()
        for key in ("loss", "smoothed_loss"):
            if key in lr_rows[0]:
                figure.add_scatter(
                    x=[r["lr"] for r in lr_rows],
                    y=[r[key] for r in lr_rows],
                    name=key.replace("_", " "),
                    mode="lines",
                )
        figure.update_layout(height=340, margin={"l": 0, "r": 0, "t": 30, "b": 0}, title="Learning-rate range test",
                             xaxis={"title": "learning rate", "type": "log"}, yaxis={"title": "loss"})  # fmt: skip
        lr_column.plotly_chart(figure, key="results_lr_find")
        lr_column.caption(lr_caption(model.name))
    else:
        lr_column.caption("No learning-rate range test (lr_find.csv) for this model.")


def render_drift(model: ModelReports) -> None:
    sweeps = (model.drift or {}).get("sweeps") or {}
    if not sweeps:
        st.caption("No explanation-drift study (drift.json) for this model.")
        return
    columns = st.columns(max(1, len(sweeps)))
    for column, (family, rows) in zip(columns, sweeps.items(), strict=False):
        x = [severity_label(family, str(r.get("condition", "")), r.get("severity")) for r in rows]
        figure = go.Figure()
        for key, name in (
            ("correlation_mean", "heatmap correlation"),
            ("top20_iou_mean", "hot-spot overlap"),
        ):
            figure.add_scatter(x=x, y=[r.get(key) for r in rows], name=name, mode="lines+markers")
        figure.update_layout(height=320, margin={"l": 0, "r": 0, "t": 30, "b": 0}, title=FAMILY_TITLES.get(family, family),
                             xaxis={"type": "category"}, yaxis={"range": [0, 1]})  # fmt: skip
        column.plotly_chart(figure, key=f"results_drift_{family}")
    st.caption(
        f"Grad-CAM of {model.drift.get('n_images', 'the')} test images under each corruption against "
        "its clean heatmap, for the class predicted on the clean image: 1 = the model still looks "
        "at the same places."
    )


def render_paper(paper: dict) -> None:
    table3, table5 = st.columns(2, gap="large")
    table3.markdown("**Table 3: architectures (top-1 %, their data)**")
    rows = [
        {"model": r["arch"], "top-1 %": f"{r['mean']:.1f} ± {r['std']:.1f}"}
        for r in (paper.get("table3") or {}).get("rows", [])
    ]
    table3.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    table5.markdown("**Table 5: corruption tests (ResNet-50)**")
    rows = [
        {"trained": r["train"], "tested": r["test"], "top-1 %": r["top1_percent"]}
        for r in (paper.get("table5") or {}).get("rows", [])
    ]
    table5.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    figure19 = (paper.get("sd198") or {}).get("figure19")
    if figure19:
        st.plotly_chart(
            confusion_figure(np.asarray(figure19["confusion_matrix"]), figure19["classes"], False, "Figure 19: SD-198, 32% top-1"),
            key="results_paper_figure19",
        )  # fmt: skip


# ---- the story ------------------------------------------------------------------------------


def takeaway(models: dict[str, ModelReports]) -> str | None:
    """One sentence from the reports: clean test accuracy, what the paper's noise test does to
    each model, and SD-198. None when the reports lack the test set."""
    parts = []
    for name, model in models.items():
        test = model.sets.get("test")
        if test is None or "clean" not in test.conditions:
            continue
        clean = test.conditions["clean"].accuracy
        noisy = find_condition(test, "S&P ≤ 5%")
        if clean is None or noisy is None or noisy.accuracy is None:
            continue
        parts.append(f"{display_name(name)} {clean:.0%} → {noisy.accuracy:.0%}")
    if not parts:
        return None
    sentence = (
        "Salt-and-pepper noise on up to 5% of pixels moves top-1 accuracy on our test photos "
        f"from clean to noisy as follows: {'; '.join(parts)}."
    )
    shift = [
        m.sets["shift_sd198"].conditions["clean"].accuracy
        for m in models.values()
        if "shift_sd198" in m.sets and "clean" in m.sets["shift_sd198"].conditions
    ]
    shift = [v for v in shift if v is not None]
    if shift:
        sentence += (
            f" On SD-198, photos from other clinics, every model is right on only "
            f"{min(shift):.0%}-{max(shift):.0%} of photos (the paper's ResNet-50: 32%)."
        )
    return sentence


def render_story(models: dict[str, ModelReports], paper: dict) -> None:
    st.subheader("What to take away")
    if sentence := takeaway(models):
        st.markdown(sentence)
    noise_column, blur_column = st.container(key="wrap_results_story").columns(2)
    for column, family in ((noise_column, "noise"), (blur_column, "blur")):
        column.plotly_chart(
            severity_figure(models, "test", family, "accuracy", paper),
            key=f"results_story_{family}",
        )
    st.caption(
        "Top-1 accuracy on our held-out test photos as the corruption grows, every model on one "
        "chart; the paper's ResNet-50 for comparison (dotted line: its noise test; star: its "
        "5×5 blur)."
    )


# ---- knowing when not to answer --------------------------------------------------------------

# SD-198 here is every row of the set, where the accuracy table above shows the paper's Table-2
# rows: the abstention report covers the whole set
ABSTENTION_SETS = {"test": "test photos", "shift_sd198": "SD-198, all rows", "non_skin": "non-skin images"}  # fmt: skip


def abstention_table(models: dict[str, ModelReports]) -> pd.DataFrame | None:
    """Per model: the share answered and the accuracy on answered vs all photos, per set."""
    rows = {}
    for name, model in models.items():
        if model.abstention is None:
            continue
        row = {}
        for dataset, label in ABSTENTION_SETS.items():
            clean = abstention_condition(model, dataset, "clean")
            if not clean:
                continue
            row[f"{label}: answered"] = _percent(clean.get("coverage"))
            if dataset != "non_skin":
                row[f"{label}: right when answering"] = _percent(clean.get("top1_answered"))
                row[f"{label}: right overall"] = _percent(clean.get("top1_all"))
        rows[display_name(name)] = row
    return pd.DataFrame.from_dict(rows, orient="index") if rows else None


def risk_coverage_figure(models: dict[str, ModelReports], dataset: str) -> go.Figure:
    figure = go.Figure()
    for name, model in models.items():
        curve = abstention_condition(model, dataset, "clean").get("risk_coverage") or {}
        if curve.get("coverage"):
            figure.add_scatter(
                x=curve["coverage"], y=curve["risk"], name=display_name(name), mode="lines",
            )  # fmt: skip
    figure.update_layout(
        height=320, margin={"l": 0, "r": 0, "t": 30, "b": 0},
        title=f"Risk against coverage, {ABSTENTION_SETS[dataset]}",
        xaxis={"title": "share of photos answered", "range": [0, 1], "tickformat": ".0%"},
        yaxis={"title": "share of answers wrong", "range": [0, 1], "tickformat": ".0%"},
        legend={"orientation": "h", "yanchor": "top", "y": -0.25},
    )  # fmt: skip
    return figure


def flip_catch_figure(models: dict[str, ModelReports], family: str) -> go.Figure:
    """Of the test photos whose answer a corruption changes, the share where the model says
    'Not sure' instead of giving the changed answer, against severity; the hover names how
    many answers changed."""
    figure = go.Figure()
    for name, model in models.items():
        conditions = ((model.abstention or {}).get("sets", {}).get("test", {})).items()
        points = sorted(
            (c["severity"], c["flip_catch"], round(c.get("flip_rate", 0) * c.get("n_images", 0)))
            for c in (v for _, v in conditions)
            if isinstance(c, dict) and c.get("family") == family and c.get("flip_catch") is not None
        )
        if points:
            x = [p[0] * 100 if family == "noise" else f"{p[0]:g}×{p[0]:g}" for p in points]
            label = display_name(name)
            figure.add_scatter(
                x=x, y=[p[1] for p in points], name=label, mode="lines+markers",
                customdata=[p[2] for p in points],
                hovertemplate=f"{label}: %{{y:.0%}} of %{{customdata}} changed answers<extra></extra>",
            )  # fmt: skip
    figure.update_layout(
        height=320, margin={"l": 0, "r": 0, "t": 30, "b": 0},
        title="Flips caught: " + ("salt-and-pepper noise" if family == "noise" else "Gaussian blur"),
        xaxis={"title": "noisy pixels (%)", "ticksuffix": "%", "rangemode": "nonnegative"}
        if family == "noise" else {"title": "Gaussian kernel", "type": "category"},
        yaxis={"title": "flips caught", "range": [0, 1.05], "tickformat": ".0%"},
        legend={"orientation": "h", "yanchor": "top", "y": -0.25},
    )  # fmt: skip
    return figure


def render_abstention(models: dict[str, ModelReports]) -> None:
    table = abstention_table(models)
    if table is None:
        return
    st.subheader("Knowing when not to answer")
    st.markdown(
        "Each model may say **Not sure** instead of answering, when a photo looks unlike its "
        "training photos or its confidence is low; the thresholds were set on the validation "
        "split so that about 90% of those photos are answered. A good model under heavy noise "
        "should decline rather than flip."
    )
    st.dataframe(table, width="stretch")
    test_column, shift_column = st.container(key="wrap_results_risk").columns(2)
    test_column.plotly_chart(risk_coverage_figure(models, "test"), key="results_risk_test")
    shift_column.plotly_chart(risk_coverage_figure(models, "shift_sd198"), key="results_risk_sd198")
    noise_column, blur_column = st.container(key="wrap_results_flip_catch").columns(2)
    noise_column.plotly_chart(flip_catch_figure(models, "noise"), key="results_flip_catch_noise")
    blur_column.plotly_chart(flip_catch_figure(models, "blur"), key="results_flip_catch_blur")
    st.caption(
        "Risk against coverage: answering fewer photos should leave fewer wrong answers (a lower "
        "line is better). Flips caught: of the test photos whose answer a corruption changes, "
        "the share where the model said 'Not sure' instead of giving the changed answer (hover "
        "for how many changed: Robust's impulse filter leaves only a few under noise). On "
        "SD-198 the familiarity score tells right from wrong answers poorly: those photos "
        "differ in which diseases they show, not in how they were taken (training/README.md)."
    )


# ---- page ----------------------------------------------------------------------------------

common.page_header(
    "Results", "How accurate is each model, on clean and degraded photos, and beside the paper?"
)
st.info(
    "**In-distribution accuracy flatters.** Each class in our training data comes from one to "
    "three sources, so a model can score well on the held-out test split by recognising a "
    "source's photo style instead of the lesion. **The external SD-198 set, photographed by "
    "other people, is the honest test**; expect much lower numbers there, as the paper found "
    "(32%).",
    icon=":material/balance:",
)
reports_dir = common.weights_dir() / "reports"
models, problems = cached_reports(str(reports_dir), reports_signature(reports_dir))
paper = load_paper_numbers(reports_dir)
for problem in problems:
    st.warning(problem)
if not models:
    st.warning(NO_REPORTS, icon=":material/folder_off:")
    st.subheader("The paper's numbers")
    render_paper(paper)
    st.stop()
render_story(models, paper)
render_headline(models, paper)
render_abstention(models)
st.subheader("One model, one image set, one condition")
model, report, condition = report_controls(models)
if report.n_images:
    st.caption(f"{report.n_images} images · {condition.description or condition.name}")
render_confusion(report, condition, paper)
if report.dataset.startswith("shift_sd198"):
    render_by_condition(report)
st.subheader("ML details")
st.caption(
    "For engineers: every corruption family, ROC, calibration, training and the paper's tables."
)
tabs = st.tabs(["Accuracy vs severity", "ROC", "Calibration", "Confused pairs", "Training and LR test", "Explanation drift", "The paper"])  # fmt: skip
with tabs[0]:
    render_severity(models, report.dataset, paper)
with tabs[1]:
    render_roc(report, condition)
with tabs[2]:
    render_calibration(report, condition)
    render_shift_proxies(reports_dir)
with tabs[3]:
    render_pairs(model, paper)
with tabs[4]:
    render_training(model)
with tabs[5]:
    render_drift(model)
with tabs[6]:
    render_paper(paper)
