"""What a user uploads to the video tabs: a video file, or a zip archive of a frame folder.

An archive's image files are read in name order (folders inside it included), like a frame
folder on disk. Anything the demo cannot read raises UploadError with a sentence for the page.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import cv2
import numpy as np

from avlab.tasks.smile.play import IMAGE_SUFFIXES

MAX_FRAMES = 3000
ARCHIVE_SUFFIXES = {".zip"}


class UploadError(ValueError):
    """An upload the demo cannot use; the message is shown in the page."""


def read_upload(path: str | Path | None, max_frames: int = MAX_FRAMES) -> list[np.ndarray]:
    """RGB uint8 frames (H, W, 3) of an uploaded video or zip archive of frames."""
    if path is None:
        raise UploadError("no file uploaded: choose a video or a .zip archive of frames")
    path = Path(path)
    if path.suffix.lower() in ARCHIVE_SUFFIXES or zipfile.is_zipfile(path):
        frames = _archive_frames(path, max_frames)
    else:
        frames = _video_frames(path, max_frames)
    sizes = {f.shape for f in frames}
    if len(sizes) > 1:
        raise UploadError(f"{path.name}: frames of different sizes {sorted(sizes)}")
    return frames


def _archive_frames(path: Path, max_frames: int) -> list[np.ndarray]:
    """The image members of a zip archive, decoded in name order."""
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as err:
        raise UploadError(f"{path.name}: not a readable zip archive ({err})") from err
    with archive:
        names = sorted(
            info.filename
            for info in archive.infolist()
            if not info.is_dir()
            and Path(info.filename).suffix.lower() in IMAGE_SUFFIXES
            and not Path(info.filename).name.startswith(".")
        )
        if not names:
            raise UploadError(
                f"{path.name}: the archive holds no image files "
                f"({', '.join(sorted(IMAGE_SUFFIXES))}); zip a folder of frames"
            )
        if len(names) > max_frames:
            raise UploadError(f"{path.name}: {len(names)} frames; the demo reads {max_frames}")
        return [_decode(archive.read(name), f"{path.name}:{name}") for name in names]


def _decode(data: bytes, where: str) -> np.ndarray:
    """An encoded image as RGB uint8."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise UploadError(f"{where}: not an image OpenCV can decode")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _video_frames(path: Path, max_frames: int) -> list[np.ndarray]:
    """The frames of a video file, up to `max_frames`."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    try:
        ok, frame = capture.read()
        while ok and len(frames) < max_frames:
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            ok, frame = capture.read()
    finally:
        capture.release()
    if not frames:
        raise UploadError(
            f"{path.name}: not a video OpenCV can read (no frame could be decoded); "
            "upload a video file or a .zip archive of a frame folder"
        )
    return frames
