"""Compare runs: one table per task, the best run per metric, written as CSV, Markdown and a chart."""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from avlab.experiments.runs import Run, metric_direction

PANELS_PER_TASK = 6


@dataclass
class Best:
    """The best run for one metric of one task (run None when the direction is unknown)."""

    task: str
    metric: str
    direction: str | None
    run: Run | None
    value: float | None


def run_label(run: Run) -> str:
    """A short name: `face_voice 2026-11-29_22-40-00/3` for outputs/face_voice/multiruns/.../3."""
    return run.rel.replace("/multiruns/", " ").replace("/runs/", " ")


def default_metrics(runs: list[Run]) -> list[str]:
    """Each run's optimised metric, val/loss, then every top-level test/ metric the runs logged."""
    names = [r.optimized_metric for r in runs if r.optimized_metric]
    names += ["val/loss"] if any("val/loss" in r.metrics for r in runs) else []
    names += sorted(
        {k for r in runs for k in r.metrics if k.startswith("test/") and k.count("/") == 1}
    )
    return list(dict.fromkeys(names))


def metric_value(run: Run, name: str) -> float | None:
    """A run's value of a metric (its optimised value for the optimised metric)."""
    if name == run.optimized_metric and run.value is not None:
        return run.value
    return run.metrics.get(name)


def by_task(runs: list[Run]) -> dict[str, list[Run]]:
    """Runs grouped by task, tasks in name order."""
    groups: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        groups[run.task].append(run)
    return dict(sorted(groups.items()))


def best_per_metric(task: str, runs: list[Run], metrics: list[str]) -> list[Best]:
    """For each metric, the completed run with the best finite value in the metric's direction."""
    found = []
    for name in metrics:
        direction = metric_direction(name)
        scored = [
            (value, run)
            for run in runs
            if run.status == "completed"
            and (value := metric_value(run, name)) is not None
            and math.isfinite(value)
        ]
        if not scored:
            continue
        if direction is None:
            found.append(Best(task, name, None, None, None))
            continue
        pick = max if direction == "max" else min
        value, run = pick(scored, key=lambda pair: pair[0])
        found.append(Best(task, name, direction, run, value))
    return found


def write_comparison(
    out_dir: Path, groups: dict[str, list[Run]], metrics: dict[str, list[str]], best: list[Best]
) -> tuple[Path, Path, Path]:
    """comparison.csv (one row per run), comparison.md (a table per task) and comparison.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    all_metrics = list(dict.fromkeys(m for names in metrics.values() for m in names))
    csv_path = out_dir / "comparison.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["task", "run", "experiment", "model", "status", *all_metrics, "reason"])
        for task, runs in groups.items():
            for run in runs:
                values = [metric_value(run, m) for m in all_metrics]
                writer.writerow(
                    [task, run.rel, run.experiment, run.choices.get("model", ""), run.status]
                    + ["" if v is None else v for v in values]
                    + [run.reason or ""]
                )
    md_path = out_dir / "comparison.md"
    md_path.write_text(_markdown(groups, metrics, best))
    png_path = out_dir / "comparison.png"
    _bar_chart(png_path, groups, metrics, best)
    return csv_path, md_path, png_path


def fmt(value: float | None) -> str:
    """A metric cell: 4 significant digits, a dash when absent."""
    return "-" if value is None else f"{value:.4g}"


def describe_best(item: Best) -> str:
    """`test/emotion_acc (higher is better): 0.61, smile_pretrain 2026-...` or why none."""
    if item.direction is None:
        return f"{item.metric}: direction unknown (not in METRIC_DIRECTIONS), no best picked"
    word = "higher" if item.direction == "max" else "lower"
    return f"{item.metric} ({word} is better): {fmt(item.value)}, {run_label(item.run)}"


def _markdown(groups: dict[str, list[Run]], metrics: dict[str, list[str]], best: list[Best]) -> str:
    lines = ["# Run comparison", ""]
    for task, runs in groups.items():
        names = metrics[task]
        best_runs = {(b.metric, id(b.run)) for b in best if b.task == task and b.run}
        columns = ["run", "model", "status", *names]
        lines += [f"## {task}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        for run in runs:
            cells = [run_label(run), run.choices.get("model", "-"), run.status]
            for name in names:
                cell = fmt(metric_value(run, name))
                cells.append(f"**{cell}**" if (name, id(run)) in best_runs else cell)
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        lines += ["", "Best per metric:", ""]
        lines += [f"- {describe_best(b)}" for b in best if b.task == task]
        lines.append("")
    return "\n".join(lines)


def _bar_chart(
    path: Path, groups: dict[str, list[Run]], metrics: dict[str, list[str]], best: list[Best]
) -> None:
    """One horizontal bar panel per (task, metric), the best run's bar highlighted: per task the
    first PANELS_PER_TASK metrics whose direction is known (all metrics if none is)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        (task, name)
        for task in groups
        for name in ([m for m in metrics[task] if metric_direction(m)] or metrics[task])[
            :PANELS_PER_TASK
        ]
    ]
    cols = min(3, max(1, len(panels)))
    rows = max(1, math.ceil(len(panels) / cols))
    height = max(2.0, 0.35 * max((len(r) for r in groups.values()), default=1) + 1.2)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, height * rows), squeeze=False)
    winners = {(b.task, b.metric): b.run for b in best if b.run}
    for ax, (task, name) in zip(axes.flat, panels, strict=False):
        runs = [r for r in groups[task] if metric_value(r, name) is not None]
        values = [metric_value(r, name) for r in runs]
        values = [v if math.isfinite(v) else 0.0 for v in values]
        colours = ["tab:orange" if r is winners.get((task, name)) else "tab:blue" for r in runs]
        bars = ax.barh([run_label(r) for r in runs], values, color=colours)
        ax.bar_label(bars, fmt="%.3g", fontsize=7)
        direction = metric_direction(name)
        hint = {"max": " (higher better)", "min": " (lower better)"}.get(direction, " (?)")
        ax.set_title(f"{task}: {name}{hint}", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.invert_yaxis()
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
