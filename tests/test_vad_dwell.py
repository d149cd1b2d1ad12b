"""The dwell stream (avlab.tasks.vad.dwell): background-model regions tracked over frames."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import binary_auroc

from avlab.tasks.vad.dwell import (
    DISPLACEMENTS,
    EDGE_PX,
    MERGES,
    DwellStream,
    _grow_px,
    _iou,
    _match,
    _side_moved,
    _unambiguous,
)
from avlab.tasks.vad.metrics import shifted_earlier

H, W = 60, 96
HEADING = {"n_components": 2, "reg_covar": 0.01, "speed_fraction": 0.5}
SIZE = {"n_components": 2, "reg_covar": 0.01}


@pytest.fixture(autouse=True)
def _seeded():
    """The GMMs start from k-means on a random draw: every test here starts from one seed, so a
    run alone and a run in the whole suite score alike (the bars hold for other seeds too)."""
    torch.manual_seed(0)


def _video(
    paths: list[np.ndarray], seed: int, n_frames: int, scales: tuple[float, ...] = ()
) -> torch.Tensor:
    """(T, 3, H, W) frames in [0, 1]: noisy grey ground, a dark 10 x 14 px blob per path (times
    `scales[i]` for path i, where given)."""
    rng = np.random.default_rng(seed)
    frames = []
    for t in range(n_frames):
        image = np.full((H, W), 150.0)
        for i, path in enumerate(paths):
            x, y = path[t]
            scale = scales[i] if i < len(scales) else 1.0
            if np.isfinite(x):
                axes = (round(5 * scale), round(7 * scale))
                cv2.ellipse(image, (int(round(x)), int(round(y))), axes, 0, 0, 360, 60.0, -1)
        image += rng.normal(0, 2.0, image.shape)
        frames.append(np.clip(image, 0, 255) / 255.0)
    grey = torch.tensor(np.stack(frames), dtype=torch.float32)
    return grey[:, None].expand(-1, 3, -1, -1).contiguous()


def _walker(n_frames: int, y: float, speed: float, start: float) -> np.ndarray:
    x = start + speed * np.arange(n_frames)
    path = np.stack([x, np.full(n_frames, y)], 1)
    path[(x < 8) | (x > W - 8)] = np.nan
    return path


def _stayer(n_frames: int, y: float, x: float, seed: int) -> np.ndarray:
    wander = np.random.default_rng(seed).normal(0, 0.3, (n_frames, 2)).clip(-0.6, 0.6)
    return np.array([x, y]) + wander


def _fitted(
    window: int = 8,
    heading: dict | None = None,
    speeds: tuple[float, ...] = (1.0, -1.2, 0.8),
    first_row: int = 20,
    row_step: int = 12,
    n_frames: int = 40,
    **settings,
) -> DwellStream:
    """A stream fitted on one walker per training video, at `speeds` (px per frame; negative:
    leftwards), on rows from `first_row`, `row_step` apart (`settings`: more DwellStream
    arguments)."""
    stream = DwellStream(
        window=window, min_area=40, dilation=2, align=False, heading=heading, **settings
    )
    for v, speed in enumerate(speeds):
        start = 10.0 if speed > 0 else W - 10.0
        row = first_row + row_step * v
        video = _video([_walker(n_frames, row, speed, start)], seed=v, n_frames=n_frames)
        stream.observe(video, [f"train{v}"] * n_frames)
    stream.fit()
    return stream


@pytest.mark.parametrize("heading", [None, HEADING], ids=["speed", "speed+heading"])
def test_a_figure_that_stays_scores_above_figures_that_walk(heading):
    stream = _fitted(heading=heading)
    assert stream.is_fitted
    walking = _video([_walker(40, 30, 1.1, 10.0)], seed=10, n_frames=40)
    staying = _video([_walker(40, 20, -1.0, W - 10.0), _stayer(40, 42, 50.0, 1)], 11, 40)
    normal = stream.score(walking, ["walk"] * 40)
    stream.reset()
    event = stream.score(staying, ["stay"] * 40)
    # Tracks younger than `window` frames are not scored; after that the staying figure's
    # near-zero displacement is far outside the training walkers'.
    assert float(event[:8].max()) == 0.0
    assert float(event[10:].min()) > float(normal.max()) + 1.0


def test_a_new_video_starts_new_tracks():
    stream = _fitted()
    video = _video([_stayer(20, 30, 40.0, 2)], seed=12, n_frames=20)
    first = stream.score(video[:12], ["a"] * 12)
    switched = stream.score(video[12:], ["b"] * 8)  # another video: its tracks start over
    assert float(first[-1]) > 0.0 and float(switched.max()) == 0.0


def test_scoring_leaves_the_background_as_fitted():
    # OpenCV's phase correlation applies its window to the inputs in place: the background
    # must reach it as a copy, or every aligned frame darkens it further.
    stream = DwellStream(window=8, min_area=40, dilation=2, align=True)
    for v in range(3):
        video = _video([_walker(40, 20 + 12 * v, 1.0, 10.0)], seed=v, n_frames=40)
        stream.observe(video, [f"train{v}"] * len(video))
    stream.fit()
    background = stream.background.clone()
    stream.score(_video([_walker(30, 30, 1.0, 10.0)], seed=13, n_frames=30), ["t"] * 30)
    assert torch.equal(stream.background, background)


def test_a_fitted_stream_round_trips_through_its_state_dict():
    stream = _fitted()
    video = _video([_stayer(30, 30, 40.0, 3)], seed=14, n_frames=30)
    expected = stream.score(video, ["v"] * 30)
    loaded = DwellStream(window=8, min_area=40, dilation=2, align=False)
    assert not loaded.is_fitted
    loaded.load_state_dict(stream.state_dict())  # buffers of another shape are resized
    assert loaded.is_fitted
    assert torch.allclose(loaded.score(video, ["v"] * 30), expected)


def test_no_track_long_enough_in_training_turns_the_stream_off(caplog):
    stream = DwellStream(window=30, min_area=40, dilation=2, align=False)
    video = _video([_walker(12, 30, 1.0, 10.0)], seed=0, n_frames=12)
    stream.observe(video, ["short"] * 12)
    with caplog.at_level(logging.WARNING):
        stream.fit()
    assert not stream.is_fitted and "dwell stream off" in caplog.text


def test_a_centred_score_covers_the_lingering_frames_not_the_half_window_after_them():
    # Walks in at 1 px/frame, lingers 24 frames, walks on: the score of frames t-8..t is about
    # the window's middle, so reported at t it rises half a window late and stays up half a
    # window after the figure has left; reported `lag` frames earlier it marks the stay itself.
    stream = _fitted(window=8)
    n, stop, go = 70, 20, 44
    x = np.concatenate(
        [10.0 + np.arange(stop), np.full(go - stop, 10.0 + stop), 30.0 + np.arange(n - go)]
    )
    path = (
        np.stack([x, np.full(n, 30.0)], 1)
        + np.r_[np.zeros((stop, 2)), _stayer(go - stop, 0, 0, 4), np.zeros((n - go, 2))]
    )
    path[x > W - 8] = np.nan
    causal = stream.score(_video([path], seed=15, n_frames=n), ["v"] * n)
    assert DwellStream(window=8, centred=True).lag == 4 and stream.lag == 0
    centred = shifted_earlier(causal, 4)
    lingering = torch.zeros(n, dtype=torch.long)
    lingering[stop:go] = 1
    before, after = binary_auroc(causal, lingering), binary_auroc(centred, lingering)
    assert float(after) > 0.95 and float(after) > float(before) + 0.05, (before, after)


def _crosser(n_frames: int, x: float, speed: float) -> np.ndarray:
    """A figure walking down the frame: a way none of the training walkers took."""
    y = 8.0 + speed * np.arange(n_frames)
    path = np.stack([np.full(n_frames, x), y], 1)
    path[y > H - 8] = np.nan
    return path


def test_the_heading_sees_a_figure_crossing_the_way_nobody_walks():
    # Training walkers go left and right at 0.8-1.2 px/frame; this one walks down at 1 px/frame.
    # Its speed is a walker's, so the speed density alone finds nothing; its heading is new.
    walking = _video([_walker(40, 30, 1.1, 10.0)], seed=20, n_frames=40)
    crossing = _video([_crosser(40, 60.0, 1.0)], seed=21, n_frames=40)
    found = {}
    for name, heading in (("speed", None), ("heading", HEADING)):
        stream = _fitted(heading=heading)
        normal = stream.score(walking, ["walk"] * 40)
        stream.reset()
        event = stream.score(crossing, ["cross"] * 40)
        found[name] = float(event[10:].max()) - float(normal.max())
    assert found["speed"] < 1.0 and found["heading"] > 10.0, found


def _round_trip_and_merge(stream: DwellStream, video: torch.Tensor, part: str, **settings):
    """A fitted `stream` loaded into a new one (`settings`: its optional parts) scores `video`
    alike; one more training video merges into its `part` density. Returns the loaded stream and
    the new training video."""
    expected = stream.score(video, ["v"] * len(video))
    loaded = DwellStream(window=8, min_area=40, dilation=2, align=False, **settings)
    loaded.load_state_dict(stream.state_dict())
    assert torch.allclose(loaded.score(video, ["v"] * len(video)), expected)
    rows = len(getattr(loaded, part).memory_bank)
    more = _video([_walker(40, 40, -1.0, W - 10.0)], seed=23, n_frames=40)
    loaded.observe(more, ["train3"] * 40)
    loaded.fit()
    assert getattr(loaded, part).is_fitted and len(getattr(loaded, part).memory_bank) > rows
    return loaded, more


def test_the_heading_round_trips_and_a_second_fit_merges_into_it():
    stream = _fitted(heading=HEADING)
    assert stream.scores_heading and float(stream.min_heading_speed) > 0.3
    video = _video([_crosser(30, 40.0, 1.0)], seed=22, n_frames=30)
    loaded, more = _round_trip_and_merge(stream, video, "heading", heading=HEADING)
    # A merge whose new video is too short for any track adds nothing and breaks nothing.
    rows = len(loaded.heading.memory_bank)
    loaded.observe(more[:5], ["train4"] * 5)
    loaded.fit()
    assert loaded.scores_heading and len(loaded.heading.memory_bank) == rows


def test_unknown_heading_settings_are_a_clear_error():
    with pytest.raises(ValueError, match="unknown keys \\['speed'\\]"):
        DwellStream(heading={"speed": 0.5})
    with pytest.raises(ValueError, match="speed_fraction=2"):
        DwellStream(heading={"speed_fraction": 2})


def test_a_figure_twice_the_usual_size_is_seen_from_its_first_frame_with_the_size_density():
    # Training walkers are all 10 x 14 px; this one is 20 x 28 px and walks like them. Speed
    # and heading find nothing; its height is beyond every training region's, on every frame,
    # before its track is old enough for a speed (issue 13: the cart).
    walking = _video([_walker(40, 30, 1.1, 10.0)], seed=30, n_frames=40)
    large = _video([_walker(40, 30, 1.1, 10.0)], seed=31, n_frames=40, scales=(2.0,))
    found = {}
    for name, size in (("speed+heading", None), ("size", SIZE)):
        stream = _fitted(heading=HEADING, size=size)
        normal = stream.score(walking, ["walk"] * 40)
        stream.reset()
        event = stream.score(large, ["large"] * 40)
        found[name] = (float(event[:8].min()), float(event[10:].max()) - float(normal.max()))
    assert found["speed+heading"][1] < 1.0, found
    assert found["size"][0] > 1.0 and found["size"][1] > 10.0, found


def test_a_centred_size_score_describes_the_frame_it_is_reported_at():
    # A centred stream reports each score `lag` frames early (the speed window's middle). The
    # size score must be of the box at that frame, or a large figure is "seen" `lag` frames
    # before it enters (issue 13: a cart's video scored high before its first labelled frame).
    stream = _fitted(size=SIZE, centred=True)
    path = _walker(40, 30, 1.1, 10.0 - 1.1 * 20)
    path[:20] = np.nan
    video = _video([path], seed=35, n_frames=40, scales=(2.0,))
    reported = shifted_earlier(stream.score(video, ["v"] * 40), stream.lag)
    assert stream.lag == 4
    assert float(reported[:20].max()) == 0.0 and float(reported[20:30].min()) > 1.0, reported


def test_a_figure_smaller_than_usual_gets_no_size_score():
    # Partial views at the frame's edge and fragments are small: the size score is one-sided.
    stream = _fitted(size=SIZE)
    # the training walkers' median region: their 11 x 15 px ellipse, dilated 2 px each side
    assert stream.scores_size and 17 <= np.exp(float(stream.min_log_size)) <= 21
    small = _video([_walker(40, 30, 1.1, 10.0)], seed=32, n_frames=40, scales=(0.6,))
    assert float(stream.score(small, ["small"] * 40)[:8].max()) == 0.0


def test_the_size_density_round_trips_and_a_second_fit_merges_into_it():
    stream = _fitted(size=SIZE)
    video = _video([_walker(30, 30, 1.0, 10.0)], seed=33, n_frames=30, scales=(1.6,))
    assert float(stream.score(video, ["v"] * 30).max()) > 1.0
    stream.reset()
    _round_trip_and_merge(stream, video, "size", size=SIZE)
    # A stream without the size density has no size buffers: older checkpoints still load.
    assert "min_log_size" not in DwellStream().state_dict()


def test_unknown_size_settings_are_a_clear_error():
    with pytest.raises(ValueError, match="unknown keys \\['area'\\]"):
        DwellStream(size={"area": 2})


def test_two_walkers_passing_each_other_are_no_lingering_figure_when_merges_restart_tracks():
    # Two walkers on one row meet: for 14 frames they are one region whose centre stays where
    # they met. Continued as one walker's track, that region "stopped" (issue 13, member 705:
    # normal walkers passing each other scored like a loiterer). With merges="restart" the merged
    # region, and the two regions after it, start new tracks, too young to be scored while the
    # merge lasts less than the window (16 frames here; a longer one still reads as a stop).
    # (The bars hold for every GMM start: over torch seeds 0-11 "continue" exceeds the walkers'
    # maximum by 91 or 209, "restart" by -0.47 or 0.59.)
    passing = _video([_walker(80, 30, 1.2, 10.0), _walker(80, 30, -1.2, W - 10.0)], 24, 80)
    walking = _video([_walker(80, 30, 1.1, 10.0)], seed=25, n_frames=80)
    excess = {}
    for merges in MERGES:
        stream = _fitted(window=16)
        stream.merges = merges
        normal = stream.score(walking, ["walk"] * 80)
        stream.reset()
        excess[merges] = float(stream.score(passing, ["pass"] * 80).max()) - float(normal.max())
    assert excess["continue"] > 50.0 and excess["restart"] < 1.0, excess


def _unambiguous_pairs(boxes: np.ndarray, previous: np.ndarray) -> list[tuple[int, int]]:
    iou = _iou(boxes, previous)
    return _unambiguous(_match(iou, 0.1), iou >= 0.1, boxes, previous)


def test_a_merge_or_split_of_alike_regions_ends_their_tracks_a_small_part_does_not():
    previous = np.array([[0, 0, 9, 9], [12, 0, 21, 9], [40, 0, 49, 9]], dtype=np.float64)
    # one region covering the first two (a merge), and the third one moved by a pixel
    boxes = np.array([[1, 0, 21, 9], [41, 0, 50, 9]], dtype=np.float64)
    pairs = _match(_iou(boxes, previous), 0.1)
    assert len(pairs) == 2 and (1, 2) in pairs  # plain matching hands the merge one history
    assert _unambiguous_pairs(boxes, previous) == [(1, 2)]
    # a split into two alike halves ends the track...
    whole = np.array([[0, 0, 21, 9]], dtype=np.float64)
    halves = np.array([[0, 0, 9, 9], [12, 0, 21, 9]], dtype=np.float64)
    assert _unambiguous_pairs(halves, whole) == []
    # ...a figure shedding a small part (an arm, a shadow; under ALIKE x its area) keeps it
    body_and_arm = np.array([[0, 0, 17, 9], [18, 3, 21, 6]], dtype=np.float64)
    assert _unambiguous_pairs(body_and_arm, whole) == [(0, 0)]


def test_unknown_merge_handling_is_a_clear_error():
    with pytest.raises(ValueError, match="merges='split'"):
        DwellStream(merges="split")


def test_a_figure_that_stays_is_seen_through_a_walker_merged_with_it_when_sides_are_measured():
    # A slow walker brushes past a figure that stays: one region from the first frame on. Its
    # centre drifts at half the walker's speed, a normal slow walker's in this scene (issue 13,
    # member 809); the side the staying figure holds does not move.
    walking = _video([_walker(60, 30, 0.5, 10.0)], seed=10, n_frames=60)
    brushed = _video([_walker(60, 22, 0.5, 36.0), _stayer(60, 34, 50.0, 1)], seed=11, n_frames=60)
    excess = {}
    for displacement in DISPLACEMENTS:
        stream = _fitted(
            12,
            speeds=(0.25, -0.3, 0.5, -0.55),
            first_row=18,
            row_step=10,
            n_frames=60,
            displacement=displacement,
        )
        normal = stream.score(walking, ["walk"] * 60)
        stream.reset()
        # (frames 12-47: the walker and the staying figure are one region)
        event = stream.score(brushed, ["brush"] * 60)[12:48]
        excess[displacement] = float(event.median()) - float(normal.max())
    assert excess["centre"] < 0.5 and excess["sides"] > 5.0, excess
    # the box grows as the walker leaves the staying figure: "grown" measures its sides too
    assert excess["grown"] > 5.0, excess


def test_sides_on_the_frame_edge_are_left_out_and_a_lone_box_moves_as_its_centre():
    shape = (60, 96)
    first, moved = np.array([10.0, 20, 19, 33]), np.array([16.0, 18, 25, 31])
    assert _side_moved(first, moved, 0, shape) == 6.0 and _side_moved(first, moved, 1, shape) == -2
    # walking in from the left edge: the left side is pinned at x = 0, the right one moves
    entering = np.array([0.0, 20, 4, 33]), np.array([0.0, 20, 10, 33])
    assert _side_moved(*entering, 0, shape) == 6.0
    # a walker joins a staying figure from the right: the left side stays, so the region stays
    joined = np.array([30.0, 20, 39, 33]), np.array([30.0, 20, 47, 33])
    assert _side_moved(*joined, 0, shape) == 0.0
    # as wide as the frame: the centre's displacement
    wide = np.array([0.0, 20, 95, 33]), np.array([0.0, 22, 95, 35])
    assert _side_moved(*wide, 0, shape) == 0.0 and _side_moved(*wide, 1, shape) == 2.0


def _ends(first: list[float], last: list[float]) -> np.ndarray:
    return np.array([[first, last]], dtype=np.float64)


def test_grown_measures_sides_only_along_an_axis_whose_extent_changed_past_the_jitter():
    stream = DwellStream(window=12, displacement="grown")
    stream.grow_px.fill_(3.0)
    shape = (60, 96)
    # a lone figure whose box jitters by a pixel: its centre (the least moved side says 5, not 6)
    lone = stream._displacements(_ends([10, 20, 19, 33], [15, 20, 25, 33]), shape) * 12
    assert lone.tolist() == [[5.5, 0.0]]
    # a walker leaves the figure that stays, to the right: 8 px wider, the left side stayed
    left = stream._displacements(_ends([30, 20, 39, 33], [30, 21, 47, 33]), shape) * 12
    assert left.tolist() == [[0.0, 0.5]]


def test_the_grow_threshold_is_three_robust_sigmas_of_the_training_boxes_extent_change():
    still = np.zeros((40, 2, 4))
    still[:, :, 2:] = 20.0  # boxes that keep their size: the floor
    assert float(_grow_px(still)) == EDGE_PX
    assert float(_grow_px(np.zeros((0, 2, 4)))) == EDGE_PX
    jittery = still.copy()
    jittery[:, 1, 2] += np.resize([3.0, -3.0, 4.0, -2.0], 40)  # widths change by 2-4 px
    assert float(_grow_px(jittery)) == pytest.approx(3 * 1.4826 * 1.0)  # median over both axes
    jittery[:, 1, 3] += 3.0  # and heights by 3
    assert float(_grow_px(jittery)) == pytest.approx(3 * 1.4826 * 3.0)


def test_a_grown_stream_estimates_its_threshold_when_fitted_and_keeps_it_in_its_state():
    stream = _fitted(12, speeds=(0.9, -1.0, 1.1), first_row=18, n_frames=60, displacement="grown")
    assert float(stream.grow_px) >= EDGE_PX  # (0 until fitted)
    copy = DwellStream(window=12, min_area=40, dilation=2, align=False, displacement="grown")
    copy.load_state_dict(stream.state_dict())
    assert float(copy.grow_px) == float(stream.grow_px)
    assert "grow_px" not in DwellStream(window=12).state_dict()  # (the centre's: none)


def test_unknown_displacement_is_a_clear_error():
    with pytest.raises(ValueError, match="displacement='middle'"):
        DwellStream(displacement="middle")


def test_a_speed_floor_eases_a_walker_a_little_faster_than_all_in_training_not_one_that_stays():
    # Training walkers at 0.9-1.1 px/frame: a walker at 1.3 is a little out of their range, a
    # figure that stays far out. The floor on the speed GMM's variance (log units squared)
    # widens what counts as a normal speed without losing the one that stays.
    def scores(reg_covar: float) -> tuple[float, float]:
        stream = _fitted(
            12, speeds=(0.9, -1.0, 1.1), first_row=18, n_frames=60, reg_covar=reg_covar
        )
        faster = stream.score(_video([_walker(60, 30, 1.3, 10.0)], 11, 60), ["fast"] * 60)
        stream.reset()
        staying = stream.score(_video([_stayer(60, 30, 50.0, 1)], 12, 60), ["stay"] * 60)
        return float(faster.max()), float(staying[12:].min())

    (faster, _), (eased, still_staying) = scores(1e-4), scores(0.01)
    assert eased < 0.8 * faster, (faster, eased)
    assert still_staying > 20 * eased, (still_staying, eased)


@pytest.mark.parametrize("floor", [-0.1, float("nan")])
def test_a_speed_floor_that_is_not_a_finite_non_negative_number_is_refused(floor):
    with pytest.raises(ValueError, match="dwell.reg_covar"):
        DwellStream(reg_covar=floor)
