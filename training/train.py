"""Fine-tune an ImageNet backbone on set A the paper's way (Mishra et al. 2020, sec. 2.2):

    LR range test (head only)  ->  phase 1: frozen backbone, SGDR restarting every epoch
                               ->  phase 2: every layer, SGDR with cycle-length multiplication
                                   and discriminative rates over four layer groups

    python training/train.py --name clean --seeds 0 1 2
    python training/train.py --name noise-trained --seeds 0 1 2          # --train-corruption sp
    python training/train.py --name robust --seeds 0 1 2                 # --train-corruption robust
    torchrun --standalone --nproc_per_node=2 training/train.py --name clean

Each seed runs in runs/<name>/seed<k>/ (last.pt after every epoch, metrics.jsonl, lr_find.*,
loss_curves.png, and the seed's own checkpoint + card); a killed run continues bit-identically
with --resume. The seed whose validation balanced accuracy is closest to the median over seeds
is shipped to weights/<name>.safetensors + .json. Test and SD-198 numbers are reported, never
used for a choice. Timings and expected numbers: training/README.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import random
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere: `python training/train.py`
    sys.path.insert(0, str(REPO))

# The imports below need the sys.path line above:
# ruff: noqa: E402
from dermcore.checkpoint import read_card, save_checkpoint
from dermcore.labels import CLASSES, NUM_CLASSES
from dermcore.malloc import keep_freed_memory
from dermcore.models import (
    ARCHITECTURES,
    DEFAULT_ARCH,
    build_model,
    get_arch,
    get_module,
    layer_groups,
)
from dermcore.preprocessing import Preprocessing
from training import dann, dro, probe, report
from training import data as D
from training.augment import TRAIN_CORRUPTIONS, AugmentConfig, corrupt_for_training
from training.distributed import Dist, setup_distributed, teardown
from training.lr_find import LRFindResult, lr_find, write_lr_find
from training.schedules import DISCRIMINATIVE_FACTORS, discriminative_lrs, sgdr_lr

log = logging.getLogger("train")

GROUP_NAMES = ("low", "middle", "high", "head")  # dermcore.models.layer_groups, input side first
CORRUPTION_FOR_NAME = {"clean": "none", "noise-trained": "sp", "robust": "robust"}
IMPULSE_FILTER_FOR_NAME = {"robust": True}  # other names: off
LR_FIND_EPOCH = 1_000_000  # sampler/augmentation stream of the LR test, apart from real epochs
PROBE_EPOCH = 2_000_000  # corruption stream of the linear probe's views
CHECKPOINT_FORMAT = 1
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
    robust_clean_share: float = 2 / 3  # share of clean images in the robust mix (session 3: 1/3)
    impulse_filter: bool = False  # remove_impulses() before the network, in training and after
    sampling: str = "class-source"  # uniform | class | class-source (data.sampling_weights)
    train_size: int = 192  # training crop side, px; evaluation uses the preset's input size
    input_size: int | None = None  # override the preset's input (and resize) size; None = preset
    cache_short_side: int = 256  # cached training photos: shorter side reduced to this, px
    batch_size: int = 32  # per process
    workers: int = 0  # DataLoader worker processes (the CPU has 2 cores: 0 or 1)
    epochs_frozen: int = 5  # phase 1 epochs, SGDR restarting every epoch
    probe_c: float = 0.0  # > 0: fit the head as a logistic-regression probe first (probe.py)
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
    bn: str = "frozen"  # phase 2 BatchNorm: frozen (running statistics kept, see set_mode) | train
    keep: str = "last"  # last: the final epoch (session 5); best: best validation balanced accuracy
    domain_adversarial: float = 0.0  # phase 2 DANN reversal weight (dann.py); 0 = off
    group_dro: float = 0.0  # group DRO step size eta over (class, source) groups (dro.py); 0 = off
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
        <data_root>/../shift-sd198 when it exists."""
        root = D.resolve_data_root(data_root)
        shift = _repo_path(shift_root) if shift_root else root.parent / "shift-sd198"
        return cls(
            root,
            _repo_path(split_file),
            _repo_path(cache_dir),
            shift if shift.is_dir() else None,
            _repo_path(out_dir),
            _repo_path(weights_dir),
        )


@dataclass
class Data:
    root: Path
    manifest_hash: str
    split: dict  # the split file's content
    preprocessing: Preprocessing  # evaluation preset (the app's)
    images: D.DecodedImages
    val: D.EvalDataset
    test: D.EvalDataset
    shift: D.EvalDataset | None
    shift_info: dict = field(default_factory=dict)

    def rows(self, split: str) -> list[dict]:
        return self.split["splits"][split]


# --- set-up -------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    """Python, numpy and torch RNGs; deterministic kernels where torch has them."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


