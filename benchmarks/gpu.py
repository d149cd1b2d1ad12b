"""Throughput of each gradient-trained task's default model on one GPU (bf16 autocast, eager vs
torch.compile): samples/s, seconds per training step and peak GPU memory.

    bash benchmarks/gpu.sh            # or: uv run python -m benchmarks.gpu [--tasks ...]

Batches come from each task's tiny data twin at the default batch size (step time depends on
shapes, not on which samples); timed steps follow warm-up steps (compile happens in warm-up).
Needs a CUDA GPU; on a machine without one it says so and exits with status 2. `--device cpu`
runs the same code path on the CPU (bf16 CPU autocast, no memory figure): the test suite uses it
so the script is known to work before a GPU is at hand.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from avlab.run import build_module
from benchmarks.suite import REPO, TASKS, compose_task, median, training_batches


def to_device(obj, device):
    if torch.is_tensor(obj):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


def time_steps(
    module, batches, steps: int, warmup: int, device: str = "cuda"
) -> tuple[float, float]:
    """Median seconds per step after warm-up, and peak GPU memory in GiB (NaN on a CPU)."""
    cuda = device == "cuda"
    module.to(device).train()
    optimizer = module.optimizer_factory(params=module.parameters())
    sync = torch.cuda.synchronize if cuda else lambda: None
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i, batch in zip(range(warmup + steps), itertools.cycle(batches), strict=False):
        sync()
        start = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = module.training_step(batch, i)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    memory = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    return median(times), memory


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument(
        "--modes", nargs="+", choices=["eager", "compile"], default=["eager", "compile"]
    )
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("benchmarks/gpu: no CUDA GPU on this machine; nothing measured", file=sys.stderr)
        sys.exit(2)
    os.environ.setdefault("AVLAB_ROOT", str(REPO))
    name = torch.cuda.get_device_name() if args.device == "cuda" else "none (CPU run)"
    print(f"GPU: {name}; torch {torch.__version__}")
    print("| task | batch | mode | s/step | samples/s | peak GPU memory (GiB) |")
    print("|---|---|---|---|---|---|")
    for task in args.tasks:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = compose_task(task, Path(tmp))
            _, batches = training_batches(task, Path(tmp), 4)
            batches = [to_device(b, args.device) for b in batches]
            torch.manual_seed(0)
            start = build_module(cfg)
            for mode in args.modes:
                module = copy.deepcopy(start)
                if mode == "compile":
                    module.net.compile()
                step, memory = time_steps(module, batches, args.steps, args.warmup, args.device)
                size = TASKS[task]["batch"]
                print(
                    f"| {task} | {size} | bf16 {mode} | {step:.4f} | {size / step:.0f} | {memory:.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
