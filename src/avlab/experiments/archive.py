"""Keep a run aside as `outputs/archive/<name>.tar.gz` with a manifest, and unpack it safely."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from datetime import datetime
from pathlib import Path
from typing import Any

from avlab.experiments.runs import ARCHIVE_DIR, ARCHIVED_MARKER, Run, _load_yaml

MANIFEST = "MANIFEST.json"
# Left out of an archive: logger folders that are rebuilt or synced elsewhere.
SKIPPED_DIRS = ("wandb",)


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def archive_name(run: Run) -> str:
    """`face_voice_2026-11-29_22-40-00_job3` for outputs/face_voice/multiruns/<time>/3."""
    parts = run.rel.split("/")
    if len(parts) >= 3 and parts[1] == "multiruns":
        return f"{parts[0]}_{parts[2]}_job{'_'.join(parts[3:])}"
    if len(parts) >= 3 and parts[1] == "runs":
        return f"{parts[0]}_{'_'.join(parts[2:])}"
    return run.rel.replace("/", "_")


def archive_run(run: Run, outputs: Path, best_only: bool = False) -> tuple[Path, dict[str, Any]]:
    """Write the run's folder (or, with best_only, all but the other checkpoints) and a manifest."""
    if run.is_link:
        raise ValueError(f"{run.path} is a symlink; archive the folder it points to instead")
    name = archive_name(run)
    target = outputs / ARCHIVE_DIR / f"{name}.tar.gz"
    if target.exists():
        raise FileExistsError(f"{target} exists already; remove it or rename the run")
    files = _files_to_archive(run, best_only)
    manifest = _manifest(run, name, files, best_only)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    with tarfile.open(partial, "w:gz") as tar:
        data = (json.dumps(manifest, indent=2) + "\n").encode()
        info = tarfile.TarInfo(f"{name}/{MANIFEST}")
        info.size, info.mtime = len(data), int(datetime.now().timestamp())
        tar.addfile(info, io.BytesIO(data))
        for file in files:
            tar.add(file, arcname=f"{name}/{file.relative_to(run.path).as_posix()}")
    partial.rename(target)
    (run.path / ARCHIVED_MARKER).write_text(str(target) + "\n")
    return target, manifest


def _files_to_archive(run: Run, best_only: bool) -> list[Path]:
    """Every regular file of the run (symlinks left out), minus other checkpoints if best_only."""
    files = []
    for path in sorted(run.path.rglob("*")):
        rel = path.relative_to(run.path)
        if path.is_symlink() or not path.is_file() or rel.parts[0] in SKIPPED_DIRS:
            continue
        if rel.name == ARCHIVED_MARKER:
            continue
        if best_only and rel.parts[0] == "checkpoints" and path != run.best_checkpoint:
            continue
        files.append(path)
    return files


def _manifest(run: Run, name: str, files: list[Path], best_only: bool) -> dict[str, Any]:
    """Config, metrics, command line, git commit and a checksum of every checkpoint."""
    info = _load_json(run.path / "run_info.json")
    checkpoints = {
        f.relative_to(run.path).as_posix(): sha256(f) for f in files if f.suffix == ".ckpt"
    }
    best = run.best_checkpoint
    return {
        "name": name,
        "source": str(run.path.resolve()),
        "run": run.rel,
        "experiment": run.experiment,
        "task": run.task,
        "archived_at": datetime.now().isoformat(timespec="seconds"),
        "best_only": best_only,
        "status": run.status,
        "optimized_metric": run.optimized_metric,
        "optimized_metric_mode": run.mode,
        "value": run.value,
        "metrics": run.metrics,
        "command": info.get("command"),
        "overrides": run.overrides,  # a multirun job's own parameters (command is the sweep's)
        "cwd": info.get("cwd"),
        "git_commit": info.get("git_commit"),
        "git_diff_present": bool(info.get("git_dirty") or info.get("git_diff")),
        "best_checkpoint": best.relative_to(run.path).as_posix() if best else None,
        "checkpoints_sha256": checkpoints,
        "config": _load_yaml(run.path / "config.yaml"),
    }


def _load_json(path: Path) -> dict[str, Any]:
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def restore_archive(archive: Path, dest_root: Path) -> tuple[Path, dict[str, Any]]:
    """Unpack an archive into dest_root/<name>/ after checking every member; verify checksums."""
    with tarfile.open(archive, "r:gz") as tar:
        members = tar.getmembers()
        name = _check_members(archive, members)
        target = dest_root / name
        if target.exists():
            raise FileExistsError(f"{target} exists already; remove it to restore again")
        dest_root.mkdir(parents=True, exist_ok=True)
        tar.extractall(dest_root, members=members, filter="data")
    manifest = _load_json(target / MANIFEST)
    for rel, expected in (manifest.get("checkpoints_sha256") or {}).items():
        if sha256(target / rel) != expected:
            raise ValueError(f"{archive}: {rel} does not match the checksum in {MANIFEST}")
    return target, manifest


def _check_members(archive: Path, members: list[tarfile.TarInfo]) -> str:
    """The archive's single top folder; refuses absolute, `..`, link or device members."""
    tops = set()
    for member in members:
        parts = Path(member.name).parts
        if member.name.startswith(("/", "\\")) or ".." in parts or not parts:
            raise ValueError(f"{archive}: unsafe member {member.name!r}; nothing was extracted")
        if not (member.isfile() or member.isdir()):
            raise ValueError(
                f"{archive}: member {member.name!r} is not a plain file or folder; "
                "nothing was extracted"
            )
        tops.add(parts[0])
    if len(tops) != 1:
        raise ValueError(f"{archive}: expected one top folder, found {sorted(tops)}")
    (name,) = tops
    if not any(m.name == f"{name}/{MANIFEST}" for m in members):
        raise ValueError(f"{archive}: no {MANIFEST}; not an avlab archive")
    return name
