"""Optuna studies in a database: a restarted sweep continues its study, two sweeps share one."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from avlab.optuna_sweeper import OWNER_ATTR, UNCOUNTED_ATTR
from tests.conftest import start_train_py

# One optimizer step and one validation batch per trial: the sweep machinery is under test.
TINY_TRIAL = [
    "sweep=face_voice_optuna",
    "data=face_voice_tiny",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=1",
    "trainer.limit_val_batches=1",
    "trainer.num_sanity_val_steps=0",
    "test=false",
    "hydra.sweeper.sampler.n_startup_trials=2",
]


def _sweep(tmp_path: Path, n_trials: int) -> subprocess.Popen:
    return start_train_py(
        tmp_path,
        *TINY_TRIAL,
        f"hydra.sweeper.n_trials={n_trials}",
        log_dir=tmp_path / "logs",
        data_dir=tmp_path.parent / "data",
    )


def _finish(proc: subprocess.Popen) -> None:
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]


def _study(tmp_path: Path) -> optuna.Study:
    db = tmp_path / "logs" / "face_voice" / "optuna_face_voice.db"
    return optuna.load_study(study_name="face_voice", storage=f"sqlite:///{db}")


@pytest.mark.slow
def test_two_sweeps_share_the_study_and_a_restarted_sweep_continues_it(tmp_path):
    """Two sweep processes at once, n_trials=4 in all: 4 trials complete, none beyond the total,
    each in its own job folder. Then a killed sweep's trial left RUNNING and the same sweep
    restarted with n_trials=5: the 4 finished trials are kept (not rerun), the orphan is closed
    and not counted, one new trial runs. (Each start costs a process's imports, so one study
    serves both checks; the loop's logic without training is the unit test below.)"""
    procs = [_sweep(tmp_path, 4), _sweep(tmp_path, 4)]
    for proc in procs:
        _finish(proc)
    study = _study(tmp_path)
    trials = study.trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4
    counted = [t for t in trials if UNCOUNTED_ATTR not in t.user_attrs]
    assert len(counted) == 4, "no trial beyond the study's total"
    jobs = [p.parent.name for p in (tmp_path / "logs").rglob("metrics.json")]
    assert sorted(jobs) == sorted(str(t.number) for t in complete)

    first = {t.number: t.value for t in complete}
    dead = subprocess.Popen(["true"])
    dead.wait()
    orphan = study.ask()
    orphan.set_user_attr(OWNER_ATTR, f"{socket.gethostname()}:{dead.pid}")
    _finish(_sweep(tmp_path, 5))
    trials = _study(tmp_path).trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 5
    assert {t.number: t.value for t in complete if t.number in first} == first
    [closed] = [t for t in trials if t.number == orphan.number]
    assert closed.state == TrialState.FAIL and UNCOUNTED_ATTR in closed.user_attrs

    # The preset's search space, and what a sweep leaves: its best trial and a job table.
    for trial in complete:
        assert 0.05 <= trial.params["loss.temperature"] <= 0.5
        assert 1e-4 <= trial.params["optim.lr"] <= 3e-3
    results = sorted((tmp_path / "logs").rglob("optimization_results.yaml"))
    best = yaml.safe_load(results[-1].read_text())
    assert best["best_value"] == pytest.approx(max(t.value for t in complete))
    tables = sorted((tmp_path / "logs").rglob("jobs.csv"))
    with tables[-1].open() as handle:
        rows = list(csv.DictReader(handle))
    assert rows and all(r["status"] == "completed" for r in rows)


class _Ret:
    def __init__(self, value: float) -> None:
        self.return_value = value


class _FakeLauncher:
    """Stands in for Hydra's launcher: 'runs' a job by scoring its x override."""

    def __init__(self) -> None:
        self.jobs: list[tuple[int, tuple[str, ...]]] = []

    def launch(self, overrides, initial_job_idx):
        self.jobs += [(initial_job_idx + i, tuple(o)) for i, o in enumerate(overrides)]
        return [_Ret(float(dict(s.split("=") for s in o)["x"])) for o in overrides]


def _impl(tmp_path: Path, n_trials: int):
    from omegaconf import OmegaConf

    from avlab.optuna_sweeper import SharedStudyImpl

    impl = SharedStudyImpl(
        sampler=optuna.samplers.RandomSampler(seed=0),
        direction="maximize",
        storage=f"sqlite:///{tmp_path / 'db' / 'study.db'}",
        study_name="unit",
        n_trials=n_trials,
        n_jobs=1,
        max_failure_rate=0.0,
        search_space=None,
        custom_search_space=None,
        params=OmegaConf.create({"x": "interval(0, 1)"}),
    )
    impl.config, impl.launcher, impl.sweep_dir = None, _FakeLauncher(), str(tmp_path)
    return impl


def test_the_sweeper_counts_the_whole_study_and_closes_a_dead_process_trial(tmp_path):
    """Without training: n_trials is the study's total across starts, a trial left RUNNING by a
    dead sweep process is closed and not counted, job indices are trial numbers."""
    first = _impl(tmp_path, 2)
    first.sweep([])
    study = optuna.load_study(study_name="unit", storage=first.storage)
    dead = subprocess.Popen(["true"])
    dead.wait()
    orphan = study.ask()
    orphan.set_user_attr(OWNER_ATTR, f"{socket.gethostname()}:{dead.pid}")
    alive = study.ask()  # another sweep process, still running: left alone
    alive.set_user_attr(OWNER_ATTR, f"{socket.gethostname()}:{os.getpid()}")

    second = _impl(tmp_path, 4)
    second.sweep([])
    trials = optuna.load_study(study_name="unit", storage=first.storage).trials
    states = {t.number: t.state for t in trials}
    assert states[orphan.number] == TrialState.FAIL
    assert states[alive.number] == TrialState.RUNNING
    # 2 finished + 1 running elsewhere + 1 new = 4 counted; the orphan is not counted
    assert [n for n, _ in second.launcher.jobs] == [alive.number + 1]
    assert sum(s == TrialState.COMPLETE for s in states.values()) == 3
    assert (tmp_path / "optimization_results.yaml").is_file()
