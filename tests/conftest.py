"""Shared fixtures: compose the real Hydra configs, shrunk to tiny data and short runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"

# Each data config NAME may have a conf/data/NAME_tiny.yaml: the same loader on a few hundred
# generated samples. Tests use it so every preset runs in seconds.
TINY_SMILE_DATA = ["data=smile_tiny"]

os.environ.setdefault("AVLAB_ROOT", str(REPO))
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data folder per test session, so generated datasets are written once."""
    return tmp_path_factory.mktemp("data")


def compose_config(
    config_name: str, overrides: list[str], output_dir: Path, data_dir: Path
) -> DictConfig:
    """Compose conf/<config_name>.yaml as the command line would, with run paths in tmp."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.data_dir = str(data_dir)
        cfg.paths.log_dir = str(output_dir.parent)
        del cfg.hydra
    return cfg


def generate_default_data(data_dir: Path, *overrides: str) -> None:
    """Generate the dataset of the config `overrides` select (e.g. experiment=..., data=...)
    into `data_dir` now, so several train.py runs started at once read one copy."""
    import hydra

    cfg = compose_config("train", list(overrides), data_dir / "_compose", data_dir)
    hydra.utils.instantiate(cfg.data).prepare_data()


@pytest.fixture
def make_cfg(tmp_path: Path, data_dir: Path) -> Callable[..., DictConfig]:
    """Build a train config from overrides, on the data config's `_tiny` twin unless `tiny=False`."""

    def make(*overrides: str, tiny: bool = True, name: str = "run") -> DictConfig:
        cfg = compose_config("train", list(overrides), tmp_path / name, data_dir)
        if not tiny or any(o.startswith("data=") for o in overrides):
            return cfg
        tiny_choice = f"{HydraConfig.get().runtime.choices['data']}_tiny"
        if not (CONF / "data" / f"{tiny_choice}.yaml").is_file():
            return cfg
        return compose_config(
            "train", [f"data={tiny_choice}", *overrides], tmp_path / name, data_dir
        )

    return make


def train_py_command(*args: str, log_dir: Path, data_dir: Path) -> list[str]:
    """`python train.py` as a user types it (flags such as -m first), outputs under log_dir."""
    flags = [a for a in args if a.startswith("-")]
    overrides = [a for a in args if not a.startswith("-")]
    return [
        sys.executable,
        str(REPO / "train.py"),
        *flags,
        f"paths.log_dir={log_dir}",
        f"paths.data_dir={data_dir}",
        *overrides,
    ]


def train_py_env(**extra: str) -> dict[str, str]:
    """The environment of a train.py subprocess: this repository, W&B off unless asked."""
    return {**os.environ, "AVLAB_ROOT": str(REPO), "WANDB_MODE": "disabled", **extra}


def start_train_py(
    cwd: Path, *args: str, log_dir: Path, data_dir: Path, **popen: object
) -> subprocess.Popen:
    """Start train.py without waiting (stderr piped, text mode; stdout piped unless given)."""
    popen = {"stdout": subprocess.PIPE, "env": train_py_env(), **popen}
    return subprocess.Popen(
        train_py_command(*args, log_dir=log_dir, data_dir=data_dir),
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        **popen,
    )


def train_py(
    cwd: Path,
    *args: str,
    log_dir: Path,
    data_dir: Path,
    timeout: int = 600,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Run train.py to the end and return the finished process (its exit code unchecked)."""
    return subprocess.run(
        train_py_command(*args, log_dir=log_dir, data_dir=data_dir),
        capture_output=True,
        text=True,
        env=env or train_py_env(),
        timeout=timeout,
        cwd=cwd,
    )


def run_train_py(tmp_path: Path, *overrides: str) -> dict:
    """Run `train.py` as a user would (a subprocess, outputs and data under tmp_path) and return
    the one run's metrics.json record; a failed run fails with the end of its stderr."""
    result = train_py(
        tmp_path, *overrides, log_dir=tmp_path / "logs", data_dir=tmp_path / "data", timeout=1800
    )
    assert result.returncode == 0, result.stderr[-3000:]
    [path] = list((tmp_path / "logs").rglob("metrics.json"))
    return json.loads(path.read_text())


# Tiny runs whose checkpoints the demo tests load: one or two steps each, no test pass.
_SHORT_RUN = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.num_sanity_val_steps=0",
    "test=false",
    "+trainer.enable_progress_bar=false",
]
DEMO_RUNS = {
    "smile": [
        "experiment=smile_pretrain",
        "data=smile_tiny",
        "model.net.lstm_hidden=16",
        *_SHORT_RUN,
    ],
    "vad": [
        "experiment=aivad_scratch",
        "data=vad_tiny",
        "test=false",
        "+trainer.enable_progress_bar=false",
    ],
    "tts": [
        "experiment=tts",
        "data=tts_tiny",
        "model.module.free_running_val=1",
        "model.module.media_examples=0",
        *_SHORT_RUN,
    ],
    "pronunciation": [
        "experiment=pronunciation",
        "model=pron_simple",
        "data=pronunciation_tiny",
        *_SHORT_RUN,
    ],
}


@pytest.fixture(scope="session")
def demo_checkpoints(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict[str, Path]:
    """Task key -> best checkpoint of a tiny real training run (once per session on the shared
    `_tiny` data), and `<key>_data` -> the data folder that run read."""
    from avlab.run import train

    out = tmp_path_factory.mktemp("demo_runs")
    found: dict[str, Path] = {}
    for key, overrides in DEMO_RUNS.items():
        cfg = compose_config("train", overrides, out / key, data_dir)
        record = train(cfg)
        assert record["status"] == "completed", (key, record)
        found[key] = Path(record["best_checkpoint"])
        found[f"{key}_data"] = Path(cfg.data.root)
    return found
