"""Training callbacks: the NaN guard and its fault injector, gradient-norm logging, finite checkpoints."""

from avlab.callbacks.checkpoint import FiniteModelCheckpoint
from avlab.callbacks.final_validation import ValidateFinalEpoch
from avlab.callbacks.grad_norm import GradNormMonitor
from avlab.callbacks.inject import NanInjector
from avlab.callbacks.nan_guard import NanGuard, TrainingDivergedError

__all__ = [
    "FiniteModelCheckpoint",
    "GradNormMonitor",
    "NanGuard",
    "NanInjector",
    "TrainingDivergedError",
    "ValidateFinalEpoch",
]
