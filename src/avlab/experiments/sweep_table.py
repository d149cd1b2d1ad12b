"""After a multirun, one table of every job: its parameters, its metric and its status.

Reads each job folder's `.hydra/overrides.yaml` (the parameters) and `metrics.json` (written
by avlab.run: status, reason, optimized_metric, value, metrics), and writes `jobs.csv` and
`jobs.md` into the sweep folder. A job that failed or diverged is listed with its status and
reason; one that left no metrics.json (killed) is listed as `missing`.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
OVERRIDES_FILE = Path(".hydra") / "overrides.yaml"


class SweepTable(Callback):
    """Hydra callback: writes jobs.csv and jobs.md into the sweep folder when a multirun ends."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = collect_jobs(sweep_dir)
        if not jobs:
            log.warning("sweep table: no job folders found under %s", sweep_dir)
            return
        mode = str(config.get("optimized_metric_mode", "min"))
        csv_path, _ = write_job_table(sweep_dir, jobs, mode)
        log.info("sweep table of %d job(s): %s (and jobs.md)", len(jobs), csv_path)


def collect_jobs(sweep_dir: Path) -> list[dict[str, Any]]:
    """One record per job folder under `sweep_dir`: job, params, status, metric, value, ..."""
    jobs = []
    for overrides_file in sorted(Path(sweep_dir).rglob(str(OVERRIDES_FILE))):
        job_dir = overrides_file.parent.parent
        jobs.append(
            {
                "job": job_dir.relative_to(sweep_dir).as_posix(),
                "params": _read_overrides(overrides_file),
                **_read_record(job_dir / METRICS_FILE),
            }
        )
    return sorted(jobs, key=lambda j: _job_sort_key(j["job"]))


def _read_overrides(path: Path) -> dict[str, str]:
    """A job's command-line overrides as {key: value}."""
    params = {}
    for item in OmegaConf.load(path) or []:
        key, _, value = str(item).partition("=")
        params[key.lstrip("+~")] = value
    return params


def _read_record(path: Path) -> dict[str, Any]:
    """Status, reason, optimised metric and value from a job's metrics.json."""
    if not path.is_file():
        return {
            "status": "missing",
            "reason": f"no {METRICS_FILE} (the job was killed?)",
            "optimized_metric": None,
            "value": None,
            "metrics": {},
        }
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        return {
            "status": "unreadable",
            "reason": f"{path}: {err}",
            "optimized_metric": None,
            "value": None,
            "metrics": {},
        }
    if not isinstance(record, dict):
        return {
            "status": "unreadable",
            "reason": f"{path}: not a JSON object",
            "optimized_metric": None,
            "value": None,
            "metrics": {},
        }
    keys = ("status", "reason", "optimized_metric", "value", "best_checkpoint", "checkpoint")
    return {key: record.get(key) for key in keys} | {"metrics": record.get("metrics") or {}}


def _job_sort_key(job: str) -> tuple:
    """Numeric job folders (0, 1, ..., 10) in number order."""
    return tuple(int(p) if p.isdigit() else math.inf for p in job.split("/")) + (job,)


def _as_float(value: Any) -> float | None:
    """A metric value as a float (metrics.json stores non-finite values as strings)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def write_job_table(
    sweep_dir: Path, jobs: list[dict[str, Any]], mode: str = "min"
) -> tuple[Path, Path]:
    """Write jobs.csv (every override key) and jobs.md (the swept keys, best job marked)."""
    all_keys = list(dict.fromkeys(k for job in jobs for k in job["params"]))
    swept = [k for k in all_keys if len({job["params"].get(k) for job in jobs}) > 1] or all_keys
    metric = next((j["optimized_metric"] for j in jobs if j["optimized_metric"]), None) or "value"
    test_metric = "test/" + metric.split("/", 1)[1] if metric.startswith("val/") else None
    rows = [_row(job, all_keys, metric, test_metric) for job in jobs]

    csv_path = Path(sweep_dir) / "jobs.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    md_path = Path(sweep_dir) / "jobs.md"
    md_path.write_text(_markdown(sweep_dir, rows, swept, metric, test_metric, mode))
    return csv_path, md_path


def _row(
    job: dict[str, Any], keys: list[str], metric: str, test_metric: str | None
) -> dict[str, Any]:
    """One table row: job, parameters, status, the metric (and its test counterpart), reason."""
    row = {
        "job": job["job"],
        **{k: job["params"].get(k, "") for k in keys},
        "status": job["status"],
        metric: _as_float(job["value"]),
    }
    if test_metric:
        row[test_metric] = _as_float(job["metrics"].get(test_metric))
    row["reason"] = job["reason"] or ""
    return row


def _markdown(
    sweep_dir: Path,
    rows: list[dict[str, Any]],
    swept: list[str],
    metric: str,
    test_metric: str | None,
    mode: str,
) -> str:
    """The table as Markdown, best completed job first in the header and marked in the table."""
    scored = [
        r
        for r in rows
        if r["status"] == "completed" and r[metric] is not None and math.isfinite(r[metric])
    ]
    best = (max if mode == "max" else min)(scored, key=lambda r: r[metric]) if scored else None
    columns = ["job", *swept, "status", metric, *([test_metric] if test_metric else []), "reason"]
    lines = [
        f"# Sweep {Path(sweep_dir).name}",
        "",
        f"{len(rows)} job(s); optimised metric `{metric}` ({mode}); "
        + (
            f"best: job {best['job']} ({metric} = {_fmt(best[metric])})."
            if best
            else "no job completed."
        ),
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for row in rows:
        cells = [_fmt(row[c]) for c in columns]
        if row is best:
            cells[0] += " (best)"
        lines.append(
            "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"
        )
    return "\n".join(lines) + "\n"


def _fmt(value: Any) -> str:
    """A cell: floats to 4 significant digits, None as a dash."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