def resolve_device(device_arg: str, ctx: Dist) -> torch.device:
    if device_arg == "cuda" or (device_arg == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda was asked for, but torch sees no CUDA device.")
        return torch.device("cuda", ctx.local_rank)
    return torch.device("cpu")


def prepare_data(config: TrainConfig, paths: RunPaths, ctx: Dist | None = None) -> Data:
    """Manifest -> split file -> decoded-image cache -> evaluation sets (training sets are made
    per seed by make_train_loader). Rank 0 writes the split and the cache before the others read."""
    ctx = ctx or Dist()
    rows = D.read_manifest(paths.data_root)
    manifest_hash = D.manifest_sha256(paths.data_root)
    prep = config.preprocessing()
    if not ctx.main:
        ctx.barrier()
    split = D.load_or_make_split(
        paths.split_file, rows, paths.data_root, manifest_hash, config.split_seed, config.fractions
    )
    images = D.load_decoded(
        paths.data_root, rows, prep, paths.cache_dir, manifest_hash, config.cache_short_side
    )
    shift, shift_info = None, {}
    if paths.shift_root is not None:
        shift_rows = [
            r
            for r in D.read_manifest(paths.shift_root)
            if r.get("table2", "yes") == "yes" and r["label"] in CLASSES
        ]
        shift_hash = D.manifest_sha256(paths.shift_root)
        decoded = D.load_decoded(
            paths.shift_root, shift_rows, prep, paths.cache_dir, shift_hash, None
        )
        shift = D.EvalDataset(decoded, shift_rows)
        shift_info = {
            "root": D.display_path(paths.shift_root),
            "manifest_sha256": shift_hash,
            "rows": "table2 == yes",
            "images": len(shift_rows),
        }
    if ctx.main:
        ctx.barrier()
    val = D.EvalDataset(images, split["splits"]["val"])
    test = D.EvalDataset(images, split["splits"]["test"])
    return Data(paths.data_root, manifest_hash, split, prep, images, val, test, shift, shift_info)


def make_train_loader(
    config: TrainConfig, data: Data, seed: int, ctx: Dist | None = None
) -> tuple[DataLoader, D.EpochSampler]:
    ctx = ctx or Dist()
    rows = data.rows("train")
    augment = AugmentConfig(
        size=config.train_size,
        corruption=config.train_corruption,
        robust_clean_share=config.robust_clean_share,
    )
    dataset = D.TrainDataset(data.images, rows, augment, seed)
    weights = D.sampling_weights(rows, config.sampling)
    sampler = D.EpochSampler(len(rows), weights, seed, rank=ctx.rank, world_size=ctx.world_size)
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=config.workers,
        collate_fn=D.Collate(data.preprocessing),
        drop_last=len(sampler) % config.batch_size == 1,  # BatchNorm cannot train on one image
        pin_memory=torch.cuda.is_available(),
    )
    return loader, sampler


def eval_loader(dataset: D.EvalDataset, prep: Preprocessing, batch_size: int = 64) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=D.Collate(prep))


def create_model(
    config: TrainConfig, weights_path: str | Path | None = None, pretrained: bool | None = None
) -> nn.Module:
    pretrained = config.pretrained if pretrained is None else pretrained
    return build_model(config.arch, NUM_CLASSES, pretrained=pretrained, weights_path=weights_path)


def configure_phase(model: nn.Module, arch: str, phase: str) -> None:
    """Phase 1 ("frozen"): only the head has requires_grad, and the whole model stays in eval
    mode, so BatchNorm statistics do not move and dropout is off. As no backbone parameter
    requires grad, autograd records nothing there: the backbone costs one no-grad forward.
    Phase 2 ("full"): everything trains, in train mode."""
    head = {id(p) for p in get_module(model, get_arch(arch).head).parameters()}
    for p in model.parameters():
        p.requires_grad_(phase == "full" or id(p) in head)
    set_mode(model, phase)


def set_mode(model: nn.Module, phase: str, bn: str = "train") -> None:
    """Phase 1: eval mode throughout. Phase 2: train mode; with bn="frozen" the BatchNorm
    layers stay in eval mode (ImageNet running statistics, affine parameters still learn)."""
    model.train(phase == "full")
    if phase == "full" and bn == "frozen":
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def build_optimizer(
    model: nn.Module,
    config: TrainConfig,
    phase: str,
    head_lr: float,
    extra_head: Sequence[nn.Parameter] = (),
) -> torch.optim.SGD:
    """SGD with momentum; param groups carry `name` and `peak_lr` (the SGDR maximum). Phase 1
    holds the head only; phase 2 the four layer groups at head_lr x lr_factors. `extra_head`
    (the source adversary) trains at the head's rate. Weight decay applies to weights, not to
    biases and BatchNorm parameters (1-D tensors)."""
    groups = layer_groups(model, config.arch)
    groups[-1] = [*groups[-1], *extra_head]
    peaks = discriminative_lrs(head_lr, config.lr_factors)
    names = GROUP_NAMES
    if phase == "frozen":
        groups, peaks, names = groups[-1:], [head_lr], GROUP_NAMES[-1:]
    param_groups = []
    for name, params, peak in zip(names, groups, peaks, strict=True):
        for decay in (True, False):
            chosen = [p for p in params if (p.ndim > 1) == decay]
            if chosen:
                wd = config.weight_decay if decay else 0.0
                param_groups.append(
                    {
                        "params": chosen,
                        "name": name,
                        "peak_lr": peak,
                        "lr": peak,
                        "weight_decay": wd,
                    }
                )
    return torch.optim.SGD(param_groups, lr=head_lr, momentum=config.momentum)


def cycle_steps(config: TrainConfig, phase: str, steps_per_epoch: int) -> list[int]:
    """SGDR cycle lengths in optimizer steps: phase 1 restarts every epoch."""
    epochs = [1] * config.epochs_frozen if phase == "frozen" else list(config.cycles)
    return [e * steps_per_epoch for e in epochs]


def set_lrs(
    optimizer: torch.optim.Optimizer, step: int, lengths: list[int], min_ratio: float
) -> None:
    for group in optimizer.param_groups:
        group["lr"] = sgdr_lr(step, lengths, group["peak_lr"], group["peak_lr"] * min_ratio)


