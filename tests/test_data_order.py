"""Training order from (seed, epoch) alone: the same global batches on 1 or 2 processes, and a
run resumed mid-epoch trains on exactly the batches the uninterrupted run trained on."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset, WeightedRandomSampler

from avlab.data_order import (
    ResumableDataLoader,
    load_pending_loader_states,
    order_for_trainer,
    ordered_train_loader,
)
from avlab.tasks.face_voice.data import DistinctIdentityBatchSampler
from avlab.tasks.tts.data import LengthBucketSampler

DATA = TensorDataset(torch.arange(24))


def _loaders(batch: int) -> dict[str, DataLoader]:
    """A plain shuffled loader, a weighted one (smile's mix) and two tasks' own samplers."""
    return {
        "shuffle": DataLoader(DATA, batch_size=batch, shuffle=True),
        "weighted": DataLoader(
            DATA, batch_size=batch, sampler=WeightedRandomSampler([1.0] * 24, 24)
        ),
        "length_buckets": DataLoader(
            DATA, batch_sampler=LengthBucketSampler(list(range(24)), batch)
        ),
        "distinct_people": DataLoader(
            DATA, batch_sampler=DistinctIdentityBatchSampler(24, batch, repeats=2)
        ),
    }


def _batches(loader: DataLoader, epoch: int = 0) -> list[list[int]]:
    loader.set_epoch(epoch)
    return [b[0].tolist() for b in loader]


@pytest.mark.parametrize("kind", ["shuffle", "weighted", "length_buckets", "distinct_people"])
def test_the_order_depends_on_seed_and_epoch_not_on_the_global_rng(kind):
    orders = []
    for global_seed in (0, 1):
        torch.manual_seed(global_seed)
        orders.append(_batches(ordered_train_loader(_loaders(4)[kind], seed=7)))
    assert orders[0] == orders[1]
    other_epoch = _batches(ordered_train_loader(_loaders(4)[kind], seed=7), epoch=1)
    other_seed = _batches(ordered_train_loader(_loaders(4)[kind], seed=8))
    assert orders[0] != other_epoch and orders[0] != other_seed


@pytest.mark.parametrize("kind", ["shuffle", "weighted", "length_buckets", "distinct_people"])
def test_two_ranks_together_hold_one_process_batches_at_twice_the_size(kind):
    """Step by step, rank 0's and rank 1's batches of 3 are the single process's batch of 6."""
    single = _batches(ordered_train_loader(_loaders(6)[kind], seed=3), epoch=2)
    ranks = [
        _batches(ordered_train_loader(_loaders(3)[kind], rank, 2, seed=3), epoch=2)
        for rank in (0, 1)
    ]
    assert len(ranks[0]) == len(ranks[1]) == len(single) > 1
    for step, batch in enumerate(single):
        assert sorted(ranks[0][step] + ranks[1][step]) == sorted(batch)
        if kind != "weighted":  # drawn with replacement: a sample may come twice
            assert not set(ranks[0][step]) & set(ranks[1][step])


@pytest.mark.parametrize("kind", ["shuffle", "length_buckets"])
@pytest.mark.parametrize("done", [0, 2, 6])
def test_a_loader_restored_from_its_state_goes_on_where_the_saved_one_stopped(kind, done):
    """State saved after `done` batches of epoch 1 (6 = the whole epoch: the next one starts)."""
    saved = ordered_train_loader(_loaders(4)[kind], seed=5, batches_done=lambda: done)
    saved.set_epoch(1)
    state = saved.state_dict()
    restored = ordered_train_loader(_loaders(4)[kind], seed=5)
    restored.load_state_dict(state)
    resumed = [b[0].tolist() for b in restored]  # no set_epoch: the state says which epoch
    whole = _batches(ordered_train_loader(_loaders(4)[kind], seed=5), epoch=1)
    epoch = whole if done < 6 else _batches(saved, epoch=2)
    assert resumed == epoch[done % 6 :]
    assert [b[0].tolist() for b in restored] == epoch  # the resume position is used once


class _Recorder(L.LightningModule):
    """A linear model that records the samples of every batch it trains on. Its schedule reads
    estimated_stepping_batches, as every task's does (which makes Lightning build the loaders
    before the checkpoint is restored: Lightning issue #20550)."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.seen: list[list[int]] = []

    def training_step(self, batch, batch_idx):
        (x,) = batch
        self.seen.append(x.tolist())
        return self.layer(x.float()[:, None]).pow(2).mean()

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=0.01)
        total = self.trainer.estimated_stepping_batches
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def on_train_start(self):
        load_pending_loader_states(self.trainer)


class _Data(L.LightningDataModule):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def train_dataloader(self):
        return order_for_trainer(_loaders(4)[self.kind], self.trainer)


def _fit(tmp_path, kind: str, max_steps: int, ckpt_path=None) -> list[list[int]]:
    L.seed_everything(11)
    model = _Recorder()
    trainer = L.Trainer(
        max_epochs=3,
        max_steps=max_steps,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ModelCheckpoint(tmp_path, every_n_train_steps=1, save_top_k=-1)],
    )
    trainer.fit(model, _Data(kind), ckpt_path=ckpt_path)
    assert isinstance(trainer.train_dataloader, ResumableDataLoader)
    return model.seen


@pytest.mark.parametrize("kind", ["shuffle", "length_buckets"])
def test_lightning_resumes_mid_epoch_on_the_batches_the_whole_run_trained_next(tmp_path, kind):
    """18 steps in 3 epochs of 6, each epoch in a new order; stop at step 9 (mid-epoch 2),
    resume from that checkpoint: steps 10-18 see what the uninterrupted run saw, batch for
    batch. With a batch sampler, too (Lightning sets the epoch on batch_sampler.sampler)."""
    whole = _fit(tmp_path / "whole", kind, max_steps=18)
    assert whole[:6] != whole[6:12] != whole[12:]
    first = _fit(tmp_path / "cut", kind, max_steps=9)
    assert first == whole[:9]
    ckpt = next((tmp_path / "cut").glob("*step=9.ckpt"))
    resumed = _fit(tmp_path / "resumed", kind, max_steps=18, ckpt_path=ckpt)
    assert resumed == whole[9:]
