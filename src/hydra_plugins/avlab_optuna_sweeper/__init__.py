"""Hydra loads sweepers only from the `hydra_plugins` namespace: this exposes avlab's.

Hydra imports every plugin module at every start (also `train.py` runs that sweep nothing), so
this module stays light: Optuna and the sweep loop (`avlab.optuna_sweeper`, which imports
optuna, scipy and pandas: seconds of start-up) are imported only when the sweeper is built.
"""

from typing import Any

from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper


class SharedStudyOptunaSweeper(OptunaSweeper):
    """The Optuna sweeper with a resumable, shareable study (see `avlab.optuna_sweeper`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        from avlab.optuna_sweeper import SharedStudyImpl

        super().__init__(*args, **kwargs)
        impl = self.sweeper
        self.sweeper = SharedStudyImpl.__new__(SharedStudyImpl)
        self.sweeper.__dict__.update(impl.__dict__)


__all__ = ["SharedStudyOptunaSweeper"]
