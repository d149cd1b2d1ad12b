"""`resume=auto`: find the newest unfinished run of the same experiment and config, and resume it.

A run folder is unfinished when it has `checkpoints/last.ckpt` and its metrics.json is missing
(the process was killed) or says `failed`. The same config means the resolved config.yaml
equals this run's, but for `paths` (folders), `resume` and `threads`. A folder another run has
already resumed (its run_info.json names it in `resumed_from`, and that run wrote a checkpoint)
is passed over, so a chain of crashes resumes from its newest link.
"""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"
WANDB_ID_FILE = "wandb_run_id"
# Keys that may differ between a run and its resumption.
IGNORED_KEYS = ("paths", "resume", "threads")
RESUMABLE_STATUS = (None, "failed")


def comparable(config: dict[str, Any]) -> dict[str, Any]:
    """A resolved config without the keys a resumption may change."""
    return {k: v for k, v in config.items() if k not in IGNORED_KEYS}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _status(folder: Path) -> str | None:
    """metrics.json's status, or None when the run never wrote one."""
    record = folder / "metrics.json"
    return _read_json(record).get("status", "unreadable") if record.is_file() else None


def find_unfinished_run(cfg: DictConfig) -> Path | None:
    """The newest resumable run folder of `cfg`'s experiment with the same config, else None."""
    runs_root = Path(cfg.paths.log_dir) / str(cfg.name) / "runs"
    here = Path(cfg.paths.output_dir)
    if not runs_root.is_dir():
        return None
    wanted = comparable(OmegaConf.to_container(cfg, resolve=True))
    folders = [f for f in runs_root.iterdir() if f.is_dir() and f.resolve() != here.resolve()]
    superseded = {
        str(Path(info["resumed_from"]).resolve())
        for f in folders
        if (info := _read_json(f / "run_info.json")).get("resumed_from")
        and (f / LAST_CHECKPOINT).is_file()
    }
    for folder in sorted(
        folders,
        key=lambda f: (
            (f / LAST_CHECKPOINT).stat().st_mtime if (f / LAST_CHECKPOINT).is_file() else 0.0
        ),
        reverse=True,
    ):
        if not (folder / LAST_CHECKPOINT).is_file() or str(folder.resolve()) in superseded:
            continue
        if _status(folder) not in RESUMABLE_STATUS:
            continue
        if _stored_config(folder, str(here)) == wanted:
            return folder
    return None


def _stored_config(folder: Path, output_dir: str) -> dict[str, Any] | None:
    """A run folder's resolved config.yaml, comparable, with its own output folder (which the
    checkpoint and logger paths hold) replaced by `output_dir`."""
    try:
        text = (folder / "config.yaml").read_text()
        stored = yaml.safe_load(text)
        own = str((stored.get("paths") or {}).get("output_dir") or "")
        if own:
            stored = yaml.safe_load(text.replace(own, output_dir))
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    return comparable(stored) if isinstance(stored, dict) else None


def resolve_resume(cfg: DictConfig) -> Path | None:
    """The run folder or .ckpt `resume` names; for `auto`, the run find_unfinished_run picks."""
    resume = cfg.get("resume")
    if not resume:
        return None
    if str(resume) != "auto":
        return Path(resume)
    found = find_unfinished_run(cfg)
    if found is None:
        log.info("resume=auto: no unfinished run of %s with this config; starting afresh", cfg.name)
    else:
        log.info("resume=auto: resuming %s", found)
    return found


def stored_wandb_id(run_folder: Path | None) -> str | None:
    """The W&B run id a run folder recorded, so a resumption logs into the same W&B run."""
    if run_folder is None or not run_folder.is_dir():
        return None
    path = run_folder / WANDB_ID_FILE
    return path.read_text().strip() or None if path.is_file() else None


class SigkillAtStep(L.Callback):
    """Crash drill: the process kills itself with SIGKILL when training reaches `step`.

    Only in a run that did not start from a checkpoint, so the same command with `resume=auto`
    runs on to the end. Lets tests and users see a real hard crash mid-epoch and its recovery.
    """

    def __init__(self, step: int) -> None:
        self.step = int(step)
        self._resumed = False

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._resumed = True

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if not self._resumed and trainer.global_step == self.step:
            log.warning("SigkillAtStep: killing this process at global step %d", self.step)
            os.kill(os.getpid(), signal.SIGKILL)
