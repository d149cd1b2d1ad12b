"""Convert CUHK Avenue or ShanghaiTech, as they ship, into the UCSDped frame-folder layout.

    uv run python -m avlab.tasks.vad.convert avenue "/data/Avenue Dataset" /data/vad
    uv run python -m avlab.tasks.vad.convert shanghaitech /data/shanghaitech /data/vad --scene 01

then train with `data.root=/data/vad data.category=avenue data.synth=null` (or `shanghaitech01`).

Read as released:
  Avenue        training_videos/NN.avi, testing_videos/NN.avi, and
                ground_truth_demo/testing_label_mask/N_label.mat (MATLAB; `volLabel`: a 1 x T
                cell of H x W masks, one per frame of testing video N)
  ShanghaiTech  training/videos/SS_VVV.avi, testing/frames/SS_VVVV/NNN.jpg, and
                testing/test_pixel_mask/SS_VVVV.npy (T x H x W) or, without it,
                testing/test_frame_mask/SS_VVVV.npy (T frame labels)
Written (what `avlab.tasks.vad.data` reads):
  <out>/<category>/Train/<video>/NNN.tif, Test/<video>/NNN.tif, Test/<video>_gt/NNN.bmp from
  pixel masks, or Test/<category>.m (UCSD's `TestVideoFile{end+1}.gt_frame = [a:b];`) from
  frame labels. Videos are decoded with OpenCV's bundled decoder; a progress bar counts frames.
Bad input (a missing folder or ground-truth file, an undecodable video, a mask count that is
not the frame count) stops with a DatasetError naming the file.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import scipy.io
from PIL import Image
from tqdm import tqdm

from avlab.data_utils import DatasetError, staged_folder


def decode_video(path: Path) -> Iterator[np.ndarray]:
    """RGB uint8 frames of a video file, decoded by OpenCV."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise DatasetError(f"{path}: OpenCV cannot open this video")
    count = 0
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            count += 1
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()
    if count == 0:
        raise DatasetError(f"{path}: no frames could be decoded")


def read_avenue_masks(path: Path) -> np.ndarray:
    """(T, H, W) bool masks of one Avenue test video from its `N_label.mat` (`volLabel`)."""
    try:
        mat = scipy.io.loadmat(str(path))
    except (OSError, ValueError) as err:
        raise DatasetError(f"{path}: not a readable MATLAB file ({err})") from err
    if "volLabel" not in mat:
        raise DatasetError(f"{path}: no volLabel variable (keys {sorted(mat)})")
    cells = np.asarray(mat["volLabel"], dtype=object).ravel()
    try:
        return np.stack([np.asarray(c) > 0 for c in cells])
    except ValueError as err:
        raise DatasetError(f"{path}: volLabel masks of different sizes ({err})") from err


def _write_frames(folder: Path, frames, bar: tqdm) -> int:
    """Numbered .tif frames (001.tif, ...); returns how many."""
    folder.mkdir(parents=True)
    n = 0
    for n, frame in enumerate(frames, 1):
        Image.fromarray(frame).save(
            folder / f"{n:03d}.tif", format="TIFF", compression="tiff_deflate"
        )
        bar.update(1)
    return n


def _write_masks(folder: Path, masks: np.ndarray, n_frames: int, source: Path) -> None:
    """Numbered .bmp masks (255 = anomalous), checked against the video's frame count."""
    if len(masks) != n_frames:
        raise DatasetError(f"{source}: {len(masks)} masks for {n_frames} frames")
    folder.mkdir(parents=True)
    for n, mask in enumerate(masks, 1):
        Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(folder / f"{n:03d}.bmp")


def ucsd_m_text(frame_labels: list[np.ndarray]) -> str:
    """A UCSD-style `.m` file: one `TestVideoFile{end+1}.gt_frame = [a:b, ...];` per video."""
    lines = ["TestVideoFile = {};"]
    for labels in frame_labels:
        flags = np.concatenate([[0], np.asarray(labels, bool).astype(int), [0]])
        edges = np.flatnonzero(np.diff(flags))
        ranges = [f"{a + 1}:{b}" for a, b in zip(edges[::2], edges[1::2], strict=True)]
        lines.append(f"TestVideoFile{{end+1}}.gt_frame = [{', '.join(ranges)}];")
    return "\n".join(lines) + "\n"


def _need(path: Path, what: str) -> Path:
    """`path` if it exists, else a DatasetError saying what was expected there."""
    if not path.exists():
        raise DatasetError(f"{path}: missing {what}")
    return path


