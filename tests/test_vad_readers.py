"""Real VAD releases as they ship: UCSD v1p2's `.m` frame labels beside partial pixel masks, and
CUHK Avenue / ShanghaiTech converted from videos + MATLAB/NumPy ground truth into the layout the
loader reads. Tiny fixtures written in each release's own layout."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io
from anomalib.data.utils import Split
from PIL import Image

from avlab.data_utils import DatasetError
from avlab.tasks.vad.convert import convert_avenue, convert_shanghaitech, main, ucsd_m_text
from avlab.tasks.vad.data import UCSDpedFrames, read_ucsd_m

# As UCSD Anomaly Dataset v1p2 writes Test/UCSDped1.m (two ranges on one line occur in Ped1).
UCSD_M = """TestVideoFile = {};
% ground truth frames of the test videos
TestVideoFile{end+1}.gt_frame = [3:5];
TestVideoFile{end+1}.gt_frame = [2:3, 6:6];
"""


def _frames(folder: Path, n: int, size=(16, 24)) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(len(str(folder)))
    for t in range(n):
        Image.fromarray(rng.integers(0, 255, size, dtype=np.uint8)).save(
            folder / f"{t + 1:03d}.tif"
        )


def _ucsd(root: Path, m_text: str = UCSD_M) -> Path:
    """UCSDped1-like: Test001 has a _gt mask folder, Test002 does not; Test/UCSDped1.m labels both."""
    category = root / "UCSDped1"
    _frames(category / "Train" / "Train001", 6)
    _frames(category / "Test" / "Test001", 6)
    _frames(category / "Test" / "Test002", 6)
    (category / "Test" / "Test001_gt").mkdir()
    for t in range(6):
        mask = np.zeros((16, 24), np.uint8)
        mask[2:5, 2:5] = 255 if t == 0 else 0  # the masks disagree with the .m on purpose
        Image.fromarray(mask).save(category / "Test" / "Test001_gt" / f"{t + 1:03d}.bmp")
    (category / "Test" / "UCSDped1.m").write_text(m_text)
    return category


def _labels(dataset: UCSDpedFrames) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for i in range(len(dataset)):
        item = dataset[i]
        out.setdefault(Path(item.video_path).name, []).append(int(item.gt_label))
    return out


def test_ucsd_m_labels_videos_without_masks_and_masks_win_where_they_exist(tmp_path):
    assert read_ucsd_m(_ucsd(tmp_path) / "Test" / "UCSDped1.m") == [[3, 4, 5], [2, 3, 6]]
    dataset = UCSDpedFrames(tmp_path, "UCSDped1", Split.TEST)
    # Clips of 2 frames are labelled by their last frame: frames 2..6.
    assert _labels(dataset) == {"Test001": [0, 0, 0, 0, 0], "Test002": [1, 1, 0, 0, 1]}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "TestVideoFile{end+1}.gt_frame = [3-5];\n" * 2,
            r"UCSDped1\.m:1: '3-5' is not a frame range",
        ),
        ("TestVideoFile{end+1}.gt_frame = [5:3];\n" * 2, r"UCSDped1\.m:1: empty or non-positive"),
        ("TestVideoFile{end+1}.gt_frame = [1:2];\n", r"1 gt_frame lines for 2 test videos"),
        (
            "TestVideoFile{end+1}.gt_frame = [1:2];\nTestVideoFile{end+1}.gt_frame = [5:9];\n",
            r"names frame 7",
        ),
        ("x = 1;\n", r"no TestVideoFile\{end\+1\}\.gt_frame lines"),
    ],
)
def test_bad_ucsd_m_files_are_named_with_the_line(tmp_path, text, message):
    _ucsd(tmp_path, text)
    with pytest.raises(DatasetError, match=message):
        UCSDpedFrames(tmp_path, "UCSDped1", Split.TEST)


def _avi(path: Path, n: int, size=(32, 24)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, size)
    assert writer.isOpened()
    for t in range(n):
        frame = np.full((size[1], size[0], 3), 40 + 20 * t, np.uint8)
        writer.write(frame)
    writer.release()


def test_avenue_converts_videos_and_vollabel_mat_to_the_layout_the_loader_reads(tmp_path):
    source = tmp_path / "Avenue Dataset"
    _avi(source / "training_videos" / "01.avi", 4)
    _avi(source / "testing_videos" / "01.avi", 5)
    masks = np.empty((1, 5), dtype=object)
    for t in range(5):
        masks[0, t] = np.zeros((24, 32), np.uint8)
        if t in (3, 4):
            masks[0, t][5:9, 5:9] = 1
    gt = source / "ground_truth_demo" / "testing_label_mask"
    gt.mkdir(parents=True)
    scipy.io.savemat(gt / "1_label.mat", {"volLabel": masks})
    assert main(["avenue", str(source), str(tmp_path / "out")]) == 0
    assert len(list((tmp_path / "out/avenue/Train/01").glob("*.tif"))) == 4
    dataset = UCSDpedFrames(tmp_path / "out", "avenue", Split.TEST)
    assert _labels(dataset) == {"01": [0, 0, 1, 1]}
    (gt / "1_label.mat").unlink()
    with pytest.raises(DatasetError, match=r"1_label\.mat: missing ground truth of .*01\.avi"):
        convert_avenue(source, tmp_path / "again")


def test_shanghaitech_frame_labels_become_a_ucsd_m_file_the_loader_reads(tmp_path):
    source = tmp_path / "shanghaitech"
    _avi(source / "training" / "videos" / "01_001.avi", 4)
    frames = source / "testing" / "frames" / "01_0014"
    frames.mkdir(parents=True)
    for t in range(5):
        Image.fromarray(np.full((24, 32, 3), 30 * t, np.uint8)).save(frames / f"{t:03d}.jpg")
    (source / "testing" / "test_frame_mask").mkdir(parents=True)
    np.save(source / "testing" / "test_frame_mask" / "01_0014.npy", np.array([0, 0, 1, 1, 0]))
    target = convert_shanghaitech(source, tmp_path / "out", "01")
    assert (target / "Test" / "shanghaitech01.m").read_text() == ucsd_m_text(
        [np.array([0, 0, 1, 1, 0])]
    )
    dataset = UCSDpedFrames(tmp_path / "out", "shanghaitech01", Split.TEST)
    assert _labels(dataset) == {"01_0014": [0, 1, 1, 0]}
    np.save(source / "testing" / "test_frame_mask" / "01_0014.npy", np.array([0, 1]))
    with pytest.raises(DatasetError, match=r"01_0014\.npy: 2 frame labels for 5 frames"):
        convert_shanghaitech(source, tmp_path / "again", "01")


def test_an_undecodable_video_is_named(tmp_path):
    source = tmp_path / "Avenue Dataset"
    (source / "training_videos").mkdir(parents=True)
    (source / "training_videos" / "01.avi").write_bytes(b"not a video")
    _avi(source / "testing_videos" / "01.avi", 2)
    (source / "ground_truth_demo" / "testing_label_mask").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"01\.avi: (OpenCV cannot open|no frames)"):
        convert_avenue(source, tmp_path / "out")
