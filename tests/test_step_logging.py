"""Training steps log only where someone reads the values (avlab.step_logging), and the loggers,
checkpoint monitors and callback_metrics still get the values that logging every step gave."""

from __future__ import annotations

import copy
import csv
from pathlib import Path

import hydra
import lightning as L
import pytest
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

import avlab.tasks.base
from avlab.run import build_module

BATCHES_PER_EPOCH = 5
EPOCHS = 2
LOG_EVERY = 3
TRAIN_KEYS = ("train/loss", "train/smile_loss", "train/emotion_loss")


class EpochEndValues(L.Callback):
    """Keeps callback_metrics' train values at each epoch end, where checkpoints read them."""

    def __init__(self) -> None:
        self.values: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = trainer.callback_metrics
        self.values.append({k: float(metrics[k]) for k in TRAIN_KEYS if k in metrics})


def fit_smile(module: L.LightningModule, datamodule: L.LightningDataModule, out: Path) -> dict:
    """Two short epochs with a CSV logger every LOG_EVERY steps and a checkpoint on train/loss."""
    L.seed_everything(0)
    epoch_end = EpochEndValues()
    checkpoint = ModelCheckpoint(dirpath=out / "ckpt", monitor="train/loss", save_top_k=1)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=EPOCHS,
        limit_train_batches=BATCHES_PER_EPOCH,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        log_every_n_steps=LOG_EVERY,
        logger=CSVLogger(out, name="csv", version=0),
        callbacks=[epoch_end, checkpoint],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=datamodule)
    with (out / "csv" / "version_0" / "metrics.csv").open() as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("train/loss")]
    return {
        "rows": [(int(row["step"]), {k: float(row[k]) for k in TRAIN_KEYS}) for row in rows],
        "epoch_end": epoch_end.values,
        "best_score": float(checkpoint.best_model_score),
        "progress_bar": set(trainer.progress_bar_metrics),
    }


def test_smile_train_metrics_reach_the_logger_and_checkpoint_as_when_logged_every_step(
    make_cfg, tmp_path, monkeypatch
):
    cfg = make_cfg("experiment=smile_pretrain")
    datamodule = hydra.utils.instantiate(cfg.data)
    L.seed_everything(0)
    start = build_module(cfg)

    gated = fit_smile(copy.deepcopy(start), datamodule, tmp_path / "gated")
    monkeypatch.setattr(avlab.tasks.base, "step_values_read", lambda trainer: True)
    every_step = fit_smile(copy.deepcopy(start), datamodule, tmp_path / "every_step")

    total_steps = BATCHES_PER_EPOCH * EPOCHS
    expected_steps = [s for s in range(total_steps) if (s + 1) % LOG_EVERY == 0]
    assert [step for step, _ in gated["rows"]] == expected_steps
    assert gated["rows"] == every_step["rows"]
    assert len(gated["epoch_end"]) == EPOCHS
    assert gated["epoch_end"] == every_step["epoch_end"]
    assert gated["best_score"] == pytest.approx(every_step["best_score"], rel=0, abs=0)
    assert "train/loss" in gated["progress_bar"]
