"""Compose a run from its config: seed, build objects, fit, test the best checkpoint, record."""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from avlab.callbacks import TrainingDivergedError
from avlab.checkpoint_io import AtomicCheckpointIO
from avlab.checkpoints import CONFIG_KEY, load_checkpoint
from avlab.distributed import distributed_run
from avlab.resume import WANDB_ID_FILE, resolve_resume, stored_wandb_id
from avlab.run_meta import GIT_DIFF_FILE, cpu_summary, run_metadata

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
SINGLE_PROCESS = {"strategy": "auto", "devices": 1, "num_nodes": 1}


class StoreConfigInCheckpoint(L.Callback):
    """Writes the run's resolved config into every checkpoint, so eval needs nothing else."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict
    ) -> None:
        checkpoint[CONFIG_KEY] = self.config


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def apply_thread_policy(threads: int | None) -> int:
    """Size torch's intra-op and inter-op thread pools once, for every task alike.

    `threads: null` means every core this process may use. Returns the intra-op count in force.
    The inter-op pool can only be sized before torch first uses it; a later call (a second run
    in the same process) keeps the pool it has and says so in the debug log.
    """
    wanted = available_cores() if threads is None else int(threads)
    if wanted < 1:
        raise ValueError(f"threads={threads}: must be a positive number of threads or null")
    torch.set_num_threads(wanted)
    if torch.get_num_interop_threads() != wanted:
        try:
            torch.set_num_interop_threads(wanted)
        except RuntimeError as err:
            log.debug("inter-op threads stay at %d: %s", torch.get_num_interop_threads(), err)
    log.info("threads: %d intra-op (of %d cores available)", wanted, available_cores())
    return wanted


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX-512 BF16 or AMX), from /proc/cpuinfo."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next(
        (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")),
        [],
    )
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: Any, accelerator: str | None) -> Any:
    """`precision: auto` -> bf16-mixed where the hardware does bf16 natively, else 32-true.

    A CUDA GPU that supports bf16 (Ampere and later), or a CPU with AVX-512 BF16 / AMX, gets
    bf16 autocast; elsewhere bf16 would be emulated and slower than fp32. Any other value is
    returned as it is. The choice is logged and written into the run's config.
    """
    if precision != "auto":
        return precision
    on_gpu = accelerator in ("gpu", "cuda") or (
        accelerator in (None, "auto") and torch.cuda.is_available()
    )
    if on_gpu:
        native = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        where = "this GPU"
    else:
        native = cpu_has_native_bf16()
        where = "this CPU (AVX-512 BF16 / AMX)"
    chosen = "bf16-mixed" if native else "32-true"
    log.info(
        "precision=auto: %s (%s %s bf16 natively)",
        chosen,
        where,
        "does" if native else "does not do",
    )
    return chosen


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train and test one configured run; returns the metrics written to metrics.json."""
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    apply_thread_policy(cfg.get("threads"))
    if cfg.get("trainer") is not None and cfg.trainer.get("precision") == "auto":
        with open_dict(cfg):
            cfg.trainer.precision = resolve_precision("auto", cfg.trainer.get("accelerator"))
    L.seed_everything(cfg.seed, workers=True)
    resolved = OmegaConf.to_container(cfg, resolve=True)

    resume_from = resolve_resume(cfg)
    ckpt_path = find_resume_checkpoint(resume_from, cfg.model.module._target_)

    datamodule = hydra.utils.instantiate(cfg.data)
    module = build_module(cfg)
    callbacks = instantiate_callbacks(cfg.get("callbacks")) + [StoreConfigInCheckpoint(resolved)]
    loggers = instantiate_loggers(cfg.get("logger"), output_dir, resume_from)
    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, **_checkpoint_io(cfg.trainer)
    )
    meta = run_metadata(trainer.world_size, type(trainer.strategy).__name__)
    meta["resumed_from"] = str(resume_from) if ckpt_path else None
    if is_rank_zero():
        _write_run_record(output_dir, cfg, meta)
    logged_meta = {k: v for k, v in meta.items() if k != "git_diff"}
    for lg in loggers:
        lg.log_hyperparams({**resolved, "run_meta": logged_meta})

    with distributed_run(trainer):
        if cfg.get("train", True):
            trainer.fit(
                module,
                datamodule=datamodule,
                ckpt_path=ckpt_path,
                weights_only=True,
            )
        fit_metrics = _scalars(trainer.callback_metrics)

        test_metrics: dict[str, float] = {}
        best = _best_checkpoint(trainer)
        if cfg.get("test", True):
            if best is None:
                log.warning("no best checkpoint was saved; testing the current weights")
            results = trainer.test(module, datamodule=datamodule, ckpt_path=best, weights_only=True)
            test_metrics = _scalars(results[0]) if results else {}

    best_val = dict(getattr(trainer.checkpoint_callback, "best_val_metrics", None) or {})
    if best is None or not best_val:
        best_val = {k: v for k, v in fit_metrics.items() if k.startswith("val/")}
    # val/ from the validation that made the best checkpoint (the one tested); training-side
    # figures (train/, nan_guard/) as the run ended.
    ended = {k: v for k, v in fit_metrics.items() if not k.startswith("val/")}
    metrics = {**ended, **best_val, **test_metrics}
    value = _optimized_value(cfg, trainer, metrics)
    status = "completed" if value is None or math.isfinite(value) else "diverged"
    record = {
        "status": status,
        "reason": None if status == "completed" else f"{cfg.optimized_metric} is {value}",
        "optimized_metric": cfg.get("optimized_metric"),
        "value": value,
        "best_checkpoint": best,
        "metrics": metrics,
        "last_epoch_metrics": fit_metrics,
    }
    if is_rank_zero():
        write_metrics(output_dir, record)
    finish_wandb_run()
    return record


