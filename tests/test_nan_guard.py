"""NanGuard, NanInjector, FiniteModelCheckpoint and GradNormMonitor on a tiny BatchNorm regressor.

Run as a script (`python tests/test_nan_guard.py OUT_DIR`) it is the two-rank DDP worker of
test_ddp_ranks_skip_together.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from avlab.callbacks import (
    FiniteModelCheckpoint,
    GradNormMonitor,
    NanGuard,
    NanInjector,
    TrainingDivergedError,
)

BASE_LR = 1e-2
GUARD_LOGGER = "avlab.callbacks.nan_guard"


def lr_decay(step: int) -> float:
    """Per-step LR multiplier of the toy schedule."""
    return 1.0 / (1.0 + 0.1 * step)


class ToyRegressor(L.LightningModule):
    """Linear -> BatchNorm1d -> ReLU -> Linear regression with AdamW and a per-step LambdaLR."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 1))

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        inputs, targets = batch
        return F.mse_loss(self.net(inputs), targets)

    def configure_optimizers(self) -> dict:
        optimizer = torch.optim.AdamW(self.parameters(), lr=BASE_LR, weight_decay=0.1)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_decay)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


class StepRecorder(L.Callback):
    """Records, after every optimizer step, weights, buffers and learning rates by global step."""

    def __init__(self) -> None:
        self.after_step: dict[int, dict] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        scheduler = trainer.lr_scheduler_configs[0].scheduler
        self.after_step[trainer.global_step] = {
            "params": {n: p.detach().clone() for n, p in pl_module.named_parameters()},
            "buffers": {n: b.detach().clone() for n, b in pl_module.named_buffers()},
            "lr": trainer.optimizers[0].param_groups[0]["lr"],
            "base_lr": scheduler.base_lrs[0],
            "scheduler_step": scheduler.last_epoch,
        }


def toy_loader() -> DataLoader:
    """256 random regression samples in batches of 16, in a fixed order."""
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(256, 8, generator=generator)
    targets = inputs.sum(dim=1, keepdim=True) + 0.1 * torch.randn(256, 1, generator=generator)
    return DataLoader(TensorDataset(inputs, targets), batch_size=16)


def fit(
    tmp_path: Path, callbacks: list[L.Callback], max_steps: int = 10, **trainer_kwargs
) -> L.Trainer:
    """Trains a fresh ToyRegressor on CPU and returns the trainer."""
    torch.manual_seed(0)
    trainer_kwargs.setdefault("enable_checkpointing", False)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=max_steps,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=callbacks,
        **trainer_kwargs,
    )
    trainer.fit(ToyRegressor(), train_dataloaders=toy_loader())
    return trainer


