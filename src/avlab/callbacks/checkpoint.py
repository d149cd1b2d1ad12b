"""FiniteModelCheckpoint: a ModelCheckpoint that never writes non-finite weights."""

from __future__ import annotations

import itertools
import logging
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor

from avlab.callbacks.nan_guard import all_finite, non_finite_names, summarize_names

log = logging.getLogger(__name__)


class FiniteModelCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that refuses, with an error in the log, to save a module with non-finite tensors.

    Guards the top-k save, the `save_last` save or link and the on-exception save. Refusing
    before ModelCheckpoint's own bookkeeping keeps `best_k_models` and `last_model_path` pointing
    at files that exist, and keeps the previous finite checkpoints on disk.

    `best_val_metrics` holds the `val/` metrics of the validation that made the best checkpoint
    (not the last epoch's), so a run can report its best checkpoint's own validation figures
    beside its test figures; it is kept in the callback's state across a resume.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.refused_saves = 0
        self.best_val_metrics: dict[str, float] = {}

    def _update_best_and_save(
        self, current: Tensor, trainer: L.Trainer, monitor_candidates: dict[str, Tensor]
    ) -> None:
        """Save a new top-k checkpoint; when it is the best, remember its validation metrics.

        The metrics are recorded before the save, because the save writes this callback's state
        into the checkpoint itself, and `trainer.test(ckpt_path=best)` restores it from there.
        """
        previous = self.best_val_metrics
        if self._would_be_best(current):
            self.best_val_metrics = {
                name: float(value)
                for name, value in monitor_candidates.items()
                if name.startswith("val/")
            }
        super()._update_best_and_save(current, trainer, monitor_candidates)
        if self.best_model_score is None or bool(self.current_score != self.best_model_score):
            self.best_val_metrics = previous

    def _would_be_best(self, current: Tensor) -> bool:
        """Whether `current` beats the best score so far (ties keep the earlier checkpoint)."""
        if self.best_model_score is None:
            return True
        better = {"min": torch.lt, "max": torch.gt}[self.mode]
        return bool(better(current, self.best_model_score.to(current.device)))

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "best_val_metrics": self.best_val_metrics}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.best_val_metrics = dict(state_dict.get("best_val_metrics", {}))

    def _save_topk_checkpoint(
        self, trainer: L.Trainer, monitor_candidates: dict[str, Tensor]
    ) -> None:
        """Saves a top-k checkpoint only if the weights are finite."""
        if self._module_is_finite(trainer, "top-k"):
            super()._save_topk_checkpoint(trainer, monitor_candidates)

    def _save_last_checkpoint(
        self, trainer: L.Trainer, monitor_candidates: dict[str, Tensor]
    ) -> None:
        """Saves or links `last` only if the weights are finite."""
        if self.save_last and self._module_is_finite(trainer, "last"):
            super()._save_last_checkpoint(trainer, monitor_candidates)

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        """Writes the file only if the weights are finite; the last line of defence for every path."""
        if self._module_is_finite(trainer, filepath):
            super()._save_checkpoint(trainer, filepath)

    def _module_is_finite(self, trainer: L.Trainer, what: str) -> bool:
        """Says, agreed across ranks, whether every parameter and floating buffer is finite."""
        module = trainer.lightning_module
        finite = all_finite(itertools.chain(module.parameters(), module.buffers()))
        # Saving has barriers inside, so every rank must take the same branch.
        if trainer.strategy.reduce_boolean_decision(finite, all=True):
            return True
        self.refused_saves += 1
        if trainer.is_global_zero:
            named = itertools.chain(module.named_parameters(), module.named_buffers())
            bad = non_finite_names(named) or ["(on another rank)"]
            log.error(
                "FiniteModelCheckpoint: refused to write the %s checkpoint at global step %d: "
                "non-finite values in %s. The last finite checkpoint stays in place (last: %r, best: %r).",
                what,
                trainer.global_step,
                summarize_names(bad),
                self.last_model_path,
                self.best_model_path,
            )
        return False
