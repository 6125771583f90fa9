"""The paper's own numbers (Mishra et al. 2020), transcribed once for evaluation and the app.

Every value comes from the paper's text (`../shared/paper/`): Tables 3-5 and Figure 19, all
ResNet models trained on the authors' own data of East Asian volunteers. That is not our data,
so setting our numbers beside these compares trends, not exact values.
"""

from __future__ import annotations

from dermcore.labels import CLASSES

SOURCE = (
    "Mishra et al. 2020, Assessing Robustness of Deep learning Methods in Dermatological Workflow"
)

FIGURE19_CLASSES = list(CLASSES)  # Figure 19 lists the classes in our order
FIGURE19 = [  # rows = actual, columns = predicted; ResNet-50 on grouped SD-198 (100 per class, Wheal 71)
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

# Table 5, with our (model, test condition) for each row in the paper's order.
# (our model, our condition, paper's train status, paper's test status, paper's top-1 %);
# the robust rows are ours alone (the paper has no such model).
TABLE5_ROWS = [
    ("clean", "clean", "Clean w/o Noise", "N.A.", 86.90),
    ("clean", "sp_upto5", "Clean w/o Noise", "S&P Corrupted", 68.31),
    ("clean", "blur5", "Clean w/o Noise", "Blurred", 74.85),
    ("noise-trained", "clean", "S&P Corrupted", "Clean w/o Noise", 75.60),
    ("noise-trained", "sp_upto5", "S&P Corrupted", "S&P Corrupted", 80.92),
    ("robust", "clean", None, None, None),
    ("robust", "sp_upto5", None, None, None),
    ("robust", "blur5", None, None, None),
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
        "metric": "average erroneous predictions between the two labels, mean and std over the ensemble",
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
            {"train": train, "test": test, "top1_percent": top1}
            for _, _, train, test, top1 in TABLE5_ROWS
            if top1 is not None
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
        "note": "The paper's class list names Pustules, but its Table 2 and Figure 19 use Tumor.",
    },
}
