"""DDP under Hydra: every rank works in rank 0's run folder, also inside a multirun.

Lightning starts ranks 1..N-1 by re-running the script with the same argv plus
`hydra.run.dir=<the run dir>`. Under Hydra that goes wrong in two ways: in a multirun the argv
holds the sweep (`-m`, `a=1,2`), so each child starts a sweep of its own (stray folders, and
rank 0 waits for ever), and a child's `${now:}` run dir or log file is not rank 0's.
HydraDDPStrategy starts each child as one plain run of *this job*: the job's own overrides
(`HydraConfig.overrides.task`, which in a sweep hold this job's values), `hydra.mode=RUN`,
`hydra.run.dir=<this job's output dir>`, no `.hydra/` copy, and a log file of its own
(`<task>_rank<N>.log`, lines prefixed with the rank). Under SLURM or torchrun the ranks are
started outside (`creates_processes_externally`) and this launcher is not used.
"""

from __future__ import annotations

import functools
import logging
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import lightning as L
import torch
from lightning.fabric.strategies.launchers.subprocess_script import _basic_subprocess_cmd
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from lightning.pytorch.trainer.connectors.data_connector import _get_distributed_sampler
from lightning.pytorch.utilities.data import _update_dataloader, has_iterable_dataset
from omegaconf import OmegaConf
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, RandomSampler

from avlab.data_order import EpochBatchSampler, ResumableDataLoader, global_seed, loader_like

log = logging.getLogger(__name__)

# Environment the launcher sets for the ranks; removed again from rank 0's process when the
# run ends, so the next job of a multirun picks a fresh port and starts its own ranks.
LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
LOG_FORMAT = "[%(asctime)s][rank {rank}][%(name)s][%(levelname)s] - %(message)s"


def hydra_child_command(local_rank: int) -> Sequence[str]:
    """The command line that runs this Hydra job again as rank `local_rank`, in the same folder."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import to_absolute_path

    import __main__

    hydra_cfg = HydraConfig.get()
    output_dir = hydra_cfg.runtime.output_dir
    if __main__.__spec__ is None:
        command = [sys.executable, to_absolute_path(sys.argv[0])]
    else:
        command = [sys.executable, "-m", __main__.__spec__.name]
    command += [
        *hydra_cfg.overrides.task,
        "hydra.mode=RUN",
        f'hydra.run.dir="{output_dir}"',
        "hydra.output_subdir=null",
    ]
    parent_log = OmegaConf.select(hydra_cfg, "job_logging.handlers.file.filename")
    if parent_log:  # a log file of its own, each line saying which rank wrote it
        log_file = str(parent_log).removesuffix(".log") + f"_rank{local_rank}.log"
        fmt = LOG_FORMAT.format(rank=local_rank)
        command += [
            f'hydra.job_logging.handlers.file.filename="{log_file}"',
            f"hydra.job_logging.formatters.simple.format='{fmt}'",
        ]
    return command


def _hydra_job_running() -> bool:
    """Whether a Hydra job (with a runtime output dir) is running in this process."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.initialized() and bool(HydraConfig.get().runtime.get("output_dir"))


class HydraJobLauncher(_SubprocessScriptLauncher):
    """Lightning's subprocess launcher, starting each child as a single run of this Hydra job."""

    def _call_children_scripts(self) -> None:
        self._check_can_spawn_children()
        self.procs = []
        self.env_before = {name: os.environ.get(name) for name in LAUNCH_ENV}
        os.environ["MASTER_ADDR"] = self.cluster_environment.main_address
        os.environ["MASTER_PORT"] = str(self.cluster_environment.main_port)
        os.environ["NODE_RANK"] = str(self.cluster_environment.node_rank())
        os.environ["LOCAL_RANK"] = str(self.cluster_environment.local_rank())
        os.environ["WORLD_SIZE"] = f"{self.num_processes * self.num_nodes}"
        for local_rank in range(1, self.num_processes):
            env = {**os.environ, "LOCAL_RANK": str(local_rank)}
            if _hydra_job_running():
                command = hydra_child_command(local_rank)
            else:
                command = _basic_subprocess_cmd()
            self.procs.append(subprocess.Popen(command, env=env))

    def restore_env(self) -> None:
        """Put back the launch variables as they were before the children were started."""
        for name, value in getattr(self, "env_before", {}).items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def shard_dataloader(dataloader: Any, rank: int, world_size: int) -> Any:
    """The loader with Lightning's usual DistributedSampler, or, for a task's own batch
    sampler, an EpochBatchSampler taking every world_size-th batch. A task's training loader
    comes already split (avlab.data_order) and is returned as it is."""
    if not isinstance(dataloader, DataLoader) or has_iterable_dataset(dataloader):
        return dataloader
    if isinstance(dataloader, ResumableDataLoader):
        return dataloader
    if isinstance(dataloader.sampler, DistributedSampler):
        return dataloader
    seed = global_seed()
    batch_sampler = dataloader.batch_sampler
    if batch_sampler is not None and type(batch_sampler) is not BatchSampler:
        sharded = EpochBatchSampler(batch_sampler, rank, world_size, seed)
        return loader_like(dataloader, batch_sampler=sharded)
    sampler = _get_distributed_sampler(
        dataloader,
        shuffle=isinstance(dataloader.sampler, RandomSampler),
        overfit_batches=0,
        num_replicas=world_size,
        rank=rank,
        seed=seed,
    )
    return _update_dataloader(dataloader, sampler)


