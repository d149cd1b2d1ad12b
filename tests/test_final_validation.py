"""Validation every n epochs still validates the last epoch."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from avlab.callbacks import ValidateFinalEpoch


class Counting(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.validated_epochs: list[int] = []

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self.layer(batch[0]).pow(2).mean())

    def on_validation_epoch_end(self):
        if not self.trainer.sanity_checking:
            self.validated_epochs.append(self.current_epoch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


@pytest.mark.parametrize(
    ("epochs", "callbacks", "expected"),
    [(4, [], [2]), (4, [ValidateFinalEpoch()], [2, 3]), (2, [ValidateFinalEpoch()], [1])],
)
def test_the_last_epoch_is_validated_whatever_the_interval(epochs, callbacks, expected):
    data = DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=4)
    module = Counting()
    trainer = L.Trainer(
        max_epochs=epochs,
        check_val_every_n_epoch=3,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, data, data)
    assert module.validated_epochs == expected
