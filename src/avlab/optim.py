"""Optimizers and LR schedules, configured as Hydra partials and completed by the module."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_steps: int | float = 0.05,
    min_lr_ratio: float = 0.01,
) -> LambdaLR:
    """Linear warmup, then cosine decay to `min_lr_ratio` x the base LR at `total_steps`.

    `warmup_steps` below 1 is a fraction of `total_steps`.
    """
    warmup = int(warmup_steps * total_steps) if warmup_steps < 1 else int(warmup_steps)
    total = max(int(total_steps), warmup + 1)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


def decay_groups(module: torch.nn.Module) -> list[dict[str, Any]]:
    """Parameter groups with weight decay on weight matrices and kernels only.

    Scalars and vectors (biases, norm scales, a learnable temperature, uncertainty log-variances)
    get none: decaying a log-temperature or log-variance pulls it towards 0 for no reason, and
    decaying biases and norm scales only fights the normalisation.
    """
    decay, no_decay = [], []
    for param in module.parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def configure_optimizers(
    params: Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]],
    optimizer: Callable[..., torch.optim.Optimizer],
    scheduler: Callable[..., Any] | None,
    total_steps: int,
    interval: str = "step",
    monitor: str = "val/loss",
) -> dict[str, Any]:
    """Build Lightning's optimizer config from partials; schedules that take `total_steps` get it."""
    opt = optimizer(params=params)
    if scheduler is None:
        return {"optimizer": opt}
    if _accepts(scheduler, "total_steps"):
        sched = scheduler(optimizer=opt, total_steps=total_steps)
    else:
        sched = scheduler(optimizer=opt)
    return {
        "optimizer": opt,
        "lr_scheduler": {"scheduler": sched, "interval": interval, "monitor": monitor},
    }


def _accepts(partial_fn: Callable[..., Any], name: str) -> bool:
    """Whether a (partial) callable takes a keyword argument `name`."""
    import inspect

    func = getattr(partial_fn, "func", partial_fn)
    try:
        return name in inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False


def module_optimizers(module: Any, params: Iterable[Any]) -> dict[str, Any]:
    """Lightning's optimizer config for a task module built by avlab.run.build_module.

    The module holds the optimizer and scheduler partials (`optimizer_factory`,
    `scheduler_factory`) and `scheduler_interval`; schedules run over the trainer's estimated
    optimizer steps.
    """
    return configure_optimizers(
        params,
        module.optimizer_factory,
        module.scheduler_factory,
        total_steps=module.trainer.estimated_stepping_batches,
        interval=module.scheduler_interval,
    )