def convert_avenue(source: Path, out_root: Path, category: str = "avenue") -> Path:
    """Write Avenue's training/testing videos and volLabel masks as `<out_root>/<category>`."""
    train = sorted(_need(source / "training_videos", "training_videos folder").glob("*.avi"))
    test = sorted(_need(source / "testing_videos", "testing_videos folder").glob("*.avi"))
    gt = _need(source / "ground_truth_demo" / "testing_label_mask", "ground-truth folder")
    if not train or not test:
        raise DatasetError(f"{source}: no .avi videos in training_videos/ or testing_videos/")
    target = out_root / category
    with staged_folder(target) as out, tqdm(desc=f"Avenue -> {target}", unit="frame") as bar:
        for video in train:
            _write_frames(out / "Train" / video.stem, decode_video(video), bar)
        for video in test:
            n = _write_frames(out / "Test" / video.stem, decode_video(video), bar)
            mat = _need(gt / f"{int(video.stem)}_label.mat", f"ground truth of {video}")
            _write_masks(out / "Test" / f"{video.stem}_gt", read_avenue_masks(mat), n, mat)
    return target


def convert_shanghaitech(source: Path, out_root: Path, scene: str) -> Path:
    """Write one ShanghaiTech camera (`scene`, e.g. "01") as `<out_root>/shanghaitech<scene>`."""
    train = sorted(
        _need(source / "training" / "videos", "training/videos folder").glob(f"{scene}_*.avi")
    )
    frames_root = _need(source / "testing" / "frames", "testing/frames folder")
    test = sorted(p for p in frames_root.glob(f"{scene}_*") if p.is_dir())
    if not train or not test:
        raise DatasetError(f"{source}: no videos of scene {scene} in training/ or testing/")
    pixel, frame = source / "testing" / "test_pixel_mask", source / "testing" / "test_frame_mask"
    target = out_root / f"shanghaitech{scene}"
    labels: list[np.ndarray] = []
    with staged_folder(target) as out, tqdm(desc=f"ShanghaiTech -> {target}", unit="frame") as bar:
        for video in train:
            _write_frames(out / "Train" / video.stem, decode_video(video), bar)
        for video in test:
            jpgs = sorted(video.glob("*.jpg"))
            if not jpgs:
                raise DatasetError(f"{video}: no .jpg frames")
            n = _write_frames(out / "Test" / video.name, (_read_rgb(p) for p in jpgs), bar)
            if (pixel / f"{video.name}.npy").is_file():
                masks = _load_npy(pixel / f"{video.name}.npy")
                _write_masks(out / "Test" / f"{video.name}_gt", masks > 0, n, pixel)
            else:
                path = _need(frame / f"{video.name}.npy", f"ground truth of {video}")
                flags = _load_npy(path).ravel()
                if len(flags) != n:
                    raise DatasetError(f"{path}: {len(flags)} frame labels for {n} frames")
                labels.append(flags > 0)
        if labels:
            if len(labels) != len(test):
                raise DatasetError(
                    f"{source}: pixel masks for some test videos of scene {scene} and frame "
                    "labels for others; convert needs one kind for all"
                )
            (out / "Test" / f"{target.name}.m").write_text(ucsd_m_text(labels))
    return target


def _read_rgb(path: Path) -> np.ndarray:
    """An image file as RGB uint8, with the file named when it does not decode."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except OSError as err:
        raise DatasetError(f"{path}: cannot decode frame ({err})") from err


def _load_npy(path: Path) -> np.ndarray:
    """A .npy array, with the file named when it does not load."""
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DatasetError(f"{path}: not a readable .npy array ({err})") from err


def main(argv: list[str] | None = None) -> int:
    """Command line: dataset name, its release folder, the output root."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=["avenue", "shanghaitech"])
    parser.add_argument("source", type=Path, help="the dataset folder as released")
    parser.add_argument("out", type=Path, help="output root (data.root)")
    parser.add_argument("--scene", default="01", help="ShanghaiTech camera, 01-13")
    args = parser.parse_args(argv)
    if args.dataset == "avenue":
        target = convert_avenue(args.source, args.out)
    else:
        target = convert_shanghaitech(args.source, args.out, args.scene)
    print(f"wrote {target}: use data.root={args.out} data.category={target.name} data.synth=null")
    return 0


if __name__ == "__main__":
    sys.exit(main())