def is_rank_zero() -> bool:
    """Whether this process is global rank 0 (the one that writes the run folder's records).

    Read from the environment the launcher set (RANK, LOCAL_RANK, SLURM_PROCID, ...), so it is
    right before the Trainer has set up its process group.
    """
    return rank_zero_only.rank == 0


def _checkpoint_io(trainer_cfg: DictConfig) -> dict[str, Any]:
    """Atomic checkpoint writes (AtomicCheckpointIO), unless the config names its own plugins."""
    if trainer_cfg.get("plugins"):
        return {}
    return {"plugins": [AtomicCheckpointIO()]}


def build_module(cfg: DictConfig) -> L.LightningModule:
    """The task's LightningModule with its network, loss and optimizer partials."""
    net = hydra.utils.instantiate(cfg.model.net)
    optim = cfg.get("optim") or {}
    module = hydra.utils.instantiate(
        cfg.model.module,
        net=net,
        loss=hydra.utils.instantiate(cfg.loss) if cfg.get("loss") else None,
        optimizer=hydra.utils.instantiate(optim["optimizer"]) if optim.get("optimizer") else None,
        scheduler=hydra.utils.instantiate(optim["scheduler"]) if optim.get("scheduler") else None,
        scheduler_interval=optim.get("interval", "step"),
    )
    if cfg.model.get("init_from"):
        init_from_checkpoint(module, cfg.model.init_from, cfg.model.module._target_)
    if cfg.model.get("compile"):
        # In place (nn.Module.compile): the state_dict keys, and so checkpoints, stay the same.
        module.net.compile()
        log.info("model.compile=true: %s compiled with torch.compile", type(module.net).__name__)
    return module


def init_from_checkpoint(module: L.LightningModule, path: str, module_target: str) -> None:
    """Start from another run's weights (not its optimizer state), refusing other tasks' checkpoints.

    A module may define `init_from_checkpoint(checkpoint)` to merge rather than copy; otherwise
    matching weights are loaded and the keys only one side has are logged.
    """
    checkpoint, _ = load_checkpoint(path, "model.init_from", expect_module=module_target)
    if hasattr(module, "init_from_checkpoint"):
        module.init_from_checkpoint(checkpoint)
        return
    result = module.load_state_dict(checkpoint["state_dict"], strict=False)
    loaded = len(checkpoint["state_dict"]) - len(result.unexpected_keys)
    log.info(
        "model.init_from=%s: loaded %d tensors; new here: %s; unused: %s",
        path,
        loaded,
        result.missing_keys or "none",
        result.unexpected_keys or "none",
    )


def instantiate_callbacks(callbacks_cfg: DictConfig | None) -> list[L.Callback]:
    """Every entry of the callbacks mapping that has a `_target_` (null entries are off)."""
    return [
        hydra.utils.instantiate(entry)
        for entry in (callbacks_cfg or {}).values()
        if isinstance(entry, DictConfig) and "_target_" in entry
    ]


def instantiate_loggers(
    logger_cfg: DictConfig | None, output_dir: Path, resume_from: Path | None = None
) -> list[Logger]:
    """Every logger entry with a `_target_`; W&B goes offline unless credentials are set up.

    W&B's run id is kept in the run folder, and a resumed run (`resume_from`, a run folder)
    logs into the W&B run of the folder it resumes.
    """
    loggers = []
    for name, entry in (logger_cfg or {}).items():
        if not (isinstance(entry, DictConfig) and "_target_" in entry):
            continue
        if entry._target_.endswith("WandbLogger"):
            entry = _with_sweep_group(_with_wandb_mode(entry, output_dir))
            entry = _with_wandb_run_id(entry, output_dir, resume_from)
        log.info("logger %s: %s", name, entry._target_)
        loggers.append(hydra.utils.instantiate(entry))
    return loggers