def same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Whether two name->tensor maps hold exactly equal tensors."""
    return a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


def all_finite(tensors) -> bool:
    """Whether every tensor is entirely finite."""
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def test_nan_loss_steps_are_skipped_and_weights_do_not_move(tmp_path, caplog):
    guard, recorder = NanGuard(), StepRecorder()
    with caplog.at_level(logging.WARNING, logger=GUARD_LOGGER):
        trainer = fit(tmp_path, [NanInjector(steps=[3, 4], target="loss"), guard, recorder])

    assert trainer.global_step == 10
    assert guard.skipped_steps == 2 and guard.skip_reasons["loss"] == 2
    assert trainer.callback_metrics["nan_guard/skipped_steps"].item() == 2
    assert all_finite(trainer.lightning_module.parameters())
    steps = recorder.after_step
    # Steps 3 and 4 ran with AdamW momentum and weight decay live, yet moved nothing.
    assert same_tensors(steps[3]["params"], steps[4]["params"])
    assert same_tensors(steps[4]["params"], steps[5]["params"])
    assert not same_tensors(steps[5]["params"], steps[6]["params"])
    # The schedule is not paused by a skip.
    assert steps[5]["scheduler_step"] == 5
    assert "the loss computation itself" in caplog.text


def test_nan_inputs_skip_the_batch_before_batchnorm_sees_it(tmp_path):
    guard, recorder = NanGuard(), StepRecorder()
    trainer = fit(tmp_path, [NanInjector(steps=[2], target="input"), guard, recorder])

    assert guard.skipped_batches == 1 and guard.skipped_steps == 1
    assert trainer.callback_metrics["nan_guard/skipped_batches"].item() == 1
    steps = recorder.after_step
    assert same_tensors(steps[2]["buffers"], steps[3]["buffers"])
    assert same_tensors(steps[2]["params"], steps[3]["params"])
    assert all_finite(trainer.lightning_module.buffers())
    assert all_finite(trainer.lightning_module.parameters())


def test_non_finite_gradient_is_skipped_and_its_parameter_named(tmp_path, caplog):
    guard, recorder = NanGuard(), StepRecorder()
    with caplog.at_level(logging.WARNING, logger=GUARD_LOGGER):
        trainer = fit(tmp_path, [NanInjector(steps=[3], target="grad"), guard, recorder])

    assert guard.skip_reasons["grad"] == 1 and guard.skipped_steps == 1
    assert same_tensors(recorder.after_step[3]["params"], recorder.after_step[4]["params"])
    assert all_finite(trainer.lightning_module.parameters())
    assert "Non-finite gradients in 1 parameter(s): net.0.weight" in caplog.text


def test_locator_names_the_first_non_finite_module(tmp_path, caplog):
    guard = NanGuard(locate_for_n_steps=3)
    injector = NanInjector(steps=[2, 3, 4], target="module", module="net.1")
    with caplog.at_level(logging.WARNING, logger=GUARD_LOGGER):
        trainer = fit(tmp_path, [injector, guard])

    assert guard.skipped_steps == 3 and guard.rollbacks == 0
    assert "Forward hooks armed for the next 3 steps" in caplog.text
    assert "First submodule with a non-finite output: 'net.1' (BatchNorm1d)" in caplog.text
    assert not guard.locator.armed
    assert all_finite(trainer.lightning_module.parameters())


def test_persistent_nan_rolls_back_with_lower_lr_then_stops(tmp_path):
    guard = NanGuard(
        max_consecutive_skips=2, max_rollbacks=2, lr_backoff=0.5, snapshot_every_n_steps=2
    )
    recorder = StepRecorder()
    injector = NanInjector(steps=range(5, 100), target="loss")
    with pytest.raises(
        TrainingDivergedError, match=r"diverged at global step 11: 2 consecutive .* 2 rollback"
    ):
        fit(tmp_path, [injector, guard, recorder], max_steps=50)

    steps = recorder.after_step
    # Snapshots after 2 and 4 good steps; skips at 5, 6 -> rollback; 7, 8 -> rollback; 9, 10 -> stop.
    for rollback_step, lr_scale in ((7, 0.5), (9, 0.25)):
        record = steps[rollback_step]
        assert same_tensors(record["params"], steps[4]["params"])
        assert same_tensors(record["buffers"], steps[4]["buffers"])
        assert record["base_lr"] == pytest.approx(BASE_LR * lr_scale)
        assert record["lr"] == pytest.approx(
            BASE_LR * lr_scale * lr_decay(record["scheduler_step"])
        )
    assert 11 not in steps
    assert guard.rollbacks == 2 and guard.skipped_steps == 6


def test_finite_checkpoint_writes_finite_weights_and_refuses_nan(tmp_path, caplog):
    class PoisonWeights(L.Callback):
        """Puts a NaN into the first layer's weights after step 3, as a diverged run would."""

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 3:
                with torch.no_grad():
                    pl_module.net[0].weight[0, 0] = float("nan")

    checkpoint = FiniteModelCheckpoint(
        dirpath=tmp_path / "ckpt",
        filename="{step}",
        every_n_train_steps=1,
        save_top_k=-1,
        save_last=True,
    )
    with caplog.at_level(logging.ERROR, logger="avlab.callbacks.checkpoint"):
        fit(tmp_path, [PoisonWeights(), checkpoint], max_steps=5, enable_checkpointing=True)

    written = sorted(path.name for path in (tmp_path / "ckpt").iterdir())
    assert written == ["last.ckpt", "step=1.ckpt", "step=2.ckpt"]
    assert checkpoint.refused_saves >= 1
    assert "refused to write the top-k checkpoint at global step 3" in caplog.text
    assert "net.0.weight" in caplog.text
    assert all(Path(path).exists() for path in checkpoint.best_k_models)
    last = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 2
    assert all_finite(last["state_dict"].values())


