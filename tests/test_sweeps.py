"""Sweeps: real tiny multiruns of train.py (a grid and Optuna) leave a table of every job."""

from __future__ import annotations

import csv
import json
import math
import subprocess
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from avlab.experiments.sweep_table import collect_jobs, write_job_table
from tests.conftest import CONF, train_py

TINY_SWEEP = [
    "data=face_voice_tiny",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "trainer.num_sanity_val_steps=0",
]


def _train_py(tmp_path: Path, data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    """Run train.py as a user would (flags such as -m first), outputs under tmp_path."""
    return train_py(tmp_path, *TINY_SWEEP, *args, log_dir=tmp_path, data_dir=data_dir)


def _job_table(tmp_path: Path) -> tuple[Path, list[dict[str, str]]]:
    [table] = list(tmp_path.rglob("jobs.csv"))
    with table.open() as handle:
        return table.parent, list(csv.DictReader(handle))


@pytest.mark.slow
def test_a_grid_multirun_writes_a_table_with_failed_jobs_listed(tmp_path, data_dir):
    result = _train_py(
        tmp_path,
        data_dir,
        "-m",
        "experiment=face_voice",
        "loss.temperature=0.05,0.2",
        "optim.lr=1e-3,-1",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sweep_dir, rows = _job_table(tmp_path)
    assert [r["job"] for r in rows] == ["0", "1", "2", "3"]
    assert {(float(r["loss.temperature"]), float(r["optim.lr"])) for r in rows} == {
        (0.05, 1e-3),
        (0.05, -1),
        (0.2, 1e-3),
        (0.2, -1),
    }
    for row in rows:
        if float(row["optim.lr"]) < 0:
            assert row["status"] == "failed" and "learning rate" in row["reason"]
            assert row["val/match_acc"] == ""
        else:
            assert row["status"] == "completed"
            job = json.loads((sweep_dir / row["job"] / "metrics.json").read_text())
            assert float(row["val/match_acc"]) == pytest.approx(job["value"])
            assert float(row["test/match_acc"]) == pytest.approx(job["metrics"]["test/match_acc"])
    table = (sweep_dir / "jobs.md").read_text()
    assert "(best)" in table and table.count("| failed |") == 2


@pytest.mark.parametrize(
    ("preset", "sweeper"),
    [("face_voice_grid", "BasicSweeper"), ("face_voice_optuna", "OptunaSweeper")],
)
def test_sweep_presets_run_multirun_over_temperature_and_learning_rate(preset, sweeper):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", [f"sweep={preset}"], return_hydra_config=True)  # picks face_voice
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert cfg.hydra.sweeper._target_.endswith(sweeper)
    assert set(cfg.hydra.sweeper.params) == {"loss.temperature", "optim.lr"}
    if preset == "face_voice_grid":
        assert cfg.hydra.sweeper.params["loss.temperature"] == "0.05,0.1,0.2"
        assert cfg.hydra.sweeper.params["optim.lr"] == "1e-4,3e-4,1e-3"
    else:
        assert cfg.hydra.sweeper.direction == "maximize"
        assert cfg.hydra.sweeper.sampler._target_.endswith("TPESampler")
    assert cfg.name == "face_voice" and cfg.loss._target_.endswith("SymmetricInfoNCE")
    assert cfg.optimized_metric == "val/match_acc" and cfg.optimized_metric_mode == "max"


def _fake_job(sweep: Path, job: str, overrides: list[str], record: dict | None) -> None:
    (sweep / job / ".hydra").mkdir(parents=True)
    (sweep / job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if record is not None:
        (sweep / job / "metrics.json").write_text(json.dumps(record))


def test_the_job_table_lists_every_job_with_its_status(tmp_path):
    def record(status, value, reason=None):
        return {
            "status": status,
            "reason": reason,
            "optimized_metric": "val/loss",
            "value": value,
            "metrics": {"test/loss": 1.5} if status == "completed" else {},
        }

    _fake_job(tmp_path, "0", ["optim.lr=1e-3", "seed=1"], record("completed", 2.0))
    _fake_job(tmp_path, "1", ["optim.lr=1e-2", "seed=1"], record("diverged", "nan", "NaN loss"))
    _fake_job(tmp_path, "2", ["optim.lr=1e-4", "seed=1"], record("completed", 1.0))
    _fake_job(tmp_path, "10", ["optim.lr=1e-5", "seed=1"], None)
    jobs = collect_jobs(tmp_path)
    assert [j["job"] for j in jobs] == ["0", "1", "2", "10"]
    csv_path, md_path = write_job_table(tmp_path, jobs, mode="min")
    with csv_path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["status"] for r in rows] == ["completed", "diverged", "completed", "missing"]
    assert rows[1]["reason"] == "NaN loss" and math.isnan(float(rows[1]["val/loss"]))
    assert rows[0]["test/loss"] == "1.5" and rows[0]["seed"] == "1"
    markdown = md_path.read_text()
    assert "best: job 2" in markdown and "| 2 (best) |" in markdown
    assert "seed" not in markdown.splitlines()[4]  # unchanged keys stay out of the readable table
