"""What reproduces a run: command line, code version, locked dependencies, software and hardware.

`run_metadata()` gathers it once at the start of a run; `avlab.run` writes it to the run
folder's `run_info.json` (the uncommitted diff to `git.diff`, ready for `git apply`) and logs it
to every logger's hyperparameters under `run_meta`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[2]
GIT_DIFF_FILE = "git.diff"
# The stack a result depends on; a package that is not installed is recorded as null.
PACKAGES = (
    "torch",
    "torchvision",
    "torchaudio",
    "lightning",
    "torchmetrics",
    "hydra-core",
    "omegaconf",
    "hydra-optuna-sweeper",
    "optuna",
    "hydra-submitit-launcher",
    "submitit",
    "numpy",
    "timm",
    "transformers",
    "anomalib",
    "wandb",
)
# CPU features that decide which kernels torch can use (bf16 and int8 matmuls, vector width).
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")


def run_metadata(world_size: int = 1, strategy: str | None = None) -> dict[str, Any]:
    """Everything below as one JSON-ready mapping (git diff included as text)."""
    return {
        "command": [sys.executable, *sys.argv],
        "cwd": os.getcwd(),
        "host": socket.gethostname(),
        **git_state(),
        "uv_lock_sha256": file_sha256(REPO / "uv.lock"),
        "python": platform.python_version(),
        "packages": package_versions(),
        "hardware": {**hardware(), "world_size": world_size, "strategy": strategy},
    }


def git_state(root: Path = REPO) -> dict[str, Any]:
    """The commit and uncommitted diff (against HEAD) of the code, if it lives in a git checkout."""

    def git(*args: str) -> str | None:
        try:
            return subprocess.run(
                ["git", "-C", str(root), *args],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout
        except (OSError, subprocess.SubprocessError):
            return None

    commit = git("rev-parse", "HEAD")
    diff = git("diff", "HEAD")
    return {
        "git_commit": commit.strip() if commit else None,
        "git_dirty": bool(diff) if diff is not None else None,
        "git_diff": diff,
    }


def file_sha256(path: Path) -> str | None:
    """The sha256 of a file, or None when it does not exist (e.g. an installed wheel)."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution (None if absent)."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def hardware() -> dict[str, Any]:
    """CPU model and the flags that matter to torch, cores available, and the GPUs torch sees."""
    model, flags = _cpu_info()
    gpus = (
        [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if torch.cuda.is_available()
        else []
    )
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count()
    return {
        "cpu": model or platform.processor() or platform.machine(),
        "cpu_flags": [flag for flag in CPU_FLAGS if flag in flags],
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cores_available": cores,
        "gpus": gpus,
        "cuda": torch.version.cuda if gpus else None,
    }


def _cpu_info() -> tuple[str | None, set[str]]:
    """The CPU's model name and flags from /proc/cpuinfo (Linux; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None, set()
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields.get("model name"), set(fields.get("flags", "").split())


def cpu_summary(meta: dict[str, Any]) -> str:
    """One line for logs and benchmark tables: `AMD EPYC (avx2, avx512f, avx512_bf16; 2 cores)`."""
    hw = meta["hardware"]
    flags = ", ".join(hw["cpu_flags"]) or "no AVX2"
    return f"{hw['cpu']} ({flags}; {hw['cores_available']} cores)"
