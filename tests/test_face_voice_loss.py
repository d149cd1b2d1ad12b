"""SymmetricInfoNCE: both directions averaged, chance level, masked duplicates, a clamped temperature."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from avlab.losses import SymmetricInfoNCE
from avlab.tasks.face_voice.model import FaceVoiceNet
from avlab.tasks.face_voice.module import FaceVoiceModule


def _unit(*shape: int, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_symmetric_loss_is_the_mean_of_both_directions():
    a, b = _unit(8, 16, seed=1), _unit(8, 16, seed=2)
    loss = SymmetricInfoNCE(temperature=0.2)
    out = loss(a, b)
    logits = a @ b.T / 0.2
    target = torch.arange(8)
    a_to_b, b_to_a = F.cross_entropy(logits, target), F.cross_entropy(logits.T, target)
    assert float(out["a_to_b"]) == pytest.approx(float(a_to_b), rel=1e-5)
    assert float(out["b_to_a"]) == pytest.approx(float(b_to_a), rel=1e-5)
    assert float(out["loss"]) == pytest.approx(float(a_to_b + b_to_a) / 2, rel=1e-5)
    assert float(out["a_to_b"]) != pytest.approx(float(out["b_to_a"]))  # the directions differ here


def test_chance_is_ln_batch_and_matched_pairs_beat_it():
    a = _unit(16, 32, seed=3)
    loss = SymmetricInfoNCE(temperature=0.05)
    assert float(loss(a, a)["chance"]) == pytest.approx(math.log(16))
    assert loss(a, a)["loss"] < 0.1
    shuffled = loss(a, a[torch.randperm(16, generator=torch.Generator().manual_seed(0))])
    assert shuffled["loss"] > math.log(16)


def test_same_identity_rows_are_not_counted_as_negatives():
    a = _unit(4, 8, seed=4)
    b = a.clone()
    b[2] = a[0]  # rows 0 and 2 are one person: their voices are interchangeable
    identities = torch.tensor([7, 1, 7, 3])
    loss = SymmetricInfoNCE(temperature=0.05)
    masked = loss(a, b, identities)
    assert torch.isfinite(masked["loss"])
    assert float(masked["chance"]) == pytest.approx((2 * math.log(3) + 2 * math.log(4)) / 4)
    assert masked["loss"] < loss(a, b)["loss"]


@pytest.mark.parametrize("push", [+1e4, -1e4])
def test_learnable_temperature_cannot_leave_its_range(push):
    loss = SymmetricInfoNCE(temperature=0.1, min_temperature=0.05, max_temperature=2.0)
    optimizer = torch.optim.SGD(loss.parameters(), lr=1.0)
    for _ in range(3):
        optimizer.zero_grad()
        (push * loss.log_temperature).backward()  # a huge step towards one end
        optimizer.step()
        assert 0.05 - 1e-6 <= loss.temperature.item() <= 2.0 + 1e-6  # the forward clamp
        loss.clamp_()
        assert math.log(0.05) - 1e-6 <= float(loss.log_temperature) <= math.log(2.0) + 1e-6
    expected = 2.0 if push < 0 else 0.05
    assert float(loss.temperature) == pytest.approx(expected)


def test_temperature_at_the_boundary_still_gets_a_gradient():
    loss = SymmetricInfoNCE(temperature=0.05, min_temperature=0.05, max_temperature=2.0)
    a, b = _unit(8, 16, seed=5), _unit(8, 16, seed=6)
    loss(a, b)["loss"].backward()
    assert loss.log_temperature.grad is not None and loss.log_temperature.grad != 0


def test_fixed_temperature_is_a_buffer_not_a_parameter():
    loss = SymmetricInfoNCE(temperature=0.3, learnable_temperature=False)
    assert list(loss.parameters()) == []
    assert "log_temperature" in loss.state_dict()
    assert float(loss.temperature) == pytest.approx(0.3)


def test_temperature_outside_its_range_is_refused():
    with pytest.raises(ValueError, match="min_temperature"):
        SymmetricInfoNCE(temperature=3.0, min_temperature=0.05, max_temperature=2.0)


def test_the_module_clamps_the_temperature_after_every_optimizer_step():
    net = FaceVoiceNet(face_backbone="test_resnet", embed_dim=8, head={"depth": 1})
    loss = SymmetricInfoNCE(temperature=0.1, min_temperature=0.05, max_temperature=2.0)
    module = FaceVoiceModule(net, loss, optimizer=None)
    optimizer = torch.optim.SGD([loss.log_temperature], lr=1.0)
    loss.log_temperature.grad = torch.tensor(-1e4)
    module.optimizer_step(0, 0, optimizer)
    assert float(loss.log_temperature) == pytest.approx(math.log(2.0))
