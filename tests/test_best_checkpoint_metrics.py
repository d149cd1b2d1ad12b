"""metrics.json reports the best checkpoint's own validation metrics, not the last epoch's."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from avlab.callbacks import FiniteModelCheckpoint

# val/loss per epoch: the best is epoch 1, and the last epoch is worse.
SCRIPTED_VAL_LOSS = [1.0, 0.5, 0.9]


class Scripted(L.LightningModule):
    """A tiny model whose validation metrics follow a script, so the best epoch is known."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        epoch = self.current_epoch
        self.log("val/loss", SCRIPTED_VAL_LOSS[epoch])
        self.log("val/acc", 0.1 * (epoch + 1))

    def test_step(self, batch, batch_idx):
        self.log("test/loss", self.layer(batch[0]).pow(2).mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


BEST = {"val/loss": 0.5, "val/acc": 0.2}


def _fit_scripted(tmp_path):
    """Fit Scripted for its three epochs with best/last checkpointing into tmp_path."""
    data = DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=4)
    checkpoint = FiniteModelCheckpoint(
        dirpath=tmp_path, filename="best", monitor="val/loss", mode="min", save_last=True
    )
    trainer = L.Trainer(
        max_epochs=len(SCRIPTED_VAL_LOSS),
        callbacks=[checkpoint],
        logger=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(Scripted(), data, data)
    return trainer, checkpoint, data


def _saved_best_val_metrics(path):
    saved = torch.load(path, weights_only=True)["callbacks"]
    return next(v for k, v in saved.items() if "FiniteModelCheckpoint" in k)["best_val_metrics"]


def test_best_val_metrics_are_those_of_the_best_epoch(tmp_path):
    trainer, checkpoint, _ = _fit_scripted(tmp_path)
    assert float(trainer.callback_metrics["val/loss"]) == pytest.approx(0.9)  # the last epoch
    assert checkpoint.best_val_metrics == pytest.approx(BEST)
    assert _saved_best_val_metrics(tmp_path / "last.ckpt") == pytest.approx(BEST)


def test_best_checkpoint_carries_its_own_val_metrics_through_test(tmp_path):
    """`trainer.test(ckpt_path=best)` restores the callback from best.ckpt: the file must hold
    the best epoch's metrics (it once held the previous best's, written before the update)."""
    trainer, checkpoint, data = _fit_scripted(tmp_path)
    assert _saved_best_val_metrics(tmp_path / "best.ckpt") == pytest.approx(BEST)
    trainer.test(Scripted(), data, ckpt_path=str(tmp_path / "best.ckpt"), weights_only=True)
    assert checkpoint.best_val_metrics == pytest.approx(BEST)
