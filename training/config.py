"""What decides a training run: `TrainConfig` (saved in last.pt and in every model card) and
`RunPaths` (where the data, the split, the cache, the runs and the shipped weights live).

From training/ it imports only data.py and schedules.py, so every script and helper can read
the configuration without importing the training script.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dermcore.models import DEFAULT_ARCH, get_arch
from dermcore.preprocessing import Preprocessing
from training import data as D
from training.schedules import DISCRIMINATIVE_FACTORS

REPO = Path(__file__).resolve().parents[1]

GROUP_NAMES = ("low", "middle", "high", "head")  # dermcore.models.layer_groups, input side first
CORRUPTION_FOR_NAME = {"clean": "none", "noise-trained": "sp", "robust": "robust"}
IMPULSE_FILTER_FOR_NAME = {"robust": True}  # other names: off
# Config fields added after runs were made with the code as it was: the value those runs used.
ADDED_FIELDS = {
    "robust_clean_share": 1 / 3,
    "impulse_filter": False,
    "group_dro": 0.0,
    "probe_c": 0.0,
}


@dataclass
class TrainConfig:
    """Everything that decides the weights; saved in last.pt and in the model card."""

    name: str = "clean"  # model id: weights/<name>.safetensors, runs/<name>/
    arch: str = DEFAULT_ARCH  # key of dermcore.models.ARCHITECTURES
    pretrained: bool = True  # ImageNet backbone (False only for tests)
    train_corruption: str = "none"  # none | sp (paper's noise-trained) | robust (our mix)
    robust_clean_share: float = 2 / 3  # clean share of the robust mix (1/3 without the filter)
    impulse_filter: bool = False  # remove_impulses() before the network, in training and after
    sampling: str = "class-source"  # uniform | class | class-source (data.sampling_weights)
    train_size: int = 192  # training crop side, px; evaluation uses the preset's input size
    input_size: int | None = None  # override the preset's input (and resize) size; None = preset
    cache_short_side: int = 256  # cached training photos: shorter side reduced to this, px
    batch_size: int = 32  # per process
    workers: int = 0  # DataLoader worker processes (the CPU has 2 cores: 0 or 1)
    epochs_frozen: int = 5  # phase 1 epochs, SGDR restarting every epoch
    probe_c: float = 0.0  # > 0: fit the head as a logistic-regression probe first (LP-FT)
    cycles: tuple[int, ...] = (1, 2)  # phase 2 SGDR cycle lengths in epochs (paper: 1 2 4 ...)
    lr: float | None = None  # phase 1 head rate; None = the LR range test's suggestion
    phase2_divisor: float = 10.0  # phase 2 head rate = phase 1 rate / this
    lr_factors: tuple[float, ...] = DISCRIMINATIVE_FACTORS  # phase 2 group rate / head rate
    lr_min_ratio: float = 0.0  # SGDR floor as a fraction of each group's peak rate
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 1e-4  # on weights only, not on biases or BatchNorm parameters
    label_smoothing: float = 0.1
    lr_find_start: float = 1e-5  # LR range test sweep
    lr_find_end: float = 10.0
    lr_find_iters: int = 100
    lr_find_batches: int = 30  # distinct mini-batches of the phase 1 sweep (features cached)
    bn: str = (
        "frozen"  # phase 2 BatchNorm: frozen (running statistics kept, engine.set_mode) | train
    )
    keep: str = "last"  # last: the final epoch; best: best validation balanced accuracy
    domain_adversarial: float = 0.0  # phase 2 DANN reversal weight; 0 = off
    group_dro: float = 0.0  # group DRO step size over (class, source) groups; 0 = off
    split_seed: int = 0  # seeds the grouped split (shared by every model and seed)
    fractions: tuple[float, float, float] = D.DEFAULT_FRACTIONS  # train, val, test

    @property
    def total_epochs(self) -> int:
        return self.epochs_frozen + sum(self.cycles)

    def phase_of(self, epoch: int) -> str:
        return "frozen" if epoch < self.epochs_frozen else "full"

    def phase_start(self, phase: str) -> int:
        return 0 if phase == "frozen" else self.epochs_frozen

    def preprocessing(self) -> Preprocessing:
        preset = get_arch(self.arch).preprocessing
        size = preset.input_size if self.input_size is None else self.input_size
        resize = preset.resize_size if self.input_size is None else self.input_size
        return Preprocessing(size, resize, preset.mean, preset.std, self.impulse_filter)


@dataclass
class RunPaths:
    data_root: Path
    split_file: Path
    cache_dir: Path
    shift_root: Path | None = None  # external SD-198 set; None when absent
    out_dir: Path = REPO / "runs"
    weights_dir: Path = REPO / "weights"
    # every data root, data_root first, and each as typed on the command line (for the card);
    # empty: data_root alone, as given
    data_roots: tuple[Path, ...] = ()
    data_roots_given: tuple[str, ...] = ()

    @property
    def roots(self) -> tuple[Path, ...]:
        return self.data_roots or (self.data_root,)

    @property
    def roots_given(self) -> tuple[str, ...]:
        return self.data_roots_given or tuple(D.display_path(r) for r in self.roots)

    @classmethod
    def from_args(
        cls,
        data_root,
        split_file,
        cache_dir,
        shift_root=None,
        out_dir="runs",
        weights_dir="weights",
    ) -> RunPaths:
        """Relative paths are taken from the repository root; the SD-198 set defaults to
        <first data root>/../shift-sd198 when it exists. `data_root` is one folder, a list of
        folders (ours first), or None for ../shared/data/train."""
        given = list(data_root) if isinstance(data_root, list | tuple) else [data_root]
        roots = tuple(D.resolve_data_root(r) for r in given)
        shift = _repo_path(shift_root) if shift_root else roots[0].parent / "shift-sd198"
        return cls(
            roots[0],
            _repo_path(split_file),
            _repo_path(cache_dir),
            shift if shift.is_dir() else None,
            _repo_path(out_dir),
            _repo_path(weights_dir),
            roots,
            tuple(
                D.display_path(r) if g is None else str(g)
                for r, g in zip(roots, given, strict=True)
            ),
        )


def _repo_path(path: str | Path) -> Path:
    path = Path(path)
    return path if path.is_absolute() else REPO / path
