"""Symmetric InfoNCE (CLIP-style) with a learnable temperature that cannot leave its range."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class SymmetricInfoNCE(nn.Module):
    """Mean of the a->b and b->a cross-entropies over a batch of paired, L2-normalised embeddings.

    Row i of `a` and row i of `b` are a positive pair; every other row of the batch is a
    negative, except rows of the same identity when `identities` is given (they are masked
    out rather than counted as wrong answers). The temperature is learnt as a log-temperature,
    initialised from `temperature` and kept in [min_temperature, max_temperature] twice over:
    the forward pass clamps it, and `clamp_()` (called by the module after every optimizer
    step) pulls the parameter itself back into range, so it never drifts where the clamp
    would cut its gradient.
    """

    def __init__(
        self,
        temperature: float = 0.1,
        min_temperature: float = 0.05,
        max_temperature: float = 2.0,
        learnable_temperature: bool = True,
    ) -> None:
        super().__init__()
        if not 0 < min_temperature <= temperature <= max_temperature:
            raise ValueError(
                "need 0 < min_temperature <= temperature <= max_temperature, got "
                f"{min_temperature}, {temperature}, {max_temperature}"
            )
        self.log_min = math.log(min_temperature)
        self.log_max = math.log(max_temperature)
        init = torch.tensor(math.log(temperature))
        if learnable_temperature:
            self.log_temperature = nn.Parameter(init)
        else:
            self.register_buffer("log_temperature", init)

    @property
    def temperature(self) -> torch.Tensor:
        """The temperature in use: exp of the clamped log-temperature (a 0-dim tensor)."""
        return self.log_temperature.clamp(self.log_min, self.log_max).exp()

    @torch.no_grad()
    def clamp_(self) -> None:
        """Put the log-temperature parameter back into range (after an optimizer step)."""
        self.log_temperature.clamp_(self.log_min, self.log_max)

    def forward(
        self, a: torch.Tensor, b: torch.Tensor, identities: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Losses of (B, D) embeddings: `loss`, `a_to_b`, `b_to_a`, plus `chance` and `temperature`.

        `chance` is the loss of a model that scores every candidate alike: ln(B) for a batch
        of distinct identities, less when same-identity rows are masked out.
        """
        if a.shape != b.shape or a.ndim != 2:
            raise ValueError(
                f"expected two (B, D) embeddings of one shape, got {tuple(a.shape)}, {tuple(b.shape)}"
            )
        temperature = self.temperature
        logits = a @ b.T / temperature
        candidates = torch.full((a.shape[0],), float(a.shape[0]), device=a.device)
        if identities is not None:
            same = identities[:, None] == identities[None, :]
            false_negative = same & ~torch.eye(len(identities), dtype=torch.bool, device=a.device)
            logits = logits.masked_fill(false_negative, float("-inf"))
            candidates = (~false_negative).sum(dim=1).float()
        targets = torch.arange(a.shape[0], device=a.device)
        a_to_b = F.cross_entropy(logits, targets)
        b_to_a = F.cross_entropy(logits.T, targets)
        return {
            "loss": 0.5 * (a_to_b + b_to_a),
            "a_to_b": a_to_b,
            "b_to_a": b_to_a,
            "chance": candidates.log().mean(),
            "temperature": temperature.detach(),
        }
