"""Losses shared by tasks."""

from avlab.losses.infonce import SymmetricInfoNCE
from avlab.losses.multitask import HeadLoss, MaskedMultiTaskLoss, focal_cross_entropy

__all__ = ["HeadLoss", "MaskedMultiTaskLoss", "SymmetricInfoNCE", "focal_cross_entropy"]
