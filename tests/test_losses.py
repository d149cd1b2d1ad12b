"""MaskedMultiTaskLoss: masking, zero contribution of unlabelled heads, focal and adaptive options."""

import math

import pytest
import torch
import torch.nn.functional as F

from avlab.losses import HeadLoss, MaskedMultiTaskLoss, focal_cross_entropy

HEADS = {
    "smile": {"kind": "bce", "weight": 1.0},
    "emotion": {"kind": "ce", "weight": 1.0, "label_smoothing": 0.1},
}


def _batch(n=6, smile_mask=None, emotion_mask=None):
    torch.manual_seed(0)
    preds = {
        "smile": torch.randn(n, requires_grad=True),
        "emotion": torch.randn(n, 7, requires_grad=True),
    }
    targets = {"smile": torch.rand(n), "emotion": torch.randint(0, 7, (n,))}
    masks = {
        "smile": torch.ones(n, dtype=torch.bool) if smile_mask is None else smile_mask,
        "emotion": torch.ones(n, dtype=torch.bool) if emotion_mask is None else emotion_mask,
    }
    return preds, targets, masks


def test_all_masked_head_contributes_exactly_zero_and_no_gradient():
    preds, targets, masks = _batch(emotion_mask=torch.zeros(6, dtype=torch.bool))
    # Placeholder targets of unlabelled samples may be anything, even out of range.
    targets["emotion"] = torch.full((6,), -100)
    out = MaskedMultiTaskLoss(HEADS)(preds, targets, masks)
    assert out["emotion"].item() == 0.0
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    assert torch.equal(preds["emotion"].grad, torch.zeros_like(preds["emotion"]))
    assert preds["smile"].grad.abs().sum() > 0


def test_no_labels_at_all_gives_zero_finite_loss():
    none = torch.zeros(6, dtype=torch.bool)
    preds, targets, masks = _batch(smile_mask=none, emotion_mask=none)
    out = MaskedMultiTaskLoss(HEADS, adaptive=True)(preds, targets, masks)
    assert out["loss"].item() == 0.0
    out["loss"].backward()
    assert preds["smile"].grad.abs().sum() == 0


def test_masked_mean_equals_loss_on_labelled_samples_only():
    mask = torch.tensor([True, False, True, True, False, False])
    preds, targets, masks = _batch(smile_mask=mask)
    out = MaskedMultiTaskLoss({"smile": {"kind": "bce"}})(preds, targets, masks)
    expected = F.binary_cross_entropy_with_logits(preds["smile"][mask], targets["smile"][mask])
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_nan_prediction_of_unlabelled_sample_still_propagates():
    """Masking must not hide a model that outputs NaN: the guard, not the loss, handles it."""
    preds, targets, masks = _batch()
    with torch.no_grad():
        preds["smile"][0] = float("nan")
    masks["smile"][0] = False
    out = MaskedMultiTaskLoss(HEADS)(preds, targets, masks)
    assert math.isnan(out["loss"].item())


def test_focal_with_gamma_zero_equals_cross_entropy():
    logits, target = torch.randn(20, 7), torch.randint(0, 7, (20,))
    ce = F.cross_entropy(logits, target, reduction="none", label_smoothing=0.05)
    assert torch.allclose(focal_cross_entropy(logits, target, 0.0, 0.05), ce)
    focal = focal_cross_entropy(logits, target, 2.0)
    assert (focal <= F.cross_entropy(logits, target, reduction="none") + 1e-7).all()


def test_uncertainty_weights_get_gradients_and_stay_finite():
    loss = MaskedMultiTaskLoss(HEADS, adaptive=True)
    preds, targets, masks = _batch()
    out = loss(preds, targets, masks)
    out["loss"].backward()
    for log_var in loss.log_vars.values():
        assert log_var.grad is not None and torch.isfinite(log_var.grad) and log_var.grad != 0
    assert all(math.isfinite(w) for w in loss.uncertainty_weights().values())


def test_bad_head_spec_is_a_clear_error():
    with pytest.raises(ValueError, match="kind"):
        HeadLoss(kind="hinge")
    with pytest.raises(ValueError, match="label_smoothing"):
        HeadLoss(kind="ce", label_smoothing=1.5)


def test_task_loss_leaves_out_the_uncertainty_terms():
    """With adaptive weights the total can go negative; task_loss is the fixed-weight sum."""
    loss = MaskedMultiTaskLoss(
        heads={"smile": {"kind": "bce", "weight": 2.0}, "emotion": {"kind": "ce", "weight": 1.0}},
        adaptive=True,
    )
    with torch.no_grad():
        for log_var in loss.log_vars.values():
            log_var.fill_(3.0)  # large learnt variances: exp(-s) * L + s is dominated by s
    preds = {"smile": torch.zeros(4), "emotion": torch.zeros(4, 7)}
    targets = {"smile": torch.ones(4), "emotion": torch.zeros(4, dtype=torch.long)}
    masks = {"smile": torch.ones(4, dtype=torch.bool), "emotion": torch.ones(4, dtype=torch.bool)}
    out = loss(preds, targets, masks)
    expected = 2.0 * out["smile"] + 1.0 * out["emotion"]
    assert float(out["task_loss"]) == pytest.approx(float(expected))
    assert float(out["loss"]) > float(out["task_loss"]) + 5.0


def test_smile_uncertainty_terms_get_no_weight_decay(make_cfg):
    from avlab.run import build_module

    module = build_module(make_cfg("experiment=smile_finetune"))
    groups = module.parameter_groups()
    loss_ids = {id(p) for p in module.criterion.parameters()}
    assert loss_ids, "smile_finetune's loss should have learnable uncertainty terms"
    no_decay = [g for g in groups if g.get("weight_decay") == 0.0]
    assert len(no_decay) == 1 and {id(p) for p in no_decay[0]["params"]} == loss_ids
    assert all(id(p) not in loss_ids for g in groups if g not in no_decay for p in g["params"])