def group_lrs(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    return {g["name"]: g["lr"] for g in optimizer.param_groups}


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


# --- one epoch, one evaluation ------------------------------------------------------------------


@dataclass
class AdversaryPlan:
    """What train_one_epoch needs for the source adversary: int64 (N_train,) source index per
    training image, and the reversal weight at each phase-2 step (Ganin's ramp)."""

    sources: torch.Tensor
    max_weight: float
    total_steps: int

    def weight(self, step: int) -> float:
        return dann.adversary_weight(step / max(self.total_steps, 1), self.max_weight)


def train_one_epoch(
    model: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    device: torch.device,
    *,
    phase: str,
    first_step: int,
    cycle_lengths: list[int],
    min_ratio: float = 0.0,
    scaler: torch.amp.GradScaler | None = None,
    ctx: Dist | None = None,
    desc: str = "",
    sample_log: list[int] | None = None,
    adversary: AdversaryPlan | None = None,
    bn: str = "train",
    group_dro: dro.GroupDRO | None = None,
) -> dict:
    """One pass over (float (N, 3, H, W), int64 (N,) labels, int64 (N,) indices) batches; the
    rate is set before every step from the phase step. With `adversary`, `model` is a
    dann.WithAdversary and its source loss is added. With `group_dro` the class loss that trains
    is its worst-group weighted loss (the reported train_loss stays the plain mean). Returns
    {"train_loss", "train_acc", "lrs" (at the first step), "steps"[, "adversary_loss"][,
    "dro_worst_group", "dro_worst_weight"]} over all processes."""
    ctx = ctx or Dist()
    set_mode(model, phase, bn)
    autocast = device.type == "cuda"
    totals = torch.zeros(4, dtype=torch.float64)  # class loss sum, correct, images, adversary sum
    first_lrs = None
    batches = tqdm(loader, desc=desc, disable=not ctx.main, leave=False)
    for i, (inputs, targets, indices) in enumerate(batches):
        set_lrs(optimizer, first_step + i, cycle_lengths, min_ratio)
        first_lrs = first_lrs or group_lrs(optimizer)
        inputs = inputs.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        with torch.autocast(device.type, torch.float16, enabled=autocast):
            if adversary is None:
                logits, adversary_loss = model(inputs), torch.zeros((), device=device)
            else:
                unwrap(model).weight = adversary.weight(first_step + i)
                sources = adversary.sources[indices].to(device)
                logits, adversary_loss = model(inputs, targets, sources)
            class_loss = criterion(logits, targets)
            if group_dro is not None:
                trained_loss = group_dro.loss(logits, targets, indices, ctx)
            else:
                trained_loss = class_loss
        optimizer.zero_grad(set_to_none=True)
        loss = trained_loss + adversary_loss
        if scaler is not None and scaler.is_enabled():
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        n = len(targets)
        correct = float((logits.argmax(1) == targets).sum())
        step_totals = [
            float(class_loss.detach()) * n,
            correct,
            n,
            float(adversary_loss.detach()) * n,
        ]
        totals += torch.tensor(step_totals, dtype=torch.float64)
        if sample_log is not None:
            sample_log.extend(int(v) for v in indices)
    ctx.all_reduce_sum(totals)
    images = max(float(totals[2]), 1.0)
    stats = {
        "train_loss": float(totals[0]) / images,
        "train_acc": float(totals[1]) / images,
        "lrs": first_lrs or group_lrs(optimizer),
        "steps": len(loader),
    }
    if adversary is not None:
        stats["adversary_loss"] = float(totals[3]) / images
    if group_dro is not None:
        stats["dro_worst_group"], stats["dro_worst_weight"] = group_dro.worst()
    return stats


@dataclass
class EvalOutput:
    loss: float
    logits: np.ndarray  # float32 (N, C)
    labels: np.ndarray  # int64 (N,)


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: DataLoader, criterion: nn.Module, device: torch.device
) -> EvalOutput:
    """Logits of every image in the loader's order, in eval mode."""
    model.eval()
    all_logits, all_labels, loss_sum = [], [], 0.0
    for inputs, targets, _ in loader:
        with torch.autocast(device.type, torch.float16, enabled=device.type == "cuda"):
            logits = model(inputs.to(device)).float()
        loss_sum += float(criterion(logits, targets.to(device))) * len(targets)
        all_logits.append(logits.cpu().numpy())
        all_labels.append(targets.numpy())
    labels = np.concatenate(all_labels) if all_labels else np.zeros(0, np.int64)
    logits = np.concatenate(all_logits) if all_logits else np.zeros((0, NUM_CLASSES), np.float32)
    return EvalOutput(loss_sum / max(len(labels), 1), logits, labels)


# --- LR range test ------------------------------------------------------------------------------


def run_lr_find(
    model: nn.Module,
    config: TrainConfig,
    data: Data,
    device: torch.device,
    *,
    phase: str = "frozen",
    seed: int = 0,
) -> LRFindResult:
    """The range test on the model as phase `phase` would train it; model state is restored.

    Phase 1 trains only the head on a backbone frozen in eval mode, so the head's inputs do not
    depend on the rate: they are computed once for `lr_find_batches` mini-batches and the head
    alone is swept over them, cycling (the same losses as a full sweep over those batches, for
    a fraction of the forward passes). Phase 2 sweeps the whole model over fresh batches.
    """
    configure_phase(model, config.arch, phase)
    optimizer = build_optimizer(model, config, phase, 1.0)
    loader, sampler = make_train_loader(config, data, seed)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)

    def batches():  # fresh draws on every pass, in a stream apart from the training epochs
        for epoch in itertools.count(LR_FIND_EPOCH):
            sampler.set_epoch(epoch)
            yield from ((x, y) for x, y, _ in loader)

    swept, sweep_batches = model, batches()
    if phase == "frozen":
        swept = get_module(model, get_arch(config.arch).head)
        count = min(config.lr_find_batches, config.lr_find_iters)
        sweep_batches = probe.head_inputs(model, swept, sweep_batches, count, device)
    return lr_find(
        swept,
        sweep_batches,
        optimizer,
        criterion,
        start_lr=config.lr_find_start,
        end_lr=config.lr_find_end,
        num_iter=config.lr_find_iters,
        device=device,
        autocast_dtype=torch.float16 if device.type == "cuda" else None,
    )


