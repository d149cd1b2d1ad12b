"""Smile + emotion LightningModule: masked multi-task training over sources with partial labels."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torchmetrics import MeanAbsoluteError, MetricCollection
from torchmetrics.classification import BinaryAUROC, MulticlassAccuracy, MulticlassF1Score

from avlab.losses import MaskedMultiTaskLoss
from avlab.optim import configure_optimizers
from avlab.tasks.smile.model import NUM_EMOTIONS, SmileEmotionNet, SmileOutput


def _smile_metrics() -> MetricCollection:
    return MetricCollection({"smile_mae": MeanAbsoluteError(), "smile_auroc": BinaryAUROC()})


def _emotion_metrics() -> MetricCollection:
    return MetricCollection(
        {
            "emotion_acc": MulticlassAccuracy(NUM_EMOTIONS, average="micro"),
            "emotion_f1": MulticlassF1Score(NUM_EMOTIONS, average="macro"),
        }
    )


class SmileEmotionModule(L.LightningModule):
    """Trains SmileEmotionNet with a masked multi-task loss; each head sees only its labels.

    Metrics (val/ and test/): smile_mae and smile_auroc (label > 0.5) on smile-labelled
    samples, emotion_acc and macro emotion_f1 on emotion-labelled samples.
    """

    def __init__(
        self,
        net: SmileEmotionNet,
        loss: MaskedMultiTaskLoss,
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
        self.smile_metrics = torch.nn.ModuleDict(
            {stage: _smile_metrics() for stage in ("val", "test")}
        )
        self.emotion_metrics = torch.nn.ModuleDict(
            {stage: _emotion_metrics() for stage in ("val", "test")}
        )

    def forward(self, frames: torch.Tensor) -> SmileOutput:
        return self.net(frames)

    def _step(self, batch: dict[str, torch.Tensor]) -> tuple[SmileOutput, dict[str, torch.Tensor]]:
        """Forward a batch and score it with the masked loss."""
        out = self.net(batch["frames"])
        losses = self.criterion(
            preds={"smile": out.smile_logit, "emotion": out.emotion_logits},
            targets={"smile": batch["smile"], "emotion": batch["emotion"]},
            masks={"smile": batch["smile_mask"], "emotion": batch["emotion_mask"]},
        )
        return out, losses

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        _, losses = self._step(batch)
        size = batch["frames"].shape[0]
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=size)
        self.log_dict(
            {"train/smile_loss": losses["smile"], "train/emotion_loss": losses["emotion"]},
            batch_size=size,
        )
        return losses["loss"]

    def on_train_epoch_end(self) -> None:
        for name, weight in self.criterion.uncertainty_weights().items():
            self.log(f"train/uncertainty_weight_{name}", weight)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def _evaluate(self, batch: dict[str, torch.Tensor], stage: str) -> None:
        """Update the stage's metrics on the labelled samples of each head, log the loss."""
        out, losses = self._step(batch)
        self.log(f"{stage}/loss", losses["loss"], prog_bar=True, batch_size=batch["frames"].shape[0])
        smile_mask, emotion_mask = batch["smile_mask"], batch["emotion_mask"]
        if smile_mask.any():
            intensity, label = out.smile_intensity[smile_mask], batch["smile"][smile_mask]
            smile = self.smile_metrics[stage]
            smile["smile_mae"].update(intensity, label)
            smile["smile_auroc"].update(intensity, (label > 0.5).long())
        if emotion_mask.any():
            self.emotion_metrics[stage].update(
                out.emotion_logits[emotion_mask], batch["emotion"][emotion_mask]
            )

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    def _log_metrics(self, stage: str) -> None:
        """Compute and log the metrics of the heads that saw labels this epoch, then reset."""
        for collection in (self.smile_metrics[stage], self.emotion_metrics[stage]):
            if any(metric.update_count > 0 for metric in collection.values()):
                values = collection.compute()
                self.log_dict({f"{stage}/{k}": v for k, v in values.items()}, prog_bar=stage == "val")
            collection.reset()

    def configure_optimizers(self) -> dict[str, Any]:
        return configure_optimizers(
            self.parameters(),
            self.optimizer_factory,
            self.scheduler_factory,
            total_steps=self.trainer.estimated_stepping_batches,
            interval=self.scheduler_interval,
        )
