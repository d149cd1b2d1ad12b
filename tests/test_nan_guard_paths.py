"""NanGuard keeps its promise on every path: fp16 with a GradScaler, manual optimisation,
gradient accumulation, and rollbacks that restore the optimizer state."""

from __future__ import annotations

import logging

import lightning as L
import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision
from torch.nn import functional as F

from avlab.callbacks import NanGuard, NanInjector, TrainingDivergedError
from tests.test_nan_guard import (
    GUARD_LOGGER,
    StepRecorder,
    ToyRegressor,
    all_finite,
    fit,
    same_tensors,
    toy_loader,
)


def fp16() -> list:
    """fp16 AMP with a GradScaler on CPU (Lightning's `16-mixed` silently falls back to bf16 there)."""
    return [MixedPrecision("16-mixed", "cpu")]


class LossOnlyFault(ToyRegressor):
    """Adds a NaN constant to the loss at chosen global steps: the loss is NaN, the gradients finite."""

    def __init__(self, bad_steps: set[int], fused: bool = False) -> None:
        super().__init__()
        self.bad_steps, self.fused = bad_steps, fused

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        return loss + float("nan") if self.global_step in self.bad_steps else loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-2, fused=self.fused)


class ManualRegressor(ToyRegressor):
    """Manual optimisation, as an autoregressive or GAN-style task might use; NaN loss at chosen steps."""

    def __init__(self, bad_steps: set[int]) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.bad_steps = bad_steps

    def training_step(self, batch, batch_idx):
        optimizer = self.optimizers()
        inputs, targets = batch
        loss = F.mse_loss(self.net(inputs), targets)
        if self.global_step in self.bad_steps:
            loss = loss * float("nan")
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-2, weight_decay=0.1)


def _fit_module(tmp_path, module, callbacks, max_steps=10, **kwargs) -> L.Trainer:
    torch.manual_seed(0)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
        callbacks=callbacks,
        **kwargs,
    )
    trainer.fit(module, train_dataloaders=toy_loader())
    return trainer


def test_fp16_gradient_faults_are_counted_and_skipped_without_rollback(tmp_path, caplog):
    guard, recorder = NanGuard(), StepRecorder()
    with caplog.at_level(logging.WARNING, logger=GUARD_LOGGER):
        trainer = fit(
            tmp_path, [NanInjector(steps=[5, 6], target="grad"), guard, recorder], plugins=fp16()
        )
    # Before: the GradScaler skipped these alone and the guard counted nothing.
    assert guard.skip_reasons["grad"] >= 2 and guard.rollbacks == 0
    assert same_tensors(recorder.after_step[5]["params"], recorder.after_step[7]["params"])
    assert not same_tensors(recorder.after_step[7]["params"], recorder.after_step[8]["params"])
    assert "fp16 loss scale" in caplog.text
    assert all_finite(trainer.lightning_module.parameters())


def test_fp16_persistent_gradient_fault_rolls_back_and_stops(tmp_path):
    # Before: a persistent fault only halved the loss scale forever and the run went on.
    guard = NanGuard(max_consecutive_skips=3, max_rollbacks=1, snapshot_every_n_steps=2)
    with pytest.raises(TrainingDivergedError, match="1 rollback"):
        fit(
            tmp_path,
            [NanInjector(steps=range(4, 1000), target="grad"), guard],
            max_steps=200,
            plugins=fp16(),
        )
    assert guard.rollbacks == 1


@pytest.mark.parametrize("fused", [False, True])
def test_fp16_step_with_finite_gradients_but_nan_loss_is_skipped(tmp_path, fused):
    guard, recorder = NanGuard(), _NoSchedulerRecorder()
    module = LossOnlyFault({5}, fused=fused)
    # Before, with a fused optimizer, clearing the gradients made scaler.step raise.
    trainer = _fit_module(tmp_path, module, [guard, recorder], plugins=fp16())
    steps = recorder.after_step
    assert guard.skip_reasons["loss"] == 1
    assert same_tensors(steps[5], steps[6])
    assert not same_tensors(steps[6], steps[7])
    assert trainer.global_step == 10


class _NoSchedulerRecorder(L.Callback):
    """Parameters after every optimizer step (for modules without a scheduler)."""

    def __init__(self) -> None:
        self.after_step: dict[int, dict] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.after_step[trainer.global_step] = {
            n: p.detach().clone() for n, p in pl_module.named_parameters()
        }


def test_manual_optimisation_skips_the_bad_step_not_the_next_one(tmp_path):
    guard, recorder = NanGuard(), _NoSchedulerRecorder()
    trainer = _fit_module(tmp_path, ManualRegressor({4}), [guard, recorder])
    steps = recorder.after_step
    assert guard.skipped_steps == 1 and guard.skip_reasons["loss"] == 1
    # The step that saw the NaN loss (global step 4 -> 5) moved nothing ...
    assert same_tensors(steps[4], steps[5])
    # ... and the clean step after it was taken (before, this one was skipped instead).
    assert not same_tensors(steps[5], steps[6])
    assert all_finite(trainer.lightning_module.parameters())


def test_accumulated_micro_batches_are_judged_together(tmp_path):
    guard, recorder = NanGuard(), StepRecorder()
    trainer = fit(
        tmp_path,
        [NanInjector(steps=[3], target="loss"), guard, recorder],
        accumulate_grad_batches=2,
    )
    steps = recorder.after_step
    assert trainer.global_step == 10
    assert guard.skipped_steps == 1 and guard.skip_reasons["loss"] == 1
    assert same_tensors(steps[3]["params"], steps[4]["params"])
    assert not same_tensors(steps[4]["params"], steps[5]["params"])


class OptimizerStateRecorder(StepRecorder):
    """StepRecorder that also keeps AdamW's first-moment estimates after every step."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        state = trainer.optimizers[0].state
        self.after_step[trainer.global_step]["exp_avg"] = {
            i: state[p]["exp_avg"].clone() for i, p in enumerate(pl_module.parameters())
        }


def test_rollback_restores_the_optimizer_state_of_the_snapshot(tmp_path):
    guard = NanGuard(max_consecutive_skips=2, max_rollbacks=3, snapshot_every_n_steps=3)
    recorder = OptimizerStateRecorder()
    fit(tmp_path, [NanInjector(steps=[5, 6], target="loss"), guard, recorder], max_steps=8)
    steps = recorder.after_step
    # Snapshot after 3 good steps; steps 4 and 5 were good, the batches at 5 and 6 skipped,
    # then the rollback (recorded as step 7) brought back the step-3 weights and moments.
    assert guard.rollbacks == 1
    exp_avg = {k: {str(i): t for i, t in v["exp_avg"].items()} for k, v in steps.items()}
    assert same_tensors(exp_avg[7], exp_avg[3])
    assert not same_tensors(exp_avg[5], exp_avg[3])
    assert same_tensors(steps[7]["params"], steps[3]["params"])
