"""Training data order that depends only on (seed, epoch, world size), and resumes mid-epoch.

Two things a run should not depend on do change Lightning's default training order: the state
of the global RNG when an epoch's iterator is made (so a resumed run, whose RNG started afresh,
shuffles its epoch differently), and the number of processes (DistributedSampler draws its
own permutation, so 2 processes x batch B do not see the batches 1 process x batch 2B sees).

Here every epoch's order is drawn from `seed + epoch` alone, once for all ranks, and then
split: rank r of W takes positions r, r+W, ... of the drawn sample order, so at step i the W
ranks together hold exactly the samples one process with W times the batch holds. A task's
own batch sampler (batches of distinct people, of similar lengths) is drawn at the global
batch when it offers `with_batch_size`, and each global batch split over the ranks the same
way. The loader is stateful in Lightning's sense (`state_dict` / `load_state_dict`): the
checkpoint records the epoch and how many of its batches were trained, and a resumed run goes
on with the batches it had not seen yet, in the order the uninterrupted run would have used.

Random choices a dataset makes for a sample (augmentation, which frame or utterance to take)
draw from the global RNGs; here each sample is loaded under a seed of its own, from (seed,
epoch, its position in the epoch's global order), so they do not depend on the batches before
it, on the number of workers, or on the number of processes. The checkpoint also keeps this
process's RNG states (torch, numpy, random), which a resumed run takes back before its first
step, so dropout goes on as it would have: a resumed run is the uninterrupted run. (Under DDP
the checkpoint holds rank 0's states, which every rank takes; ranks start from one seed and
draw alike, so they match.)
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    IterableDataset,
    Sampler,
    SequentialSampler,
)

Key = tuple[int, int]  # (the sample's own seed, its index in the dataset)


def global_seed() -> int:
    """The run's seed as Lightning's seed_everything recorded it (0 when nothing was seeded)."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


def _sample_seed(seed: int, epoch: int, position: int) -> int:
    """A sample's seed from the run's seed, the epoch and its position in the global order."""
    return int(np.random.SeedSequence((seed, epoch, position)).generate_state(1)[0])


@contextmanager
def _cpu_seeded(seed: int) -> Iterator[None]:
    """torch's CPU generator seeded with `seed`, and put back afterwards. Not torch.manual_seed:
    that also seeds every CUDA device (which nothing here restores) and costs 80 us."""
    generator = torch.default_generator
    saved = generator.get_state()
    generator.manual_seed(seed)
    try:
        yield
    finally:
        generator.set_state(saved)


class SeededItems(Dataset):
    """`dataset`, indexed by (seed, index): each item is made under its own seed (torch's,
    numpy's and random's global generators). torch's is put back afterwards; numpy's and
    random's are left as the item left them (saving and restoring numpy's state costs more
    than many samples take to load; what they hold is as reproducible either way). About 20 us
    a sample. A plain index passes through."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Key | int) -> Any:
        if not isinstance(key, tuple):
            return self.dataset[key]
        seed, index = key
        with _cpu_seeded(seed):
            np.random.seed(seed)
            random.seed(seed)
            return self.dataset[index]


def rng_states() -> dict[str, Any]:
    """This process's torch, numpy and random states, as plain tensors and lists (a checkpoint
    loaded with weights_only=True can hold them)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": [version, list(internal), gauss_next],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Put back what rng_states returned."""
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _drawn(sampler: Any, seed: int) -> list:
    """Everything `sampler` yields for one epoch, drawn under `seed` without touching the
    global RNG (RandomSampler, WeightedRandomSampler and our batch samplers draw from it)."""
    with _cpu_seeded(seed):
        return list(sampler)


