"""FiniteModelCheckpoint: a ModelCheckpoint that never writes non-finite weights."""

from __future__ import annotations

import itertools
import logging
import os
import shutil
from pathlib import Path
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
        """Also when a resumed run writes into a new run folder: the saved top-k checkpoints are
        brought into it (hard links, else copies) and their scores kept, so the resumed run
        compares its validations with the best before the crash and tests the same best
        checkpoint the uninterrupted run would. (Lightning keeps the scores only when the
        folder is unchanged, and a resumed run would take its first validation for the best.)
        """
        old_dir = state_dict.get("dirpath")
        if self.dirpath is None or old_dir is None or Path(old_dir) == Path(self.dirpath):
            super().load_state_dict(state_dict)
        else:
            moved = {
                path: self._bring_over(Path(path), Path(old_dir))
                for path in state_dict.get("best_k_models", {})
            }
            self.best_k_models = {
                moved[path]: score
                for path, score in state_dict.get("best_k_models", {}).items()
                if moved[path]
            }
            if self.best_k_models:
                self.best_model_score = state_dict.get("best_model_score")
                self.best_model_path = moved.get(state_dict.get("best_model_path"), "")
                self.kth_best_model_path = moved.get(state_dict.get("kth_best_model_path"), "")
                self.kth_value = state_dict.get("kth_value", self.kth_value)
        self.best_val_metrics = dict(state_dict.get("best_val_metrics", {}))

    def _bring_over(self, path: Path, old_dir: Path) -> str:
        """`path` (a checkpoint of the saved run's folder) linked or copied into this dirpath;
        '' when it is not a .ckpt file of that folder or is gone."""
        if path.parent != old_dir or path.suffix != ".ckpt" or not path.is_file():
            return ""
        target = Path(self.dirpath) / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            try:
                os.link(path, target)
            except FileExistsError:
                pass  # another rank brought it over first
            except OSError:
                temporary = target.with_name(f".{target.name}.tmp-{os.getpid()}")
                shutil.copy2(path, temporary)
                os.replace(temporary, target)
        return str(target)

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
