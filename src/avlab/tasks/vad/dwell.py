"""The dwell stream: figures followed over time, for the ones that stay (issue 13: loitering).

A two-frame clip sees a lingering figure only as slow motion or none: the frame difference of a
figure stepping in place is weak or empty, and its speed is a slow walker's. This stream follows
figures over frames instead:

    background  the per-pixel median of the training frames (grey, blurred): the empty scene,
                since figures pass and are outvoted
    regions     |frame - background| > binary_threshold, dilated, connected components of at
                least min_area pixels (after moving the frame back by the camera's shake, found
                by phase correlation against the background)
    tracks      each region continues the previous frame's region of the same video it overlaps
                most (IoU >= min_iou, one to one, largest overlap first). With
                `merges="restart"` a region that two alike-sized previous regions overlap (two
                figures merged), or two alike-sized regions that overlap one previous region (a
                split), start new tracks: continued, the merged blob of two walkers passing each
                other keeps one walker's history while its centre stays where they met, which
                reads as a figure that stopped (issue 13)
    feature     the net displacement of a track's box over its last `window` frames, per frame:
                a walker's speed, near 0 for a figure that lingers (its wandering cancels out);
                younger tracks are not scored. `displacement="centre"` measures the box centre;
                `"sides"` measures, per axis, the box side that moved least (sides on the frame's
                edge left out): the same for a lone figure, but a figure that stays while a
                walker brushes past it, the two one region, keeps its side of the box still while
                the centre drifts at half the walker's speed (issue 13); `"grown"` measures the
                sides only along an axis on which the box grew or shrank beyond its jitter
                (estimated from the training tracks, `grow_px`), the centre elsewhere
    density     a GMM on log(speed + 0.05) of the training tracks, scored like the velocity
                stream (negative log-likelihood, min-max normalised over the training features);
                `reg_covar` floors its variances (log units squared: 0.01 is a spread of about
                10 % of a speed, so walkers who all walk alike in training do not make one a
                little faster, or a speed a pixel off over the window, look anomalous)
    heading     (optional, `heading={...}`) a second GMM on the direction (unit vector) of that
                displacement, for tracks moving at least `speed_fraction` x the training tracks'
                median speed (estimated per scene; slower tracks, e.g. a lingering figure, have no
                direction worth the name and get no heading score). A track's score is then
                (1 + s_speed)(1 + s_heading) - 1, so after the model's log1p compression the two
                add. It sees a figure crossing the way nobody walks in training, which a two-frame
                flow histogram mixes up with a flat figure's edge flow (issue 13: wrong way)
    size        (optional, `size={...}`) a GMM on the log linear size, sqrt(width x height), of
                every region of every training frame. A region larger than the training median
                gets a size score (smaller ones, partial views at the frame's edge and fragments,
                get none), from its first frames, before its track is old enough for a speed; a
                region's score is then (1 + s_track)(1 + s_size) - 1. Nothing else in the model
                reads a region's size: the appearance crops are resized and the flow histogram is
                per pixel (issue 13: an object twice the normal size walking like everyone else).
                With `centred` the size is of the track's box at the frame the score is reported
                at, `lag` frames back
    centred     the score of frames t-window..t describes the window's middle: with
                `centred=true` it is reported `window // 2` frames earlier (`lag`; the frame
                scores are aligned per video when read, `avlab.tasks.vad.metrics.aligned`), so it
                rises when a figure stops, not half a window later, and falls when it walks on

Frames must reach it in order, video by video (the datamodules' loaders are not shuffled); a new
video name resets the tracks. With `frames_between_clips` > 1 a "frame" here is a clip step. Training frames are kept (grey, at most `max_side` pixels a side,
at most `max_frames`) until `fit()`, because the background needs all of them first. Frames
larger than `max_side` are shrunk first, so `min_area`, `dilation` and the track speed are in
the shrunk frame's pixels.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np
import torch
from anomalib.models.components.base import DynamicBufferMixin
from torchvision.ops import box_iou

from avlab.tasks.vad.density import NotFittedError, VelocityGMM
from avlab.tasks.vad.extractors import _disk, _to_gray_u8

log = logging.getLogger(__name__)


class DwellStream(DynamicBufferMixin):
    """Background-model regions tracked over frames, scored by how far each track got."""

    def __init__(
        self,
        window: int = 12,
        binary_threshold: float = 12.0,
        dilation: int = 4,
        min_area: int = 100,
        min_iou: float = 0.1,
        n_components: int = 2,
        align: bool = True,
        max_side: int = 240,
        max_frames: int = 5000,
        kernel_size: int = 3,
        centred: bool = False,
        heading: dict | None = None,
        merges: str = "continue",
        displacement: str = "centre",
        reg_covar: float = 1e-4,
        size: dict | None = None,
    ) -> None:
        super().__init__()
        if window < 1:
            raise ValueError(f"model.net.dwell.window={window}: at least 1 frame")
        self.window = window
        # Clip steps by which the score is reported earlier (0: at the window's last frame).
        self.lag = window // 2 if centred else 0
        self.binary_threshold = binary_threshold
        self.dilation = dilation
        self.min_area = min_area
        self.min_iou = min_iou
        if merges not in MERGES:
            raise ValueError(f"model.net.dwell.merges={merges!r}: one of {MERGES}")
        self.merges = merges
        if displacement not in DISPLACEMENTS:
            raise ValueError(
                f"model.net.dwell.displacement={displacement!r}: one of {DISPLACEMENTS}"
            )
        self.displacement = displacement
        if displacement == "grown":  # (only then the buffer: older checkpoints have none)
            # An extent change (px over the window) beyond a box's jitter; set by fit.
            self.register_buffer("grow_px", torch.tensor(0.0))
            self.grow_px: torch.Tensor
        self.align = align
        self.max_side = max_side
        self.max_frames = max_frames
        self.kernel_size = kernel_size
        self.density = _unfitted_gmm(n_components, reg_covar, "model.net.dwell.reg_covar")
        self.heading: VelocityGMM | None = None
        if heading:  # (only then the buffer: older checkpoints have none)
            self.heading, self.speed_fraction = _heading_density(heading)
            # Tracks slower than this (px per frame, set by fit) get no heading score.
            self.register_buffer("min_heading_speed", torch.tensor(0.0))
            self.min_heading_speed: torch.Tensor
        self.size: VelocityGMM | None = None
        if size:  # (only then the buffer: older checkpoints have none)
            self.size = _size_density(size)
            # The training regions' median log linear size: smaller regions get no size score.
            self.register_buffer("min_log_size", torch.tensor(0.0))
            self.min_log_size: torch.Tensor
        # The empty scene (H, W) grey levels; (0,) until fitted. A buffer, so it is checkpointed.
        self.register_buffer("background", torch.empty(0))
        self.background: torch.Tensor
        self._training_frames: dict[str, list[np.ndarray]] = {}
        self._stored = 0
        self._video: str | None = None
        self._tracks: tuple[np.ndarray, list[list[np.ndarray]]] | None = None

    @property
    def is_fitted(self) -> bool:
        """Whether a background and a fitted density are there to score with."""
        return self.background.numel() > 0 and self.density.is_fitted

    @property
    def scores_heading(self) -> bool:
        """Whether the heading part is on and fitted."""
        return self.heading is not None and self.heading.is_fitted

    @property
    def scores_size(self) -> bool:
        """Whether the size part is on and fitted."""
        return self.size is not None and self.size.is_fitted

    def observe(self, frames: torch.Tensor, videos: list[str]) -> None:
        """Keep training frames (N, 3, H, W), in order, per video, for `fit()`."""
        for image, video in zip(self._grey(frames), videos, strict=True):
            if self._stored >= self.max_frames:
                if self._stored == self.max_frames:
                    log.warning(
                        "dwell stream: %d training frames kept, later ones are not used",
                        self.max_frames,
                    )
                    self._stored += 1
                return
            self._training_frames.setdefault(video, []).append(image)
            self._stored += 1

    def fit(self) -> None:
        """Background from the kept training frames, then the density of their tracks' feature
        (merged into a fitted one, e.g. from `model.init_from`; the background is the new one)."""
        if not self._training_frames:
            return  # nothing new: a loaded model stays as it was
        frames = [f for video in self._training_frames.values() for f in video]
        step = max(1, len(frames) // 200)
        background = np.median(np.stack(frames[::step]), axis=0).astype(np.float32)
        self.background = torch.from_numpy(background).to(self.background.device)
        ends = []  # per training frame, the (M, 2, 4) first and last boxes of its tracks
        sizes = []  # per training frame, the (K,) linear sizes of all its regions
        for video, images in self._training_frames.items():
            self.reset()
            for image in images:
                ends.append(self._track_ends(image, video))
                sizes.append(_sizes(self._tracks[0]))
        self._training_frames, self._stored = {}, 0
        self.reset()
        if self.size is not None:
            self._fit_size(np.concatenate(sizes))
        if self.displacement == "grown":
            self.grow_px = _grow_px(np.concatenate(ends)).to(self.grow_px)
        displacements = []
        for pairs in ends:
            values = self._displacements(pairs, frames[0].shape)
            if len(values):
                self.density.update(self._encode(values).to(self.background.device))
                displacements.append(values)
        try:
            self.density.fit()
        except NotFittedError as error:
            self.background = torch.empty(0, device=self.background.device)
            log.warning(
                "dwell stream off: no training track lasted %d frames (%s)", self.window, error
            )
            return
        if self.heading is not None:  # (a merge whose new videos left no track: nothing new)
            self._fit_heading(np.concatenate(displacements) if displacements else np.zeros((0, 2)))

    def _fit_size(self, sizes: np.ndarray) -> None:
        """The size GMM on the log linear sizes of every training region (merged into a fitted one);
        the bar below which a region gets no size score is the median of them all, old and new."""
        self.size.update(
            torch.from_numpy(np.log(sizes)).float()[:, None].to(self.background.device)
        )
        try:
            self.size.fit()
        except NotFittedError as error:
            log.warning("dwell stream: no size score (%s)", error)
            return
        self.min_log_size = torch.quantile(self.size.memory_bank[:, 0], 0.5).to(self.min_log_size)

    def _fit_heading(self, displacements: np.ndarray) -> None:
        """The heading GMM on the directions of the training tracks that move (merged into a
        fitted one); the speed bar comes from every training track's, old and new."""
        speeds = torch.exp(self.density.memory_bank[:, 0]) - SPEED_OFFSET  # `_encode` undone
        median = torch.quantile(speeds, 0.5)
        self.min_heading_speed = (self.speed_fraction * median).to(self.min_heading_speed)
        _, directions = _moving(displacements, float(self.min_heading_speed))
        self.heading.update(torch.from_numpy(directions).float().to(self.background.device))
        try:
            self.heading.fit()
        except NotFittedError as error:
            log.warning("dwell stream: no heading score (%s)", error)

    def reset(self) -> None:
        """Forget the tracks (the next frame starts a new video)."""
        self._video, self._tracks = None, None

    @torch.no_grad()
    def score(self, frames: torch.Tensor, videos: list[str]) -> torch.Tensor:
        """(N,) each frame's highest normalised region score; 0 where no track is old enough."""
        scores = torch.zeros(len(frames))
        for i, (image, video) in enumerate(zip(self._grey(frames), videos, strict=True)):
            values = self._features(image, video)
            track_scores = torch.zeros(0, device=self.background.device)
            if len(values):
                track_scores = self.density.predict(self._encode(values).to(self.background.device))
                if self.scores_heading:
                    heading = self._heading_scores(values)
                    track_scores = (1 + track_scores.clamp(min=0)) * (1 + heading) - 1
            if self.scores_size:
                track_scores = self._with_size(track_scores)
            if len(track_scores):
                scores[i] = float(track_scores.max())
        return scores

    def _with_size(self, track_scores: torch.Tensor) -> torch.Tensor:
        """(K,) every region's score in this frame: its size score, times (1 + its track's score)
        for the tracks old enough to have one (`track_scores`, in `_features`' order)."""
        _, histories = self._tracks
        # The box of the frame the score is reported at (`lag` frames back when centred); a
        # track not that old has none.
        at = [h[-1 - self.lag] if len(h) > self.lag else None for h in histories]
        size = self._size_scores(np.array([_size(b) if b is not None else 0.0 for b in at]))
        old = torch.tensor(
            [k for k, h in enumerate(histories) if len(h) > self.window], dtype=torch.long
        ).to(size.device)
        regions = size.clone()
        regions[old] = (1 + track_scores.clamp(min=0)) * (1 + size[old]) - 1
        return regions

    def _size_scores(self, sizes: np.ndarray) -> torch.Tensor:
        """(K,) normalised size scores of regions larger than the training regions' median, 0
        for the others (on the densities' device)."""
        device = self.background.device
        scores = torch.zeros(len(sizes), device=device)
        if len(sizes):
            logs = torch.from_numpy(np.log(sizes.clip(min=1))).float().to(device)
            large = logs > self.min_log_size
            if large.any():
                scores[large] = self.size.predict(logs[large, None]).clamp(min=0)
        return scores

    def _heading_scores(self, displacements: np.ndarray) -> torch.Tensor:
        """(M,) normalised heading scores of the tracks moving fast enough, 0 for the others
        (on the densities' device)."""
        moving, directions = _moving(displacements, float(self.min_heading_speed))
        device = self.background.device
        scores = torch.zeros(len(displacements), device=device)
        if moving.any():
            found = self.heading.predict(torch.from_numpy(directions).float().to(device))
            scores[torch.from_numpy(moving).to(device)] = found.clamp(min=0)
        return scores

    def _encode(self, displacements: np.ndarray) -> torch.Tensor:
        """(M, 1) the speed density's input: log of the track speed (+ SPEED_OFFSET px/frame)."""
        speeds = np.linalg.norm(displacements, axis=1)
        return torch.from_numpy(np.log(speeds + SPEED_OFFSET)).float()[:, None]

    def _grey(self, frames: torch.Tensor) -> list[np.ndarray]:
        """Blurred grey uint8 frames, at most `max_side` pixels a side."""
        images = []
        k = (self.kernel_size, self.kernel_size)
        for image in _to_gray_u8(frames):
            scale = self.max_side / max(image.shape)
            if scale < 1:
                size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
                image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            images.append(cv2.GaussianBlur(image, k, 0))
        return images

    def _regions(self, image: np.ndarray) -> np.ndarray:
        """(M, 4) xyxy boxes of the connected parts that differ from the background."""
        background = self.background.cpu().numpy()
        frame = image.astype(np.float32)
        if self.align:
            window = cv2.createHanningWindow(frame.shape[::-1], cv2.CV_32F)
            # (copies: OpenCV applies the window to its inputs in place)
            (dx, dy), _ = cv2.phaseCorrelate(background.copy(), frame.copy(), window)
            if abs(dx) <= 2 and abs(dy) <= 2:  # a shake, not a failed correlation
                shift = np.float32([[1, 0, -dx], [0, 1, -dy]])
                frame = cv2.warpAffine(
                    frame, shift, frame.shape[::-1], borderMode=cv2.BORDER_REPLICATE
                )
        moving = (np.abs(frame - background) > self.binary_threshold).astype(np.uint8)
        if self.dilation:
            moving = cv2.dilate(moving, _disk(self.dilation))
        _, _, stats, _ = cv2.connectedComponentsWithStats(moving, connectivity=8)
        stats = stats[1:]
        stats = stats[stats[:, 2] * stats[:, 3] >= self.min_area]
        x, y, w, h = (stats[:, i].astype(np.float64) for i in range(4))
        return np.stack([x, y, x + w - 1, y + h - 1], axis=1)

    def _features(self, image: np.ndarray, video: str) -> np.ndarray:
        """(M, 2) the mean velocity (dx, dy) of each track at least `window` frames old (px per
        frame over its last `window` frames), after `_track_ends` links this frame's regions."""
        return self._displacements(self._track_ends(image, video), image.shape)

    def _displacements(self, ends: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """(M, 2) px per frame from the tracks' (M, 2, 4) first and last boxes."""
        moved = [self._moved(first, last, shape) for first, last in ends]
        return np.array(moved, dtype=np.float64).reshape(-1, 2) / self.window

    def _track_ends(self, image: np.ndarray, video: str) -> np.ndarray:
        """Link this frame's regions to the video's tracks; (M, 2, 4) the xyxy boxes `window`
        frames ago and now of each track at least `window` frames old."""
        boxes = self._regions(image)
        histories = [[b] for b in boxes]
        if video == self._video and self._tracks is not None:
            previous, old = self._tracks
            iou = _iou(boxes, previous)
            pairs = _match(iou, self.min_iou)
            if self.merges == "restart":
                pairs = _unambiguous(pairs, iou >= self.min_iou, boxes, previous)
            for i, j in pairs:
                histories[i] = (old[j] + histories[i])[-(self.window + 1) :]
        self._video, self._tracks = video, (boxes, histories)
        ends = [(h[0], h[-1]) for h in histories if len(h) > self.window]
        return np.array(ends, dtype=np.float64).reshape(-1, 2, 4)

    def _moved(self, first: np.ndarray, last: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """(2,) how far a track's box got between two xyxy boxes `window` frames apart."""
        centre = (last[:2] + last[2:] - first[:2] - first[2:]) / 2
        if self.displacement == "centre":
            return centre
        sides = np.array([_side_moved(first, last, axis, shape) for axis in (0, 1)])
        if self.displacement == "sides":
            return sides
        grown = np.abs(_extents(last) - _extents(first)) > float(self.grow_px)
        return np.where(grown, sides, centre)


MERGES = ("continue", "restart")
# displacement="sides": per axis the box side (of the two, left / right or top / bottom) that
# moved least, signed; sides on the frame's edge at either end are left out (a figure walking in
# has one side pinned there). A lone figure's sides move with it, so this is its centre's
# displacement; a figure that stays keeps its sides when a walker merges with it from one side.
# displacement="grown": the sides' reading only along an axis on which the box grew or shrank
# by more than its jitter (GROW_SIGMAS robust standard deviations of the training tracks'
# extent change, at least EDGE_PX), the centre's elsewhere: a lone figure keeps its extent, and
# the least moved of two jittering sides would make it a little slower than it walks.
DISPLACEMENTS = ("centre", "sides", "grown")
# A box side within this many pixels of the frame's edge is "on the edge".
EDGE_PX = 2
GROW_SIGMAS = 3.0
# merges="restart": a merge (split) is two previous (new) regions in one new (previous) one, the
# smaller at least this share of the larger's box area; a smaller part (an arm, a shadow, noise
# that comes and goes) joining or leaving a figure's region leaves its track alone.
ALIKE = 0.5
HEADING_KEYS = {"n_components", "reg_covar", "speed_fraction"}
SIZE_KEYS = {"n_components", "reg_covar"}
# Added to a track's speed (px per frame) before the log, so a figure standing still is finite.
SPEED_OFFSET = 0.05


def _unfitted_gmm(n_components: int, reg_covar: float, setting: str) -> VelocityGMM:
    """A GMM whose normalisation is finite until fitted (anomalib starts it at (inf, -inf)), so a
    checkpoint of a model whose dwell stream is off passes the finite-weights check (`setting`:
    the config key of `reg_covar`, named by the error a bad floor raises)."""
    density = VelocityGMM(n_components=n_components, reg_covar=reg_covar, setting=setting)
    density.min.fill_(0.0)
    density.max.fill_(1.0)
    return density


def _check_keys(settings: dict, known: set[str], setting: str) -> None:
    """A clear error naming `setting` when `settings` has keys outside `known`."""
    unknown = set(settings) - known
    if unknown:
        raise ValueError(
            f"{setting}: unknown keys {sorted(unknown)}; expected some of {sorted(known)}"
        )


def _heading_density(settings: dict) -> tuple[VelocityGMM, float]:
    """The heading GMM and speed fraction from `model.net.dwell.heading` ({n_components,
    reg_covar, speed_fraction})."""
    _check_keys(settings, HEADING_KEYS, "model.net.dwell.heading")
    fraction = settings.get("speed_fraction", 0.5)
    if not 0 < fraction <= 1:
        raise ValueError(
            f"model.net.dwell.heading.speed_fraction={fraction}: a share of the median training "
            "speed, in (0, 1]"
        )
    density = _unfitted_gmm(
        int(settings.get("n_components", 2)),
        float(settings.get("reg_covar", 1e-2)),
        "model.net.dwell.heading.reg_covar",
    )
    return density, float(fraction)


def _size_density(settings: dict) -> VelocityGMM:
    """The size GMM from `model.net.dwell.size` ({n_components, reg_covar})."""
    _check_keys(settings, SIZE_KEYS, "model.net.dwell.size")
    return _unfitted_gmm(
        int(settings.get("n_components", 2)),
        float(settings.get("reg_covar", 1e-2)),
        "model.net.dwell.size.reg_covar",
    )


def _sizes(boxes: np.ndarray) -> np.ndarray:
    """(M,) linear sizes, sqrt(width x height) in pixels, of xyxy boxes (inclusive corners)."""
    return np.sqrt(_area(boxes))


def _size(box: np.ndarray) -> float:
    """The linear size of one xyxy box."""
    return float(_sizes(box[None])[0])


def _moving(displacements: np.ndarray, min_speed: float) -> tuple[np.ndarray, np.ndarray]:
    """(M,) which displacements are at least `min_speed` long (and not 0), and (K, 2) their unit
    vectors."""
    speeds = np.linalg.norm(displacements, axis=1)
    moving = speeds >= max(min_speed, 1e-6)
    return moving, displacements[moving] / speeds[moving, None]


def _extents(box: np.ndarray) -> np.ndarray:
    """(..., 2) widths and heights of (..., 4) xyxy boxes."""
    return box[..., 2:] - box[..., :2]


def _grow_px(ends: np.ndarray) -> torch.Tensor:
    """The extent change (px over the window) beyond a box's jitter, from the training tracks'
    (M, 2, 4) first and last boxes: GROW_SIGMAS x the median absolute change (both axes) as a
    normal standard deviation (x 1.4826), at least EDGE_PX."""
    if not len(ends):
        return torch.tensor(float(EDGE_PX))
    change = np.abs(_extents(ends[:, 1]) - _extents(ends[:, 0]))
    return torch.tensor(max(float(EDGE_PX), GROW_SIGMAS * 1.4826 * float(np.median(change))))


def _side_moved(first: np.ndarray, last: np.ndarray, axis: int, shape: tuple[int, ...]) -> float:
    """The signed displacement along `axis` (0: x, 1: y) of the box side that moved least,
    leaving out sides on the frame's edge (`shape`: (H, W)) at either end; the centre's when
    both are."""
    size = shape[1 - axis]
    low, high = axis, axis + 2
    moves = []
    if first[low] > EDGE_PX and last[low] > EDGE_PX:
        moves.append(last[low] - first[low])
    if first[high] < size - 1 - EDGE_PX and last[high] < size - 1 - EDGE_PX:
        moves.append(last[high] - first[high])
    if not moves:
        return float(last[low] + last[high] - first[low] - first[high]) / 2
    return float(min(moves, key=abs))


def _unambiguous(
    pairs: list[tuple[int, int]], links: np.ndarray, boxes: np.ndarray, previous: np.ndarray
) -> list[tuple[int, int]]:
    """The (new, previous) pairs that are no merge or split (`links`: (M, K) which new boxes
    overlap which previous ones): two figures of alike size (ALIKE) that merge into one region,
    or one region that splits into two, start new tracks instead of handing one figure's history
    to the other or to the blob of both."""
    if not pairs:
        return pairs
    merge = _two_alike(links, _area(previous))
    split = _two_alike(links.T, _area(boxes))
    return [(i, j) for i, j in pairs if not merge[i] and not split[j]]


def _area(boxes: np.ndarray) -> np.ndarray:
    """(M,) pixel areas of xyxy boxes (inclusive corners)."""
    return (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)


def _two_alike(links: np.ndarray, areas: np.ndarray) -> np.ndarray:
    """(M,) whether row m of `links` (M, K) links two or more boxes whose second largest has at
    least ALIKE x the largest's area (`areas`: (K,))."""
    out = np.zeros(len(links), dtype=bool)
    for m, row in enumerate(links):
        if row.sum() >= 2:
            linked = np.sort(areas[row])[::-1]
            out[m] = linked[1] >= ALIKE * linked[0]
    return out


def _iou(boxes: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """(M, K) IoU of each new box with each previous one."""
    if not len(boxes) or not len(previous):
        return np.zeros((len(boxes), len(previous)))
    # (a zero-area box, one pixel wide, gives 0/0: no overlap)
    return box_iou(torch.from_numpy(boxes), torch.from_numpy(previous)).nan_to_num(0.0).numpy()


def _match(iou: np.ndarray, min_iou: float) -> list[tuple[int, int]]:
    """One-to-one (new, previous) pairs by IoU (`iou`: (M, K)) >= min_iou, largest first."""
    pairs, used_new, used_old = [], set(), set()
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        i, j = np.unravel_index(flat, iou.shape)
        if iou[i, j] < min_iou:
            break
        if i not in used_new and j not in used_old:
            pairs.append((int(i), int(j)))
            used_new.add(i)
            used_old.add(j)
    return pairs
