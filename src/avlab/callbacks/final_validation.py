"""ValidateFinalEpoch: validation every n epochs, and always after the last one."""

from __future__ import annotations

import lightning as L


class ValidateFinalEpoch(L.Callback):
    """Makes the last training epoch validate whatever `check_val_every_n_epoch` says.

    Lightning validates when (epoch + 1) is a multiple of the interval, so a run of 4 epochs
    at interval 3 would end unvalidated: its last weights never reach the checkpoint ranking
    and short runs (`debug=limit`, a sweep trial) would have no `val/` metrics at all.
    """

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        interval = trainer.check_val_every_n_epoch
        last = trainer.max_epochs is not None and trainer.current_epoch + 1 == trainer.max_epochs
        if last and interval is not None and interval > 1:
            trainer.check_val_every_n_epoch = 1
