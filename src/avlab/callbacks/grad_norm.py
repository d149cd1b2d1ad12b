"""GradNormMonitor: log the total gradient norm every few optimizer steps."""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor


def total_grad_norm(grads: list[Tensor]) -> Tensor:
    """Returns the 2-norm of all gradients viewed as one vector, in float32, with no host sync."""
    # float32 accumulation: a sum of squares of fp16 gradients overflows long before they do.
    as_fp32 = [g.detach() if g.dtype == torch.float32 else g.detach().float() for g in grads]
    return torch.nn.utils.get_total_norm(as_fp32, norm_type=2.0)


class GradNormMonitor(L.Callback):
    """Logs `train/grad_norm`, the total gradient 2-norm, every `log_every_n_steps` optimizer steps.

    Measured in on_before_optimizer_step: gradients are unscaled there (fp16 AMP) and not yet
    clipped. A step that NanGuard has already dropped has no gradients and is not logged.
    """

    def __init__(self, log_every_n_steps: int = 25) -> None:
        if log_every_n_steps < 1:
            raise ValueError(f"log_every_n_steps must be >= 1, got {log_every_n_steps}")
        self.log_every_n_steps = log_every_n_steps

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        """Logs the norm on every log_every_n_steps-th step."""
        if trainer.global_step % self.log_every_n_steps:
            return
        grads = [
            p.grad
            for group in optimizer.param_groups
            for p in group["params"]
            if p.grad is not None
        ]
        if grads:
            pl_module.log("train/grad_norm", total_grad_norm(grads), on_step=True, on_epoch=False)
