"""Run folders under `outputs/`: find them, read what avlab.run wrote, rank them by metric.

A run folder is what `avlab.run.train` (or `evaluate`) writes: `outputs/<name>/runs/<time>/`,
or a multirun job `outputs/<name>/multiruns/<time>/<job>/`, holding some of `config.yaml`,
`run_info.json`, `metrics.json`, `.hydra/` and `checkpoints/`. Reading never raises on a broken
folder: a missing or corrupt file shows up as the run's status and reason.
"""

from __future__ import annotations

import fnmatch
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from avlab.experiments.sweep_table import METRICS_FILE, _as_float, _read_record

ARCHIVE_DIR = "archive"
# Written into a run folder once it is archived: cleanup never deletes such a run.
ARCHIVED_MARKER = ".avlab_archived"
RUN_FILES = ("config.yaml", METRICS_FILE, "run_info.json", ".hydra")
HYDRA_TIME_FORMAT = "%Y-%m-%d_%H-%M-%S"
CHOICE_GROUPS = ("experiment", "model", "loss", "data", "optim")

# Which way each metric is better, by the words in its name (the part after the last `/`):
# `test/smile_mae` -> "mae" -> lower. A name whose words point both ways, or none, is unknown.
METRIC_DIRECTIONS: dict[str, str] = {
    **dict.fromkeys(
        ["loss", "per", "wer", "cer", "eer", "mae", "mse", "rmse", "mcd", "error", "err"],
        "min",
    ),
    **dict.fromkeys(
        [
            "acc",
            "accuracy",
            "auroc",
            "auc",
            "aupr",
            "ap",
            "f1",
            "recall",
            "precision",
            "correlation",
            "pcc",
            "r2",
        ],
        "max",
    ),
    # Whole metric names whose words disagree or say nothing (error_acc is an accuracy).
    **dict.fromkeys(
        ["error_acc", "error_f1_weighted", "error_f1_macro", "focus_rate", "duration_ok"], "max"
    ),
    "stop_failures": "min",
}
# Logged for reference, not scores to rank by (e.g. the loss of a model that learnt nothing).
NOT_SCORES = ("loss_chance",)


def metric_direction(name: str) -> str | None:
    """'min', 'max' or None (unknown) for a metric name, from METRIC_DIRECTIONS."""
    leaf = name.rsplit("/", 1)[-1].lower()
    if leaf in NOT_SCORES:
        return None
    if leaf in METRIC_DIRECTIONS:
        return METRIC_DIRECTIONS[leaf]
    found = {METRIC_DIRECTIONS[w] for w in leaf.split("_") if w in METRIC_DIRECTIONS}
    return found.pop() if len(found) == 1 else None


@dataclass
class Run:
    """One run folder and what it recorded."""

    path: Path  # as found under the outputs folder (a symlink stays a symlink)
    rel: str  # path relative to the outputs folder, posix
    experiment: str
    task: str
    status: str
    reason: str | None
    optimized_metric: str | None
    mode: str
    value: float | None
    metrics: dict[str, float]
    choices: dict[str, str]
    start: datetime | None
    duration_s: float | None
    last_activity: float  # newest modification time (epoch seconds) of the folder or its entries
    best_checkpoint: Path | None
    is_link: bool = False
    archived: bool = False
    overrides: list[str] = field(default_factory=list)

    @property
    def sweep(self) -> str | None:
        """The sweep folder (relative) of a multirun job, else None."""
        parts = self.rel.split("/")
        return "/".join(parts[:-1]) if "multiruns" in parts[:-1] else None

    def is_scored(self) -> bool:
        """Whether the run completed with a finite optimised value."""
        return self.status == "completed" and self.value is not None and math.isfinite(self.value)


def is_run_folder(path: Path) -> bool:
    """Whether a folder holds what avlab.run writes for one run."""
    return any((path / name).exists() for name in RUN_FILES)


def find_runs(outputs: Path) -> list[Run]:
    """Every run folder under `outputs`, newest first; symlinked folders are listed, not entered."""
    outputs = Path(outputs)
    runs = []
    for top, dirs, _ in os.walk(outputs, followlinks=False):
        top_path = Path(top)
        if top_path != outputs and is_run_folder(top_path):
            runs.append(read_run(top_path, outputs))
            dirs[:] = []
            continue
        for name in list(dirs):
            link = top_path / name
            if link.is_symlink():
                dirs.remove(name)
                if link.is_dir() and is_run_folder(link):
                    runs.append(read_run(link, outputs))
    return sort_newest_first(runs)


def sort_newest_first(runs: Iterable[Run]) -> list[Run]:
    """Runs by start time (or last activity when the start is unknown), newest first."""
    return sorted(
        runs,
        key=lambda r: (r.start.timestamp() if r.start else r.last_activity, r.rel),
        reverse=True,
    )


