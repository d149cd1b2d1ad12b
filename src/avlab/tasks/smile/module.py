"""Smile + emotion LightningModule: masked multi-task training over sources with partial labels."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torchmetrics import MeanAbsoluteError, MetricCollection
from torchmetrics.classification import (
    BinaryAUROC,
    BinaryROC,
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
)

from avlab.losses import MaskedMultiTaskLoss
from avlab.media import confusion_matrix_figure, log_figure, roc_figure
from avlab.tasks.base import TaskModule
from avlab.tasks.smile.model import EMOTIONS, NUM_EMOTIONS, SmileEmotionNet, SmileOutput


def total_over_ranks(count: int, device: torch.device) -> int:
    """`count` summed over the DDP ranks (itself in one process).

    Whether a head's metric is computed must be decided alike on every rank: computing syncs
    the metric across ranks, so a rank whose shard had no labels for a head must join in too.
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return int(count)
    total = torch.tensor([float(count)], device=device)
    torch.distributed.all_reduce(total)
    return int(total.item())


class HeadMetrics(nn.Module):
    """Smile metrics on smile-labelled samples and emotion metrics on emotion-labelled ones."""

    def __init__(self) -> None:
        super().__init__()
        self.smile = MetricCollection(
            {"smile_mae": MeanAbsoluteError(), "smile_auroc": BinaryAUROC()}
        )
        self.emotion = MetricCollection(
            {
                "emotion_acc": MulticlassAccuracy(NUM_EMOTIONS, average="micro"),
                "emotion_f1": MulticlassF1Score(NUM_EMOTIONS, average="macro"),
            }
        )

    def update(self, out: SmileOutput, batch: dict[str, torch.Tensor], keep: torch.Tensor) -> None:
        """Update with the samples selected by `keep` that carry each head's label."""
        smile_mask = batch["smile_mask"] & keep
        if smile_mask.any():
            intensity, label = out.smile_intensity[smile_mask], batch["smile"][smile_mask]
            self.smile["smile_mae"].update(intensity, label)
            self.smile["smile_auroc"].update(intensity, (label > 0.5).long())
        emotion_mask = batch["emotion_mask"] & keep
        if emotion_mask.any():
            self.emotion.update(out.emotion_logits[emotion_mask], batch["emotion"][emotion_mask])

    def compute_and_reset(self, prefix: str) -> dict[str, torch.Tensor]:
        """{prefix/name: value} for the heads that saw labels (on any rank), then reset."""
        values = {}
        for collection in (self.smile, self.emotion):
            seen = max(metric.update_count for metric in collection.values())
            if total_over_ranks(seen, next(iter(collection.values())).device) > 0:
                values.update({f"{prefix}/{k}": v for k, v in collection.compute().items()})
            collection.reset()
        return values


class SmileEmotionModule(TaskModule):
    """Trains SmileEmotionNet with a masked multi-task loss; each head sees only its labels.

    Metrics (val/ and test/): smile_mae and smile_auroc (label > 0.5) on smile-labelled
    samples, emotion_acc and macro emotion_f1 on emotion-labelled samples; with several
    sources, test metrics are also reported per source (test/<source>/...). After testing, the
    emotion confusion matrix and the smile ROC go to the run folder's media/ and to the loggers.
    """

    def __init__(
        self,
        net: SmileEmotionNet,
        loss: MaskedMultiTaskLoss,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        scheduler_interval: str = "step",
    ) -> None:
        super().__init__(net, loss, optimizer, scheduler, scheduler_interval)
        self.metrics = nn.ModuleDict({stage: HeadMetrics() for stage in ("val", "test")})
        # Per-source test metrics (test/<source>/...), made in setup once the sources are known.
        self.source_metrics = nn.ModuleDict()
        self.source_names: list[str] = []
        # Test-set pictures; metric states are not saved in checkpoints.
        self.test_pictures = nn.ModuleDict(
            {
                "confusion": MulticlassConfusionMatrix(NUM_EMOTIONS),
                "roc": BinaryROC(),
                "auroc": BinaryAUROC(),
            }
        )

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
        self.source_names = list(getattr(datamodule, "source_names", []))
        if len(self.source_names) > 1 and not len(self.source_metrics):
            for name in self.source_names:
                self.source_metrics[name] = HeadMetrics()

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
        self.log_step_values(
            {
                "train/loss": losses["loss"],
                "train/smile_loss": losses["smile"],
                "train/emotion_loss": losses["emotion"],
            },
            batch_size=batch["frames"].shape[0],
            prog_bar=("train/loss",),
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
        """Update the stage's metrics (and per-source test metrics), log the loss."""
        out, losses = self._step(batch)
        size = batch["frames"].shape[0]
        self.log(f"{stage}/loss", losses["loss"], prog_bar=True, batch_size=size)
        self.log(f"{stage}/task_loss", losses["task_loss"], batch_size=size)
        everything = torch.ones_like(batch["smile_mask"])
        self.metrics[stage].update(out, batch, everything)
        if stage == "test":
            self._update_pictures(out, batch)
            for index, name in enumerate(self.source_names):
                if name in self.source_metrics:
                    self.source_metrics[name].update(out, batch, batch["source"] == index)

    def _update_pictures(self, out: SmileOutput, batch: dict[str, torch.Tensor]) -> None:
        """Collect the test predictions behind the confusion matrix and the ROC curve."""
        if batch["emotion_mask"].any():
            mask = batch["emotion_mask"]
            self.test_pictures["confusion"].update(out.emotion_logits[mask], batch["emotion"][mask])
        if batch["smile_mask"].any():
            mask = batch["smile_mask"]
            labels = (batch["smile"][mask] > 0.5).long()
            self.test_pictures["roc"].update(out.smile_intensity[mask], labels)
            self.test_pictures["auroc"].update(out.smile_intensity[mask], labels)

    def _log_pictures(self) -> None:
        """The emotion confusion matrix and the smile ROC, to the run folder and the loggers."""
        pictures = self.test_pictures
        device = self.device
        if total_over_ranks(pictures["confusion"].update_count, device):
            matrix = pictures["confusion"].compute()
            fig = confusion_matrix_figure(matrix, EMOTIONS, "emotion confusion (test)")
            log_figure(self, "test/emotion_confusion_matrix", fig)
        if total_over_ranks(pictures["roc"].update_count, device):
            labels = torch.cat(pictures["roc"].target) if pictures["roc"].target else torch.zeros(0)
            positives = total_over_ranks(int(labels.sum()), device)
            if 0 < positives < total_over_ranks(len(labels), device):  # a ROC needs both classes
                fpr, tpr, _ = pictures["roc"].compute()
                auc = float(pictures["auroc"].compute())
                log_figure(self, "test/smile_roc", roc_figure(fpr, tpr, auc, "smile ROC (test)"))
        for metric in pictures.values():
            metric.reset()

    def on_validation_epoch_end(self) -> None:
        self.log_dict(self.metrics["val"].compute_and_reset("val"), prog_bar=True)

    def on_test_epoch_end(self) -> None:
        values = self.metrics["test"].compute_and_reset("test")
        for name, metrics in self.source_metrics.items():
            values.update(metrics.compute_and_reset(f"test/{name}"))
        self.log_dict(values)
        self._log_pictures()

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The network with the configured weight decay; the loss's learnable uncertainty terms
        (log-variances, `loss.adaptive`) with none, since decay would pull them towards 0."""
        groups = [{"params": list(self.net.parameters())}]
        loss_params = [p for p in self.criterion.parameters() if p.requires_grad]
        if loss_params:
            groups.append({"params": loss_params, "weight_decay": 0.0})
        return groups
