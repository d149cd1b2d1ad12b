"""Masked multi-task loss: each head learns only from the samples that carry its label."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

HEAD_KINDS = ("bce", "ce", "mse")


@dataclass(frozen=True)
class HeadLoss:
    """How one head is scored: its kind, weight and options."""

    kind: str
    weight: float = 1.0
    label_smoothing: float = 0.0
    focal_gamma: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in HEAD_KINDS:
            raise ValueError(f"head loss kind must be one of {HEAD_KINDS}, got {self.kind!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.focal_gamma < 0:
            raise ValueError(f"focal_gamma must be >= 0, got {self.focal_gamma}")


def focal_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, gamma: float, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Per-sample focal loss (Lin et al. 2017); gamma=0 is plain cross-entropy."""
    ce = F.cross_entropy(logits, target, reduction="none", label_smoothing=label_smoothing)
    if gamma == 0:
        return ce
    p_true = logits.softmax(dim=-1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
    return (1.0 - p_true).clamp_min(0.0).pow(gamma) * ce


def _per_sample_loss(spec: HeadLoss, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Unreduced loss of one head; `target` already holds safe values where unlabelled."""
    if spec.kind == "ce":
        return focal_cross_entropy(pred, target.long(), spec.focal_gamma, spec.label_smoothing)
    target = target.to(pred.dtype)
    if spec.kind == "bce":
        if spec.label_smoothing:
            target = target * (1.0 - spec.label_smoothing) + 0.5 * spec.label_smoothing
        return F.binary_cross_entropy_with_logits(pred, target, reduction="none")
    return F.mse_loss(pred, target, reduction="none")


class MaskedMultiTaskLoss(nn.Module):
    """Weighted sum of per-head losses, each averaged over the samples labelled for that head.

    A head with no labelled sample in the batch contributes exactly zero and a zero gradient:
    unlabelled samples are given a harmless placeholder target and multiplied by a zero mask,
    never indexed away or divided by zero, so no NaN can leak in from them. With
    `adaptive=True` the heads are weighted by learnable homoscedastic uncertainty (Kendall,
    Gal & Cipolla 2018): total = sum_i w_i * (exp(-s_i) * L_i + s_i), with s_i = log sigma_i^2.
    """

    def __init__(self, heads: Mapping[str, Mapping | HeadLoss], adaptive: bool = False) -> None:
        super().__init__()
        self.heads = {
            name: spec if isinstance(spec, HeadLoss) else HeadLoss(**spec)
            for name, spec in heads.items()
        }
        if not self.heads:
            raise ValueError("MaskedMultiTaskLoss needs at least one head")
        self.adaptive = adaptive
        self.log_vars = nn.ParameterDict(
            {name: nn.Parameter(torch.zeros(())) for name in self.heads} if adaptive else {}
        )

    def forward(
        self,
        preds: Mapping[str, torch.Tensor],
        targets: Mapping[str, torch.Tensor],
        masks: Mapping[str, torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """Return {"loss": total, "task_loss": ..., "<head>": that head's masked mean loss, ...}.

        `task_loss` is the heads' losses with their fixed weights only (detached): with
        `adaptive=True` the total also holds the learnt uncertainty terms, which change its scale
        and can make it negative, so model selection ranks by `task_loss`, not by `loss`.
        """
        out: dict[str, torch.Tensor] = {}
        total = None
        task_loss = torch.zeros(())
        for name, spec in self.heads.items():
            mask = masks[name].to(torch.bool)
            weight_mask = mask.to(preds[name].dtype)
            safe_target = torch.where(mask, targets[name], torch.zeros_like(targets[name]))
            per_sample = _per_sample_loss(spec, preds[name], safe_target)
            head_loss = (per_sample * weight_mask).sum() / weight_mask.sum().clamp_min(1.0)
            out[name] = head_loss.detach()
            task_loss = task_loss.to(head_loss) + spec.weight * out[name]
            term = self._weighted(name, spec, head_loss, weight_mask)
            total = term if total is None else total + term
        out["loss"] = total
        out["task_loss"] = task_loss
        return out

    def _weighted(
        self, name: str, spec: HeadLoss, head_loss: torch.Tensor, weight_mask: torch.Tensor
    ) -> torch.Tensor:
        """Apply the fixed weight, and the uncertainty weight when adaptive."""
        if not self.adaptive:
            return spec.weight * head_loss
        log_var = self.log_vars[name]
        # The regulariser s_i only counts when the head was scored, else it would drift down.
        has_labels = (weight_mask.sum() > 0).to(head_loss.dtype)
        return spec.weight * has_labels * (torch.exp(-log_var) * head_loss + log_var)

    def uncertainty_weights(self) -> dict[str, float]:
        """Current exp(-s_i) per head (empty when not adaptive), for logging."""
        return {name: float(torch.exp(-lv).detach()) for name, lv in self.log_vars.items()}
