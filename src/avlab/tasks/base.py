"""What every gradient-trained task's LightningModule shares: the network, the loss and the
optimizer and schedule that `avlab.run.build_module` builds from the config."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import nn

from avlab.data_order import load_pending_loader_states
from avlab.optim import decay_groups, module_optimizers


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

    def on_train_start(self) -> None:
        """A resumed run goes on with the batches it had not trained (avlab.data_order)."""
        load_pending_loader_states(self.trainer)
