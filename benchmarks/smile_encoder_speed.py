"""Training-step time of per-frame encoders for one smile batch (32 sequences x 10 frames).

All variants run in one process, one after another, so their ratios are comparable on a
noisy machine. Layouts: fp32 (NCHW), fp32 channels_last, bf16 autocast, bf16 + channels_last.

    uv run python benchmarks/smile_encoder_speed.py
"""

from __future__ import annotations

import argparse
import time

import timm
import torch


def step_time(
    name: str, size: int, channels_last: bool, bf16: bool, frames: int, repeats: int
) -> float:
    """Median seconds of a forward + backward + AdamW step over `frames` images."""
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=0)
    x = torch.randn(frames, 3, size, size)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters())
    times = []
    for i in range(repeats + 2):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(x).float().pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= 2:  # the first steps allocate and pick kernels
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--encoders", nargs="+", default=["resnet10t", "mobilenetv3_small_100"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[48, 64])
    parser.add_argument("--frames", type=int, default=320)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("| encoder | px | fp32 s/step | channels_last | bf16 | bf16 + channels_last |")
    print("|---|---|---|---|---|---|")
    for name in args.encoders:
        for size in args.sizes:
            base = step_time(name, size, False, False, args.frames, args.repeats)
            cells = [f"{base:.3f}"]
            for cl, bf16 in ((True, False), (False, True), (True, True)):
                t = step_time(name, size, cl, bf16, args.frames, args.repeats)
                cells.append(f"{t:.3f} ({base / t:.2f}x)")
            print(f"| `{name}` | {size} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