def wandb_credentials_present() -> bool:
    """Whether W&B could log online: an API key in the environment or in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


def _with_wandb_mode(entry: DictConfig, output_dir: Path) -> DictConfig:
    """Resolve `offline: auto`: offline (synced later with `wandb sync`) without credentials."""
    entry = entry.copy()
    with open_dict(entry):
        if str(entry.get("offline", "auto")).lower() == "auto":
            mode = os.environ.get("WANDB_MODE", "").lower()
            entry.offline = mode in ("offline", "disabled") or (
                mode != "online" and not wandb_credentials_present()
            )
            if entry.offline:
                log.info(
                    "W&B: no credentials found, logging offline into %s/wandb "
                    "(upload later with `wandb sync`)",
                    output_dir,
                )
    return entry


def _with_wandb_run_id(entry: DictConfig, output_dir: Path, resume_from: Path | None) -> DictConfig:
    """Give W&B a run id stored in the run folder: the resumed run's id, else a new one."""
    if entry.get("id"):
        return entry
    run_id = stored_wandb_id(resume_from) or _new_wandb_id()
    if is_rank_zero():
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / WANDB_ID_FILE).write_text(run_id + "\n")
    entry = entry.copy()
    with open_dict(entry):
        entry.id = run_id
        entry.resume = "allow"
    return entry


def _new_wandb_id() -> str:
    """A fresh W&B run id (8 lowercase letters and digits, as wandb makes them)."""
    import secrets
    import string

    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


def _with_sweep_group(entry: DictConfig) -> DictConfig:
    """In a multirun, the jobs of one sweep share a W&B group (`<group>-<sweep folder name>`) and
    carry their overrides as tags and config, so W&B's sweep views line them up."""
    if not is_multirun():
        return entry
    hydra_cfg = HydraConfig.get()
    sweep, job = Path(hydra_cfg.sweep.dir).name, hydra_cfg.job.get("num")
    overrides = [str(o) for o in hydra_cfg.overrides.task]
    entry = entry.copy()
    with open_dict(entry):
        entry.group = f"{entry.get('group') or 'sweep'}-{sweep}"
        entry.name = f"{entry.get('name') or 'job'}-{job}"
        tags = [o[:64] for o in overrides if not o.startswith(("paths.", "logger", "hydra."))]
        entry.tags = [*(entry.get("tags") or []), *tags]  # W&B allows 64 characters a tag
        entry.config = {"sweep": sweep, "job": job, "overrides": overrides}
        entry._convert_ = "all"
    return entry


def finish_wandb_run(exit_code: int = 0) -> None:
    """End the process's W&B run, if any: the next job of a multirun (same process) would
    otherwise log into it, as WandbLogger reuses a run in progress."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=exit_code)


def find_resume_checkpoint(
    resume: str | Path | None, module_target: str | None = None
) -> str | None:
    """A checkpoint to resume from: a .ckpt file, or a run folder's checkpoints/last.ckpt.

    The checkpoint is loaded and validated first (weights only, a trusted config, the same
    task as `module_target`), so Lightning never resumes from something we would refuse.
    """
    if not resume:
        return None
    path = Path(resume)
    if path.is_dir():
        record = path / METRICS_FILE
        if record.is_file() and json.loads(record.read_text()).get("status") == "completed":
            raise ValueError(
                f"{path}: this run finished already; start a new run instead of resuming"
            )
        path = path / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise FileNotFoundError(f"resume={resume}: no checkpoint at {path}")
    load_checkpoint(path, "resume", expect_module=module_target)
    return str(path)


def _best_checkpoint(trainer: L.Trainer) -> str | None:
    """Path of the best checkpoint, if one was written."""
    callback = trainer.checkpoint_callback
    path = getattr(callback, "best_model_path", "") if callback else ""
    return path if path and Path(path).is_file() else None


def _optimized_value(
    cfg: DictConfig, trainer: L.Trainer, metrics: dict[str, float]
) -> float | None:
    """The value a sweep optimises: the checkpoint's best score if it monitors that metric."""
    name = cfg.get("optimized_metric")
    if not name:
        return None
    callback = trainer.checkpoint_callback
    if callback is not None and callback.monitor == name and callback.best_model_score is not None:
        return float(callback.best_model_score)
    return metrics.get(name)


def _scalars(values: Any) -> dict[str, float]:
    """Metric tensors/floats as a plain {name: float} mapping."""
    return {
        k: float(v.item() if isinstance(v, torch.Tensor) else v) for k, v in dict(values).items()
    }


def write_metrics(output_dir: Path, record: dict[str, Any]) -> None:
    """Write metrics.json (non-finite floats become strings so the file stays valid JSON)."""

    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        return value

    (output_dir / METRICS_FILE).write_text(json.dumps(clean(record), indent=2) + "\n")


