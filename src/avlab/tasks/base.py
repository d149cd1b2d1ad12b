"""What every gradient-trained task's LightningModule shares: the network, the loss and the
optimizer and schedule that `avlab.run.build_module` builds from the config."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

import lightning as L
import torch
from torch import nn

from avlab.data_order import load_pending_loader_states
from avlab.optim import decay_groups, module_optimizers
from avlab.step_logging import step_values_read


class TaskModule(L.LightningModule):
    """Holds `net`, `criterion` (the loss, None where the task computes its own) and the
    optimizer / scheduler partials; `configure_optimizers` builds them over
    `parameter_groups()`, which by default decays weight matrices only (`decay_groups`).
    A task with other groups (an encoder learning rate, undecayed loss terms) overrides it."""

    def __init__(
        self,
        net: nn.Module,
        loss: nn.Module | None,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        scheduler_interval: str = "step",
    ) -> None:
        super().__init__()
        self.net = net
        self.criterion = loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_interval = scheduler_interval

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The optimizer's parameter groups."""
        return decay_groups(self)

    def configure_optimizers(self) -> dict[str, Any]:
        return module_optimizers(self, self.parameter_groups())

    def log_step_values(
        self,
        values: Mapping[str, torch.Tensor | float],
        batch_size: int,
        prog_bar: Collection[str] = (),
    ) -> None:
        """Logs training-step values (on_step only) at the steps where something reads them
        (`step_values_read`): the same values reach the loggers, checkpoints and callback_metrics,
        without Lightning's per-call cost on the other steps."""
        if self._trainer is not None and not step_values_read(self._trainer):
            return
        for name, value in values.items():
            self.log(
                name,
                value,
                prog_bar=name in prog_bar,
                batch_size=batch_size,
                on_step=True,
                on_epoch=False,
            )

    def on_train_start(self) -> None:
        """A resumed run goes on with the batches it had not trained (avlab.data_order)."""
        load_pending_loader_states(self.trainer)
