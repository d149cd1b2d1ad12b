"""Generated fixed-camera scenes, written in the UCSD Pedestrian frame-folder layout.

    root/Train/Train001/001.tif ...    RGB TIFF frames, normal traffic only
    root/Test/Test001/001.tif ...      normal traffic plus one anomalous event per video
    root/Test/Test001_gt/001.bmp ...   per-frame ground truth: 255 on anomalous pixels, 0 elsewhere
    root/.avlab_synth.json             the generator and its parameters

A scene is a textured static background (paving, lawn, benches, trees) with people-like
figures (legs and arms swinging, checked clothes, perspective scaling) walking along a
walkway in the scene's normal directions and speeds. Test videos add one event each, cycling
through `anomalies`:
    bike       a rider crossing at several times walking speed
    wrong_way  a pedestrian crossing in a direction nobody takes in training
    cart       a wide boxy vehicle at walking speed (unusual size and shape)
    loiter     a pedestrian who walks in, lingers in place waving, then walks off
    none       no event (a normal test video)
Only the anomalous object (during its anomalous frames) is marked in the masks. The same
parameters and seed give the same bytes.

A scene family: `family_scene(seed)` draws a scene's parameters at random (background flat,
gradient or textured; flat-coloured or textured blob-like figures, lighter or darker than
the ground; figure size 6-30 px; normal speeds 0.3-2 px/frame; sensor noise; camera jitter)
with anomalies a fast mover (3-4x the fastest normal speed), an oversized figure (2-2.5x the
largest normal size), a wrong-way walker and a loiterer. `Scene()` itself (the scene the
offline defaults were first tuned on) is the family's fixed member `FAMILY_TUNED`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from avlab.data_utils import staged_folder, write_synth_stamp

ANOMALIES = ("bike", "wrong_way", "cart", "loiter")


@dataclass(frozen=True)
class Scene:
    """What a camera sees: frame size, background look and the normal traffic."""

    height: int = 120
    width: int = 180
    background_seed: int = 0
    # Colours (RGB) of the ground outside the walkway and of the walkway paving.
    ground_rgb: tuple[int, int, int] = (96, 128, 72)
    paving_rgb: tuple[int, int, int] = (168, 160, 150)
    tile_px: int = 12
    # The walkway as a band of rows, in fractions of the frame height.
    walkway: tuple[float, float] = (0.45, 0.95)
    # Normal walking directions in degrees (0 = rightwards, 90 = downwards) and speed range.
    directions: tuple[float, ...] = (0.0, 180.0)
    # Per direction, the band of the walkway (fractions, 0 = its top) where its walkers keep.
    lanes: tuple[tuple[float, float], ...] = ((0.5, 1.0), (0.05, 0.5))
    direction_jitter_deg: float = 8.0
    speed_px: tuple[float, float] = (1.0, 2.0)
    # Expected new pedestrians per frame, and their height at the bottom of the frame.
    spawn_rate: float = 0.02
    person_px: tuple[float, float] = (30.0, 38.0)
    # Directions of the `wrong_way` event (none of them normal here).
    wrong_way_directions: tuple[float, ...] = (90.0, 270.0)
    noise_std: float = 2.0
    n_objects: int = 5
    # Scene-family settings; the defaults give the original scene byte for byte.
    # background: paving (walkway, lawn, benches, trees) | flat | gradient | textured
    background: str = "paving"
    background_rgb: tuple[int, int, int] = (128, 128, 128)
    # figure: person (limbs, checked clothes) | blob (an upright ellipse, flat or textured)
    figure: str = "person"
    figure_rgb: tuple[int, int, int] | None = None
    figure_textured: bool = False
    # Fast mover: this many times the fastest normal speed (None: 4-5.5x the mean speed).
    fast_factor: tuple[float, float] | None = None
    # Oversized figure (`cart` of a blob scene): this many times the largest normal size.
    oversize: tuple[float, float] = (2.0, 2.5)
    # Standard deviation (px) of the whole frame's shift per frame: a shaking camera.
    jitter_px: float = 0.0


@dataclass
class Agent:
    """One moving figure: its feet position per frame (NaN when absent) and its look."""

    kind: str
    path: np.ndarray
    height: float
    colours: dict[str, tuple[int, int, int]]
    anomalous: np.ndarray
    phase: np.ndarray = field(default_factory=lambda: np.zeros(0))


def write_ucsd_scene(
    root: str | Path,
    scene: dict[str, Any] | None = None,
    n_train: int = 8,
    n_test: int = 8,
    n_frames: int = 100,
    anomalies: Sequence[str] = ANOMALIES,
    seed: int = 0,
) -> Path:
    """Write a UCSDped-layout dataset (Train/, Test/, Test/*_gt/) of one generated scene."""
    style = Scene(**{k: tuple(v) if isinstance(v, list) else v for k, v in (scene or {}).items()})
    unknown = set(anomalies) - set(ANOMALIES) - {"none"}
    if unknown:
        raise ValueError(f"unknown anomaly kinds {sorted(unknown)}; choose from {ANOMALIES}")
    root = Path(root)
    background = render_background(style)
    params = {
        "scene": scene or {},
        "n_train": n_train,
        "n_test": n_test,
        "n_frames": n_frames,
        "anomalies": list(anomalies),
        "seed": seed,
    }
    with staged_folder(root) as out:
        bar = tqdm(
            total=(n_train + n_test) * n_frames,
            desc=f"UCSDped scene -> {root}",
            unit="frame",
            mininterval=0.5,
        )
        for index in range(n_train):
            rng = np.random.default_rng([seed, 0, index])
            video = out / "Train" / f"Train{index + 1:03d}"
            _write_video(
                video,
                None,
                background,
                normal_traffic(style, n_frames, rng),
                style,
                rng,
                bar,
                n_frames,
            )
        for index in range(n_test):
            rng = np.random.default_rng([seed, 1, index])
            agents = normal_traffic(style, n_frames, rng)
            if anomalies and anomalies[index % len(anomalies)] != "none":
                agents.append(
                    anomalous_agent(anomalies[index % len(anomalies)], style, n_frames, rng)
                )
            video = out / "Test" / f"Test{index + 1:03d}"
            _write_video(
                video,
                video.with_name(video.name + "_gt"),
                background,
                agents,
                style,
                rng,
                bar,
                n_frames,
            )
        bar.close()
        write_synth_stamp(out, "avlab.tasks.vad.synth.write_ucsd_scene", params)
    return root


def _write_video(
    frames_dir: Path,
    masks_dir: Path | None,
    background: np.ndarray,
    agents: list[Agent],
    style: Scene,
    rng: np.random.Generator,
    bar: tqdm,
    n_frames: int,
) -> None:
    """Render every frame of one video (and its masks) to numbered .tif (.bmp) files."""
    frames_dir.mkdir(parents=True)
    if masks_dir is not None:
        masks_dir.mkdir(parents=True)
    for t in range(n_frames):
        frame, mask = render_frame(background, agents, t, style, rng)
        Image.fromarray(frame).save(
            frames_dir / f"{t + 1:03d}.tif", format="TIFF", compression="tiff_deflate"
        )
        if masks_dir is not None:
            Image.fromarray(mask).save(masks_dir / f"{t + 1:03d}.bmp", format="BMP")
        bar.update(1)


FAMILY_TUNED = -1  # family_scene(FAMILY_TUNED) is Scene(): the scene the defaults were tuned on


def family_scene(seed: int) -> dict[str, Any]:
    """Scene parameters drawn at random for member `seed` of the scene family (plain JSON types)."""
    if seed == FAMILY_TUNED:
        return {}
    rng = np.random.default_rng([seed, 1313])
    background = str(rng.choice(["flat", "gradient", "textured"]))
    ground = rng.uniform(60, 190)
    tint = rng.uniform(-20, 20, 3)
    light = bool(rng.random() < 0.5)
    if ground + 70 > 245:
        light = False
    elif ground - 70 < 10:
        light = True
    level = ground + (1 if light else -1) * rng.uniform(55, 90)
    figure_rgb = np.clip(level + rng.uniform(-25, 25, 3), 0, 255)
    size = rng.uniform(6, 30)
    slow = rng.uniform(0.3, 1.2)
    fast = rng.uniform(min(slow + 0.3, 2.0), 2.0)
    width = 180
    return {
        "background_seed": int(rng.integers(1000)),
        "background": background,
        "background_rgb": [int(c) for c in np.clip(ground + tint, 0, 255)],
        "figure": "blob",
        "figure_rgb": [int(c) for c in figure_rgb],
        "figure_textured": bool(rng.random() < 0.5),
        "walkway": [
            round(float(rng.uniform(0.15, 0.4)), 3),
            round(float(rng.uniform(0.8, 0.97)), 3),
        ],
        "person_px": [round(0.85 * size, 2), round(1.15 * size, 2)],
        "speed_px": [round(slow, 3), round(fast, 3)],
        # About 1.5-3 figures in view at a time, whatever their speed.
        "spawn_rate": round(float(rng.uniform(1.5, 3.0) * (slow + fast) / 2 / width), 5),
        "noise_std": round(float(rng.uniform(1.0, 5.0)), 2),
        "jitter_px": round(float(rng.choice([0.0, rng.uniform(0.2, 0.7)])), 3),
        "fast_factor": [3.0, 4.0],
        "n_objects": 0,
    }


def render_background(style: Scene) -> np.ndarray:
    """The scene's static RGB background: lawn, tiled walkway, benches and trees (`paving`),
    or a flat, gradient or textured ground."""
    rng = np.random.default_rng([style.background_seed, 99])
    h, w = style.height, style.width
    if style.background != "paving":
        return _plain_background(style, rng)
    low = cv2.resize(
        rng.normal(0, 1, (6, 9)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC
    )
    grain = rng.normal(0, 1, (h, w)).astype(np.float32)
    image = np.empty((h, w, 3), np.float32)
    image[:] = style.ground_rgb
    top, bottom = (int(f * h) for f in style.walkway)
    image[top:bottom] = style.paving_rgb
    tile = style.tile_px
    image[top:bottom:tile] *= 0.8
    image[top:bottom, ::tile] *= 0.85
    image += (10 * low + 6 * grain)[..., None]
    for _ in range(style.n_objects):
        _draw_static_object(image, rng, top, bottom)
    return np.clip(image, 0, 255).astype(np.uint8)


def _plain_background(style: Scene, rng: np.random.Generator) -> np.ndarray:
    """A flat, gradient (a ramp in a random direction) or textured (blotches and grain) ground."""
    h, w = style.height, style.width
    image = np.empty((h, w, 3), np.float32)
    image[:] = style.background_rgb
    if style.background == "gradient":
        angle = rng.uniform(0, 2 * np.pi)
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        ramp = (np.cos(angle) * xs / w + np.sin(angle) * ys / h) * rng.uniform(30, 60)
        image += (ramp - ramp.mean())[..., None]
    elif style.background == "textured":
        low = cv2.resize(
            rng.normal(0, 1, (h // 6 + 1, w // 6 + 1)).astype(np.float32),
            (w, h),
            interpolation=cv2.INTER_CUBIC,
        )
        image += (14 * low + 8 * rng.normal(0, 1, (h, w)).astype(np.float32))[..., None]
    elif style.background != "flat":
        raise ValueError(
            f"scene background {style.background!r}: choose paving, flat, gradient or textured"
        )
    return np.clip(image, 0, 255).astype(np.uint8)


def _draw_static_object(image: np.ndarray, rng: np.random.Generator, top: int, bottom: int) -> None:
    """A tree (above the walkway) or a bench (on its edge): static clutter the model must ignore."""
    h, w = image.shape[:2]
    x = int(rng.uniform(0.05, 0.95) * w)
    if rng.random() < 0.6 and top > 8:
        y, r = int(rng.uniform(0.15, 0.85) * top), int(rng.uniform(0.05, 0.09) * h)
        cv2.circle(
            image, (x, y), r, tuple(float(c) for c in rng.uniform(20, 70, 3) * (0.6, 1.2, 0.6)), -1
        )
        cv2.circle(image, (x - r // 3, y - r // 3), max(1, r // 2), (60.0, 110.0, 50.0), -1)
    else:
        y = top if rng.random() < 0.5 else bottom - 3
        bw = int(rng.uniform(0.08, 0.14) * w)
        colour = tuple(float(c) for c in rng.uniform(60, 120, 3))
        cv2.rectangle(image, (x, y - 4), (x + bw, y), colour, -1)


def _person_colours(rng: np.random.Generator) -> dict[str, tuple[int, int, int]]:
    """Random clothes, skin and hair colours of one pedestrian."""
    hue = rng.uniform(0, 180)
    shirt = cv2.cvtColor(
        np.uint8([[[hue, rng.uniform(60, 220), rng.uniform(70, 230)]]]), cv2.COLOR_HSV2RGB
    )[0, 0]
    skin = np.array([224, 172, 140]) * rng.uniform(0.45, 1.0)
    return {
        "shirt": tuple(int(c) for c in shirt),
        "trousers": tuple(int(c) for c in rng.uniform(20, 90, 3)),
        "skin": tuple(int(c) for c in skin),
        "hair": tuple(int(c) for c in rng.uniform(10, 70, 3)),
    }


def _scale(style: Scene, y: float) -> float:
    """Perspective: a figure lower in the frame is closer to the camera, so larger."""
    return 0.7 + 0.3 * y / style.height


def _linear_path(
    style: Scene,
    n_frames: int,
    t0: int,
    direction_deg: float,
    speed: float,
    rng: np.random.Generator,
    margin: float,
    lane: Sequence[float] = (0.0, 1.0),
) -> np.ndarray:
    """Feet positions of a figure entering at the frame edge at `t0` and walking straight on."""
    h, w = style.height, style.width
    angle = np.deg2rad(direction_deg)
    dx, dy = np.cos(angle), np.sin(angle)
    top, bottom = (f * h for f in style.walkway)
    if abs(dx) >= abs(dy):
        x0 = -margin if dx > 0 else w + margin
        y0 = top + rng.uniform(*lane) * (bottom - 2 - top)
    else:
        x0 = rng.uniform(0.15 * w, 0.85 * w)
        y0 = -0.1 * h if dy > 0 else h + margin
    t = np.arange(n_frames) - t0
    path = np.stack([x0 + dx * speed * t, y0 + dy * speed * t], axis=1)
    inside = (t >= 0) & _in_view(path, style, margin)
    path[~inside] = np.nan
    return path


def _in_view(path: np.ndarray, style: Scene, margin: float) -> np.ndarray:
    """Which feet positions put (part of) the figure inside the frame."""
    x, y = path[:, 0], path[:, 1]
    return (
        (x > -margin)
        & (x < style.width + margin)
        & (y > -0.1 * style.height)
        & (y < style.height + margin)
    )


def normal_traffic(style: Scene, n_frames: int, rng: np.random.Generator) -> list[Agent]:
    """Pedestrians arriving at random times, walking the scene's normal directions and speeds."""
    warmup = int(style.width / max(style.speed_px[0], 0.1))
    agents = []
    for t0 in range(-warmup, n_frames):
        for _ in range(rng.poisson(style.spawn_rate)):
            direction, lane = _normal_direction(style, rng)
            speed = rng.uniform(*style.speed_px)
            height = rng.uniform(*style.person_px)
            path = _linear_path(
                style, n_frames, t0, direction, speed, rng, margin=height, lane=lane
            )
            if np.isfinite(path[:, 0]).any():
                agents.append(
                    _agent(
                        "person", path, height, rng, anomalous=np.zeros(n_frames, bool), style=style
                    )
                )
    return agents


def _normal_direction(style: Scene, rng: np.random.Generator) -> tuple[float, Sequence[float]]:
    """A normal walking direction (degrees, jittered) and the lane that goes with it."""
    index = int(rng.integers(len(style.directions)))
    lane = style.lanes[index] if index < len(style.lanes) else (0.0, 1.0)
    return style.directions[index] + rng.normal(0, style.direction_jitter_deg / 2), lane


def _agent(
    kind: str,
    path: np.ndarray,
    height: float,
    rng: np.random.Generator,
    anomalous: np.ndarray,
    stepping: np.ndarray | None = None,
    style: Scene | None = None,
) -> Agent:
    """An agent whose gait phase advances with the distance it covers (plus `stepping` in place)."""
    steps = np.zeros(len(path)) if stepping is None else stepping.copy()
    moved = np.linalg.norm(np.diff(path, axis=0), axis=1)
    steps[1:] += np.where(np.isfinite(moved), moved, 0.0)
    phase = rng.uniform(0, 2 * np.pi) + np.cumsum(steps) / (0.12 * height)
    if style is not None and style.figure == "blob":
        base = np.asarray(style.figure_rgb or (200, 200, 200), np.float64)
        colour = tuple(int(c) for c in np.clip(base + rng.uniform(-15, 15, 3), 0, 255))
        colours = {"shirt": colour}
    else:
        colours = _person_colours(rng)
    return Agent(kind, path, height, colours, anomalous, phase)


def anomalous_agent(kind: str, style: Scene, n_frames: int, rng: np.random.Generator) -> Agent:
    """One anomalous event, starting a fifth to two fifths into the video."""
    start = int(rng.uniform(0.2, 0.4) * n_frames)
    height = rng.uniform(*style.person_px)
    if kind == "cart" and style.figure == "blob":
        height = rng.uniform(*style.oversize) * style.person_px[1]
    if kind == "loiter":
        return _loiterer(style, n_frames, start, height, rng)
    lane: Sequence[float] = (0.0, 1.0)
    if kind == "wrong_way":
        direction, speed = rng.choice(style.wrong_way_directions), rng.uniform(*style.speed_px)
    else:
        direction, lane = _normal_direction(style, rng)
        if kind != "bike":
            speed = rng.uniform(*style.speed_px)
        elif style.fast_factor is None:
            speed = rng.uniform(4.0, 5.5) * np.mean(style.speed_px)
        else:
            speed = rng.uniform(*style.fast_factor) * style.speed_px[1]
    # A blob is 0.44 h wide: entering at a quarter height off the edge shows it at once, so even
    # a slow event is in view in a short video.
    margin = 0.25 * height if style.figure == "blob" else 1.5 * height
    path = _linear_path(style, n_frames, start, direction, speed, rng, margin=margin, lane=lane)
    return _agent(kind, path, height, rng, anomalous=np.isfinite(path[:, 0]), style=style)


def _loiterer(
    style: Scene, n_frames: int, start: int, height: float, rng: np.random.Generator
) -> Agent:
    """Walks in at normal speed, lingers (slow random steps, stepping in place, waving), then walks on."""
    speed = rng.uniform(*style.speed_px)
    stay = int(rng.uniform(0.3, 0.45) * n_frames)
    target = rng.uniform(0.3, 0.7) * style.width
    top, bottom = (f * style.height for f in style.walkway)
    y = rng.uniform(top + 0.3 * (bottom - top), bottom - 2)
    sign = 1.0 if rng.random() < 0.5 else -1.0
    x_enter = target - sign * speed * start
    path = np.full((n_frames, 2), np.nan)
    t = np.arange(n_frames)
    walk_in = t < start
    path[walk_in] = np.stack([x_enter + sign * speed * t[walk_in], np.full(walk_in.sum(), y)], 1)
    wander = np.cumsum(rng.normal(0, 0.35, (stay, 2)), axis=0)
    wander -= np.linspace(0, 1, stay)[:, None] * wander[-1]
    lingering = (t >= start) & (t < start + stay)
    path[lingering] = np.array([target, y]) + wander[: lingering.sum()]
    walk_off = t >= start + stay
    path[walk_off] = np.stack(
        [target + sign * speed * (t[walk_off] - start - stay), np.full(walk_off.sum(), y)], 1
    )
    path[~_in_view(path, style, height)] = np.nan
    # Lingering is not standing still: the figure shifts from foot to foot.
    stepping = np.where(lingering, 0.5 * speed, 0.0)
    return _agent("loiter", path, height, rng, anomalous=lingering, stepping=stepping, style=style)


def render_frame(
    background: np.ndarray, agents: list[Agent], t: int, style: Scene, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One RGB frame with every present agent (far ones first) and its anomaly mask."""
    canvas = background.astype(np.float32)
    mask = np.zeros(background.shape[:2], np.uint8)
    present = [a for a in agents if np.isfinite(a.path[t, 0])]
    for agent in sorted(present, key=lambda a: a.path[t, 1]):
        drawn = np.zeros(background.shape[:2], np.uint8)
        _draw_agent(canvas, drawn, agent, t, style)
        if agent.anomalous[t]:
            mask |= drawn
    if style.jitter_px > 0:
        canvas, mask = _shake(canvas, mask, rng.normal(0, style.jitter_px, 2))
    canvas += rng.normal(0, style.noise_std, canvas.shape) + rng.normal(0, 1.0)
    return np.clip(canvas, 0, 255).astype(np.uint8), mask


def _shake(
    canvas: np.ndarray, mask: np.ndarray, shift: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Frame and mask moved by a (sub-pixel) camera shift, edges repeated."""
    matrix = np.float32([[1, 0, shift[0]], [0, 1, shift[1]]])
    size = (canvas.shape[1], canvas.shape[0])
    moved = cv2.warpAffine(canvas, matrix, size, borderMode=cv2.BORDER_REPLICATE)
    moved_mask = cv2.warpAffine(mask, matrix, size, flags=cv2.INTER_NEAREST)
    return moved, moved_mask


def _draw_agent(canvas: np.ndarray, drawn: np.ndarray, agent: Agent, t: int, style: Scene) -> None:
    """Draw one agent on the canvas, marking its pixels in `drawn`."""
    x, y = agent.path[t]
    h = agent.height * _scale(style, y)
    if style.figure == "blob":
        _draw_blob(canvas, drawn, x, y, h, agent.colours["shirt"], style.figure_textured)
        return
    if agent.kind == "cart":
        _draw_cart(canvas, drawn, x, y, h, agent.colours)
        return
    if agent.kind == "bike":
        _draw_wheels(canvas, drawn, x, y, h, agent.phase[t])
        y -= 0.22 * h
    swing = 0.0 if agent.kind == "bike" else np.sin(agent.phase[t])
    # A lingering figure gestures (waving, looking about): its arms go up and down.
    wave = np.sin(2 * np.pi * t / 8) if agent.kind == "loiter" and agent.anomalous[t] else None
    _draw_person(canvas, drawn, x, y, h, swing, agent.colours, wave)


def _draw_blob(
    canvas: np.ndarray,
    drawn: np.ndarray,
    x: float,
    y: float,
    h: float,
    colour: tuple[int, int, int],
    textured: bool,
) -> None:
    """An upright ellipse standing on (x, y), `h` tall: flat-coloured or checked (textured)."""
    body = np.zeros(drawn.shape, np.uint8)
    centre = _pt(x, y - h / 2)
    cv2.ellipse(body, centre, (max(1, int(0.22 * h)), max(1, int(h / 2))), 0, 0, 360, 1, -1)
    if textured:
        _fill_checked(canvas, body, colour, origin=centre, cell=max(2, int(h / 6)))
    else:
        canvas[body > 0] = colour
    drawn |= body * 255


def _pt(x: float, y: float) -> tuple[int, int]:
    """Integer pixel coordinates for OpenCV drawing."""
    return int(round(x)), int(round(y))


def _draw_person(
    canvas: np.ndarray,
    drawn: np.ndarray,
    x: float,
    y: float,
    h: float,
    swing: float,
    colours: dict[str, tuple[int, int, int]],
    wave: float | None = None,
) -> None:
    """Legs, arms, a checked torso and a head; `swing` in [-1, 1] sets the gait, `wave` in
    [-1, 1] (if given) the height of raised, waving arms."""
    hip = (x, y - 0.45 * h)
    limb = max(1, int(round(h / 11)))
    for side in (-1, 1):
        foot = _pt(x + side * swing * 0.16 * h, y)
        for img, colour in ((canvas, colours["trousers"]), (drawn, 255)):
            cv2.line(img, _pt(*hip), foot, colour, limb)
    torso_c, axes = _pt(x, y - 0.65 * h), (max(2, int(0.15 * h)), max(3, int(0.21 * h)))
    shoulder = (x, y - 0.8 * h)
    for side in (-1, 1):
        hand = (
            _pt(x - side * swing * 0.14 * h, y - 0.48 * h)
            if wave is None
            else _pt(x + side * 0.3 * h, y - (0.95 + 0.2 * side * wave) * h)
        )
        for img, colour in ((canvas, colours["shirt"]), (drawn, 255)):
            cv2.line(img, _pt(*shoulder), hand, colour, max(1, limb - 1))
    torso = np.zeros(drawn.shape, np.uint8)
    cv2.ellipse(torso, torso_c, axes, 0, 0, 360, 1, -1)
    _fill_checked(canvas, torso, colours["shirt"], origin=torso_c, cell=max(2, int(h / 12)))
    drawn |= torso * 255
    head_r = max(2, int(0.1 * h))
    head = _pt(x, y - 0.92 * h)
    for img, colour in ((canvas, colours["skin"]), (drawn, 255)):
        cv2.circle(img, head, head_r, colour, -1)
    cv2.ellipse(canvas, head, (head_r, max(1, head_r // 2)), 0, 180, 360, colours["hair"], -1)


def _fill_checked(
    canvas: np.ndarray,
    region: np.ndarray,
    colour: tuple[int, int, int],
    origin: tuple[int, int],
    cell: int,
) -> None:
    """Fill `region` with a check pattern of `colour` that moves with `origin` (cloth texture,
    so the inside of a moving figure changes from frame to frame, as real clothes do)."""
    ys, xs = np.nonzero(region)
    dark = ((xs - origin[0]) // cell + (ys - origin[1]) // cell) % 2
    canvas[ys, xs] = np.asarray(colour, np.float32) * (1.0 - 0.35 * dark[:, None])


def _draw_wheels(
    canvas: np.ndarray, drawn: np.ndarray, x: float, y: float, h: float, phase: float
) -> None:
    """Two spoked wheels and a frame under a rider."""
    r = max(3, int(0.17 * h))
    centres = [_pt(x - 0.3 * h, y - r), _pt(x + 0.3 * h, y - r)]
    for c in centres:
        for img, colour in ((canvas, (30, 30, 30)), (drawn, 255)):
            cv2.circle(img, c, r, colour, max(1, r // 3))
        spoke = _pt(c[0] + r * np.cos(phase), c[1] + r * np.sin(phase))
        cv2.line(canvas, c, spoke, (200, 200, 200), 1)
    for img, colour in ((canvas, (180, 40, 40)), (drawn, 255)):
        cv2.line(img, centres[0], centres[1], colour, max(1, r // 3))


def _draw_cart(
    canvas: np.ndarray,
    drawn: np.ndarray,
    x: float,
    y: float,
    h: float,
    colours: dict[str, tuple[int, int, int]],
) -> None:
    """A wide box on wheels: about a person tall and more than twice as wide."""
    w2, top = 1.3 * h, y - 0.9 * h
    body = np.zeros(drawn.shape, np.uint8)
    cv2.rectangle(body, _pt(x - w2, top), _pt(x + w2, y - 0.12 * h), 1, -1)
    _fill_checked(canvas, body, colours["shirt"], origin=_pt(x, top), cell=max(3, int(h / 6)))
    drawn |= body * 255
    cv2.rectangle(
        canvas,
        _pt(x - 0.7 * w2, top + 0.12 * h),
        _pt(x + 0.7 * w2, top + 0.35 * h),
        (40, 50, 60),
        -1,
    )
    r = max(2, int(0.12 * h))
    for cx in (x - 0.6 * w2, x + 0.6 * w2):
        for img, colour in ((canvas, (25, 25, 25)), (drawn, 255)):
            cv2.circle(img, _pt(cx, y - r), r, colour, -1)