class _Resumable:
    """set_epoch, and a one-off start position for the epoch a resumed run begins in."""

    epoch: int = 0
    seed: int = 0
    keyed: bool = False
    _resume_at: tuple[int, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def resume_at(self, epoch: int, done: int) -> None:
        """Start `epoch` after its first `done` items (batches for a batch sampler)."""
        self.epoch, self._resume_at = int(epoch), (int(epoch), int(done))

    def _start(self) -> int:
        resume, self._resume_at = self._resume_at, None
        return resume[1] if resume is not None and resume[0] == self.epoch else 0

    def _items(self, pairs: list[tuple[int, int]]) -> Iterator[Key | int]:
        """(position, index) pairs as what the dataset takes: (sample seed, index) keys when
        `keyed`, else indices. Seeds are made only for what this rank yields."""
        for position, index in pairs:
            yield (_sample_seed(self.seed, self.epoch, position), index) if self.keyed else index


class EpochSampler(_Resumable, Sampler[int]):
    """Sample indices of `sampler` (shuffled, weighted or in order), drawn under seed + epoch,
    padded from the start to a multiple of `world_size` (as DistributedSampler does) and split:
    this rank gets positions rank, rank + world_size, ... `keyed`: yield (sample seed, index)
    keys for a SeededItems dataset instead of plain indices."""

    def __init__(
        self,
        sampler: Sampler,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        keyed: bool = False,
    ) -> None:
        self.sampler, self.rank, self.world_size, self.seed = sampler, rank, world_size, seed
        self.keyed = keyed

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.world_size)

    def __iter__(self) -> Iterator[Key]:
        indices = _drawn(self.sampler, self.seed + self.epoch)
        total = len(self) * self.world_size
        indices = (indices * (1 + total // max(len(indices), 1)))[:total]
        mine = list(enumerate(indices))[self.rank :: self.world_size][self._start() :]
        yield from self._items(mine)


class EpochBatchSampler(_Resumable, Sampler[list[int]]):
    """A task's own batch sampler, drawn under seed + epoch on every rank alike.

    `split` (for a sampler drawn at the global batch): each batch is split over the ranks,
    this rank taking positions rank, rank + world_size, ...; batches too small to give every
    rank a sample are dropped. Otherwise this rank takes every world_size-th batch. Either way
    the list is padded from the start so every rank has as many batches (a rank with fewer
    steps would leave the others waiting in an all-reduce). `keyed`: batches of (sample seed,
    index) keys for a SeededItems dataset.
    """

    def __init__(
        self,
        batch_sampler: Any,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        split: bool = False,
        keyed: bool = False,
    ) -> None:
        self.batch_sampler, self.rank, self.world_size = batch_sampler, rank, world_size
        self.seed, self.split, self.keyed = seed, split and world_size > 1, keyed

    @property
    def sampler(self) -> EpochBatchSampler:
        """Itself: Lightning sets the epoch on `loader.batch_sampler.sampler`, not on the batch
        sampler (a batch sampler without this would draw epoch 0's order every epoch)."""
        return self

    def __len__(self) -> int:
        if self.split:
            return len(self.batch_sampler)
        return -(-len(self.batch_sampler) // self.world_size)

    def __iter__(self) -> Iterator[list[Key]]:
        batches, position = [], 0  # each batch as (position in the epoch's order, index) pairs
        for batch in _drawn(self.batch_sampler, self.seed + self.epoch):
            batches.append(list(enumerate(batch, start=position)))
            position += len(batch)
        if self.split:
            mine = [b[self.rank :: self.world_size] for b in batches if len(b) >= self.world_size]
        else:
            total = len(self) * self.world_size
            padded = (batches * (1 + total // max(len(batches), 1)))[:total]
            mine = padded[self.rank :: self.world_size]
        mine = (mine * (1 + len(self) // max(len(mine), 1)))[: len(self)]
        for batch in mine[self._start() :]:
            yield list(self._items(batch))


class ResumableDataLoader(DataLoader):
    """A DataLoader over an EpochSampler or EpochBatchSampler whose position Lightning keeps
    in the checkpoint (`state_dict`) and gives back before a resumed run's first batch.

    `batches_done` (set by `ordered_train_loader`) reads how many of the current epoch's
    batches the trainer has trained; it is read when the checkpoint is written, not counted
    here, because Lightning fetches a batch ahead of the one it trains.
    """

    batches_done: Callable[[], int] | None = None

    def _get_iterator(self) -> Any:
        """DataLoader draws its workers' base seed from the global RNG when an iterator is
        made; here that draw leaves the RNG as it was, so a resumed run, which makes its
        iterator after taking back the saved RNG state, goes on with the same stream."""
        with torch.random.fork_rng(devices=[]):
            return super()._get_iterator()

    def _order(self) -> _Resumable | None:
        """The EpochSampler or EpochBatchSampler; None when Lightning rebuilt this loader with
        a sampler of its own (`overfit_batches` puts in a SequentialSampler): then there is no
        position to keep."""
        for order in (self.batch_sampler, self.sampler):
            if isinstance(order, _Resumable):
                return order
        return None

    def set_epoch(self, epoch: int) -> None:
        """Set the order's epoch (Lightning calls the sampler's set_epoch itself)."""
        if (order := self._order()) is not None:
            order.set_epoch(epoch)

    def state_dict(self) -> dict[str, Any]:
        if (order := self._order()) is None:
            return {}
        done = self.batches_done() if self.batches_done is not None else 0
        return {"epoch": order.epoch, "batches_done": int(done), "rng": rng_states()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if (order := self._order()) is None or not state:
            return
        set_rng_states(state["rng"])
        epoch, done = int(state["epoch"]), int(state["batches_done"])
        if done >= len(self):  # saved at the end of an epoch: the next one starts afresh
            epoch, done = epoch + 1, 0
        step = self.batch_size if isinstance(order, EpochSampler) else 1
        order.resume_at(epoch, done * (step or 1))


def loader_like(
    loader: DataLoader, cls: type[DataLoader] = DataLoader, dataset: Any = None, **sampling: Any
) -> DataLoader:
    """`loader` again (workers, collate, memory pinning, ...) as a `cls`, over `dataset` (its
    own by default), with the given sampler or batch sampler."""
    return cls(
        loader.dataset if dataset is None else dataset,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context,
        generator=loader.generator,
        prefetch_factor=loader.prefetch_factor,
        persistent_workers=loader.persistent_workers,
        **sampling,
    )


def ordered_train_loader(
    loader: DataLoader,
    rank: int = 0,
    world_size: int = 1,
    seed: int | None = None,
    batches_done: Callable[[], int] | None = None,
) -> DataLoader:
    """The training loader with the (seed, epoch)-ordered, rank-split, resumable sampling
    described in the module docstring; `loader` itself when it is already so, or iterable."""
    if isinstance(loader, ResumableDataLoader) or not isinstance(loader, DataLoader):
        return loader
    if isinstance(loader.dataset, IterableDataset):
        return loader  # an iterable dataset orders itself
    seed = global_seed() if seed is None else seed
    own = loader.batch_sampler
    if own is not None and type(own) is not BatchSampler:
        split = world_size > 1 and hasattr(own, "with_batch_size")
        if split:
            own = own.with_batch_size(own.batch_size * world_size)
        sampling = {"batch_sampler": EpochBatchSampler(own, rank, world_size, seed, split, True)}
    else:
        sampler = loader.sampler
        if not isinstance(sampler, Sampler):
            sampler = SequentialSampler(loader.dataset)
        sampling = {
            "sampler": EpochSampler(sampler, rank, world_size, seed, keyed=True),
            "batch_size": loader.batch_size,
            "drop_last": loader.drop_last,
        }
    ordered = loader_like(loader, ResumableDataLoader, SeededItems(loader.dataset), **sampling)
    ordered.batches_done = batches_done
    return ordered


def load_pending_loader_states(trainer: Any) -> None:
    """Give a resumed run's training loaders their saved state, if Lightning has not.

    Lightning issue #20550: when `configure_optimizers` reads
    `trainer.estimated_stepping_batches` (every task here does, for its schedule), the training
    loaders are made before the checkpoint is restored, and Lightning then never hands them
    their saved state. Called at the start of training (TaskModule.on_train_start), this loads
    the pending states and makes the batch iterator again, as Lightning's own path would.
    """
    fit_loop = trainer.fit_loop
    if not getattr(fit_loop, "_combined_loader_states_to_load", None) or not fit_loop.restarting:
        return
    fit_loop._load_combined_loader_states()
    if fit_loop._data_fetcher is not None:
        iter(fit_loop._data_fetcher)


def order_for_trainer(loader: DataLoader, trainer: Any) -> DataLoader:
    """`ordered_train_loader` for the trainer's rank and world size, reading the epoch's
    trained batches from its fit loop; for a datamodule without a trainer, rank 0 of 1."""
    if trainer is None:
        return ordered_train_loader(loader)

    def batches_done() -> int:
        return trainer.fit_loop.epoch_loop.batch_progress.current.processed

    return ordered_train_loader(
        loader, trainer.global_rank, trainer.world_size, batches_done=batches_done
    )


__all__ = [
    "EpochBatchSampler",
    "EpochSampler",
    "ResumableDataLoader",
    "SeededItems",
    "load_pending_loader_states",
    "loader_like",
    "order_for_trainer",
    "ordered_train_loader",
]