def _write_run_record(output_dir: Path, cfg: DictConfig, meta: dict[str, Any]) -> None:
    """Save what reproduces the run: resolved config, run_info.json (command line, git commit,
    uv.lock hash, package versions, hardware, world size) and the uncommitted diff in git.diff."""
    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    info = {k: v for k, v in meta.items() if k != "git_diff"}
    if meta.get("git_diff"):
        (output_dir / GIT_DIFF_FILE).write_text(meta["git_diff"])
        info["git_diff_file"] = GIT_DIFF_FILE
    (output_dir / "run_info.json").write_text(json.dumps(info, indent=2) + "\n")
    log.info("run on %s, world size %d", cpu_summary(meta), meta["hardware"]["world_size"])


def is_multirun() -> bool:
    """Whether this job is one of a Hydra multirun (sweep)."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def worst_value(mode: str) -> float:
    """The sentinel a failed sweep job returns: the worst possible score."""
    return -math.inf if mode == "max" else math.inf


def train_entry(cfg: DictConfig) -> float | None:
    """train() for the command line: a failed sweep job is recorded and the sweep goes on."""
    try:
        return train(cfg)["value"]
    except Exception as err:
        status = "diverged" if isinstance(err, TrainingDivergedError) else "failed"
        output_dir = Path(cfg.paths.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        write_metrics(
            output_dir,
            {
                "status": status,
                "reason": f"{type(err).__name__}: {err}",
                "optimized_metric": cfg.get("optimized_metric"),
                "value": None,
                "traceback": traceback.format_exc(),
            },
        )
        finish_wandb_run(exit_code=1)
        if not is_multirun():
            raise
        log.error("job %s %s (%s); the sweep goes on", output_dir, status, err)
        return worst_value(cfg.get("optimized_metric_mode", "min"))


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Rebuild a run from the config stored in its checkpoint and test it; returns metrics."""
    ckpt = Path(cfg.ckpt)
    _, run_cfg = load_checkpoint(ckpt, "ckpt")
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    _apply_command_line_overrides(run_cfg, cfg)
    with open_dict(run_cfg):
        run_cfg.paths.output_dir = str(output_dir)
        _drop_pretrained(run_cfg.model)
    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(run_cfg))

    apply_thread_policy(run_cfg.get("threads"))
    L.seed_everything(run_cfg.seed, workers=True)
    datamodule = hydra.utils.instantiate(run_cfg.data)
    module = build_module(run_cfg)
    loggers = instantiate_loggers(cfg.get("logger"), output_dir)
    # Testing runs in one process: DDP's sampler would pad the test set with repeated samples.
    trainer: L.Trainer = hydra.utils.instantiate(
        run_cfg.trainer,
        callbacks=[],
        logger=loggers or False,
        default_root_dir=str(output_dir),
        **SINGLE_PROCESS if "strategy" in run_cfg.trainer else {},
    )
    with warnings.catch_warnings():
        # Training callbacks (checkpointing, NaN guard) are deliberately absent when testing.
        warnings.filterwarnings("ignore", message=".*callbacks used to create the checkpoint.*")
        results = trainer.test(
            module, datamodule=datamodule, ckpt_path=str(ckpt), weights_only=True
        )
    record = {"status": "completed", "checkpoint": str(ckpt), "metrics": _scalars(results[0])}
    write_metrics(output_dir, record)
    finish_wandb_run()
    return record


def _apply_command_line_overrides(run_cfg: DictConfig, cfg: DictConfig) -> None:
    """Copy the keys the user overrode on eval's command line into the stored run config."""
    if not HydraConfig.initialized():
        return
    parsed = OverridesParser.create().parse_overrides(list(HydraConfig.get().overrides.task))
    for override in parsed:
        key = override.key_or_group
        if key == "ckpt" or key.startswith(("hydra.", "paths.", "logger")):
            continue
        if override.is_delete():
            _delete_key(run_cfg, key)
            continue
        value = OmegaConf.select(cfg, key)
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value, resolve=True)
        OmegaConf.update(run_cfg, key, value, merge=False, force_add=True)


def _delete_key(cfg: DictConfig, key: str) -> None:
    """Remove a dotted key (a `~key` override), naming it if the stored config lacks it."""
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
    if not isinstance(parent, DictConfig) or leaf not in parent:
        raise KeyError(f"~{key}: the checkpoint's config has no key {key!r} to delete")
    with open_dict(parent):
        del parent[leaf]


def _drop_pretrained(model_cfg: DictConfig) -> None:
    """Weights come from the checkpoint, so eval must not need the original pretrained files."""
    for node in (model_cfg, model_cfg.get("net") or {}):
        for key in ("pretrained", "init_from"):
            if isinstance(node, DictConfig) and key in node:
                node[key] = None
