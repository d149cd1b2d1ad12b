"""Which per-frame encoder learns the generated faces from random weights within a CPU budget?

Trains timm encoders as single-frame 7-class emotion classifiers on the FER2013-format CSV
that `uv run python train.py` generates (48x48 grey rows), with one recipe (AdamW, one-cycle
LR, label smoothing 0.1, random shifts), and prints held-out (PublicTest) accuracy as it goes.
It isolates the encoder from the BiLSTM and the multi-task mix of the real run.

    uv run python benchmarks/smile_encoders.py resnet10t mobilenetv3_small_100 --size 48
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F

from avlab.tasks.smile.data import read_fer2013_csv

ROOT = Path(__file__).resolve().parents[1]


def load(csv: Path, size: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Split -> (images (N, 3, size, size) in [-1, 1], labels)."""
    pixels, labels, usage = read_fer2013_csv(csv)
    x = torch.tensor(pixels, dtype=torch.float32).unsqueeze(1) / 127.5 - 1
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    y = torch.tensor(labels)
    usage = np.asarray(usage)
    return {
        split: (x[torch.tensor(usage == split)], y[torch.tensor(usage == split)])
        for split in ("train", "val")
    }


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    hits = sum(
        (model(x[i : i + 256]).argmax(1) == y[i : i + 256]).sum().item()
        for i in range(0, len(x), 256)
    )
    return hits / len(x)


def run(name: str, data, steps: int, lr: float, batch: int, weight_decay: float, seed: int) -> None:
    torch.manual_seed(seed)
    x_train, y_train = data["train"]
    model = timm.create_model(name, num_classes=7, pretrained=False)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    start = time.perf_counter()
    for step in range(1, steps + 1):
        model.train()
        idx = torch.randint(0, len(x_train), (batch,))
        shift = torch.randint(-4, 5, (2,)).tolist()
        xb = torch.roll(x_train[idx], shifts=shift, dims=(2, 3))
        loss = F.cross_entropy(model(xb), y_train[idx], label_smoothing=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % max(1, steps // 4) == 0:
            print(
                f"{name:24s} step {step:5d}  train acc {accuracy(model, x_train[:700], y_train[:700]):.3f}  "
                f"held-out acc {accuracy(model, *data['val']):.3f}  {time.perf_counter() - start:.0f} s",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("encoders", nargs="+", help="timm model names")
    parser.add_argument("--csv", type=Path, default=ROOT / "data/smile/fer2013/fer2013.csv")
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if not args.csv.is_file():
        raise SystemExit(f"{args.csv}: not found; `uv run python train.py debug=fdr` generates it")
    torch.set_num_threads(args.threads)
    data = load(args.csv, args.size)
    for name in args.encoders:
        run(name, data, args.steps, args.lr, args.batch, args.weight_decay, args.seed)


if __name__ == "__main__":
    main()
