"""DDP under Hydra on CPU (gloo, 2 processes): one run folder, reduced metrics, multirun without
hangs or stray folders, 1 vs 2 processes, every gradient-trained task to the end. (The NaN
guard's decisions agreed across ranks: tests/test_nan_guard.py::test_ddp_ranks_skip_together.)"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.conftest import generate_default_data, start_train_py, train_py

DDP = ["trainer=ddp_cpu", "trainer.devices=2", "debug=limit"]
PRON = ["experiment=pronunciation", "data=pronunciation_tiny"]


def _train(tmp_path: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    result = train_py(
        tmp_path,
        *args,
        log_dir=tmp_path / "logs",
        data_dir=tmp_path.parent / "data",
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def _records(logs: Path) -> list[tuple[Path, dict]]:
    return [(p.parent, json.loads(p.read_text())) for p in sorted(logs.rglob("metrics.json"))]


@pytest.fixture(scope="module")
def ddp_multirun(tmp_path_factory) -> tuple[Path, list[tuple[Path, dict]]]:
    """One DDP multirun shared by the tests below (each DDP start-up costs two processes'
    imports): pronunciation_tiny, 2 processes x batch 4, seeds 42 and 1."""
    tmp_path = tmp_path_factory.mktemp("ddp_multirun")
    _train(tmp_path, "-m", *PRON, *DDP, "data.batch_size=4", "seed=42,1")
    return tmp_path, _records(tmp_path / "logs")


@pytest.mark.slow
def test_a_ddp_multirun_writes_one_folder_per_job_and_does_not_hang(ddp_multirun):
    """Two DDP jobs in one multirun: each job one folder (rank 1 logs beside rank 0, every line
    prefixed with its rank), one metrics.json, checkpoints, world size 2 recorded; nothing else
    under the outputs."""
    tmp_path, records = ddp_multirun
    assert len(records) == 2
    sweep = records[0][0].parent
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    assert [p.name for p in (tmp_path / "logs" / "pronunciation").iterdir()] == ["multiruns"]
    for folder, record in records:
        assert record["status"] == "completed", record.get("reason")
        assert (folder / "checkpoints" / "best.ckpt").is_file()
        rank1_lines = (folder / "debug_rank1.log").read_text().splitlines()
        assert rank1_lines and all("[rank 1]" in line for line in rank1_lines if line[:1] == "[")
        info = json.loads((folder / "run_info.json").read_text())
        assert info["hardware"]["world_size"] == 2
    assert (sweep / "jobs.csv").is_file()


# 1 process with the global batch vs 2 x half of it: val and test loss within this, for every
# gradient-trained task. Worst gaps over seeds 42, 1, 2 (BENCHMARKS.md): pronunciation 0.033,
# smile 0.045, face_voice 0.026, tts 0.003. The two see the same samples at every step, each
# sample augmented alike (avlab.data_order), and face_voice's loss takes its negatives from the
# global batch; what remains is per-rank BatchNorm statistics and dropout masks.
LOSS_TOLERANCE = 0.1


@pytest.mark.slow
def test_two_processes_match_one_at_the_same_global_batch(tmp_path, ddp_multirun):
    """pronunciation_tiny, seeds 42 and 1: 1 process x batch 8 vs 2 processes x batch 4 (the
    multirun above; same global batch, same steps): val and test loss within LOSS_TOLERANCE."""
    _train(tmp_path, "-m", *PRON, "debug=limit", "data.batch_size=8", "seed=42,1")
    single = {OmegaConf.load(f / "config.yaml").seed: r for f, r in _records(tmp_path / "logs")}
    for folder, double in ddp_multirun[1]:
        config = OmegaConf.load(folder / "config.yaml")
        assert config.trainer.devices == 2
        for name in ("val/loss", "test/loss"):
            got, expected = double["metrics"][name], single[config.seed]["metrics"][name]
            assert got == pytest.approx(expected, abs=LOSS_TOLERANCE), (config.seed, name)


def test_ai_vad_refuses_ddp_with_a_clear_message():
    """AI-VAD fits its density model from all clips in one process: DDP is refused, not faked."""
    from avlab.distributed import HydraDDPStrategy
    from avlab.tasks.vad.module import AiVadModule

    module = AiVadModule.__new__(AiVadModule)
    with pytest.raises(ValueError, match="cannot train under DDP.*one device"):
        HydraDDPStrategy(process_group_backend="gloo").connect(module)


@pytest.mark.slow
def test_a_two_job_sweep_through_submitit_local_writes_both_jobs_and_the_table(tmp_path):
    """hydra/launcher=submitit_local runs the jobs as submitit processes (as on SLURM, without
    it): both jobs' metrics.json and the sweep's job table come back."""
    _train(
        tmp_path,
        "-m",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=10",
        *PRON,
        "debug=limit",
        "trainer.max_epochs=1",
        "test=false",
        "seed=1,2",
        timeout=600,
    )
    records = _records(tmp_path / "logs")
    assert [r["status"] for _, r in records] == ["completed", "completed"]
    sweep = records[0][0].parent
    assert (sweep / ".submitit").is_dir()
    table = (sweep / "jobs.csv").read_text().splitlines()
    assert len(table) == 3 and all("completed" in row for row in table[1:])


def test_loaders_are_sharded_disjointly_also_with_a_tasks_own_batch_sampler():
    """Two ranks see disjoint halves: Lightning's DistributedSampler for a plain loader, a
    ShardedBatchSampler (same number of batches per rank) for a task's own batch sampler."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from avlab.distributed import shard_dataloader
    from avlab.tasks.tts.data import LengthBucketSampler

    data = TensorDataset(torch.arange(20))
    plain = DataLoader(data, batch_size=2, shuffle=True)
    own = DataLoader(data, batch_sampler=LengthBucketSampler(list(range(20)), batch_size=2))
    for loader in (plain, own):
        seen = []
        for rank in (0, 1):
            torch.manual_seed(rank)  # ranks' global RNGs may differ: the shards must not
            batches = [b[0].tolist() for b in shard_dataloader(loader, rank, 2)]
            assert len(batches) == 5
            seen.append({i for batch in batches for i in batch})
        assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == 20