class HydraDDPStrategy(DDPStrategy):
    """DDPStrategy whose child ranks join rank 0's Hydra run folder (see the module docstring).

    On CPU the threads the thread policy gave each process are divided among the processes of
    this machine, so N ranks on N cores do not oversubscribe them.
    """

    def _configure_launcher(self) -> None:
        super()._configure_launcher()
        if isinstance(self._launcher, _SubprocessScriptLauncher):
            self._launcher = HydraJobLauncher(
                self.cluster_environment, self.num_processes, self.num_nodes
            )

    _threads_split = False

    def process_dataloader(self, dataloader: Any) -> Any:
        """Shard every loader here (the presets set `use_distributed_sampler: false`), so a
        task's own batch sampler is split over ranks instead of refused by Lightning."""
        dataloader = super().process_dataloader(dataloader)
        if (
            self.world_size > 1
            and not self.lightning_module.trainer._accelerator_connector.use_distributed_sampler
        ):
            return shard_dataloader(dataloader, self.global_rank, self.world_size)
        return dataloader

    def connect(self, model: L.LightningModule) -> None:
        if not getattr(model, "distributed_training", True):
            raise ValueError(
                f"{type(model).__name__} cannot train under DDP: it fits its model from all "
                "training data in one process, and each rank would see only its shard. Run it "
                "on one device (trainer=cpu or trainer=gpu)."
            )
        super().connect(model)
        sync_evaluation_logs(model)

    def setup_environment(self) -> None:
        # setup runs again for trainer.test: divide the policy's threads only once
        if self.root_device.type == "cpu" and self.num_processes > 1 and not self._threads_split:
            self._threads_split = True
            threads = max(1, torch.get_num_threads() // self.num_processes)
            torch.set_num_threads(threads)
            log.info("DDP on CPU: %d threads in each of %d processes", threads, self.num_processes)
        super().setup_environment()


def sync_evaluation_logs(module: L.LightningModule) -> None:
    """Make `self.log` in validation and test average over ranks unless the task says otherwise.

    The tasks log their val/test scalars without `sync_dist` (a no-op in one process); under DDP
    each rank would otherwise report the mean over its own shard only. Training-step logs stay
    local (a reduction on every step costs time); torchmetrics objects synchronise themselves.
    """
    if "log" in module.__dict__:
        return
    log_unsynced = module.log

    @functools.wraps(log_unsynced)
    def log_synced(name: str, value: Any, *args: Any, **kwargs: Any) -> None:
        trainer = module._trainer
        if trainer is not None and not trainer.training:
            kwargs.setdefault("sync_dist", True)
        log_unsynced(name, value, *args, **kwargs)

    module.log = log_synced


@contextmanager
def distributed_run(trainer: L.Trainer) -> Iterator[None]:
    """Around a run's fit and test: afterwards close its process group and, in rank 0, drop the
    launch variables, so the next job of a multirun in this process starts its own ranks
    (with LOCAL_RANK left set, Lightning would wait for ranks that never come)."""
    launcher = getattr(trainer.strategy, "_launcher", None)
    failed = False
    try:
        yield
    except BaseException:
        failed = True
        raise
    finally:
        if isinstance(launcher, HydraJobLauncher) and launcher.procs:
            for proc in launcher.procs:
                if failed:  # the other ranks may wait in a collective for ever
                    proc.kill()
                proc.wait()
            launcher.restore_env()
            if torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
