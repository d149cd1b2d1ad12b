"""Play "don't laugh" on a video or a folder of frames with a trained smile checkpoint.

    uv run python -m avlab.tasks.smile.play ckpt=PATH input=VIDEO_OR_FRAME_FOLDER \
        [threshold=0.8] [two_stage=false] [stride=1] [fps=10] [out=FOLDER] [quiet=false]

Slides a window of the model's sequence length over the frames; for each window it prints a
smile gauge, emotion bars and the running verdict, then writes `timeline.csv` and
`smile.png` (smile intensity over time with the threshold line) into `out` (default: a
`play_<input name>` folder beside the checkpoint's run folder).
"""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import hydra
import numpy as np
import torch
from omegaconf import OmegaConf

from avlab.checkpoints import load_checkpoint
from avlab.data_utils import DatasetError, read_image_gray
from avlab.tasks.smile.data import FrameTransform
from avlab.tasks.smile.game import GameRules, Verdict, judge
from avlab.tasks.smile.model import EMOTIONS, SmileEmotionNet

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}


@dataclass
class PlayArgs:
    """Command-line arguments (key=value)."""

    ckpt: str = "???"
    input: str = "???"
    threshold: float = 0.80
    two_stage: bool = False
    stride: int = 1
    fps: float = 10.0
    out: str | None = None
    quiet: bool = False


def load_net(ckpt: Path) -> tuple[SmileEmotionNet, dict]:
    """The trained network and the run config stored in a smile checkpoint."""
    checkpoint, config = load_checkpoint(
        ckpt, "ckpt", expect_module="avlab.tasks.smile.module.SmileEmotionModule"
    )
    net_cfg = config.model.net
    net_cfg.pretrained = None
    net = hydra.utils.instantiate(net_cfg)
    weights = {
        k.removeprefix("net."): v
        for k, v in checkpoint["state_dict"].items()
        if k.startswith("net.")
    }
    net.load_state_dict(weights)
    return net.eval(), config


def read_frames(source: Path) -> list[np.ndarray]:
    """Grayscale frames of a video file or of the images in a folder (sorted by name)."""
    if source.is_dir():
        paths = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise DatasetError(f"{source}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return [read_image_gray(p) for p in paths]
    if not source.is_file():
        raise DatasetError(f"{source}: no such video file or frame folder")
    capture = cv2.VideoCapture(str(source))
    frames = []
    ok, frame = capture.read()
    while ok:
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
        ok, frame = capture.read()
    capture.release()
    if not frames:
        raise DatasetError(f"{source}: OpenCV could not decode any frame from this video")
    return frames


@torch.no_grad()
def score_windows(
    net: SmileEmotionNet, frames: list[np.ndarray], transform: FrameTransform, stride: int
) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Smile intensity and emotion probabilities per window, keyed by each window's last frame."""
    seq_len = transform.seq_len
    if len(frames) < seq_len:  # too short a clip: hold its last frame, as a still would be held
        frames = frames + [frames[-1]] * (seq_len - len(frames))
    starts = range(0, len(frames) - seq_len + 1, stride)
    ends, smiles, emotions = [], [], []
    rng = np.random.default_rng(0)
    for start in starts:
        window = transform.clip(frames[start : start + seq_len], rng).unsqueeze(0)
        out = net(window)
        ends.append(start + seq_len - 1)
        smiles.append(float(out.smile_intensity[0]))
        emotions.append(out.emotion_logits[0].softmax(-1).numpy())
    return ends, np.asarray(smiles), np.stack(emotions)


def gauge(value: float, width: int = 20) -> str:
    """A text bar for a value in [0, 1]."""
    filled = int(round(value * width))
    return "#" * filled + "." * (width - filled)


def print_window(
    end: int, smile: float, probs: np.ndarray, verdict_so_far: str, rules: GameRules
) -> None:
    """One terminal block: the smile gauge with its threshold, emotion bars, the verdict."""
    mark = "!" if smile > rules.threshold else " "
    print(f"frame {end:5d}  smile [{gauge(smile)}] {smile:.2f}{mark}  verdict: {verdict_so_far}")
    for name, p in sorted(zip(EMOTIONS, probs, strict=True), key=lambda item: -item[1])[:3]:
        print(f"             {name:<9} [{gauge(float(p), 10)}] {p:.2f}")


def write_timeline(
    path: Path, ends: list[int], fps: float, verdict: Verdict, probs: np.ndarray
) -> None:
    """The per-window timeline as CSV."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["frame", "time_s", "smile", *EMOTIONS, "emotion", "label", "counts"])
        for end, reading, row in zip(ends, verdict.frames, probs, strict=True):
            writer.writerow(
                [
                    end,
                    f"{end / fps:.3f}",
                    f"{reading.smile:.4f}",
                    *(f"{p:.4f}" for p in row),
                    reading.emotion,
                    reading.label,
                    int(reading.counts),
                ]
            )


def plot_smile(path: Path, ends: list[int], fps: float, verdict: Verdict, rules: GameRules) -> None:
    """Smile intensity over time with the threshold line and the OUT moment."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = np.asarray(ends) / fps
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.plot(times, [r.smile for r in verdict.frames], label="smile intensity")
    ax.axhline(
        rules.threshold, color="red", linestyle="--", label=f"threshold {rules.threshold:.2f}"
    )
    if verdict.first_out_frame is not None:
        ax.axvline(times[verdict.first_out_frame], color="black", linestyle=":", label="OUT")
    ax.set(xlabel="time (s)", ylabel="smile", ylim=(0, 1), title=f"verdict: {verdict.text}")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def play(args: PlayArgs) -> Verdict:
    """Run the game on the input and write the timeline and plot."""
    rules = GameRules(threshold=args.threshold, two_stage=args.two_stage)
    ckpt, source = Path(args.ckpt), Path(args.input)
    net, config = load_net(ckpt)
    data = config["data"]
    transform = FrameTransform(image_size=data["image_size"], seq_len=data["seq_len"])
    ends, smiles, probs = score_windows(net, read_frames(source), transform, args.stride)
    verdict = judge(smiles, probs, rules)
    if not args.quiet:
        for i, (end, smile, row) in enumerate(zip(ends, smiles, probs, strict=True)):
            so_far = (
                "OUT"
                if verdict.first_out_frame is not None and i >= verdict.first_out_frame
                else "in"
            )
            print_window(end, smile, row, so_far, rules)
    out = Path(args.out) if args.out else ckpt.parent.parent / f"play_{source.stem}"
    out.mkdir(parents=True, exist_ok=True)
    write_timeline(out / "timeline.csv", ends, args.fps, verdict, probs)
    plot_smile(out / "smile.png", ends, args.fps, verdict, rules)
    at = "" if verdict.first_out_frame is None else f" at frame {ends[verdict.first_out_frame]}"
    print(f"verdict: {verdict.text}{at}; timeline and plot in {out}")
    return verdict


def main(argv: list[str]) -> None:
    """Parse key=value arguments and play."""
    args = OmegaConf.merge(OmegaConf.structured(PlayArgs), OmegaConf.from_dotlist(argv))
    missing = [key for key in ("ckpt", "input") if OmegaConf.is_missing(args, key)]
    if missing:
        sys.exit(
            f"usage: python -m avlab.tasks.smile.play ckpt=PATH input=VIDEO_OR_FOLDER (missing: {missing})"
        )
    play(OmegaConf.to_object(args))


if __name__ == "__main__":
    main(sys.argv[1:])