TASK_RUNS = {  # experiment: (its tiny data twin, its batch size per process under DDP)
    "smile_pretrain": ("smile_tiny", 8),
    "face_voice": ("face_voice_tiny", 4),
    "tts": ("tts_tiny", 16),
}


@pytest.fixture(scope="module")
def task_ddp_runs(tmp_path_factory) -> dict[str, dict[str, tuple[Path, int, str]]]:
    """Each task twice, on one generated dataset: 2 processes x batch B ("ddp") and 1 process x
    batch 2B ("single"). The task's dataset is generated first (espeak-ng's takes vary, so two
    generations differ); then all six runs start at once: a DDP run's second rank spends its
    first seconds importing while the first waits, so side by side they keep both cores busy.
    Each run: its folder, exit code and stderr."""
    root = tmp_path_factory.mktemp("task_ddp")
    started = {}
    for experiment, (data, batch) in TASK_RUNS.items():
        data_dir = root / experiment / "data"
        generate_default_data(data_dir, f"experiment={experiment}", f"data={data}")
        for kind, overrides in (
            ("ddp", [*DDP, f"data.batch_size={batch}"]),
            ("single", ["debug=limit", f"data.batch_size={2 * batch}"]),
        ):
            cwd = root / experiment / kind
            cwd.mkdir(parents=True)
            process = start_train_py(
                cwd,
                f"experiment={experiment}",
                f"data={data}",
                *overrides,
                log_dir=cwd / "logs",
                data_dir=data_dir,
                stdout=subprocess.DEVNULL,
            )
            started[experiment, kind] = (cwd, process)
    runs: dict[str, dict[str, tuple[Path, int, str]]] = {e: {} for e in TASK_RUNS}
    for (experiment, kind), (cwd, process) in started.items():
        _, stderr = process.communicate(timeout=600)
        runs[experiment][kind] = (cwd, process.returncode, stderr)
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("experiment", list(TASK_RUNS))
def test_each_gradient_trained_experiment_runs_to_the_end_on_two_processes(
    task_ddp_runs, experiment
):
    """Each gradient-trained task's default experiment under trainer=ddp_cpu trainer.devices=2
    (pronunciation runs in the tests above; smile_finetune trains the same module as
    smile_pretrain): completed, world size 2, one run folder, and val and test loss within
    LOSS_TOLERANCE of one process at the same global batch. The NaN guard's agreement across
    ranks on input, loss and gradient faults of one rank is
    test_nan_guard.py::test_ddp_ranks_skip_together."""
    records = {}
    for kind, (cwd, code, stderr) in task_ddp_runs[experiment].items():
        assert code == 0, (kind, stderr[-4000:])
        [(folder, record)] = _records(cwd / "logs")
        assert record["status"] == "completed", record.get("reason")
        info = json.loads((folder / "run_info.json").read_text())
        assert info["hardware"]["world_size"] == {"ddp": 2, "single": 1}[kind]
        assert len(list((cwd / "logs").glob("*/runs/*"))) == 1
        records[kind] = record["metrics"]
    for name in ("val/loss", "test/loss"):
        assert math.isfinite(records["ddp"][name])
        assert records["ddp"][name] == pytest.approx(records["single"][name], abs=LOSS_TOLERANCE), (
            name
        )
