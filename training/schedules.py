"""Learning-rate schedules as pure functions of progress (fastai `sched_cos`, nanoGPT `get_lr`).

Nothing here holds state: the training loop asks for the rate at a global step and writes it into
the optimizer's param groups, so a resumed run only needs the step number to be back on schedule.

SGDR (Loshchilov & Hutter 2017) anneals each cycle with a half cosine from `lr_max` down to
`lr_min` and restarts; with cycle-length multiplication each cycle is `cycle_mult` times longer
than the one before (1, 2, 4 ... epochs for the paper's Figure 4).

The paper prints its Eq. 1 as  v_t = 1/2 (1 + v cos(t pi / T)) + eps  with v the initial rate.
Read literally that is a typo: v multiplies only the cosine, so the rate would start at
(1 + v)/2 ~ 0.5 whatever v is and never reach v. We use the standard SGDR form
    lr(t) = lr_min + 1/2 (lr_max - lr_min) (1 + cos(pi t_cur / T_i)),
where lr_min plays the role of eps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from itertools import accumulate

# Phase-2 rates of the four layer groups (input side -> head) as fractions of the head's rate:
# low-level filters move least, so the pretrained features survive (Howard & Ruder 2018).
DISCRIMINATIVE_FACTORS: tuple[float, float, float, float] = (1 / 100, 1 / 10, 1 / 3, 1.0)


def cosine_anneal(progress: float, lr_max: float, lr_min: float = 0.0) -> float:
    """Half-cosine from lr_max (progress 0) to lr_min (progress 1); progress is clipped to [0, 1]."""
    progress = min(max(progress, 0.0), 1.0)
    return lr_min + 0.5 * (lr_max - lr_min) * (1.0 + math.cos(math.pi * progress))


def cycle_lengths(num_cycles: int, first: int = 1, cycle_mult: int = 2) -> list[int]:
    """Cycle lengths in epochs: first, first*mult, first*mult^2 ... (1, 2, 4 for the defaults)."""
    if num_cycles < 1 or first < 1 or cycle_mult < 1:
        raise ValueError(
            f"need num_cycles, first, cycle_mult >= 1, got {num_cycles, first, cycle_mult}"
        )
    return [first * cycle_mult**i for i in range(num_cycles)]


def cycle_starts(lengths: Sequence[int]) -> list[int]:
    """Where each cycle begins, in the lengths' unit: [0, 1, 3, 7] for lengths [1, 2, 4, 8]."""
    return [0, *accumulate(lengths)][:-1]


def sgdr_lr(step: int, lengths: Sequence[int], lr_max: float, lr_min: float = 0.0) -> float:
    """The SGDR rate at `step` (0-based) for cycles of `lengths` steps (steps = epochs x batches).

    lr_max at the first step of every cycle, the mean of lr_max and lr_min half-way through it;
    after the last cycle the rate stays at lr_min.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if not lengths or min(lengths) < 1:
        raise ValueError(f"cycle lengths must be >= 1 step, got {list(lengths)}")
    for start, length in zip(cycle_starts(lengths), lengths, strict=True):
        if step < start + length:
            return cosine_anneal((step - start) / length, lr_max, lr_min)
    return lr_min


def sgdr_lambda(lengths: Sequence[int], min_ratio: float = 0.0) -> Callable[[int], float]:
    """A `torch.optim.lr_scheduler.LambdaLR` multiplier: base lr x sgdr_lr(step, lengths, 1, min_ratio)."""
    return lambda step: sgdr_lr(step, lengths, 1.0, min_ratio)


def discriminative_lrs(
    head_lr: float, factors: Sequence[float] = DISCRIMINATIVE_FACTORS
) -> list[float]:
    """One peak rate per layer group, input side first: head_lr x factor."""
    return [head_lr * f for f in factors]


def exponential_sweep(step: int, num_steps: int, start_lr: float, end_lr: float) -> float:
    """The LR range test's rate: start_lr at step 0, end_lr at step num_steps - 1, geometric between."""
    if num_steps < 2 or not 0 < start_lr < end_lr:
        raise ValueError(
            f"need num_steps >= 2 and 0 < start_lr < end_lr, got {num_steps, start_lr, end_lr}"
        )
    return start_lr * (end_lr / start_lr) ** (step / (num_steps - 1))
