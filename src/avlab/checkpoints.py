"""Load a checkpoint someone else wrote without letting it act: one loader for eval, init_from,
resume, play and synthesis.

`torch.load(..., weights_only=True)` keeps the pickle from running code, but avlab rebuilds
objects with Hydra from the config stored inside the checkpoint, and Hydra will call any
importable callable named by a `_target_` (`builtins.open` truncates a file; Hydra's own
blocklist stops `os.system` but not that). So every `_target_` in a stored config is checked
before anything is instantiated or even imported:

- a target avlab's own configs (`conf/`) use is allowed as it is;
- otherwise it must be a *class* of a known family, checked after importing only modules
  under these prefixes: `avlab.` (torch modules, Lightning modules, data modules, callbacks),
  `torch.optim.` (optimizers and LR schedulers), `lightning.pytorch.callbacks.` and
  `lightning.pytorch.loggers.`. Functions are never allowed unless `conf/` uses them
  (`avlab.optim.warmup_cosine`): a function can do anything with its arguments.
- `timm.` and `transformers.` are not needed as targets (avlab's networks build those models
  from names inside their own code) and stay out: `from_pretrained(trust_remote_code=True)`
  runs Python from a folder.

Interpolations (`${...}`) are refused outright: avlab stores configs resolved, so one there
was not written by avlab, and a resolver could produce a target after this check.
"""

from __future__ import annotations

import functools
import importlib
import pickle
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

CONFIG_KEY = "avlab_config"
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
_TARGET_LINE = re.compile(r"^\s*_target_:\s*([\w.]+)\s*$", re.MULTILINE)


class UntrustedCheckpointError(ValueError):
    """A checkpoint (or stored config) names something avlab will not build; nothing was run."""


def _class_families() -> dict[str, tuple[type, ...]]:
    """Module prefix -> the base classes a target under it must derive from."""
    import lightning as L
    from lightning.pytorch.loggers import Logger
    from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

    return {
        "avlab.": (torch.nn.Module, L.LightningModule, L.LightningDataModule, L.Callback),
        "torch.optim.": (torch.optim.Optimizer, LRScheduler, ReduceLROnPlateau),
        "lightning.pytorch.callbacks.": (L.Callback,),
        "lightning.pytorch.loggers.": (Logger,),
    }


@functools.cache
def targets_in_own_configs() -> frozenset[str]:
    """Every `_target_` that avlab's own config tree names (empty outside a source checkout)."""
    if not CONF_DIR.is_dir():
        return frozenset()
    found = set()
    for path in CONF_DIR.rglob("*.yaml"):
        found.update(_TARGET_LINE.findall(path.read_text()))
    return frozenset(found)


def is_allowed_target(target: Any) -> bool:
    """Whether a `_target_` value names something avlab may instantiate from untrusted config."""
    if not isinstance(target, str) or not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_]\w*)+", target):
        return False
    if target in targets_in_own_configs():
        return True
    for prefix, bases in _class_families().items():
        if target.startswith(prefix):
            module_name, _, name = target.rpartition(".")
            try:
                obj = getattr(importlib.import_module(module_name), name)
            except (ImportError, AttributeError):
                return False
            return isinstance(obj, type) and issubclass(obj, bases)
    return False


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    """(dotted key, key, value) for every entry of nested dicts and lists."""
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{path}.{key}" if path else str(key)
            yield here, key, value
            yield from _walk(value, here)
    elif isinstance(node, list | tuple):
        for i, value in enumerate(node):
            here = f"{path}[{i}]"
            yield here, i, value
            yield from _walk(value, here)


def validate_config(config: Any, source: str) -> None:
    """Refuse a stored config that names a target avlab would not build, or holds an interpolation.

    Raises UntrustedCheckpointError naming `source`, the key and the value; returns None if clean.
    """
    if OmegaConf.is_config(config):
        config = OmegaConf.to_container(config, resolve=False)
    for where, key, value in _walk(config):
        if isinstance(value, str) and "${" in value:
            raise UntrustedCheckpointError(
                f"{source}: {where} holds an interpolation ({value!r}); avlab stores configs "
                "resolved, so this config was not written by avlab. Nothing was built."
            )
        if key == "_target_" and not is_allowed_target(value):
            raise UntrustedCheckpointError(
                f"{source}: {where} names {value!r}, which is not a target avlab's configs use "
                "(allowed: the targets in conf/, and classes of avlab, torch.optim, Lightning "
                "callbacks and loggers). Nothing was built."
            )


def _global_named(err: Exception) -> str:
    """The line of torch's weights-only error that says what it refused."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return next((line for line in lines if line.startswith("Unsupported")), lines[0])


def load_checkpoint(
    path: str | Path, purpose: str, expect_module: str | None = None
) -> tuple[dict[str, Any], DictConfig]:
    """Load an avlab checkpoint's tensors and its validated run config.

    `purpose` names the option that passed the path (e.g. "ckpt", "model.init_from"), so errors
    say where it came from. With `expect_module`, a checkpoint of another task is refused.
    """
    ckpt = Path(path)
    if not ckpt.is_file():
        raise FileNotFoundError(f"{purpose}={path}: no such checkpoint file")
    try:
        checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Unsupported global" in str(err):
            raise UntrustedCheckpointError(
                f"{purpose}={path}: holds objects other than tensors and plain values, which "
                f"avlab never writes; refusing to unpickle them ({_global_named(err)})"
            ) from err
        raise ValueError(
            f"{purpose}={path}: not a readable checkpoint ({_global_named(err)})"
        ) from err
    except (RuntimeError, EOFError, OSError) as err:
        raise ValueError(f"{purpose}={path}: not a readable checkpoint ({err})") from err
    if not isinstance(checkpoint, dict) or CONFIG_KEY not in checkpoint:
        raise ValueError(
            f"{purpose}={path}: no avlab config stored in this checkpoint "
            "(not written by avlab's train.py?)"
        )
    stored = checkpoint[CONFIG_KEY]
    if not isinstance(stored, dict):
        raise UntrustedCheckpointError(f"{purpose}={path}: the stored config is not a mapping")
    validate_config(stored, f"{purpose}={path}")
    config = OmegaConf.create(stored)
    if expect_module is not None:
        theirs = OmegaConf.select(config, "model.module._target_")
        if theirs != expect_module:
            raise ValueError(
                f"{purpose}={path}: a checkpoint of {theirs}, but {expect_module} is needed here"
            )
    return checkpoint, config
