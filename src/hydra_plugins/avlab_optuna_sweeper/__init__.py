"""Hydra loads sweepers only from the `hydra_plugins` namespace: this exposes avlab's."""

from avlab.optuna_sweeper import SharedStudyOptunaSweeper as _SharedStudyOptunaSweeper


class SharedStudyOptunaSweeper(_SharedStudyOptunaSweeper):
    """avlab.optuna_sweeper.SharedStudyOptunaSweeper, where Hydra looks for sweepers."""


__all__ = ["SharedStudyOptunaSweeper"]
