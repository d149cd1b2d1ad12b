"""avlab's benchmark suite: `uv run python -m benchmarks [--only SECTION ...] [--tasks TASK ...]`.

Every figure is a ratio of two things measured side by side in this one process (or in two
subprocesses started one after the other by it), so a noisy machine moves both alike:

  overhead      training-step time: a hand-written PyTorch loop vs `trainer.fit` (no callbacks)
                vs `trainer.fit` with every default callback vs the same without the NaN guard.
                Goals: loop / fit >= 0.97; callbacks and the guard each <= 3 % per step.
  pipeline      samples/s the task's training DataLoader delivers alone vs samples/s the model
                consumes (the loop above). Goal >= 3x (the loader is never the bottleneck).
  memory        peak RSS of a short training run (`train.py ... debug=limit`) on the tiny data
                twin vs the same run on 10x that data. Goal <= 1.2x.
  first_result  wall time of each default run (`train.py experiment=E`) from an empty data
                folder, generation included, and whether its bar held. Minutes per task: off
                unless asked for with `--only first_result`.

The table is printed and written to `benchmarks/results/suite_<section>.md`; BENCHMARKS.md keeps
the figures with the CPU they came from. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from benchmarks.suite import SECTIONS, TASKS
from benchmarks.threads import cpu_model

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=list(SECTIONS),
        default=["overhead", "pipeline", "memory"],
        help="sections to run (default: overhead pipeline memory)",
    )
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument("--steps", type=int, default=25, help="timed training steps per variant")
    parser.add_argument("--skip", type=int, default=5, help="first steps left out of the median")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="overhead: run the variants this many times in rotating order and report the "
        "median ratio over the rounds with its range (ratios are taken within a round)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    os.environ.setdefault("AVLAB_ROOT", str(REPO))
    args.out.mkdir(parents=True, exist_ok=True)
    header = f"CPU: {cpu_model()}"
    print(header, flush=True)
    for section in args.only:
        lines = SECTIONS[section](args)
        text = "\n".join([header, "", *lines, ""])
        (args.out / f"suite_{section}.md").write_text(text)


if __name__ == "__main__":
    main()
