"""Group DRO (Sagawa et al. 2020, "Distributionally Robust Neural Networks"), one of issue 3's
levers against photo style: minimise the loss of the worst group instead of the average.

A group is a (class, source) pair of set A, so a source whose photos the model finds hard gets
more weight, and a class cannot be learnt from its easiest source alone. The group weights q
live on the simplex and follow exponentiated gradient ascent on the groups' losses:

    q_g <- q_g * exp(eta * L_g)   for every group g in the batch (L_g: its mean loss),  q <- q / sum(q)
    loss = sum_g q_g L_g / sum_g q_g   over the groups in the batch

Normalising over the groups present keeps the loss on the scale of cross-entropy with batches
of 32 that never hold all ~25 groups. Under DistributedDataParallel the group losses are summed
over processes before q moves, so every process holds the same q.

`python training/train.py --group-dro 0.01` turns it on. Off by default: it cost 6 points on
validation and did not move SD-198 (training/experiments/README.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F

from training.distributed import Dist


def group_table(rows: Sequence[dict]) -> tuple[list[str], torch.Tensor]:
    """(group names "class / source", int64 (N,) group index per row), names sorted."""
    names = sorted({f"{r['label']} / {r['source']}" for r in rows})
    index = {name: i for i, name in enumerate(names)}
    return names, torch.tensor([index[f"{r['label']} / {r['source']}"] for r in rows])


class GroupDRO:
    """The group weights and the robust loss; `groups` maps a training-set index to its group."""

    def __init__(
        self, names: Sequence[str], groups: torch.Tensor, eta: float, label_smoothing: float = 0.0
    ) -> None:
        if not eta > 0:
            raise ValueError(f"eta must be positive, got {eta}")
        self.names = list(names)
        self.groups = groups.to(torch.int64)
        self.eta = float(eta)
        self.label_smoothing = label_smoothing
        self.q = torch.full((len(self.names),), 1 / len(self.names), dtype=torch.float64)

    def loss(
        self,
        logits: torch.Tensor,
        targets: torch.Tensor,
        indices: torch.Tensor,
        ctx: Dist | None = None,
    ) -> torch.Tensor:
        """The q-weighted mean of the batch's group losses; moves q first (Sagawa's order)."""
        per_image = F.cross_entropy(
            logits.float(), targets, reduction="none", label_smoothing=self.label_smoothing
        )
        group = self.groups[indices.cpu()].to(per_image.device)
        n = len(self.names)
        sums = torch.zeros(n, device=per_image.device).index_add(0, group, per_image)
        counts = torch.bincount(group, minlength=n).to(per_image.dtype)
        present = counts > 0
        means = sums[present] / counts[present]
        # q moves on the losses of every process's batch (detached: q is not a parameter).
        stats = torch.stack([sums.detach(), counts]).double()
        if ctx is not None:
            ctx.all_reduce_sum(stats)
        seen = stats[1] > 0
        self.q[seen.cpu()] *= torch.exp(self.eta * stats[0, seen] / stats[1, seen]).cpu()
        self.q /= self.q.sum()
        weights = self.q.to(per_image.device, per_image.dtype)[present]
        return (weights * means).sum() / weights.sum()

    def worst(self) -> tuple[str, float]:
        """The group with the largest weight, and that weight."""
        i = int(self.q.argmax())
        return self.names[i], float(self.q[i])

    def state_dict(self) -> dict:
        return {"names": self.names, "q": self.q.tolist()}

    def load_state_dict(self, state: dict) -> None:
        if state["names"] != self.names:
            raise ValueError("the saved group DRO weights are for other groups")
        self.q = torch.tensor(state["q"], dtype=torch.float64)
