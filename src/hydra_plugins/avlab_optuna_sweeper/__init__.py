"""Hydra loads sweepers only from the `hydra_plugins` namespace: this exposes avlab's."""

from avlab.optuna_sweeper import SharedStudyOptunaSweeper

__all__ = ["SharedStudyOptunaSweeper"]
