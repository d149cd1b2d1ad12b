"""The "don't laugh" game tab's backend: a smile checkpoint scores the windows of an upload and
`avlab.tasks.smile.game` judges them (the same rules as the `play` command; none are copied)."""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from avlab.checkpoints import load_checkpoint
from avlab.tasks.smile.data import FrameTransform
from avlab.tasks.smile.game import HAPPY, GameRules, Verdict, judge
from avlab.tasks.smile.model import EMOTIONS, SmileEmotionNet
from avlab.tasks.smile.play import load_net, plot_smile, score_windows, write_timeline

MODULE = "avlab.tasks.smile.module.SmileEmotionModule"


@dataclass
class SmileScores:
    """What the network read from an upload, before any rules: one row per window."""

    ends: list[int]  # each window's last frame
    smiles: np.ndarray  # (W,)
    emotions: np.ndarray  # (W, 7) probabilities


class SmileGame:
    """A smile checkpoint, ready to score uploads."""

    def __init__(self, path: str | Path, purpose: str = "smile") -> None:
        load_checkpoint(path, purpose, expect_module=MODULE)  # names `purpose` in any error
        self.net: SmileEmotionNet
        self.net, config = load_net(Path(path))
        self.transform = FrameTransform(
            image_size=config.data.image_size, seq_len=config.data.seq_len
        )

    def score(self, frames_rgb: list[np.ndarray], stride: int = 1) -> SmileScores:
        """Smile intensity and emotion probabilities of every window of the frames."""
        gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames_rgb]
        ends, smiles, emotions = score_windows(self.net, gray, self.transform, stride)
        return SmileScores(ends, smiles, emotions)


def rules(threshold: float, two_stage: bool) -> GameRules:
    """The game's rules from the page's slider and switch."""
    return GameRules(threshold=float(threshold), two_stage=bool(two_stage))


def verdict_of(scores: SmileScores, game_rules: GameRules) -> Verdict:
    """The game's verdict on scored windows."""
    return judge(scores.smiles, scores.emotions, game_rules)


def verdict_so_far(verdict: Verdict, window: int) -> str:
    """OUT! once the first counting window has passed, SAFE before."""
    out = verdict.first_out_frame is not None and window >= verdict.first_out_frame
    return "OUT!" if out else "SAFE"


def analysis_text(scores: SmileScores, verdict: Verdict, window: int) -> str:
    """The one-line analysis of a window, e.g. "genuine smile: happiness 88 % + smile 82 %"."""
    reading = verdict.frames[window]
    happiness = float(scores.emotions[window, HAPPY])
    return f"{reading.label}: happiness {happiness:.0%} + smile {reading.smile:.0%}".replace(
        "%", " %"
    )


def emotion_bars(scores: SmileScores, window: int) -> dict[str, float]:
    """Emotion -> probability of a window (for a bar chart)."""
    return {name: float(p) for name, p in zip(EMOTIONS, scores.emotions[window], strict=True)}


def gauge_html(smile: float, threshold: float, verdict: str) -> str:
    """The smile gauge: a bar filled to the smile value with the threshold drawn across it."""
    colour = "#d62728" if smile > threshold else "#2ca02c"
    return (
        f'<div class="avlab-gauge" data-smile="{smile:.4f}" data-threshold="{threshold:.2f}">'
        f'<div class="avlab-verdict" data-verdict="{html.escape(verdict)}" style="font-size:3em;'
        f'font-weight:700;color:{"#d62728" if verdict == "OUT!" else "#2ca02c"}">'
        f"{html.escape(verdict)}</div>"
        '<div style="position:relative;height:28px;background:#eee;border-radius:4px">'
        f'<div style="width:{smile:.1%};height:100%;background:{colour};border-radius:4px"></div>'
        f'<div title="threshold" style="position:absolute;left:{threshold:.1%};top:-4px;'
        'bottom:-4px;width:3px;background:#000"></div></div>'
        f"<div>smile {smile:.2f} &nbsp;·&nbsp; threshold {threshold:.2f}</div></div>"
    )


def write_results(
    scores: SmileScores, verdict: Verdict, game_rules: GameRules, fps: float, folder: Path
) -> tuple[Path, Path]:
    """The smile-over-time plot and the timeline CSV, written by the `play` command's writers."""
    folder.mkdir(parents=True, exist_ok=True)
    csv_path, png_path = folder / "timeline.csv", folder / "smile.png"
    write_timeline(csv_path, scores.ends, fps, verdict, scores.emotions)
    plot_smile(png_path, scores.ends, fps, verdict, game_rules)
    return csv_path, png_path
