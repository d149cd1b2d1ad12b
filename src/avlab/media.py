"""Pictures of a run: saved as PNG in the run folder and sent to every active logger.

`log_figure(module, "test/confusion_matrix", fig)` writes `<run folder>/media/test_confusion_matrix.png`
and shows the same picture under that key in TensorBoard (Images tab) and W&B (media panel).
Loggers without pictures (CSV) get nothing; the PNG in the run folder is always there.
`log_audio` does the same for a waveform (`media/<key>.wav`).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

log = logging.getLogger(__name__)

MEDIA_DIR = "media"


def media_path(module: Any, key: str) -> Path | None:
    """<run folder>/media/<key with / as _>.png, or None without a trainer."""
    trainer = getattr(module, "_trainer", None)
    if trainer is None:
        return None
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", key).strip("_")
    return Path(trainer.default_root_dir) / MEDIA_DIR / f"{name}.png"


def log_figure(
    module: Any, key: str, fig: Figure, step: int | None = None, path: Path | None = None
) -> Path | None:
    """Save `fig` as a PNG (at `path`, default media_path) and log it to TensorBoard and W&B.

    Only the global-zero process writes and logs. The figure is closed. Returns the PNG path.
    """
    trainer = getattr(module, "_trainer", None)
    path = path or media_path(module, key)
    try:
        if trainer is not None and not trainer.is_global_zero:
            return None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(path, dpi=90)
        step = trainer.global_step if step is None and trainer is not None else (step or 0)
        for logger in trainer.loggers if trainer is not None else []:
            _send(logger, key, fig, path, step)
    finally:
        plt.close(fig)
    return path


def log_audio(
    module: Any, key: str, audio: Any, sample_rate: int, step: int | None = None
) -> Path | None:
    """Save a mono waveform as `<run folder>/media/<key>.wav` and send it to TensorBoard and W&B."""
    from avlab.audio.io import write_wav

    trainer = getattr(module, "_trainer", None)
    if trainer is not None and not trainer.is_global_zero:
        return None
    wave = _numpy(audio).reshape(-1)
    path = media_path(module, key)
    if path is not None:
        path = path.with_suffix(".wav")
        path.parent.mkdir(parents=True, exist_ok=True)
        write_wav(path, wave, sample_rate)
    step = trainer.global_step if step is None and trainer is not None else (step or 0)
    for logger in trainer.loggers if trainer is not None else []:
        kind = type(logger).__name__
        try:
            if kind == "TensorBoardLogger":
                logger.experiment.add_audio(key, wave[None], step, sample_rate=sample_rate)
            elif kind == "WandbLogger":
                import wandb

                clip = wandb.Audio(str(path) if path else wave, sample_rate=sample_rate)
                logger.experiment.log({key: clip, "trainer/global_step": step})
        except Exception as err:  # a dashboard hiccup must not end a training run
            log.warning("could not send %s to %s: %s", key, kind, err)
    return path


def _send(logger: Any, key: str, fig: Figure, path: Path | None, step: int) -> None:
    """One logger's way of showing a picture; a logger that cannot is skipped."""
    kind = type(logger).__name__
    try:
        if kind == "TensorBoardLogger":
            logger.experiment.add_figure(key, fig, global_step=step, close=False)
        elif kind == "WandbLogger":
            logger.log_image(key=key, images=[str(path) if path else fig], step=step)
    except Exception as err:  # a dashboard hiccup must not end a training run
        log.warning("could not send %s to %s: %s", key, kind, err)


def confusion_matrix_figure(matrix: Any, labels: list[str] | tuple[str, ...], title: str) -> Figure:
    """A confusion matrix (rows: true class, columns: predicted), counts in the cells."""
    counts = _numpy(matrix)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * len(labels), 0.8 + 0.5 * len(labels)))
    image = ax.imshow(counts, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    for (row, col), value in _cells(counts):
        light = value > counts.max() / 2
        ax.text(col, row, f"{value:g}", ha="center", va="center", fontsize=7,
                color="white" if light else "black")  # fmt: skip
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def roc_figure(fpr: Any, tpr: Any, auc: float, title: str) -> Figure:
    """A ROC curve with the chance diagonal and the AUC in the legend."""
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    ax.plot(_numpy(fpr), _numpy(tpr), color="tab:blue", lw=1.8, label=f"AUC = {auc:.3f}")
    ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--", label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    ax.set(xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def similarity_matrix_figure(scores: Any, ids: Any, title: str, max_items: int = 48) -> Figure:
    """Query x gallery similarities for the first `max_items` items, sorted by identity, so a
    good model shows a bright diagonal of same-person blocks."""
    scores, ids = _numpy(scores), _numpy(ids)
    order = ids.argsort(kind="stable")[:max_items]
    fig, ax = plt.subplots(figsize=(5.0, 4.4))
    image = ax.imshow(scores[order][:, order], cmap="viridis")
    ax.set(xlabel="face (sorted by person)", ylabel="voice (sorted by person)", title=title)
    fig.colorbar(image, ax=ax, fraction=0.046, label="cosine similarity")
    fig.tight_layout()
    return fig


def _numpy(value: Any) -> Any:
    import numpy as np

    if hasattr(value, "detach"):
        value = value.detach().float().cpu().numpy()
    return np.asarray(value)


def _cells(matrix: Any):
    for row in range(matrix.shape[0]):
        for col in range(matrix.shape[1]):
            yield (row, col), float(matrix[row, col])