def read_run(path: Path, outputs: Path) -> Run:
    """Everything list/compare/cleanup need about one run folder; never raises on bad files."""
    rel = _relative(path, outputs)
    record = _read_record(path / METRICS_FILE)
    config = _load_yaml(path / "config.yaml")
    raw_metrics = record.get("metrics") if isinstance(record.get("metrics"), dict) else {}
    metrics = {
        k: v for k, v in ((k, _as_float(v)) for k, v in raw_metrics.items()) if v is not None
    }
    start = _start_time(path, rel)
    reason = record.get("reason")
    if isinstance(reason, str):  # the folder is in the row already: name just the file
        reason = reason.replace(f"{path / METRICS_FILE}: ", f"{METRICS_FILE}: ")
    return Run(
        path=path,
        rel=rel,
        # eval.py copies the checkpoint's config: its runs are marked, not mistaken for training
        experiment=str(config.get("name") or rel.split("/")[0])
        + (" (eval)" if record.get("checkpoint") else ""),
        task=_task(config),
        status=str(record["status"]),
        reason=reason,
        optimized_metric=record.get("optimized_metric") or config.get("optimized_metric"),
        mode=str(config.get("optimized_metric_mode") or "min"),
        value=_as_float(record.get("value")),
        metrics=metrics,
        choices=_choices(path, config),
        start=start,
        duration_s=_duration(path, start),
        last_activity=_last_activity(path),
        best_checkpoint=_best_checkpoint(path, record),
        is_link=path.is_symlink(),
        archived=rel.split("/")[0] == ARCHIVE_DIR or (path / ARCHIVED_MARKER).exists(),
        overrides=[str(o) for o in _load_yaml(path / ".hydra" / "overrides.yaml", [])],
    )


def matches(run: Run, pattern: str | None) -> bool:
    """Whether a glob matches the run's path under outputs/ or its experiment name."""
    if not pattern:
        return True
    return fnmatch.fnmatch(run.rel, pattern) or fnmatch.fnmatch(run.experiment, pattern)


def best_runs(runs: Iterable[Run]) -> dict[tuple[str, str], Run]:
    """The best scored run per (experiment, optimised metric), by that experiment's own mode."""
    best: dict[tuple[str, str], Run] = {}
    for run in runs:
        if not run.is_scored() or not run.optimized_metric:
            continue
        key = (run.experiment, run.optimized_metric)
        current = best.get(key)
        better = current is None or (
            run.value > current.value if run.mode == "max" else run.value < current.value
        )
        if better:
            best[key] = run
    return best


def folder_size(path: Path) -> int:
    """Bytes under a folder, symlinks counted as links (never followed)."""
    if path.is_symlink() or not path.is_dir():
        return path.lstat().st_size
    total = 0
    for top, dirs, files in os.walk(path, followlinks=False):
        for name in dirs + files:
            total += (Path(top) / name).lstat().st_size
    return total


def human_bytes(size: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def human_duration(seconds: float | None) -> str:
    """83 -> '1m23s'; None -> '-'."""
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _relative(path: Path, outputs: Path) -> str:
    try:
        return path.relative_to(outputs).as_posix()
    except ValueError:
        return path.as_posix()


def _load_yaml(path: Path, default: Any = None) -> Any:
    """A YAML file's content, or `default` ({} unless given) when missing or unreadable."""
    default = {} if default is None else default
    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return default
    return loaded if isinstance(loaded, type(default)) else default


def _task(config: dict[str, Any]) -> str:
    """The task package of the run's module (`avlab.tasks.smile.module.X` -> smile)."""
    target = str(((config.get("model") or {}).get("module") or {}).get("_target_") or "")
    parts = target.split(".")
    if len(parts) > 2 and parts[:2] == ["avlab", "tasks"]:
        return parts[2]
    return target.rsplit(".", 1)[-1] or "?"


def _choices(path: Path, config: dict[str, Any]) -> dict[str, str]:
    """The config-group choices (model, loss, data, ...) Hydra recorded for the run."""
    hydra = _load_yaml(path / ".hydra" / "hydra.yaml").get("hydra") or {}
    choices = (hydra.get("runtime") or {}).get("choices") or {}
    found = {g: str(choices[g]) for g in CHOICE_GROUPS if choices.get(g) not in (None, "null")}
    if "model" not in found:  # no .hydra (e.g. a test run): name the classes instead
        model = config.get("model") or {}
        net = str((model.get("net") or {}).get("_target_") or "").rsplit(".", 1)[-1]
        if net:
            found["model"] = net
    return found


def _start_time(path: Path, rel: str) -> datetime | None:
    """The Hydra timestamp in the run's path (runs/<time> or multiruns/<time>/<job>), else
    the modification time of run_info.json (written when the run starts)."""
    for part in reversed(rel.split("/")):
        try:
            return datetime.strptime(part, HYDRA_TIME_FORMAT)
        except ValueError:
            continue
    info = path / "run_info.json"
    return datetime.fromtimestamp(info.stat().st_mtime) if info.is_file() else None


def _duration(path: Path, start: datetime | None) -> float | None:
    """Seconds from run_info.json (written at start) to metrics.json (written at the end)."""
    end = path / METRICS_FILE
    info = path / "run_info.json"
    if not end.is_file():
        return None
    began = info.stat().st_mtime if info.is_file() else (start.timestamp() if start else None)
    return max(0.0, end.stat().st_mtime - began) if began is not None else None


def _last_activity(path: Path) -> float:
    """Newest modification time of the folder, its entries and its checkpoints (not followed)."""
    times = [path.lstat().st_mtime]
    if path.is_dir() and not path.is_symlink():
        for entry in [*path.iterdir(), *(path / "checkpoints").glob("*")]:
            times.append(entry.lstat().st_mtime)
    return max(times)


def _best_checkpoint(path: Path, record: dict[str, Any]) -> Path | None:
    """The run's best checkpoint inside its folder (metrics.json may name an old absolute path)."""
    named = record.get("best_checkpoint")
    if isinstance(named, str) and named:
        candidate = path / "checkpoints" / Path(named).name
        if candidate.is_file():
            return candidate
    for name in ("best.ckpt", "last.ckpt"):
        if (path / "checkpoints" / name).is_file():
            return path / "checkpoints" / name
    return None
