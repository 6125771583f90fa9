"""One seed of a training run, epoch by epoch, in runs/<name>/seed<k>/:

    LR range test (head only)  ->  phase 1 epochs  ->  phase 2 epochs  ->  the kept epoch on
                                   (last.pt, metrics.jsonl after each)     val, test and SD-198

`SeedRun(config, paths, data, seed, device, options, ctx).run()` returns the seed's result for
the model card; train.py runs one per seed and ships the median-validation seed. A killed run
continues bit-identically from last.pt with `RunOptions(resume=True)`.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from dermcore.checkpoint import read_card, save_checkpoint
from dermcore.models import get_arch, get_module
from training import report
from training.checkpointing import (
    CHECKPOINT_FORMAT,
    load_state,
    rng_state,
    save_state,
    set_rng_state,
    write_metrics,
)
from training.config import ADDED_FIELDS, GROUP_NAMES, RunPaths, TrainConfig
from training.distributed import Dist
from training.engine import (
    build_optimizer,
    configure_phase,
    create_model,
    cycle_steps,
    evaluate,
    seed_everything,
    train_one_epoch,
)
from training.experiments import dann, dro, probe
from training.loaders import Data, eval_loader, make_train_loader
from training.lr_find import run_lr_find, write_lr_find
from training.schedules import discriminative_lrs

log = logging.getLogger("train")


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
    adversary: dann.AdversaryPlan | None


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
        of the training images (experiments/probe.py), fitted on rank 0 and broadcast; its
        validation scores go into the card."""
        config, data, head = self.config, self.data, self._head()
        fitted = None
        if self.ctx.main:
            tic = time.perf_counter()
            fitted = probe.fit_training_probe(
                self.model, head, config, data, self.seed, self.device
            )
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
            plan = dann.AdversaryPlan(sources, config.domain_adversarial, total_steps)
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
