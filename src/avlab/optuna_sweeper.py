"""An Optuna sweeper whose study lives in a database: resumable, and shareable between processes.

hydra-optuna-sweeper 1.3 (which pins optuna 2.10) already opens `storage` with
`load_if_exists=True`, but it runs `n_trials` *new* trials on every start, numbers job folders
from 0 in each process, and leaves the trial a killed sweep was running as RUNNING for ever.
`hydra_plugins.avlab_optuna_sweeper.SharedStudyOptunaSweeper` keeps the plugin's search-space
syntax and trial set-up and changes the loop:

- `n_trials` is the study's total: before each trial it counts the study's trials (complete,
  pruned, failed, running) and stops at `n_trials`; a trial that two processes asked for at
  once beyond the total is closed as failed and not counted.
- A RUNNING trial left by a sweep process of this host that no longer exists (killed) is
  closed as failed, not counted, and its budget goes to a new trial. Finished trials never run
  again.
- Job folders are named by trial number, so processes sharing a study never write into the
  same folder.

With an SQLite file two processes on one machine can share a study; on a cluster use a server
database (`storage: postgresql://...`), as Optuna advises.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from pathlib import Path
from typing import Any

import optuna
from filelock import FileLock
from hydra_plugins.hydra_optuna_sweeper._impl import (
    OptunaSweeperImpl,
    create_params_from_overrides,
)
from omegaconf import OmegaConf
from optuna.trial import TrialState

log = logging.getLogger(__name__)

OWNER_ATTR = "avlab_sweep_process"  # host:pid of the sweep process that asked for the trial
UNCOUNTED_ATTR = "avlab_not_counted"  # why a failed trial does not count towards n_trials
SQLITE = "sqlite:///"


def _process_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _process_alive(owner: str) -> bool:
    """Whether `host:pid` names a live process; True for other hosts (they cannot be checked)."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def counted(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether a trial counts towards the study's n_trials."""
    if trial.state == TrialState.WAITING:
        return False
    return not (trial.state == TrialState.FAIL and UNCOUNTED_ATTR in trial.user_attrs)


class SharedStudyImpl(OptunaSweeperImpl):
    """The plugin's sweeper with a study-wide trial budget (see the module docstring)."""

    def sweep(self, arguments: list[str]) -> None:
        self._process_searchspace_config()
        params_conf = [*self._parse_sweeper_params_config(), *arguments]
        distributions, fixed = create_params_from_overrides(params_conf)
        distributions = {**(self.search_space_distributions or {}), **distributions}
        for name in fixed:
            distributions.pop(name, None)
        opening = contextlib.nullcontext()
        if str(self.storage).startswith(SQLITE):
            db = Path(str(self.storage).removeprefix(SQLITE))
            db.parent.mkdir(parents=True, exist_ok=True)
            # Two sweeps started at once would both create the new file's tables ("table
            # studies already exists"): the first to hold the lock creates them.
            opening = FileLock(f"{db}.lock")
        with opening:
            study = optuna.create_study(
                study_name=self.study_name,
                storage=self.storage,
                sampler=self.sampler,
                directions=self._get_directions(),
                load_if_exists=True,
            )
        self._close_orphans(study)
        done = sum(counted(t) for t in study.get_trials(deepcopy=False))
        log.info(
            "Optuna study %r in %s: %d of %d trials already counted",
            study.study_name,
            self.storage,
            done,
            self.n_trials,
        )
        while trials := self._ask_within_budget(study):
            overrides = self._configure_trials(trials, distributions, fixed)
            returns = self.launcher.launch(overrides, initial_job_idx=trials[0].number)
            for trial, ret in zip(trials, returns, strict=True):
                self._tell(study, trial, ret)
        best = (
            study.best_trial if any(t.state == TrialState.COMPLETE for t in study.trials) else None
        )
        if best is not None:
            log.info("Best trial %d: %s = %s", best.number, best.params, best.value)
            results = {"name": "optuna", "best_params": best.params, "best_value": best.value}
            OmegaConf.save(results, Path(self.sweep_dir) / "optimization_results.yaml")

    def _ask_within_budget(self, study: optuna.Study) -> list[optuna.Trial]:
        """Up to n_jobs new trials, none beyond the study's n_trials."""
        trials = []
        for _ in range(self.n_jobs):
            if sum(counted(t) for t in study.get_trials(deepcopy=False)) >= self.n_trials:
                break  # checked again after asking: another process may have asked meanwhile
            trial = study.ask()
            trial.set_user_attr(OWNER_ATTR, _process_id())
            earlier = [
                t
                for t in study.get_trials(deepcopy=False)
                if t.number < trial.number and counted(t)
            ]
            if len(earlier) >= self.n_trials:
                trial.set_user_attr(UNCOUNTED_ATTR, "beyond n_trials")
                study.tell(trial, state=TrialState.FAIL)
                break
            trials.append(trial)
        return trials

    def _tell(self, study: optuna.Study, trial: optuna.Trial, ret: Any) -> None:
        """Record a job's return value, or a failure when it returned no number."""
        try:
            value = float(ret.return_value)
        except Exception as err:  # the job raised, or returned something else
            log.warning("trial %d failed: %s", trial.number, err)
            study.tell(trial, state=TrialState.FAIL)
            return
        study.tell(trial, value)

    @staticmethod
    def _close_orphans(study: optuna.Study) -> None:
        """Close, as failed and uncounted, RUNNING trials whose sweep process was killed."""
        storage = study._storage
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            owner = trial.user_attrs.get(OWNER_ATTR)
            if owner and not _process_alive(owner):
                storage.set_trial_user_attr(
                    trial._trial_id, UNCOUNTED_ATTR, f"its sweep process {owner} was killed"
                )
                storage.set_trial_state(trial._trial_id, TrialState.FAIL)
                log.warning("trial %d of killed sweep %s closed as failed", trial.number, owner)
