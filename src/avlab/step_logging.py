"""Which training steps' `self.log` values anyone reads, so per-step logging can skip the rest.

Lightning sends step-level values to the loggers only every `log_every_n_steps`-th optimizer
step, yet each `self.log` call costs it work on every step (checks, a signature inspection, a
result-collection update, and the per-step metric dictionaries built from every logged key).
"""

from __future__ import annotations

from typing import Any


def step_values_read(trainer: Any) -> bool:
    """Says whether the values a training step logs now (on_step only) will be read.

    True at the steps whose values go to the loggers (every log_every_n_steps-th, a stopping
    step, every step of fast_dev_run), at the epoch's last batch and the run's last step (after
    which checkpoint monitors and epoch-end hooks read `callback_metrics`), and before a
    mid-epoch validation. Values logged only on those steps reach loggers, checkpoints and
    `callback_metrics` at the same steps with the same values; the progress bar shows the value
    of the last such step. Not for on_epoch values, whose epoch mean needs every step.
    """
    connector = getattr(trainer, "_logger_connector", None)
    if connector is None or trainer.fast_dev_run or connector.should_update_logs:
        return True
    epoch_loop = trainer.fit_loop.epoch_loop
    if epoch_loop.batch_progress.is_last_batch:
        return True
    if 0 <= trainer.max_steps <= trainer.global_step + 1:
        return True
    val_every = trainer.val_check_batch
    return isinstance(val_every, int) and (epoch_loop.batch_idx + 1) % val_every == 0