# --- checkpoints --------------------------------------------------------------------------------


def rng_state() -> dict:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(path: Path, state: dict) -> None:
    """Atomic: a kill during the write leaves the previous last.pt intact."""
    tmp = path.with_suffix(".pt.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_state(path: Path) -> dict:
    # weights_only=False: our own file, and it holds numpy and Python RNG states.
    return torch.load(path, map_location="cpu", weights_only=False)


def write_metrics(run_dir: Path, history: list[dict]) -> None:
    """metrics.jsonl, one line per finished epoch, rewritten from the checkpoint's history so it
    always matches last.pt (a kill between the two writes cannot duplicate or drop a line)."""
    tmp = run_dir / "metrics.jsonl.tmp"
    tmp.write_text("".join(json.dumps(row) + "\n" for row in history))
    os.replace(tmp, run_dir / "metrics.jsonl")


# --- one seed -----------------------------------------------------------------------------------


@dataclass
class RunOptions:
    resume: bool = False
    weights_path: Path | None = None
    stop_after_epochs: int | None = None  # end this invocation after so many epochs (tests)
    debug_sample_log: bool = False


@dataclass
class Progress:
    """What a seed carries from epoch to epoch besides tensors; saved in last.pt."""

    lr: dict = field(default_factory=dict)  # phase 1 rate, how it was chosen, phase 2 peaks
    history: list[dict] = field(default_factory=list)  # the metrics.jsonl rows
    best: dict | None = None  # {"epoch", "val_balanced_accuracy", "model": state dict}
    timings: dict = field(
        default_factory=lambda: dict.fromkeys(("lr_find", "frozen", "full", "eval"), 0.0)
    )
    epoch_done: int = 0


@dataclass
class PhaseKit:
    phase: str
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    net: nn.Module  # what trains: the model, with the adversary in phase 2, DDP-wrapped
    adversary: AdversaryPlan | None


class SeedRun:
    """One seed in runs/<name>/seed<k>/: LR range test, both phases epoch by epoch (last.pt
    after each), then the kept epoch evaluated on val, test and SD-198 and saved with a card."""

    def __init__(
        self,
        config: TrainConfig,
        paths: RunPaths,
        data: Data,
        seed: int,
        device: torch.device,
        options: RunOptions,
        ctx: Dist,
    ):
        self.config, self.paths, self.data, self.seed = config, paths, data, seed
        self.device, self.options, self.ctx = device, options, ctx
        self.run_dir = paths.out_dir / config.name / f"seed{seed}"
        self.criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)

    def run(self) -> dict | None:
        """The seed's result ({"seed", "val", "test", "shift_sd198", ...}) on rank 0 once
        finished; None on other ranks and when stopped early."""
        state = self._open()
        card = self.run_dir / f"{self.config.name}.json"
        if state is not None and state["done"] and card.exists():
            log.info("seed %d already finished; reading its results", self.seed)
            return read_card(card).metrics["seed_result"]
        seed_everything(self.seed)
        self.model = create_model(self.config, self.options.weights_path).to(self.device)
        self.adversary = self._make_adversary()
        self.group_dro = self._make_group_dro()
        if state is not None:
            self._restore(state)
        else:
            self.progress = Progress()
            self.progress.lr = self._choose_lr()
            if self.config.probe_c > 0:
                self._fit_probe()
        self.loader, self.sampler = make_train_loader(self.config, self.data, self.seed, self.ctx)
        self.val_loader = eval_loader(self.data.val, self.data.preprocessing)
        first, total = self.progress.epoch_done, self.config.total_epochs
        stop = (
            total
            if self.options.stop_after_epochs is None
            else min(total, first + self.options.stop_after_epochs)
        )
        kit = None
        for epoch in range(first, stop):
            if kit is None or kit.phase != self.config.phase_of(epoch):
                kit = self._start_phase(
                    self.config.phase_of(epoch), state if epoch == first else None
                )
            self._run_epoch(kit, epoch)
            self.ctx.barrier()
        if stop < total:
            log.info("stopped after epoch %d of %d as asked; continue with --resume", stop, total)
            return None
        return self._finish() if self.ctx.main else None

    def _open(self) -> dict | None:
        """last.pt when resuming; refuses to overwrite a run or to mix configurations."""
        ckpt = self.run_dir / "last.pt"
        if self.ctx.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        if ckpt.exists() and not self.options.resume:
            raise SystemExit(
                f"{ckpt} exists: pass --resume to continue it, or delete {self.run_dir}."
            )
        state = load_state(ckpt) if self.options.resume and ckpt.exists() else None
        if state is not None:
            saved, now = {**ADDED_FIELDS, **state["config"]}, asdict(self.config)
            differ = sorted(k for k in saved.keys() | now.keys() if saved.get(k) != now.get(k))
            if differ:
                raise SystemExit(
                    f"{ckpt} was made with another configuration ({', '.join(differ)}); "
                    f"delete {self.run_dir} or pass the settings it was made with."
                )
        return state

    def _restore(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        if self.adversary is not None:
            self.adversary.load_state_dict(state["adversary"])
        if self.group_dro is not None:
            self.group_dro.load_state_dict(state["group_dro"])
        rng = state["rng"]  # one per rank; a different world size cannot be bit-identical anyway
        set_rng_state(rng[self.ctx.rank] if self.ctx.rank < len(rng) else rng[0])
        self.progress = Progress(**state["progress"])
        log.info("resuming seed %d after epoch %d", self.seed, self.progress.epoch_done)

    def _make_adversary(self) -> dann.SourceAdversary | None:
        if self.config.domain_adversarial <= 0:
            return None
        _, _, allowed = dann.source_table(self.data.rows("train"))
        features = self._head().in_features
        return dann.SourceAdversary(features, allowed).to(self.device)

    def _make_group_dro(self) -> dro.GroupDRO | None:
        if self.config.group_dro <= 0:
            return None
        names, groups = dro.group_table(self.data.rows("train"))
        return dro.GroupDRO(names, groups, self.config.group_dro, self.config.label_smoothing)

    def _choose_lr(self) -> dict:
        """Phase 1 head rate: the LR range test's suggestion (run on rank 0, broadcast), or --lr
        when given (the test still runs and is recorded, for Figures 1-2); phase 2 peak rates
        per layer group."""
        config, info = self.config, {}  # filled on rank 0, then broadcast
        if self.ctx.main:
            tic = time.perf_counter()
            # The test draws from a forked torch RNG (its DataLoader takes a seed from it), so
            # training is the same whether the test chose the rate or --lr did.
            cuda = [self.device] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=cuda):
                result = run_lr_find(self.model, config, self.data, self.device, seed=self.seed)
            self.progress.timings["lr_find"] = time.perf_counter() - tic
            title = f"LR range test, {config.arch} head (phase 1), seed {self.seed}"
            write_lr_find(result, self.run_dir, title=title)
            info = {
                "phase1": result.suggested_lr if config.lr is None else config.lr,
                "source": "LR range test: min loss / 10" if config.lr is None else "--lr",
                "suggested_lr": result.suggested_lr,
                "min_loss_lr": result.min_loss_lr,
                "steepest_lr": result.steepest_lr,
                "diverged": result.diverged,
            }
            log.info(
                "LR range test: suggests %.3g (smoothed minimum at %.3g), %.0f s; phase 1 rate %.3g",
                result.suggested_lr,
                result.min_loss_lr,
                self.progress.timings["lr_find"],
                info["phase1"],
            )
        info = self.ctx.broadcast(info)
        head = info["phase1"] / config.phase2_divisor
        info["phase2"] = dict(
            zip(GROUP_NAMES, discriminative_lrs(head, config.lr_factors), strict=True)
        )
        return info

    def _fit_probe(self) -> None:
        """The head as a converged logistic-regression probe on the frozen ImageNet features
        of the training images (probe.py), fitted on rank 0 and broadcast; its validation
        scores go into the card."""
        config, data, head = self.config, self.data, self._head()
        fitted = None
        if self.ctx.main:
            tic = time.perf_counter()
            rows = data.rows("train")
            train = D.EvalDataset(data.images, rows)  # the centre crops, as validation sees them
            images = data.images.eval_images[train.cache_index]
            corrupt = None
            if config.train_corruption != "none":

                def corrupt(image: np.ndarray, view: int, index: int) -> np.ndarray:
                    rng = np.random.default_rng([self.seed, PROBE_EPOCH, view, index])
                    return corrupt_for_training(
                        image, config.train_corruption, rng, config.robust_clean_share
                    )

            features = probe.head_features(
                self.model, head, images, data.preprocessing, self.device, corrupt=corrupt
            )
            weights = D.sampling_weights(rows, config.sampling)
            weight, bias, info = probe.fit_probe(
                features, train.labels, weights, config.probe_c, NUM_CLASSES
            )
            fitted = (weight, bias, info)
            self.progress.timings["probe"] = time.perf_counter() - tic
        weight, bias, info = self.ctx.broadcast(fitted)
        probe.set_linear(head, weight, bias)
        if self.ctx.main:
            val = evaluate(
                self.model, eval_loader(data.val, data.preprocessing), self.criterion, self.device
            )
            scores = report.classification_report(val.labels, val.logits)
            info["val_balanced_acc"] = scores["balanced_accuracy"]
            info["seconds"] = round(self.progress.timings["probe"], 1)
            log.info("linear probe: %s", info)
        self.progress.lr["probe"] = info

    def _head(self) -> nn.Module:
        return get_module(self.model, get_arch(self.config.arch).head)

    def _start_phase(self, phase: str, resumed: dict | None) -> PhaseKit:
        """Freeze or unfreeze; a fresh optimizer, or the checkpoint's when resuming inside this
        phase; the adversary joins in phase 2 (a frozen backbone has no style to unlearn)."""
        config, model = self.config, self.model
        configure_phase(model, config.arch, phase)
        adversary = self.adversary if phase == "full" else None
        head_lr = self.progress.lr["phase1"]
        head_lr = head_lr if phase == "frozen" else head_lr / config.phase2_divisor
        extra = list(adversary.parameters()) if adversary is not None else []
        optimizer = build_optimizer(model, config, phase, head_lr, extra)
        scaler = torch.amp.GradScaler("cuda", enabled=self.device.type == "cuda")
        if resumed is not None and resumed["phase"] == phase:
            optimizer.load_state_dict(resumed["optimizer"])
            scaler.load_state_dict(resumed["scaler"])
        net, plan = model, None
        if adversary is not None:
            net = dann.WithAdversary(model, config.arch, adversary)
            _, sources, _ = dann.source_table(self.data.rows("train"))
            total_steps = sum(cycle_steps(config, phase, len(self.loader)))
            plan = AdversaryPlan(sources, config.domain_adversarial, total_steps)
        if self.ctx.enabled:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            net = DistributedDataParallel(net, device_ids=device_ids)
        return PhaseKit(phase, optimizer, scaler, net, plan)

    def _run_epoch(self, kit: PhaseKit, epoch: int) -> None:
        """Train one epoch, validate, keep the best weights, write last.pt and metrics.jsonl."""
        config, steps = self.config, len(self.loader)
        phase_step = (epoch - config.phase_start(kit.phase)) * steps
        self.sampler.set_epoch(epoch)
        sample_log = [] if self.options.debug_sample_log else None
        tic = time.perf_counter()
        stats = train_one_epoch(
            kit.net,
            self.loader,
            kit.optimizer,
            self.criterion,
            self.device,
            phase=kit.phase,
            first_step=phase_step,
            cycle_lengths=cycle_steps(config, kit.phase, steps),
            min_ratio=config.lr_min_ratio,
            scaler=kit.scaler,
            ctx=self.ctx,
            sample_log=sample_log,
            desc=f"seed {self.seed} epoch {epoch + 1}/{config.total_epochs} {kit.phase}",
            adversary=kit.adversary,
            bn=config.bn,
            group_dro=self.group_dro,
        )
        seconds = time.perf_counter() - tic
        self.progress.timings[kit.phase] += seconds
        self.progress.epoch_done = epoch + 1
        if sample_log is not None:
            self._log_samples(epoch, sample_log)
        row = self._validate(kit.phase, epoch, stats, seconds) if self.ctx.main else None
        rng = self.ctx.gather(rng_state())  # after validation: it draws from torch's RNG on rank 0
        if not self.ctx.main:
            return
        self.progress.history.append(row)
        adversary = self.adversary.state_dict() if self.adversary is not None else None
        save_state(
            self.run_dir / "last.pt",
            {
                "format": CHECKPOINT_FORMAT,
                "config": asdict(config),
                "seed": self.seed,
                "phase": kit.phase,
                "done": epoch + 1 == config.total_epochs,
                "model": self.model.state_dict(),
                "adversary": adversary,
                "group_dro": self.group_dro.state_dict() if self.group_dro is not None else None,
                "optimizer": kit.optimizer.state_dict(),
                "scaler": kit.scaler.state_dict(),
                "scheduler": {
                    "phase": kit.phase,
                    "phase_step": phase_step + steps,
                    "steps_per_epoch": steps,
                },
                "sampler": self.sampler.state_dict(),
                "rng": rng,
                "progress": asdict(self.progress),
            },
        )
        write_metrics(self.run_dir, self.progress.history)

    def _validate(self, phase: str, epoch: int, stats: dict, seconds: float) -> dict:
        """The epoch's metrics.jsonl row; remembers the weights when they are the best so far."""
        tic = time.perf_counter()
        val = evaluate(self.model, self.val_loader, self.criterion, self.device)
        scores = report.classification_report(val.labels, val.logits)
        self.progress.timings["eval"] += time.perf_counter() - tic
        # Every epoch's validation logits (~15 kB), so selection rules can be studied afterwards.
        np.savez_compressed(
            self.run_dir / f"val_logits_e{epoch + 1}.npz", logits=val.logits, labels=val.labels
        )
        row = {
            "epoch": epoch + 1,
            "phase": phase,
            "train_loss": round(stats["train_loss"], 6),
            "val_loss": round(val.loss, 6),
            "train_acc": round(stats["train_acc"], 6),
            "val_acc": scores["accuracy"],
            "val_balanced_acc": scores["balanced_accuracy"],
            "lrs": {k: float(f"{v:.6g}") for k, v in stats["lrs"].items()},
            "seconds": round(seconds, 2),
        }
        if "adversary_loss" in stats:
            row["adversary_loss"] = round(stats["adversary_loss"], 6)
        if "dro_worst_group" in stats:
            row["dro_worst_group"] = stats["dro_worst_group"]
            row["dro_worst_weight"] = round(stats["dro_worst_weight"], 6)
        log.info(
            "seed %d epoch %d/%d %s: %s",
            self.seed,
            epoch + 1,
            self.config.total_epochs,
            phase,
            {k: v for k, v in row.items() if k not in ("epoch", "phase")},
        )
        balanced, best = scores["balanced_accuracy"] or 0.0, self.progress.best
        if best is None or self.config.keep == "last" or balanced > best["val_balanced_accuracy"]:
            weights = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
            self.progress.best = {
                "epoch": epoch + 1,
                "val_balanced_accuracy": balanced,
                "model": weights,
            }
        return row

    def _log_samples(self, epoch: int, indices: list[int]) -> None:
        """Debug: rank 0 appends every rank's image indices of the epoch to samples.jsonl."""
        gathered = self.ctx.gather(indices)
        if self.ctx.main:
            with open(self.run_dir / "samples.jsonl", "a") as f:
                for rank, rank_indices in enumerate(gathered):
                    f.write(
                        json.dumps({"epoch": epoch, "rank": rank, "indices": rank_indices}) + "\n"
                    )

    def _finish(self) -> dict:
        """Evaluate the kept epoch's weights on val, test and SD-198; write the seed's card."""
        progress, data = self.progress, self.data
        self.model.load_state_dict(progress.best["model"])
        tic = time.perf_counter()
        result = {"seed": self.seed, "kept_epoch": progress.best["epoch"], "lr": progress.lr}
        for name, dataset in (("val", data.val), ("test", data.test), ("shift_sd198", data.shift)):
            if dataset is not None:
                loader = eval_loader(dataset, data.preprocessing)
                out = evaluate(self.model, loader, self.criterion, self.device)
                result[name] = report.classification_report(out.labels, out.logits)
        progress.timings["eval"] += time.perf_counter() - tic
        result["seconds"] = {k: round(v, 1) for k, v in progress.timings.items()}
        result["seconds"]["total"] = round(sum(progress.timings.values()), 1)
        title = f"{self.config.name}, {self.config.arch}, seed {self.seed}"
        report.plot_loss_curves(self.run_dir, progress.history, title)
        card = report.make_card(
            self.config,
            data,
            self.paths.split_file,
            [result],
            result,
            self.run_dir,
            self.device,
            self.ctx,
        )
        save_checkpoint(self.model, card, self.run_dir)
        return result


