"""Training-step time of each task's default model with 1 thread vs every available core.

The thread policy (`threads:` in conf/train.yaml, applied by avlab.run.apply_thread_policy)
defaults to every core this process may use. This measures whether that is right for each
task: one process, the task's default model and batch size, batches taken from its tiny data
twin (step time depends on shapes, not on which samples), thread counts alternated in rounds
so a noisy machine affects both alike. Gradient tasks time forward + backward + AdamW step;
AI-VAD times its region-feature extraction (its whole training work).

    uv run python benchmarks/threads.py [--tasks smile face_voice aivad] [--rounds 3]

Run it on an otherwise idle machine: threads that wait for a busy core spin.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import hydra
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from avlab.run import available_cores, build_module

REPO = Path(__file__).resolve().parents[1]
TASKS = {
    # task: (experiment preset, tiny data twin, its batch-size key, the default batch size)
    "smile": ("smile_pretrain", "smile_tiny", "batch_size", 32),
    # The tiny twin has fewer people than a default batch: its batches are concatenated.
    "face_voice": ("face_voice", "face_voice_tiny", None, 64),
    "aivad": ("aivad_scratch", "vad_tiny", "train_batch_size", 16),
}


def cpu_model() -> str:
    """The CPU's model name and whether it has AVX-512, for the report."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return platform.processor() or "unknown CPU"
    name = next(
        (line.split(":", 1)[1].strip() for line in out.splitlines() if "Model name" in line), "?"
    )
    return f"{name} ({'AVX-512' if 'avx512f' in out else 'AVX2 only'}, {available_cores()} cores)"


def _default_batch(datamodule, key_batch: int) -> dict[str, torch.Tensor] | object:
    """One training batch of the default size, gathered from the tiny twin's loader."""
    parts, total = [], 0
    while total < key_batch:
        for batch in datamodule.train_dataloader():
            parts.append(batch)
            total += (
                len(next(iter(batch.values()))) if isinstance(batch, dict) else len(batch.image)
            )
            if total >= key_batch:
                break
    if not isinstance(parts[0], dict):
        return parts[0]  # AI-VAD's VideoBatch: its tiny twin's batch is already the default size
    return {k: torch.cat([p[k] for p in parts])[:key_batch] for k in parts[0]}


def make_step(task: str, data_dir: Path) -> Callable[[], None]:
    """A closure that runs one training step of the task's default model."""
    experiment, tiny, batch_key, batch_size = TASKS[task]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[f"experiment={experiment}", f"data={tiny}"]
            + ([f"data.{batch_key}={batch_size}"] if batch_key else []),
        )
    with open_dict(cfg):
        cfg.paths.data_dir = str(data_dir)
        cfg.paths.output_dir = str(data_dir / "out")
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    batch = _default_batch(datamodule, batch_size)
    module = build_module(cfg)
    module.train()
    if task == "aivad":
        return lambda: module.net(batch.image)
    opt = torch.optim.AdamW(module.parameters(), lr=1e-4)

    def step() -> None:
        loss = module.training_step(batch, 0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def timed(step: Callable[[], None], threads: int, repeats: int) -> list[float]:
    """Seconds per step for `repeats` steps at `threads` intra-op threads (after one warm-up)."""
    torch.set_num_threads(threads)
    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("AVLAB_ROOT", str(REPO))
    cores = available_cores()
    print(f"CPU: {cpu_model()}")
    print(f"| task | 1 thread s/step | {cores} threads s/step | speed-up |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks:
            torch.manual_seed(0)
            step = make_step(task, Path(tmp))
            one, many = [], []
            for _ in range(args.rounds):
                one += timed(step, 1, args.repeats)
                many += timed(step, cores, args.repeats)
            t1, tn = sorted(one)[len(one) // 2], sorted(many)[len(many) // 2]
            print(f"| {task} | {t1:.3f} | {tn:.3f} | {t1 / tn:.2f}x |", flush=True)
    torch.set_num_threads(cores)


if __name__ == "__main__":
    main()
