"""Samples/s of smile's training and validation loaders: this checkout's data.py vs a git ref's.

Both datamodules read the same default data (generated once into --data) and run in this one
process, alternating, for --rounds rounds; the median and range of each are printed, and every
batch of the two is compared (they must be equal, value for value, in the same order).

    uv run python -m benchmarks.smile_loader [--ref main] [--rounds 5] [--data DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import hydra
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from benchmarks.threads import cpu_model

REPO = Path(__file__).resolve().parents[1]
DATA_PY = "src/avlab/tasks/smile/data.py"


def ref_module(ref: str, folder: Path) -> str:
    """Import `ref`'s smile data.py as a module of its own; its name."""
    source = subprocess.run(
        ["git", "show", f"{ref}:{DATA_PY}"], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout
    path = folder / "smile_data_ref.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("smile_data_ref", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["smile_data_ref"] = module
    spec.loader.exec_module(module)
    return "smile_data_ref"


def datamodule(data_dir: Path, module: str | None, *overrides: str):
    """The default smile datamodule (or `module`'s SmileDataModule), set up for fitting."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=smile_pretrain", *overrides])
    with open_dict(cfg):
        cfg.paths.data_dir = str(data_dir)
        if module:
            cfg.data._target_ = f"{module}.SmileDataModule"
    dm = hydra.utils.instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def epoch(loader) -> tuple[float, list]:
    """Seconds for one pass over `loader`, and its batches."""
    start = time.perf_counter()
    batches = list(loader)
    return time.perf_counter() - start, batches


def same(a: list, b: list) -> bool:
    """Whether two lists of batches hold the same tensors, bit for bit."""

    def bits(t: torch.Tensor) -> tuple:
        return t.dtype, tuple(t.shape), t.numpy().tobytes()

    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(bits(x[k]) == bits(y[k]) for k in x)
        for x, y in zip(a, b, strict=True)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ref", default="main")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "smile_bench")
    args = parser.parse_args()
    os.environ.setdefault("PL_GLOBAL_SEED", "42")
    print(f"CPU: {cpu_model()}; torch threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        mods = {"ref": datamodule(args.data, ref_module(args.ref, Path(tmp)))}
        mods["new"] = datamodule(args.data, None)
    rates: dict[str, dict[str, list[float]]] = {k: {"train": [], "val": []} for k in mods}
    for dm in mods.values():  # the first pass decodes and caches faces: not timed
        epoch(dm.train_dataloader())
    for round_ in range(args.rounds):
        seen = {}
        order = list(mods) if round_ % 2 == 0 else list(reversed(mods))
        for name in order:
            dm = mods[name]
            for split, loader in (("train", dm.train_dataloader()), ("val", dm.val_dataloader())):
                seconds, batches = epoch(loader)
                rates[name][split].append(sum(len(b["frames"]) for b in batches) / seconds)
                seen[name, split] = batches
        for split in ("train", "val"):
            if not same(seen["ref", split], seen["new", split]):
                raise SystemExit(f"round {round_}: {split} batches differ from {args.ref}'s")
    for split in ("train", "val"):
        for name in mods:
            values = sorted(rates[name][split])
            print(
                f"{split:5s} {name:3s}: median {values[len(values) // 2]:7.0f} samples/s "
                f"(range {values[0]:.0f}-{values[-1]:.0f}, {args.rounds} rounds)"
            )
    print("every batch of every round equal to the ref's")


if __name__ == "__main__":
    main()