def ship(
    config: TrainConfig,
    paths: RunPaths,
    data: Data,
    results: list[dict],
    device: torch.device,
    ctx: Dist,
) -> Path:
    """The shipped seed's weights into --weights-dir, with a card over every seed."""
    from safetensors.torch import load_file

    shipped = report.pick_shipped(results)
    run_dir = paths.out_dir / config.name / f"seed{shipped['seed']}"
    model = create_model(config, pretrained=False)
    model.load_state_dict(load_file(str(run_dir / f"{config.name}.safetensors")))
    card = report.make_card(config, data, paths.split_file, results, shipped, run_dir, device, ctx)
    return save_checkpoint(model, card, paths.weights_dir)


# --- command line -------------------------------------------------------------------------------


def get_args_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = p.add_argument
    add(
        "--data-root",
        type=Path,
        default=None,
        help="set A folder with manifest.csv; relative paths are taken from the repository root (default: ../shared/data/train)",
    )
    add(
        "--shift-root",
        type=Path,
        default=None,
        help="external SD-198 set, reported only (default: <data-root>/../shift-sd198 when it exists)",
    )
    add(
        "--arch",
        default=d.arch,
        choices=sorted(ARCHITECTURES),
        help=f"backbone (default: {d.arch})",
    )
    add(
        "--weights-path",
        type=Path,
        default=None,
        help="local ImageNet weights file for the backbone (default: the offline package, or the hub)",
    )
    add(
        "--no-pretrained",
        action="store_true",
        help="random initial weights, for tests (default: ImageNet weights)",
    )
    add(
        "--name",
        default=d.name,
        help=f"model name, e.g. clean, noise-trained, robust (default: {d.name})",
    )
    add(
        "--train-corruption",
        choices=TRAIN_CORRUPTIONS,
        default=None,
        help="none | sp | robust (default: from --name: clean=none, noise-trained=sp, robust=robust, other names none)",
    )
    add(
        "--robust-clean-share",
        type=float,
        default=d.robust_clean_share,
        metavar="FRACTION",
        help="share of clean images in the robust mix; the rest is half noisy, half other corruptions (default: 2/3)",
    )
    add(
        "--impulse-filter",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="replace pure black/white pixels by their 3x3 median before the network, in training and in the card (default: from --name: on for robust, else off)",
    )
    add(
        "--sampling",
        choices=D.SAMPLING_MODES,
        default=d.sampling,
        help=f"how training images are drawn (default: {d.sampling})",
    )
    add("--seed", type=int, default=0, help="training seed (default: 0)")
    add(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        help="several trials, e.g. 0 1 2: mean/std reported, the median-validation seed shipped (default: --seed)",
    )
    add(
        "--split-seed",
        type=int,
        default=d.split_seed,
        help=f"seed of the grouped split when it is made (default: {d.split_seed})",
    )
    add(
        "--split-file",
        type=Path,
        default=Path("weights/split.json"),
        help="split JSON, made when missing (default: weights/split.json)",
    )
    add(
        "--epochs-frozen",
        type=int,
        default=d.epochs_frozen,
        help=f"phase 1 epochs (default: {d.epochs_frozen})",
    )
    add(
        "--cycles",
        type=int,
        nargs="+",
        default=list(d.cycles),
        help="phase 2 SGDR cycle lengths in epochs (default: 1 2; the paper's longer schedule: 1 2 4)",
    )
    add(
        "--batch-size",
        type=int,
        default=d.batch_size,
        help=f"images per step and process (default: {d.batch_size})",
    )
    add(
        "--lr",
        type=float,
        default=None,
        help="phase 1 head rate; phase 2: head lr/3, lower groups lr/9, lr/30, lr/300 (default: from the LR range test)",
    )
    add(
        "--phase2-divisor",
        type=float,
        default=d.phase2_divisor,
        help=f"phase 2 head rate = phase 1 rate / this (default: {d.phase2_divisor:g})",
    )
    add(
        "--lr-find-iters",
        type=int,
        default=d.lr_find_iters,
        help=f"mini-batches in the LR range test (default: {d.lr_find_iters})",
    )
    add(
        "--weight-decay",
        type=float,
        default=d.weight_decay,
        help=f"SGD weight decay, not on biases and BatchNorm (default: {d.weight_decay})",
    )
    add(
        "--label-smoothing",
        type=float,
        default=d.label_smoothing,
        help=f"(default: {d.label_smoothing})",
    )
    add(
        "--keep",
        choices=("best", "last"),
        default=d.keep,
        help=f"which epoch a seed keeps: best validation balanced accuracy, or the last (default: {d.keep})",
    )
    add(
        "--bn",
        choices=("train", "frozen"),
        default=d.bn,
        help="phase 2 BatchNorm: train (batch statistics; running statistics adapt to set A) or "
        f"frozen (ImageNet statistics kept, continuous with phase 1) (default: {d.bn})",
    )
    add(
        "--domain-adversarial",
        type=float,
        default=d.domain_adversarial,
        metavar="WEIGHT",
        help="phase 2 DANN: a class-conditional source adversary behind gradient reversal with this maximum weight, e.g. 0.3 (default: 0 = off)",
    )
    add(
        "--group-dro",
        type=float,
        default=d.group_dro,
        metavar="ETA",
        help="group DRO over (class, source) groups with this step size for the group weights, e.g. 0.01 (default: 0 = off)",
    )
    add(
        "--probe-c",
        type=float,
        default=d.probe_c,
        metavar="C",
        help="before phase 1, fit the head as a logistic-regression probe on frozen features (LP-FT; probe.py) with this inverse regularisation, e.g. 0.01; with --epochs-frozen 0 phase 2 starts from it (default: 0 = off)",
    )
    add(
        "--train-size",
        type=int,
        default=d.train_size,
        help=f"training crop side in px; evaluation uses the preset's size (default: {d.train_size})",
    )
    add(
        "--input-size",
        type=int,
        default=None,
        help="override the preset's evaluation input size, for tests (default: the preset's 224)",
    )
    add(
        "--workers",
        type=int,
        default=d.workers,
        help=f"DataLoader worker processes (default: {d.workers}; 8 on a GPU machine)",
    )
    add(
        "--cache-dir",
        type=Path,
        default=Path("runs/cache"),
        help="decoded-image cache (default: runs/cache)",
    )
    add(
        "--out-dir",
        type=Path,
        default=Path("runs"),
        help="run folders are <out-dir>/<name>/seed<k>/ (default: runs)",
    )
    add(
        "--weights-dir",
        type=Path,
        default=Path("weights"),
        help="where the shipped checkpoint and card go (default: weights)",
    )
    add(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="auto: CUDA with fp16 autocast when available, else CPU fp32 (default: auto)",
    )
    add(
        "--resume",
        action="store_true",
        help="continue the runs in their folders from last.pt (default: refuse to overwrite a run)",
    )
    add(
        "--stop-after-epochs",
        type=int,
        default=None,
        help="end this invocation after so many epochs, as if killed; for tests (default: run to the end)",
    )
    add(
        "--debug-sample-log",
        action="store_true",
        help="write every rank's image indices per epoch to samples.jsonl (default: off)",
    )
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        name=args.name,
        arch=args.arch,
        pretrained=not args.no_pretrained,
        train_corruption=args.train_corruption or CORRUPTION_FOR_NAME.get(args.name, "none"),
        robust_clean_share=args.robust_clean_share,
        impulse_filter=(
            IMPULSE_FILTER_FOR_NAME.get(args.name, False)
            if args.impulse_filter is None
            else args.impulse_filter
        ),
        sampling=args.sampling,
        train_size=args.train_size,
        input_size=args.input_size,
        batch_size=args.batch_size,
        workers=args.workers,
        epochs_frozen=args.epochs_frozen,
        cycles=tuple(args.cycles),
        lr=args.lr,
        phase2_divisor=args.phase2_divisor,
        weight_decay=args.weight_decay,
        label_smoothing=args.label_smoothing,
        lr_find_iters=args.lr_find_iters,
        keep=args.keep,
        bn=args.bn,
        domain_adversarial=args.domain_adversarial,
        group_dro=args.group_dro,
        probe_c=args.probe_c,
        split_seed=args.split_seed,
    )


