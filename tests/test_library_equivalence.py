"""Where a well-kept library now computes what we wrote by hand, its numbers equal the old code's.

The hand-written versions are kept here, and only here, as the reference they replaced.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import binary_roc

from avlab.callbacks.grad_norm import total_grad_norm
from avlab.callbacks.nan_guard import all_finite, finite_flag
from avlab.tasks.face_voice.metrics import equal_error_rate
from avlab.tasks.vad.metrics import gaussian_smooth


def _old_gaussian_smooth(scores: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(4 * sigma + 0.5))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(scores.dtype).view(1, 1, -1)
    padded = F.pad(scores.view(1, 1, -1), (radius, radius), mode="replicate")
    return F.conv1d(padded, kernel).view(-1)


def _old_total_grad_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    norms = torch.stack(torch._foreach_norm(grads, 2.0, dtype=torch.float32))
    return torch.linalg.vector_norm(norms)


def test_scipy_smoothing_equals_the_hand_written_convolution():
    scores = torch.rand(200, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for sigma in (0.7, 3.0, 8.0):
        new, old = gaussian_smooth(scores, sigma), _old_gaussian_smooth(scores, sigma)
        assert torch.allclose(new, old, atol=1e-12), sigma
    assert gaussian_smooth(scores.float(), 3.0).dtype == torch.float32


def test_total_grad_norm_from_get_total_norm_equals_the_foreach_version():
    generator = torch.Generator().manual_seed(1)
    grads = [torch.randn(shape, generator=generator) for shape in ((64, 32), (32,), (3, 3, 8, 8))]
    assert torch.allclose(total_grad_norm(grads), _old_total_grad_norm(grads), rtol=1e-6)
    big = [torch.full((4096,), 300.0, dtype=torch.float16)]  # squares overflow fp16
    assert math.isclose(float(total_grad_norm(big)), 300.0 * 64.0, rel_tol=1e-3)


def test_finite_flag_still_finds_a_single_nan_or_inf():
    clean = [torch.randn(10, 10), torch.randn(5)]
    assert bool(finite_flag(clean))
    for bad in (float("nan"), float("inf"), -float("inf")):
        poisoned = [t.clone() for t in clean]
        poisoned[1][3] = bad
        assert not bool(finite_flag(poisoned)), bad
        assert not bool(finite_flag(poisoned, exact=True)), bad
        assert not all_finite(poisoned), bad


def test_huge_finite_gradients_are_not_taken_for_infinite():
    # Their float32 sum overflows (the fast check says False); the exact check clears them.
    huge = [torch.full((1000,), 3e38), torch.randn(5)]
    assert not bool(finite_flag(huge))
    assert bool(finite_flag(huge, exact=True))
    assert all_finite(huge)


def _old_equal_error_rate(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The hand-written EER that torchmetrics' binary_eer replaced (interpolated crossing)."""
    fpr, tpr, _ = binary_roc(scores, labels)
    gap = fpr - (1.0 - tpr)
    i = int(torch.nonzero(gap >= 0)[0])
    if i == 0 or gap[i] == 0:
        return fpr[i]
    t = gap[i - 1].abs() / (gap[i - 1].abs() + gap[i])
    return fpr[i - 1] + t * (fpr[i] - fpr[i - 1])


@pytest.mark.parametrize("people", [8, 40, 120])
def test_torchmetrics_eer_matches_the_hand_written_one_on_face_voice_sized_pairs(people):
    """All (voice, face) pairs of a split of `people` identities, two items each: the two EERs
    agree within one positive pair's share of the ROC (the interpolation step)."""
    generator = torch.Generator().manual_seed(people)
    ids = torch.arange(people).repeat_interleave(2)
    voice = torch.nn.functional.normalize(torch.randn(len(ids), 16, generator=generator), dim=1)
    face = torch.nn.functional.normalize(
        voice + 0.9 * torch.randn(voice.shape, generator=generator), dim=1
    )
    scores = (voice @ face.T).flatten()
    labels = (ids[:, None] == ids[None, :]).flatten().long()
    new, old = float(equal_error_rate(scores, labels)), float(_old_equal_error_rate(scores, labels))
    assert 0.05 < old < 0.45  # neither trivial nor chance: the crossing lies inside the ROC
    assert abs(new - old) <= 1.0 / int(labels.sum()), (new, old)


def test_the_guard_keeps_a_step_whose_gradients_are_huge_but_finite():
    from avlab.callbacks.nan_guard import NanGuard

    guard = NanGuard()
    params = [torch.nn.Parameter(torch.zeros(1000)), torch.nn.Parameter(torch.zeros(3))]
    params[0].grad = torch.full((1000,), 3e38)
    params[1].grad = torch.ones(3)
    assert guard._local_fault(None, params) == (None, True)
    params[1].grad[0] = float("nan")
    assert guard._local_fault(None, params) == ("grad", False)
