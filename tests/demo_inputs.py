"""Inputs the demo tests upload: frame folders zipped, frames written as a video, bad files."""

from __future__ import annotations

import zipfile
from pathlib import Path

import cv2
import numpy as np

from avlab.tasks.smile.synth import write_smile_clips


def zip_folder(folder: Path, archive: Path) -> Path:
    """A zip of a frame folder, the folder's name kept as the members' parent (as `zip -r` does)."""
    with zipfile.ZipFile(archive, "w") as handle:
        for path in sorted(folder.iterdir()):
            handle.write(path, f"{folder.name}/{path.name}")
    return archive


def write_video(frames: list[np.ndarray], path: Path, fps: float = 10.0) -> Path:
    """RGB frames as a Motion-JPEG .avi that OpenCV reads back."""
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    assert writer.isOpened(), "OpenCV cannot write MJPG .avi here"
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def smile_clip(folder: Path, n_frames: int = 16) -> Path:
    """A generated face clip's frame folder (the smile task's clips format)."""
    write_smile_clips(folder, n_train=1, n_val=0, n_test=0, n_frames=n_frames)
    return next((folder / "clips").iterdir())


def bad_uploads(folder: Path) -> dict[str, Path]:
    """A text file renamed .mp4, an empty zip, and a zip with no images in it."""
    folder.mkdir(parents=True, exist_ok=True)
    text = folder / "notes.mp4"
    text.write_text("this is not a video\n")
    empty = folder / "empty.zip"
    zipfile.ZipFile(empty, "w").close()
    no_images = folder / "readme.zip"
    with zipfile.ZipFile(no_images, "w") as handle:
        handle.writestr("frames/readme.txt", "no frames here")
    return {"text_as_mp4": text, "empty_zip": empty, "zip_without_images": no_images}
