"""The paper's own numbers (Mishra et al. 2020), for when weights/reports/paper.json is absent.

Same layout as training/evaluate.py's paper.json, so the Results page reads either. Every value
is transcribed from the paper's text: Tables 3-5 and Figure 19 (ResNet-50, the authors' own data
of East Asian volunteers; not our data, so the comparison is of trends, not of exact numbers).
"""

from __future__ import annotations

SOURCE = (
    "Mishra et al. 2020, Assessing Robustness of Deep learning Methods in Dermatological Workflow"
)

FIGURE19_CLASSES = [
    "Acne", "Alopecia", "Blister", "Crust", "Erythema",
    "Leukoderma", "Pigmented Macula", "Tumor", "Ulcer", "Wheal",
]  # fmt: skip
FIGURE19 = [  # rows = actual, columns = predicted; grouped SD-198, 100 per class (Wheal 71)
    [70, 13, 4, 5, 0, 2, 1, 5, 0, 0],
    [19, 73, 2, 1, 1, 2, 0, 2, 0, 0],
    [29, 2, 43, 9, 7, 1, 1, 7, 1, 0],
    [44, 1, 14, 34, 0, 0, 0, 5, 2, 0],
    [38, 3, 31, 6, 11, 5, 3, 0, 2, 1],
    [11, 7, 36, 12, 1, 13, 5, 14, 1, 0],
    [24, 7, 11, 15, 2, 6, 30, 4, 1, 0],
    [21, 6, 30, 14, 0, 3, 8, 15, 3, 0],
    [22, 3, 15, 28, 3, 4, 1, 3, 21, 0],
    [9, 1, 20, 1, 4, 20, 13, 2, 0, 1],
]

PAPER_NUMBERS: dict = {
    "source": SOURCE,
    "table3": {
        "metric": "top-1 accuracy %, mean and std over three trials, the authors' own data",
        "rows": [
            {"arch": "resnet34", "mean": 86.1, "std": 0.6},
            {"arch": "resnet50", "mean": 86.9, "std": 0.5},
            {"arch": "resnet101", "mean": 89.7, "std": 0.5},
            {"arch": "resnet152", "mean": 89.4, "std": 0.4},
        ],
    },
    "table4": {
        "metric": "average erroneous predictions between the two labels, mean and std",
        "rows": [
            {"a": "Ulcer", "b": "Tumor", "mean": 31.75, "std": 6.28},
            {"a": "Pigmented Macula", "b": "Erythema", "mean": 27.25, "std": 3.50},
            {"a": "Erythema", "b": "Wheal", "mean": 19.25, "std": 2.75},
            {"a": "Crust", "b": "Ulcer", "mean": 16.00, "std": 3.46},
        ],
    },
    "table5": {
        "model": "resnet50",
        "rows": [
            {"train": "Clean w/o Noise", "test": "N.A.", "top1_percent": 86.90},
            {"train": "Clean w/o Noise", "test": "S&P Corrupted", "top1_percent": 68.31},
            {"train": "Clean w/o Noise", "test": "Blurred", "top1_percent": 74.85},
            {"train": "S&P Corrupted", "test": "Clean w/o Noise", "top1_percent": 75.60},
            {"train": "S&P Corrupted", "test": "S&P Corrupted", "top1_percent": 80.92},
        ],
    },
    "corruptions": {
        "noise": "salt-and-pepper on up to 5% of the pixels, black:white 3:1",
        "blur": "5x5 Gaussian kernel (called motion blur in the paper)",
    },
    "sd198": {
        "model": "resnet50",
        "top1_percent": 32,
        "per_class_accuracy_percent": {"Acne": 70, "Alopecia": 73},
        "n_images": "100 per grouped class (Wheal 71)",
        "figure19": {
            "classes": FIGURE19_CLASSES,
            "confusion_matrix": FIGURE19,
            "rows": "actual",
            "columns": "predicted",
        },
    },
}

# Our (model name, test condition) for each Table 5 row, in the paper's order.
TABLE5_MAPPING = [
    ("clean", "clean"),
    ("clean", "sp_upto5"),
    ("clean", "blur5"),
    ("noise-trained", "clean"),
    ("noise-trained", "sp_upto5"),
]
