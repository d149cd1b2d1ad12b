"""`python -m avlab.experiments` (or `avlab`): list, compare, clean up, archive and restore runs."""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from avlab.experiments.archive import archive_run, restore_archive
from avlab.experiments.compare import (
    best_per_metric,
    by_task,
    default_metrics,
    describe_best,
    fmt,
    metric_value,
    run_label,
    write_comparison,
)
from avlab.experiments.runs import (
    ARCHIVE_DIR,
    Run,
    best_runs,
    find_runs,
    folder_size,
    human_bytes,
    human_duration,
    is_run_folder,
    matches,
    metric_direction,
    read_run,
    sort_newest_first,
)
from avlab.experiments.sweep_table import _as_float

STATUSES = ("completed", "failed", "diverged", "missing", "unreadable")
KEY_TEST_METRICS = 3


def default_outputs() -> Path:
    """outputs/ of $AVLAB_ROOT, else of the repository this package lives in, else of here."""
    if os.environ.get("AVLAB_ROOT"):
        return Path(os.environ["AVLAB_ROOT"]) / "outputs"
    repo = Path(__file__).resolve().parents[3]
    return repo / "outputs" if (repo / "conf").is_dir() else Path("outputs")


def console() -> Console:
    """A console as wide as the terminal; into a pipe or a file, rows stay whole (no folding)."""
    # markup off: run paths, reasons and overrides such as logger=[csv,wandb] print as written
    if sys.stdout.isatty():
        return Console(highlight=False, markup=False)
    return Console(width=400, highlight=False, no_color=True, markup=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="avlab", description="List, compare, clean up and archive runs under outputs/."
    )
    parser.add_argument(
        "--outputs", type=Path, default=None, help="the outputs folder (default: <repo>/outputs)"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    ls = sub.add_parser("list", help="one row per run, newest first")
    ls.add_argument("--pattern", help="glob on the run's path under outputs/ or its experiment")
    ls.add_argument("--experiment", help="only runs of this experiment (config `name`)")
    ls.add_argument("--status", choices=STATUSES)

    cmp = sub.add_parser("compare", help="a table across runs and the best run per metric")
    cmp.add_argument("runs", nargs="*", help="run folders, multirun folders or experiment names")
    cmp.add_argument("--pattern", help="glob on the run's path under outputs/ or its experiment")
    cmp.add_argument("--metrics", help="comma-separated metric names (default: see docs)")
    cmp.add_argument("--out", type=Path, help="folder for comparison.* (default: a new one)")

    clean = sub.add_parser("cleanup", help="delete old runs or runs matching a pattern")
    clean.add_argument("--days-old", type=float, help="runs started more than N days ago")
    clean.add_argument("--pattern", help="glob on the run's path under outputs/ or its experiment")
    clean.add_argument(
        "--keep-best", action="store_true", help="keep each experiment's best run (own metric)"
    )
    clean.add_argument("--dry-run", action="store_true", help="list, delete nothing")
    clean.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    arc = sub.add_parser("archive", help="outputs/archive/<name>.tar.gz with a manifest")
    arc.add_argument("run", help="a run folder, or an experiment name (its newest run)")
    arc.add_argument("--best-only", action="store_true", help="only the best checkpoint")

    res = sub.add_parser("restore", help="unpack an archive where eval.py can use it")
    res.add_argument("archive", type=Path)
    res.add_argument("--to", type=Path, help="parent folder (default: outputs/archive/)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status."""
    args = build_parser().parse_args(argv)
    outputs = (args.outputs or default_outputs()).absolute()
    out = console()
    try:
        return COMMANDS[args.command](args, outputs, out)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        out.print(f"error: {err}")
        return 2


def cmd_list(args: argparse.Namespace, outputs: Path, out: Console) -> int:
    runs = [
        r
        for r in find_runs(outputs)
        if matches(r, args.pattern)
        and (not args.experiment or r.experiment == args.experiment)
        and (not args.status or r.status == args.status)
    ]
    if not runs:
        out.print(f"no runs under {outputs}")
        return 0
    table = Table(box=box.SIMPLE_HEAD, title=f"{len(runs)} run(s) under {outputs}")
    for column in ("experiment", "run", "started", "status", "took", "model / loss / data"):
        table.add_column(column, no_wrap=True)
    table.add_column("optimised metric", no_wrap=True)
    table.add_column("key test metrics", min_width=24, overflow="fold")
    notes = []
    for run in runs:
        where = run.rel.removeprefix(run.experiment + "/")
        where += (" (symlink)" if run.is_link else "") + (" (archived)" if run.archived else "")
        if run.reason and run.status != "completed":
            notes.append(f"{run.rel}: {run.status}: {run.reason.splitlines()[0][:160]}")
        table.add_row(
            run.experiment,
            where,
            run.start.strftime("%Y-%m-%d %H:%M") if run.start else "-",
            run.status,
            human_duration(run.duration_s),
            " / ".join(run.choices.get(g, "-") for g in ("model", "loss", "data")),
            f"{run.optimized_metric}={fmt(run.value)} ({run.mode})"
            if run.optimized_metric
            else "-",
            _key_test_metrics(run),
        )
    out.print(table)
    for note in notes:
        out.print(note, soft_wrap=True)
    return 0


def _key_test_metrics(run: Run) -> str:
    """The test counterpart of the optimised metric first, then other top-level test/ metrics."""
    names = [k for k in run.metrics if k.startswith("test/") and k.count("/") == 1]
    first = "test/" + run.optimized_metric.split("/", 1)[1] if run.optimized_metric else None
    names.sort(key=lambda k: (k != first, metric_direction(k) is None, k == "test/loss", k))
    return " ".join(f"{k[5:]}={fmt(run.metrics[k])}" for k in names[:KEY_TEST_METRICS]) or "-"


def cmd_compare(args: argparse.Namespace, outputs: Path, out: Console) -> int:
    runs = _select_runs(args.runs, outputs) if args.runs else find_runs(outputs)
    runs = [r for r in runs if matches(r, args.pattern)]
    if not runs:
        out.print("no runs to compare")
        return 1
    groups = by_task(runs)
    wanted = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    metrics = {task: wanted or default_metrics(group) for task, group in groups.items()}
    best = [
        b for task, group in groups.items() for b in best_per_metric(task, group, metrics[task])
    ]
    for task, group in groups.items():
        table = Table(box=box.SIMPLE_HEAD, title=f"{task}: {len(group)} run(s)")
        for column in ("run", "model", "status", *metrics[task]):
            table.add_column(column, overflow="fold")
        winners = {(b.metric, id(b.run)) for b in best if b.task == task and b.run}
        for run in group:
            cells = [
                Text(fmt(v), style="bold green") if (m, id(run)) in winners else fmt(v)
                for m in metrics[task]
                for v in [metric_value(run, m)]
            ]
            table.add_row(run_label(run), run.choices.get("model", "-"), run.status, *cells)
        out.print(table)
        out.print("best per metric:")
        for item in (b for b in best if b.task == task):
            out.print(f"  {describe_best(item)}")
    out_dir = args.out or outputs / "comparisons" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    paths = write_comparison(out_dir, groups, metrics, best)
    out.print(f"wrote {', '.join(p.name for p in paths)} to {out_dir}")
    return 0


def _select_runs(names: list[str], outputs: Path) -> list[Run]:
    """Runs named on the command line: a run folder, a multirun folder, or an experiment name."""
    everything: list[Run] | None = None
    chosen: dict[str, Run] = {}
    for name in names:
        path = next((p for p in (Path(name), outputs / name) if p.is_dir()), None)
        if path is not None and is_run_folder(path):
            found = [read_run(path, outputs)]
        elif path is not None:
            found = find_runs(path) or _runs_from_jobs_csv(path, outputs)
            for run in found:
                run.rel = _rel(run.path, outputs)
        else:
            everything = everything if everything is not None else find_runs(outputs)
            found = [r for r in everything if r.experiment == name]
        if not found:
            raise FileNotFoundError(f"{name}: no run folder, multirun folder or experiment")
        chosen.update({str(r.path): r for r in found})
    return sort_newest_first(chosen.values())


def _rel(path: Path, outputs: Path) -> str:
    try:
        return path.absolute().relative_to(outputs).as_posix()
    except ValueError:
        return path.as_posix()


def _runs_from_jobs_csv(sweep: Path, outputs: Path) -> list[Run]:
    """A multirun's jobs from its jobs.csv alone (when its job folders are gone)."""
    table = sweep / "jobs.csv"
    if not table.is_file():
        return []
    with table.open() as handle:
        rows = list(csv.DictReader(handle))
    runs = []
    fixed = {"job", "status", "reason"}
    for row in rows:
        scored = [k for k in row if "/" in k]
        params = {k: v for k, v in row.items() if k not in fixed and k not in scored}
        optimized = scored[0] if scored else None
        runs.append(
            Run(
                path=sweep / row["job"],
                rel=_rel(sweep / row["job"], outputs),
                experiment=_rel(sweep, outputs).split("/")[0],
                task=_rel(sweep, outputs).split("/")[0],
                status=row.get("status") or "missing",
                reason=row.get("reason") or None,
                optimized_metric=optimized,
                mode="min",
                value=_as_float(row.get(optimized)) if optimized else None,
                metrics={k: v for k in scored if (v := _as_float(row[k])) is not None},
                choices={"params": " ".join(f"{k}={v}" for k, v in params.items())},
                start=None,
                duration_s=None,
                last_activity=table.stat().st_mtime,
                best_checkpoint=None,
            )
        )
    return runs


def cmd_cleanup(args: argparse.Namespace, outputs: Path, out: Console) -> int:
    if args.days_old is None and not args.pattern:
        out.print("error: say what to delete: --days-old N and/or --pattern GLOB")
        return 2
    runs = find_runs(outputs)
    keep = set()
    if args.keep_best:
        # restored copies under archive/ are never deleted, so they do not compete for "best"
        originals = [r for r in runs if r.rel.split("/")[0] != ARCHIVE_DIR]
        keep = {id(r) for r in best_runs(originals).values()}
    cutoff = time.time() - args.days_old * 86400 if args.days_old is not None else None
    doomed, kept = [], []
    for run in runs:
        if not matches(run, args.pattern) or (cutoff is not None and _age_reference(run) > cutoff):
            continue
        if run.archived:
            kept.append((run, "archived"))
        elif id(run) in keep:
            kept.append((run, f"best of {run.experiment} by {run.optimized_metric} ({run.mode})"))
        elif not _inside(run.path, outputs):
            kept.append((run, "outside the outputs folder"))
        else:
            doomed.append(run)
    for run, why in kept:
        out.print(f"keep    {run.rel}  ({why})")
    sizes = {run.rel: folder_size(run.path) for run in doomed}
    for run in doomed:
        what = "unlink symlink" if run.is_link else "delete"
        out.print(f"{what}  {run.rel}  ({human_bytes(sizes[run.rel])}, {run.status})")
    total = sum(sizes.values())
    if not doomed:
        out.print("nothing to delete")
        return 0
    if args.dry_run:
        out.print(f"dry run: would delete {len(doomed)} run(s), freeing {human_bytes(total)}")
        return 0
    if not args.yes and not _confirm(out, f"Delete {len(doomed)} run(s), {human_bytes(total)}?"):
        out.print("aborted; nothing deleted")
        return 1
    freed = sum(_delete(run, outputs, sizes[run.rel]) for run in doomed)
    out.print(f"deleted {len(doomed)} run(s), freed {human_bytes(freed)} ({freed} bytes)")
    return 0


def _age_reference(run: Run) -> float:
    """The later of the run's Hydra start time and its folder's last modification (epoch s):
    a run counts as old only when both say so."""
    start = run.start.timestamp() if run.start else 0.0
    return max(start, run.last_activity)


def _inside(path: Path, outputs: Path) -> bool:
    """Whether deleting `path` stays inside the outputs folder: its parent resolves inside, and
    a real folder resolves inside too (a symlink is only unlinked, so its target does not count)."""
    root = outputs.resolve()
    parent = path.parent.resolve()
    if not parent.is_relative_to(root):
        return False
    if path.is_symlink():
        return True
    own = path.resolve()
    return own != root and own.is_relative_to(root)


def _delete(run: Run, outputs: Path, size: int) -> int:
    """Remove one run (a symlink is unlinked, its target untouched) and now-empty parents."""
    if not _inside(run.path, outputs):
        raise ValueError(f"{run.path}: resolves outside {outputs}; not deleted")
    if run.path.is_symlink():
        run.path.unlink()
    else:
        shutil.rmtree(run.path)
    root = outputs.resolve()
    parent = run.path.parent
    while parent.resolve() != root and parent.resolve().is_relative_to(root):
        try:
            parent.rmdir()  # only when empty
        except OSError:
            break
        parent = parent.parent
    return size


def _confirm(out: Console, question: str) -> bool:
    """Ask on the terminal; without one (a pipe, CI) the answer is no."""
    if not sys.stdin or not sys.stdin.isatty():
        out.print("no terminal to confirm on (pass --yes to delete without asking)")
        return False
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def cmd_archive(args: argparse.Namespace, outputs: Path, out: Console) -> int:
    run = _one_run(args.run, outputs)
    target, manifest = archive_run(run, outputs, best_only=args.best_only)
    out.print(
        f"archived {run.rel} ({run.status}, {run.optimized_metric}={fmt(run.value)}) to {target} "
        f"({human_bytes(target.stat().st_size)}; {len(manifest['checkpoints_sha256'])} "
        "checkpoint(s) with sha256 in MANIFEST.json)"
    )
    return 0


def _one_run(name: str, outputs: Path) -> Run:
    """A run folder by path (absolute, or relative to here or to outputs/), or an experiment's
    newest run."""
    for path in (Path(name), outputs / name):
        if path.is_dir() and is_run_folder(path):
            return read_run(path, outputs)
    runs = [r for r in find_runs(outputs) if r.experiment == name and not r.archived]
    if not runs:
        raise FileNotFoundError(f"{name}: no run folder and no experiment of that name")
    return runs[0]


def cmd_restore(args: argparse.Namespace, outputs: Path, out: Console) -> int:
    dest = args.to or outputs / ARCHIVE_DIR
    target, manifest = restore_archive(args.archive, dest)
    ckpt = manifest.get("best_checkpoint")
    out.print(f"restored {args.archive} to {target} (checkpoint checksums verified)")
    if ckpt:
        out.print(f"evaluate it with: uv run python eval.py ckpt={target / ckpt}")
    return 0


COMMANDS = {
    "list": cmd_list,
    "compare": cmd_compare,
    "cleanup": cmd_cleanup,
    "archive": cmd_archive,
    "restore": cmd_restore,
}
