"""Properties of the offline AI-VAD defaults on held-out members of the scene family (small
frames, short videos): a fast mover and an oversized figure each lift their frames' score above
the 95th percentile of the same video's normal frames, and a video without an event rarely goes
above the training videos' maximum when the scene has 8 training videos of 80 frames (with 3 of
40 it often does: a strict xfail). The benchmark (benchmarks/vad_scene_family.py) measures the
frame AUROC on all 12 held-out seeds at full size; this test runs the first PROPERTY_SCENES."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from avlab.tasks.vad.family import (
    HELD_OUT_SEEDS,
    FittedScene,
    event_raises_score,
    fit_property_scenes,
    net_settings,
    no_event_frames_above_training_maximum,
    write_family_member,
)
from avlab.tasks.vad.metrics import VideoScores

# Fixed before any tuning (avlab.tasks.vad.family) and never to be changed.
HELD_OUT = tuple(range(100, 112))
PROPERTY_SCENES = 10
# A normal video's frames may pass the training maximum this often (noise, new crowding).
FALSE_ALARM_RATE = 0.05


def fit_held_out_scenes(folder: Path, n_train: int, n_frames: int) -> list[FittedScene]:
    """The first PROPERTY_SCENES held-out members at the property size, each fitted on `n_train`
    training videos of `n_frames` frames (torch seed 0) and scored on its 3 test videos."""
    assert HELD_OUT_SEEDS == HELD_OUT, "the held-out seeds are fixed; do not tune on new ones"
    settings = net_settings(Path(__file__).resolve().parents[1] / "conf/model/aivad.yaml")
    return fit_property_scenes(folder, HELD_OUT[:PROPERTY_SCENES], n_train, n_frames, settings)


@pytest.fixture(scope="module")
def fitted_scenes(tmp_path_factory):
    """A few seconds of normal video per scene: 3 training videos of 40 frames."""
    return fit_held_out_scenes(tmp_path_factory.mktemp("family"), n_train=3, n_frames=40)


@pytest.fixture(scope="module")
def fitted_scenes_more_video(tmp_path_factory):
    """About half a minute of normal video per scene: 8 training videos of 80 frames."""
    return fit_held_out_scenes(tmp_path_factory.mktemp("family_8x80"), n_train=8, n_frames=80)


# Measured (10 scenes, torch seeds 0 / 1 / 2; CPU: AMD EPYC, 2 cores; BENCHMARKS.md, "A size
# density on the dwell regions"; `uv run python -m benchmarks.vad_family_properties`):
# - 3 training videos of 40 frames: the fast mover lifts its frames in 10 of 10 scenes, the
#   oversized figure in 9 of 10 (scene 104's is 18 px of a figure cut off by the frame's top
#   edge), and 123-134 of 390 no-event frames pass the training maximum (32-34 %): those training
#   videos hold 3-10 walkers, too few to say what normal is. A strict xfail records it.
# - 8 training videos of 80 frames: 9-14 of 790 no-event frames pass it (1.1-1.8 %), and the
#   fast mover's video passes it in every scene. Stated for this amount of video after these
#   scenes had been seen at it (stop 27), so it was confirmed once on fresh family seeds
#   600-609 (before tracks restarted at merges): 8-12 of 790 (1.0-1.5 %) on the three seeds.
# Almost all of the excess at 3 x 40 is the velocity GMM's (5 full-covariance components overfit
# three videos); model.net.gmm_reg_covar=0.1 takes it to 81 of 390 (BENCHMARKS.md, "A
# covariance floor").


@pytest.mark.slow
@pytest.mark.parametrize(("name", "event"), [("Test001", "fast mover"), ("Test002", "oversized")])
def test_an_obvious_event_lifts_its_frames_above_the_normal_frames(fitted_scenes, name, event):
    hits = [event_raises_score(s.video(name)) for s in fitted_scenes]
    assert sum(hits) >= 0.9 * len(hits), f"{event}: seen in {sum(hits)} of {len(hits)} scenes"


@pytest.mark.slow
def test_a_video_without_events_rarely_passes_the_training_maximum(fitted_scenes_more_video):
    above, total = no_event_frames_above_training_maximum(fitted_scenes_more_video)
    assert above <= FALSE_ALARM_RATE * total, f"{above} of {total} normal frames above the max"
    # ...and the maximum is still a threshold an event passes (a flat score would pass the above).
    fast = [s.passes_training_maximum("Test001") for s in fitted_scenes_more_video]
    assert sum(fast) >= 0.9 * len(fast), f"the fast mover passes it in {sum(fast)} of {len(fast)}"


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True, reason="3 training videos of 40 frames: 123-134 of 390 frames above"
)
def test_with_a_few_seconds_of_training_video_the_maximum_is_no_threshold(fitted_scenes):
    above, total = no_event_frames_above_training_maximum(fitted_scenes)
    assert above <= FALSE_ALARM_RATE * total, f"{above} of {total} normal frames above the max"


def _scored(scores: list[float], labels: list[int]) -> VideoScores:
    n = len(scores)
    return VideoScores(torch.arange(n), torch.tensor(scores), torch.tensor(labels))


def test_a_fitted_scene_counts_the_frames_above_its_training_maximum():
    scene = FittedScene(
        {
            "data/s1/Test/Test001": _scored([0.1, 0.9, 2.5], [0, 1, 1]),
            "data/s1/Test/Test003": _scored([0.2, 1.5, 1.2, 0.3], [0, 0, 0, 0]),
        },
        train_max=1.0,
    )
    assert scene.passes_training_maximum("Test001")
    assert scene.frames_above_training_maximum("Test003") == (2, 4)
    assert no_event_frames_above_training_maximum([scene, scene]) == (4, 8)
    with pytest.raises(KeyError, match="Test002"):
        scene.video("Test002")
    # A "no-event" video with a labelled frame is a broken fixture, not a count.
    scene.videos["data/s1/Test/Test003"].labels[1] = 1
    with pytest.raises(ValueError, match="labelled frames"):
        no_event_frames_above_training_maximum([scene])


def test_a_family_member_is_reused_when_current_and_written_again_when_stale(tmp_path):
    # (benchmark folders outlive generator changes: a member written by an older generator or
    # with other parameters must not be scored as if it were the current one)
    tiny = {"size": (24, 36), "n_train": 1, "n_test": 1, "n_frames": 3}
    root = write_family_member(tmp_path / "m", 101, **tiny)
    first = sorted(p.name for p in (root / "Train" / "Train001").iterdir())
    assert len(first) == 3
    marker = root / "Train" / "Train001" / first[0]
    marker.write_bytes(b"kept?")
    write_family_member(root, 101, **tiny)
    assert marker.read_bytes() == b"kept?"  # the same member: read, not written again
    write_family_member(root, 101, **(tiny | {"n_frames": 4}))
    assert len(list((root / "Train" / "Train001").iterdir())) == 4