def main(args: argparse.Namespace) -> Path | None:
    """Train every seed and ship the median-validation seed; returns the shipped card's path
    (None on ranks other than 0 and when stopped early)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    keep_freed_memory()  # ~2x faster steps on CPU: no mmap/munmap per activation (malloc.py)
    config = config_from_args(args)
    ctx = setup_distributed(args.device)
    device = resolve_device(args.device, ctx)
    paths = RunPaths.from_args(
        args.data_root,
        args.split_file,
        args.cache_dir,
        args.shift_root,
        args.out_dir,
        args.weights_dir,
    )
    options = RunOptions(
        args.resume, args.weights_path, args.stop_after_epochs, args.debug_sample_log
    )
    seeds = args.seeds if args.seeds is not None else [args.seed]
    if ctx.main:
        log.info("config %s on %s, world size %d", asdict(config), device, ctx.world_size)
    try:
        data = prepare_data(config, paths, ctx)
        results = [SeedRun(config, paths, data, s, device, options, ctx).run() for s in seeds]
        if not ctx.main or any(r is None for r in results):
            return None
        card_path = ship(config, paths, data, results, device, ctx)
        shipped = report.pick_shipped(results)["seed"]
        print(report.summary_table(config, results, shipped), flush=True)
        log.info("shipped seed %d to %s", shipped, card_path)
        return card_path
    finally:
        teardown(ctx)


def _repo_path(path: str | Path) -> Path:
    path = Path(path)
    return path if path.is_absolute() else REPO / path


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    main(get_args_parser().parse_args())
