"""benchmarks/gpu.py's code path, run on the CPU: it must work before anyone has a GPU to run it on."""

from __future__ import annotations

from benchmarks import gpu
from benchmarks.suite import TASKS


def test_gpu_benchmark_times_a_bf16_step_of_every_task(capsys):
    gpu.main(["--device", "cpu", "--steps", "1", "--warmup", "1", "--modes", "eager"])
    rows = {}
    for line in capsys.readouterr().out.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 6 and cells[0] in TASKS:
            rows[cells[0]] = cells
    assert set(rows) == set(TASKS), rows
    for task, (_, batch, mode, step, per_second, _) in rows.items():
        assert mode == "bf16 eager"
        assert int(batch) == TASKS[task]["batch"]
        assert float(step) > 0
        # samples/s is the batch over the step time, as printed (rounded)
        assert abs(float(per_second) - int(batch) / float(step)) <= 1 + 0.01 * float(per_second)
