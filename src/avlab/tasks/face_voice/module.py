"""Face–voice LightningModule: symmetric InfoNCE training, retrieval metrics on unseen people."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torchmetrics.functional.classification import binary_roc

from avlab.losses import SymmetricInfoNCE
from avlab.media import log_figure, roc_figure, similarity_matrix_figure
from avlab.tasks.base import TaskModule
from avlab.tasks.face_voice.metrics import cross_modal_metrics
from avlab.tasks.face_voice.model import FaceVoiceNet, FaceVoiceOutput


class FaceVoiceModule(TaskModule):
    """Trains FaceVoiceNet so a person's face and voice embeddings match.

    Logged: `{stage}/loss` beside `{stage}/loss_chance` (the loss of a model that learnt
    nothing, ln(batch size) for a batch of distinct people) and `train/temperature`. Over each
    val/test epoch (unseen identities): `match_acc` (1:2 matching, mean of `match_acc_v2f` and
    `match_acc_f2v`, chance 0.5), `recall_at_1`, `recall_at_5` (voice -> face, identity
    gallery), verification `eer` and `auc`. After testing, the voice x face similarity matrix
    and the verification ROC go to the run folder's media/ and to the loggers.
    """

    def __init__(
        self,
        net: FaceVoiceNet,
        loss: SymmetricInfoNCE,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        scheduler_interval: str = "step",
    ) -> None:
        super().__init__(net, loss, optimizer, scheduler, scheduler_interval)
        self._embeddings: dict[str, list[tuple[torch.Tensor, ...]]] = {"val": [], "test": []}

    def forward(self, face: torch.Tensor, voice: torch.Tensor) -> FaceVoiceOutput:
        return self.net(face, voice)

    def _step(
        self, batch: dict[str, torch.Tensor], stage: str
    ) -> tuple[FaceVoiceOutput, torch.Tensor]:
        """Embed a batch, score it with the loss, log the loss beside its chance level.

        Under DDP the loss is over the global batch: every rank gathers all ranks' embeddings
        (with their gradients, as CLIP-style training does), so each person's negatives are
        everyone in the global batch and the loss, its chance level and the gradient are those
        of one process with the global batch (the training loader splits batches of distinct
        people over the ranks, avlab.data_order)."""
        out = self.net(batch["face"], batch["voice"])
        face, voice = (self._gather(t, sync_grads=True) for t in (out.face, out.voice))
        ids = self._gather(batch["identity"])
        losses = self.criterion(face, voice, ids)
        size = face.shape[0]
        if stage == "train":
            self.log_step_values(
                {
                    "train/loss": losses["loss"],
                    "train/loss_chance": losses["chance"],
                    "train/temperature": losses["temperature"],
                    "train/loss_face_to_voice": losses["a_to_b"],
                    "train/loss_voice_to_face": losses["b_to_a"],
                },
                batch_size=size,
                prog_bar=("train/loss", "train/temperature"),
            )
        else:
            self.log(f"{stage}/loss", losses["loss"], prog_bar=True, batch_size=size)
            self.log(f"{stage}/loss_chance", losses["chance"], prog_bar=True, batch_size=size)
        return out, losses["loss"]

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")[1]

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """Step, then pull the learnable temperature back into its range."""
        super().optimizer_step(*args, **kwargs)
        self.criterion.clamp_()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def _evaluate(self, batch: dict[str, torch.Tensor], stage: str) -> None:
        """Log the batch loss and keep the embeddings for the epoch's retrieval metrics."""
        out, _ = self._step(batch, stage)
        self._embeddings[stage].append((out.face.detach(), out.voice.detach(), batch["identity"]))

    def on_validation_epoch_end(self) -> None:
        self._log_retrieval("val")

    def on_test_epoch_end(self) -> None:
        self._log_retrieval("test")

    def _log_retrieval(self, stage: str) -> None:
        """Retrieval metrics over every pair the epoch saw (all ranks), then forget them."""
        parts, self._embeddings[stage] = self._embeddings[stage], []
        if not parts:
            return
        face, voice, ids = (self._gather(torch.cat(column)) for column in zip(*parts, strict=True))
        if len(torch.unique(ids)) < 2:
            return  # e.g. a one-batch sanity check of a single person: nothing to match against
        metrics = cross_modal_metrics(face.float(), voice.float(), ids)
        # Every rank computed these from the same gathered embeddings: no sync needed.
        self.log_dict({f"{stage}/{k}": v for k, v in metrics.items()}, prog_bar=stage == "val")
        if stage == "test":
            self._log_pictures(face.float(), voice.float(), ids, float(metrics["auc"]))

    def _log_pictures(
        self, face: torch.Tensor, voice: torch.Tensor, ids: torch.Tensor, auc: float
    ) -> None:
        """Similarity matrix (people sorted, so matches form a bright diagonal) and the ROC of
        same-person vs other-person pairs."""
        scores = voice @ face.T
        fig = similarity_matrix_figure(scores, ids, "voice x face similarity (test)")
        log_figure(self, "test/similarity_matrix", fig)
        same = (ids[:, None] == ids[None, :]).long()
        fpr, tpr, _ = binary_roc(scores.flatten(), same.flatten())
        log_figure(
            self, "test/verification_roc", roc_figure(fpr, tpr, auc, "verification ROC (test)")
        )

    def _gather(self, tensor: torch.Tensor, sync_grads: bool = False) -> torch.Tensor:
        """The tensor from every rank, concatenated (itself on one device or without a trainer);
        `sync_grads` lets the gradient flow back to each rank's own part."""
        if self._trainer is None or self.trainer.world_size <= 1:
            return tensor
        return self.all_gather(tensor, sync_grads=sync_grads).flatten(0, 1)
