"""Properties of the offline AI-VAD defaults on held-out members of the scene family (small
frames, short videos): a fast mover and an oversized figure each lift their frames' score above
the 95th percentile of the same video's normal frames, and a video without an event rarely goes
above the training videos' maximum. The benchmark (benchmarks/vad_scene_family.py) runs the
same checks on all 12 held-out seeds at full size; this test runs the first PROPERTY_SCENES."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from avlab.tasks.vad.family import (
    HELD_OUT_SEEDS,
    event_raises_score,
    fit_and_score,
    net_settings,
    write_family_member,
)
from avlab.tasks.vad.model import AiVadNet

# Fixed before any tuning (avlab.tasks.vad.family) and never to be changed.
HELD_OUT = tuple(range(100, 112))
PROPERTY_SCENES = 10
SMALL = (72, 108)
EVENTS = ("bike", "cart", "none")  # Test001 fast mover, Test002 oversized, Test003 no event
# A normal video's frames may pass the training maximum this often (noise, new crowding).
FALSE_ALARM_RATE = 0.05


@pytest.fixture(scope="module")
def fitted_scenes(tmp_path_factory):
    settings = net_settings(Path(__file__).resolve().parents[1] / "conf/model/aivad.yaml")
    scenes = []
    assert HELD_OUT_SEEDS == HELD_OUT, "the held-out seeds are fixed; do not tune on new ones"
    for seed in HELD_OUT[:PROPERTY_SCENES]:
        root = write_family_member(
            tmp_path_factory.mktemp("family") / f"s{seed}",
            seed,
            size=SMALL,
            n_train=3,
            n_test=3,
            n_frames=40,
            anomalies=EVENTS,
        )
        torch.manual_seed(0)
        scenes.append(fit_and_score(root, AiVadNet(**settings)))
    return scenes


# Measured (10 scenes; CPU: Intel Xeon, 2 cores, with the dwell heading, 2026-12-01): the fast
# mover lifts its frames in 10 of 10 scenes, the oversized figure in 9 of 10, and 140 of 390
# normal-video frames go above the training maximum (152 with the dwell score centred but no
# heading, 145 before centring, same CPU). Earlier (CPU: AMD EPYC): the fast mover in 10 of 10
# scenes (8 of 10 before the streams were summed compressed, `compress_scores`), the oversized
# figure in 10 of 10 (9 before the dwell stream); 142 of 390 normal-video frames go above the
# training maximum (135 before the dwell stream; 177 while the training frames' appearance
# scores were in-sample, i.e. 0: see `FittedScene.train_max`).
# Almost all of the excess is the velocity GMM's (5 full-covariance components overfit three
# training videos): model.net.gmm_reg_covar=0.1 takes it to 81 of 390 (21 %; 47 without the
# heading, 26 before centring), still over the bar, and is an option, not the default
# (BENCHMARKS.md, "A covariance floor").
# More normal video is what helps: 8 training videos of 80 frames take it to 1.6-2.5 % over three
# seeds, and 8 of 40 to 4.6-6.2 % (BENCHMARKS.md, "How much normal video the training maximum
# needs"); this fixture keeps its 3 videos of 40 frames.
# That last bar of issue 13 is not met: a strict xfail, so a fix that meets it turns it into a
# failure to be promoted to a plain test.


@pytest.mark.slow
@pytest.mark.parametrize(("video", "event"), [("Test001", "fast mover"), ("Test002", "oversized")])
def test_an_obvious_event_lifts_its_frames_above_the_normal_frames(fitted_scenes, video, event):
    hits = [
        event_raises_score(next(v for k, v in s.videos.items() if k.endswith(video)))
        for s in fitted_scenes
    ]
    assert sum(hits) >= 0.9 * len(hits), f"{event}: seen in {sum(hits)} of {len(hits)} scenes"


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="issue 13 bar not met: 140 of 390 normal frames above")
def test_a_video_without_events_rarely_passes_the_training_maximum(fitted_scenes):
    above = total = 0
    for scene in fitted_scenes:
        normal = next(v for k, v in scene.videos.items() if k.endswith("Test003"))
        assert not normal.labels.any()
        above += int((normal.scores > scene.train_max).sum())
        total += len(normal.scores)
    assert above <= FALSE_ALARM_RATE * total, f"{above} of {total} normal frames above the max"
