"""Does the offline AI-VAD feature see a fast, flat-coloured mover? One figure, two frames.

    uv run python benchmarks/vad_flat_mover.py

A 14 px upright ellipse (flat grey, or checked) on a flat ground with sensor noise moves dx px
between two 72 x 108 frames. Printed per dx: the motion boxes found, the old velocity feature
(main's region-normalised direction histogram: its sum is the mean speed of moving vectors, its
largest bin), the new explicit speed (90th percentile of flow magnitude in the box) and the
largest Farneback flow vector. Takes a few seconds.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from avlab.tasks.vad.extractors import FarnebackFlow, MotionRegions, RegionVelocity

H, W = 72, 108


def frame_pair(dx: int, height: int = 14, textured: bool = False) -> list[torch.Tensor]:
    """Two (1, 3, H, W) frames of one figure moved by dx px."""
    out = []
    for x0 in (30, 30 + dx):
        image = np.full((H, W), 120, np.float32)
        body = np.zeros((H, W), np.uint8)
        cv2.ellipse(body, (x0, 40), (int(0.22 * height), height // 2), 0, 0, 360, 1, -1)
        image[body > 0] = 200
        if textured:
            ys, xs = np.nonzero(body)
            image[ys, xs] -= 60 * (((xs - x0) // 3 + ys // 3) % 2)
        image += np.random.default_rng(x0).normal(0, 2, image.shape)
        grey = torch.from_numpy(np.clip(image, 0, 255) / 255).float()
        out.append(grey.expand(3, H, W)[None])
    return out


def main() -> None:
    """Print one line per look and displacement."""
    flow = FarnebackFlow(0.5, 3, 9, 3, 5, 1.1)
    regions = MotionRegions(min_bbox_area=100, binary_threshold=12, dilation=4)
    old = RegionVelocity(8, 32, 0.3, "region")
    new = RegionVelocity(8, 32, 0.3, "region", speed=True, size=True)
    print("| look | dx (px) | boxes | old hist sum | old max bin | new speed | max flow |")
    print("|---|---|---|---|---|---|---|")
    for textured in (False, True):
        for dx in (1, 2, 5, 8):
            first, last = frame_pair(dx, textured=textured)
            flows = flow(first, last)
            boxes = regions(first, last)[0]["boxes"]
            rows = torch.cat([torch.zeros(len(boxes), 1), boxes], 1)
            o, n = old(flows, rows)[0], new(flows, rows)[0]
            print(
                f"| {'checked' if textured else 'flat'} | {dx} | {len(boxes)} | {o.sum():.2f} "
                f"| {o.max():.2f} | {n[8].expm1():.2f} | {flows[0].norm(dim=0).max():.2f} |"
            )


if __name__ == "__main__":
    main()