def test_grad_norm_monitor_logs_the_total_norm(tmp_path):
    class RecordGradNorm(L.Callback):
        """Computes the total gradient norm the slow way, one parameter at a time."""

        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            grads = [p.grad.norm() for p in pl_module.parameters() if p.grad is not None]
            self.norm_at_step = (trainer.global_step, torch.stack(grads).norm().item())

    recorder = RecordGradNorm()
    trainer = fit(tmp_path, [GradNormMonitor(log_every_n_steps=3), recorder], max_steps=7)

    last_step, expected = recorder.norm_at_step
    assert last_step == 6
    assert trainer.callback_metrics["train/grad_norm"].item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target": "weights"}, "target must be one of"),
        ({"target": "module"}, "needs module="),
    ],
)
def test_injector_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NanInjector(steps=[1], **kwargs)


def test_injector_names_close_modules_when_module_is_missing(tmp_path):
    with pytest.raises(ValueError, match=r"no submodule 'net\.7'.*net\.1"):
        fit(tmp_path, [NanInjector(steps=[1], target="module", module="net.7")], max_steps=2)


def test_guard_counters_survive_a_resume():
    guard = NanGuard()
    guard.skipped_steps, guard.rollbacks, guard.lr_scale = 4, 1, 0.5
    guard.skip_reasons["input"] = 3
    restored = NanGuard()
    restored.load_state_dict(guard.state_dict())
    assert restored.state_dict() == guard.state_dict()
    assert restored.skipped_batches == 3


@pytest.mark.slow
def test_ddp_ranks_skip_together(tmp_path):
    """Two gloo ranks; only rank 1 sees a NaN input batch (step 2), a NaN loss (step 3) and a NaN
    gradient (step 5). Both ranks must skip all three steps together (else DDP hangs or the
    weights part) and finish with the same finite weights."""
    worker = subprocess.Popen(
        [sys.executable, __file__, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = worker.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        output, _ = worker.communicate()
        pytest.fail(f"DDP run hung (ranks disagreed?):\n{output[-3000:]}")
    assert worker.returncode == 0, output[-3000:]

    results = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    for result in results:
        assert result["global_step"] == 8
        assert result["skipped_steps"] == 3 and result["skipped_batches"] == 1
        assert result["finite"]
    assert results[1]["skip_reasons"] == {"input": 1, "loss": 1, "grad": 1, "other_rank": 0}
    # rank 0 names its own view of each skip (rank 1's NaN loss reaches it as NaN gradients)
    assert (
        sum(results[0]["skip_reasons"].values()) == 3 and results[0]["skip_reasons"]["input"] == 1
    )
    assert results[0]["params_checksum"] == results[1]["params_checksum"]


def run_ddp_worker(out_dir: Path) -> None:
    """Trains on two CPU ranks with a NaN batch on rank 1 only, and writes each rank's counters."""
    torch.manual_seed(0)
    guard = NanGuard()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_steps=8,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[
            NanInjector(steps=[2], target="input", ranks=[1]),
            NanInjector(steps=[3], target="loss", ranks=[1]),
            NanInjector(steps=[5], target="grad", ranks=[1]),
            guard,
        ],
    )
    trainer.fit(ToyRegressor(), train_dataloaders=toy_loader())
    params = list(trainer.lightning_module.parameters())
    result = {
        "global_step": trainer.global_step,
        "skipped_steps": guard.skipped_steps,
        "skipped_batches": guard.skipped_batches,
        "skip_reasons": guard.skip_reasons,
        "finite": all_finite(params),
        "params_checksum": math.fsum(p.double().sum().item() for p in params),
    }
    (out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    run_ddp_worker(Path(sys.argv[1]))
