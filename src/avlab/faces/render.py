"""Procedural face renderer: a person (FaceIdentity) shows an Expression under a Viewing.

Faces are drawn with OpenCV on a canvas twice the output size and downsampled with
INTER_AREA, which anti-aliases every edge for the price of one resize. Geometry lives in
"head units": the face is an ellipsoid with half-width `face_width` (~0.86), half-height
`face_height` (~1.15) and depth 1.1 x the half-width; x points right, y down, z towards the
camera. Features sit on its front surface, so yaw moves them sideways and foreshortens the
far side, pitch moves them vertically, and roll turns the whole head in the image plane.

Emotions follow the FER2013 order (EMOTIONS). An Expression turns into facial "actions"
(loosely FACS action units: brow raise, lower-lid raise, lip-corner pull, ...), each a
delta from the neutral face; `smile` adds its own lip-corner lift, opening, teeth and
cheek raise on top of the emotion.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace

import cv2
import numpy as np

EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
ANGRY, DISGUST, FEAR, HAPPY, SAD, SURPRISE, NEUTRAL = range(7)

ACTIONS = (
    "brow_raise",  # whole brow up (+) or down (-)
    "brow_inner",  # inner brow ends up (+, sad/fear) or down (-, angry)
    "brow_squeeze",  # inner brow ends drawn together
    "eye_open",  # upper-lid opening, relative to neutral
    "lower_lid",  # lower lid raised: squint, cheek push
    "mouth_corner",  # lip corners up (+) or down (-)
    "mouth_open",  # gap between the lips
    "mouth_width",  # relative stretch (+) or pucker (-)
    "mouth_round",  # O-shaped opening
    "upper_lip_raise",  # upper lip lifted off the teeth (disgust)
    "lip_press",  # lips pressed thin
    "mouth_asym",  # one corner higher than the other
    "nose_wrinkle",
    "forehead_lines",
    "teeth",  # how much of the teeth shows in the opening
    "cheek_raise",  # deepens the nose-to-mouth folds
    "eye_crinkle",  # crow's feet at the outer eye corners: the mark of a genuine smile
    "jaw_drop",  # chin and mouth lowered
)

_PROTOTYPES: dict[int, dict[str, float]] = {
    ANGRY: dict(
        brow_raise=-1.0,
        brow_inner=-1.3,
        brow_squeeze=1.0,
        eye_open=-0.05,
        lower_lid=0.6,
        mouth_corner=-0.6,
        mouth_width=-0.2,
        lip_press=1.0,
        nose_wrinkle=0.2,
    ),
    DISGUST: dict(
        brow_raise=-0.5,
        brow_inner=-0.4,
        brow_squeeze=0.5,
        eye_open=-0.3,
        lower_lid=0.8,
        mouth_corner=-0.7,
        mouth_width=-0.2,
        upper_lip_raise=1.2,
        mouth_asym=0.9,
        nose_wrinkle=1.2,
        teeth=0.4,
        cheek_raise=0.8,
        eye_crinkle=0.4,
    ),
    FEAR: dict(
        brow_raise=0.9,
        brow_inner=1.0,
        brow_squeeze=0.8,
        eye_open=0.7,
        mouth_corner=-0.4,
        mouth_open=0.5,
        mouth_width=0.4,
        teeth=0.9,
        forehead_lines=0.8,
        lip_press=0.3,
    ),
    HAPPY: dict(brow_raise=0.1),
    SAD: dict(
        brow_raise=-0.1,
        brow_inner=1.4,
        brow_squeeze=0.4,
        eye_open=-0.45,
        mouth_corner=-1.5,
        mouth_width=-0.1,
        lip_press=0.2,
        forehead_lines=0.4,
    ),
    SURPRISE: dict(
        brow_raise=1.6,
        brow_inner=0.15,
        eye_open=0.85,
        mouth_open=1.3,
        mouth_round=1.0,
        mouth_width=-0.4,
        jaw_drop=1.0,
        forehead_lines=1.0,
    ),
    NEUTRAL: {},
}

# Alternative forms of an emotion, picked by Expression.variant: angry with bared, clenched
# teeth instead of pressed lips.
_ANGRY_BARED = dict(mouth_open=0.35, teeth=1.0, lip_press=0.35, mouth_width=0.05, mouth_corner=-0.3)

_SHIFT = 3  # fractional bits for cv2 drawing: sub-pixel vertices keep thin features smooth
_SUB = float(1 << _SHIFT)
_U9 = np.linspace(-1.0, 1.0, 9)
_U13 = np.linspace(-1.0, 1.0, 13)
_CIRCLE = np.linspace(0.0, 2 * np.pi, 16, endpoint=False)


@dataclass(frozen=True)
class FaceIdentity:
    """Stable traits of one person (lengths in head units; ranges are what `sample` draws)."""

    face_width: float = 0.86  # cheek half-width, 0.76-0.96
    face_height: float = 1.15  # forehead-to-chin half-height, 1.05-1.25
    jaw_width: float = 0.85  # width near the chin relative to the cheeks, 0.70-0.98
    skin_tone: float = 0.6  # 0 dark - 1 light
    skin_warmth: float = 0.5  # 0 olive - 1 rosy
    eye_spacing: float = 0.36  # eye centre to midline, 0.32-0.41
    eye_size: float = 0.15  # eye half-width, 0.125-0.175
    eye_height: float = -0.12  # eye line (negative: above the head centre), -0.18 - -0.06
    iris_darkness: float = 0.7  # 0 light grey/blue - 1 near black
    brow_gap: float = 0.19  # brow above the eye line, 0.16-0.23
    brow_thickness: float = 0.06  # 0.045-0.09
    nose_length: float = 0.27  # nose tip below the eye line, 0.22-0.33
    nose_width: float = 0.09  # half-width at the nostrils, 0.07-0.12
    mouth_height: float = 0.55  # mouth line below the head centre, 0.47-0.60
    mouth_width: float = 0.23  # mouth half-width, 0.19-0.27
    lip_thickness: float = 0.05  # 0.035-0.07
    hair_darkness: float = 0.7  # 0 blond/grey - 1 black
    hair_length: float = 0.3  # 0 shaved - 1 past the shoulders
    hair_volume: float = 0.1  # hair standing off the scalp, 0.02-0.25
    hairline: float = -0.62  # hairline height as a fraction of face_height, -0.85 - -0.45
    ear_size: float = 0.2  # ear half-height, 0.16-0.24
    age_lines: float = 0.2  # resting folds and forehead lines, 0-1
    beard: float = 0.0  # 0 none - 1 full; drawn above 0.75
    glasses: float = 0.0  # drawn above 0.85

    @classmethod
    def sample(cls, rng: np.random.Generator) -> FaceIdentity:
        """Draw a random person, every trait uniform in its documented range."""
        u = rng.uniform
        return cls(
            face_width=u(0.76, 0.96),
            face_height=u(1.05, 1.25),
            jaw_width=u(0.70, 0.98),
            skin_tone=u(0.0, 1.0),
            skin_warmth=u(0.0, 1.0),
            eye_spacing=u(0.32, 0.41),
            eye_size=u(0.125, 0.175),
            eye_height=u(-0.18, -0.06),
            iris_darkness=u(0.0, 1.0),
            brow_gap=u(0.16, 0.23),
            brow_thickness=u(0.045, 0.09),
            nose_length=u(0.22, 0.33),
            nose_width=u(0.07, 0.12),
            mouth_height=u(0.47, 0.60),
            mouth_width=u(0.19, 0.27),
            lip_thickness=u(0.035, 0.07),
            hair_darkness=u(0.0, 1.0),
            hair_length=u(0.0, 1.0),
            hair_volume=u(0.02, 0.25),
            hairline=u(-0.85, -0.45),
            ear_size=u(0.16, 0.24),
            age_lines=u(0.0, 1.0),
            beard=u(0.0, 1.0),
            glasses=u(0.0, 1.0),
        )


@dataclass(frozen=True)
class Expression:
    """What the face shows: an FER emotion, a smile intensity and small per-sample jitter."""

    emotion: int = NEUTRAL  # FER order: see EMOTIONS
    smile: float = 0.0  # smile intensity in [0, 1]; teeth show above ~0.6
    intensity: float = 1.0  # how strongly the emotion shows, 0.7-1.15 when sampled
    variant: float = 0.0  # in [0, 1): picks an alternative form (angry teeth, sneer side)
    jitter: tuple[float, ...] = ()  # one offset per ACTIONS entry, so classes overlap a little

    @classmethod
    def sample(cls, rng: np.random.Generator, emotion: int | None = None) -> Expression:
        """Draw an expression; the smile intensity follows the emotion (happy smiles)."""
        if emotion is None:
            emotion = int(rng.integers(len(EMOTIONS)))
        return cls(
            emotion=int(emotion),
            smile=_sample_smile(rng, emotion),
            intensity=float(rng.uniform(0.7, 1.15)),
            variant=float(rng.uniform()),
            jitter=tuple(float(v) for v in rng.normal(0.0, 0.08, len(ACTIONS))),
        )

    def actions(self) -> dict[str, float]:
        """Facial action values: emotion prototype x intensity + smile + jitter."""
        proto = dict(_PROTOTYPES[self.emotion])
        if self.emotion == ANGRY and self.variant > 0.65:
            proto.update(_ANGRY_BARED)
        if self.emotion == DISGUST and self.variant < 0.5:
            proto["mouth_asym"] = -proto["mouth_asym"]
        act = {name: self.intensity * proto.get(name, 0.0) for name in ACTIONS}
        for name, value in zip(ACTIONS, self.jitter, strict=False):
            act[name] += value
        _add_smile(act, self.smile, duchenne=self.emotion == HAPPY)
        return act


def _sample_smile(rng: np.random.Generator, emotion: int) -> float:
    """Smile intensity typical of an emotion, with a few atypical ones."""
    p = rng.uniform()
    if emotion == HAPPY:
        value = rng.uniform(0.55, 1.0) if p < 0.92 else rng.uniform(0.35, 0.55)
    elif emotion == NEUTRAL:
        value = rng.uniform(0.0, 0.35) if p < 0.9 else rng.uniform(0.6, 0.9)
    else:
        value = rng.uniform(0.0, 0.3) if p < 0.95 else rng.uniform(0.3, 0.45)
    return float(value)


def _add_smile(act: dict[str, float], smile: float, duchenne: bool) -> None:
    """Add a smile's lip pull, opening and teeth; a genuine (Duchenne) smile also squints."""
    act["mouth_corner"] += 1.5 * smile
    act["mouth_width"] += 0.3 * smile
    act["mouth_open"] += 1.4 * max(0.0, smile - 0.4)
    act["teeth"] += float(np.clip((smile - 0.45) / 0.15, 0.0, 1.0))
    act["cheek_raise"] += 0.9 * smile
    act["lower_lid"] += (0.9 if duchenne else 0.2) * smile
    act["eye_open"] -= (0.2 if duchenne else 0.0) * smile
    act["eye_crinkle"] += (1.2 if duchenne else 0.0) * smile


@dataclass(frozen=True)
class Viewing:
    """How one image sees the face: pose, framing, light, background and camera defects."""

    yaw: float = 0.0  # radians, + turns the face towards image right
    pitch: float = 0.0  # radians, + tilts the face up
    roll: float = 0.0  # radians, + rotates clockwise in the image
    scale: float = 1.0  # 1: face about 0.6 of the shorter image side tall
    dx: float = 0.0  # face centre offset, fraction of the image width
    dy: float = 0.0  # face centre offset, fraction of the image height
    light_azimuth: float = 0.0  # direction the light comes from in the image plane, radians
    light_elevation: float = 0.5  # 0 frontal light - pi/2 grazing
    light_strength: float = 0.3  # 0 flat ambient - 1 hard directional
    brightness: float = 0.0  # added after lighting, grey levels
    contrast: float = 1.0  # gain around mid-grey
    color_gain: tuple[float, float, float] = (1.0, 1.0, 1.0)  # white balance per RGB channel
    background: int = 0  # 0 flat, 1 gradient, 2 blobs, 3 wall panels, 4 texture
    background_seed: int = 0  # also picks the clothing colour
    noise: float = 0.0  # sensor noise sigma, grey levels
    blur: float = 0.0  # Gaussian blur sigma at output resolution, pixels
    jpeg_quality: int = 90  # for writers that save or round-trip through JPEG
    gaze_x: float = 0.0  # -1..1
    gaze_y: float = 0.0  # -1..1
    blink: float = 0.0  # 0 open - 1 closed

    @classmethod
    def sample(cls, rng: np.random.Generator, strength: float = 1.0) -> Viewing:
        """Draw a random viewing; strength 0 gives a frontal, evenly lit, clean face."""
        s = float(strength)
        n = rng.normal
        return cls(
            yaw=float(np.clip(n(0, 0.25 * s), -0.65, 0.65)),
            pitch=float(np.clip(n(0, 0.14 * s), -0.4, 0.4)),
            roll=float(np.clip(n(0, 0.13 * s), -0.45, 0.45)),
            scale=float(np.clip(math.exp(n(0, 0.1 * s)), 0.75, 1.3)),
            dx=float(np.clip(n(0, 0.05 * s), -0.15, 0.15)),
            dy=float(np.clip(n(0, 0.05 * s), -0.15, 0.15)),
            light_azimuth=float(rng.uniform(0, 2 * np.pi)),
            light_elevation=float(rng.uniform(0.1, 1.1)),
            light_strength=float(rng.uniform(0.05, 0.55) * s),
            brightness=float(n(0, 15 * s)),
            contrast=float(np.clip(math.exp(n(0, 0.15 * s)), 0.65, 1.5)),
            color_gain=tuple(float(g) for g in np.exp(rng.normal(0, 0.06 * s, 3))),
            background=int(rng.integers(5)),
            background_seed=int(rng.integers(2**31)),
            noise=float(rng.uniform(0, 6) * s),
            blur=float(rng.uniform(0.2, 0.7) * s if rng.uniform() < 0.25 else 0.0),
            jpeg_quality=int(rng.integers(40, 96)),
            gaze_x=float(np.clip(n(0, 0.35 * s), -1, 1)),
            gaze_y=float(np.clip(n(0, 0.25 * s), -1, 1)),
        )


class _Camera:
    """Projects head-unit points on the face ellipsoid to sub-pixel canvas coordinates."""

    def __init__(self, identity: FaceIdentity, viewing: Viewing, hw: tuple[int, int], jaw: float):
        """Set up the pose for a canvas of size hw; a dropped jaw (`jaw` > 0) lengthens the face."""
        h, w = hw
        self.a, self.b = identity.face_width, identity.face_height + 0.05 * jaw
        self.c = 1.1 * identity.face_width
        self.unit = 0.26 * min(h, w) * viewing.scale  # pixels per head unit
        self.cx, self.cy = w * (0.5 + viewing.dx), h * (0.5 + viewing.dy)
        self.cyaw, self.syaw = math.cos(viewing.yaw), math.sin(viewing.yaw)
        self.cpit, self.spit = math.cos(viewing.pitch), math.sin(viewing.pitch)
        self.croll, self.sroll = math.cos(viewing.roll), math.sin(viewing.roll)
        # an ellipsoid's outline widens as it turns: we see some of its side
        self.sil_x = math.hypot(self.cyaw, self.c / self.a * self.syaw)
        self.sil_y = math.hypot(self.cpit, self.c / self.b * self.spit)

    def surface(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Depth of the face surface at (x, y)."""
        inside = 1.0 - (x / self.a) ** 2 - (y / self.b) ** 2
        return self.c * np.sqrt(np.maximum(inside, 0.02))

    def project(self, x, y, dz=0.0, z=None) -> np.ndarray:
        """Canvas points (N, 2) of head points: on the surface raised by dz, or at depth z."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        z = self.surface(x, y) + dz if z is None else np.full_like(x, z)
        x1 = x * self.cyaw + z * self.syaw
        z1 = z * self.cyaw - x * self.syaw
        y2 = y * self.cpit - z1 * self.spit
        return self._to_canvas(x1, y2)

    def flat(self, x, y) -> np.ndarray:
        """Canvas points of the head outline plane (no depth), for silhouettes and hair."""
        return self._to_canvas(np.asarray(x) * self.sil_x, np.asarray(y) * self.sil_y)

    def _to_canvas(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Roll, scale and place image-plane head units; int32 with _SHIFT fractional bits."""
        px = self.cx + self.unit * (x * self.croll - y * self.sroll)
        py = self.cy + self.unit * (x * self.sroll + y * self.croll)
        return (np.stack([px, py], axis=-1) * _SUB).astype(np.int32)

    def px(self, head_units: float) -> int:
        """A thickness in whole canvas pixels, at least 1."""
        return max(1, round(head_units * self.unit))


def _poly(img: np.ndarray, pts: np.ndarray, color) -> None:
    """Fill one polygon given in shifted canvas points."""
    cv2.fillPoly(img, [pts], color, cv2.LINE_8, _SHIFT)


def _line(img: np.ndarray, pts: np.ndarray, color, thickness: int, closed: bool = False) -> None:
    """Draw an open (or closed) polyline given in shifted canvas points."""
    cv2.polylines(img, [pts], closed, color, thickness, cv2.LINE_8, _SHIFT)


def _shade(color, factor: float) -> tuple[float, float, float]:
    """A colour darkened (factor < 1) or lightened (> 1)."""
    return tuple(float(min(255.0, c * factor)) for c in color)


def _mix(c0, c1, t: float) -> tuple[float, float, float]:
    """Linear blend of two colours."""
    return tuple(float(a + (b - a) * t) for a, b in zip(c0, c1, strict=True))


@dataclass(frozen=True)
class _Palette:
    """RGB colours of one person in one picture."""

    skin: tuple
    lips: tuple
    hair: tuple
    brow: tuple
    iris: tuple
    clothes: tuple


def _palette(identity: FaceIdentity, clothes_seed: int) -> _Palette:
    """Colours of a person (RGB), from their traits."""
    r, g, b = _mix((88, 58, 42), (242, 208, 184), identity.skin_tone)
    skin = _mix((r * 0.95, g, b * 0.85), (r * 1.04, g * 0.93, b * 0.92), identity.skin_warmth)
    lips = _mix(_shade(skin, 0.72), (150, 60, 65), 0.3)
    hair = _mix((196, 164, 112), (24, 19, 17), identity.hair_darkness)
    brow = _shade(_mix(hair, (30, 24, 20), 0.5), 0.85)
    iris = _mix((110, 140, 160), (40, 26, 18), identity.iris_darkness)
    clothes = tuple(float(v) for v in np.random.default_rng(clothes_seed + 7).uniform(20, 230, 3))
    return _Palette(skin, lips, hair, brow, iris, clothes)


@functools.lru_cache(maxsize=8)
def _background_cached(kind: int, seed: int, h: int, w: int) -> np.ndarray:
    """A background canvas (h, w, 3) uint8; cached because clips reuse it every frame."""
    rng = np.random.default_rng(seed)
    grey = rng.uniform(30, 225)
    c0 = _mix((grey,) * 3, tuple(rng.uniform(20, 235, 3)), rng.uniform(0.1, 0.7))
    c1 = _mix((grey,) * 3, tuple(rng.uniform(20, 235, 3)), rng.uniform(0.1, 0.7))
    c0, c1 = np.array(c0, np.float32), np.array(c1, np.float32)
    if kind == 1:
        ang = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        t = (xx / w - 0.5) * math.cos(ang) + (yy / h - 0.5) * math.sin(ang) + 0.5
        img = c0 + np.clip(t, 0, 1)[..., None] * (c1 - c0)
    elif kind in (2, 4):
        k = int(rng.integers(2, 6)) if kind == 2 else int(rng.integers(12, 28))
        field = rng.uniform(0, 1, (k, k, 1)).astype(np.float32)
        interp = cv2.INTER_CUBIC if kind == 2 else cv2.INTER_LINEAR
        field = cv2.resize(field, (w, h), interpolation=interp)[..., None]
        img = c0 + np.clip(field, 0, 1) * (c1 - c0)
    else:
        img = np.empty((h, w, 3), np.float32)
        img[:] = c0
        for _ in range(int(rng.integers(0, 4)) if kind == 3 else 0):
            x0, x1 = sorted(rng.integers(0, w, 2))
            y0 = int(rng.integers(0, h // 2))
            img[y0:, x0 : x1 + 1] = c1 * rng.uniform(0.7, 1.2)
    return np.clip(img, 0, 255).astype(np.uint8)


def _background(kind: int, seed: int, h: int, w: int) -> np.ndarray:
    """A fresh, writable copy of a background canvas."""
    return _background_cached(int(kind), int(seed), int(h), int(w)).copy()


def _head_outline(identity: FaceIdentity, b: float, n: int = 36) -> tuple[np.ndarray, np.ndarray]:
    """Egg-shaped face outline in head units: full width at the cheeks, narrower jaw."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    lower = np.maximum(-np.cos(t), 0.0) ** 1.5
    x = identity.face_width * np.sin(t) * (1.0 - (1.0 - identity.jaw_width) * lower)
    return x, -b * np.cos(t)


def _draw_body(img, cam: _Camera, identity: FaceIdentity, pal: _Palette) -> None:
    """Shoulders and neck, which turn less than the head."""
    a, b = cam.a, cam.b
    sx = np.cos(_CIRCLE) * a * 2.4
    sy = b * 2.5 + np.sin(_CIRCLE) * b * 0.95
    _poly(img, cam.flat(sx / cam.sil_x, sy / cam.sil_y), pal.clothes)
    nx = np.array([-0.45, 0.45, 0.55, -0.55]) * a
    ny = np.array([0.4, 0.4, 2.0, 2.0]) * b
    _poly(img, cam.flat(nx / cam.sil_x, ny / cam.sil_y), _shade(pal.skin, 0.8))


def _draw_back_hair(img, cam: _Camera, identity: FaceIdentity, pal: _Palette) -> None:
    """Long hair hanging behind the head and over the shoulders."""
    if identity.hair_length < 0.35:
        return
    a, b, vol = cam.a, cam.b, identity.hair_volume
    t = np.linspace(-np.pi / 2, np.pi / 2, 13)
    end = b * (0.1 + 1.6 * (identity.hair_length - 0.35))
    side = a * (1.1 + vol)
    x = np.concatenate([[-side], a * (1.05 + vol) * np.sin(t), [side, -side]])
    y = np.concatenate([[0.0], -b * (1.0 + vol) * np.cos(t), [end, end]])
    _poly(img, cam.flat(x, y), _shade(pal.hair, 0.85))


def _draw_ears(img, cam: _Camera, identity: FaceIdentity, pal: _Palette) -> None:
    """Two ears at the sides of the head, partly hidden by the face when it turns."""
    ey = identity.eye_height + 0.12
    for side in (-1.0, 1.0):
        x = side * (cam.a + 0.03 + 0.09 * np.cos(_CIRCLE))
        y = ey + identity.ear_size * np.sin(_CIRCLE)
        pts = cam.project(x, y, z=-0.12 * cam.c)
        _poly(img, pts, _shade(pal.skin, 0.88))


def _draw_head(img, cam: _Camera, identity: FaceIdentity, pal: _Palette) -> None:
    """The face itself: a filled egg outline."""
    x, y = _head_outline(identity, cam.b)
    _poly(img, cam.flat(x, y), pal.skin)


def _draw_beard(img, cam: _Camera, identity: FaceIdentity, pal: _Palette) -> None:
    """A stubble shadow over the jaw, its upper edge following the face surface."""
    if identity.beard <= 0.75:
        return
    top = identity.mouth_height - 0.12
    x, y = _head_outline(identity, cam.b)
    keep = y > top  # one run of points, from the right cheek round the chin to the left
    edge_x = _U9 * np.abs(x[keep]).max() * 0.97
    edge_y = top + 0.12 * _U9**2
    outline = np.concatenate([cam.flat(x[keep], y[keep]), cam.project(edge_x, edge_y)])
    _poly(img, outline, _mix(pal.skin, pal.hair, 0.08 + 0.5 * (identity.beard - 0.75)))


def _draw_hair_top(
    img, cam: _Camera, identity: FaceIdentity, pal: _Palette, brow_top: float
) -> None:
    """Hair on the crown, from the outline over the top down to the hairline."""
    if identity.hair_length < 0.05:
        return
    a, b, vol = cam.a, cam.b, identity.hair_volume * min(1.0, identity.hair_length * 4)
    t = np.linspace(-1.75, 1.75, 15)
    x_out = a * (1.0 + vol) * np.sin(t)
    y_out = -b * (1.0 + vol) * np.cos(t)
    center = max(identity.hairline * b, -b * 0.9)
    center = min(center, brow_top - 0.1)
    side_y = min(-0.1 * b, center + 0.45)
    u = _U9[::-1]
    x_in = u * a * 0.97
    y_in = center + (side_y - center) * u**2
    outer = cam.flat(x_out, y_out)
    inner = cam.project(x_in, y_in, dz=0.02)
    _poly(img, np.concatenate([outer, inner]), pal.hair)


def _draw_forehead_lines(img, cam: _Camera, identity, act, pal: _Palette, brow_y: float) -> None:
    """Horizontal forehead creases of raised brows (and of age)."""
    depth = act["forehead_lines"] + 0.4 * identity.age_lines
    if depth < 0.3:
        return
    color = _shade(pal.skin, 1.0 - 0.14 * min(depth, 1.3))
    width = 0.3 if act["brow_inner"] > 0.6 else 0.45
    for k in range(3):
        y = brow_y - 0.1 - 0.065 * k - 0.02 * _U9**2 * (1 - act["brow_inner"])
        _line(img, cam.project(_U9 * width, y), color, cam.px(0.014))


def _eye_curves(identity: FaceIdentity, act, side: float, blink: float):
    """Upper and lower lid curves (x, y_upper, y_lower) of one eye in head units."""
    ew = identity.eye_size
    openness = max(0.0, 1.0 + act["eye_open"]) * (1.0 - blink)
    up = 0.42 * ew * min(openness, 2.0)
    low = 0.3 * ew * max(0.05, 1.0 - 0.7 * act["lower_lid"]) * (1.0 - blink)
    x = side * identity.eye_spacing + _U9 * ew
    tilt = 0.08 * ew * _U9 * side
    shape = 1.0 - _U9**2
    y_up = identity.eye_height - up * shape**0.7 - tilt
    y_low = identity.eye_height + low * shape**0.8 - tilt
    return x, y_up, y_low


def _draw_eye(img, cam: _Camera, identity, act, view: Viewing, pal: _Palette, side: float) -> None:
    """Sclera, iris clipped by the lids, lash line and lid crease of one eye."""
    x, y_up, y_low = _eye_curves(identity, act, side, view.blink)
    dz = -0.03
    outline = cam.project(np.concatenate([x, x[::-1]]), np.concatenate([y_up, y_low[::-1]]), dz)
    ew = identity.eye_size
    if np.max(y_low - y_up) > 0.012:
        _poly(img, outline, (236, 232, 226))
        r = 0.46 * ew
        ix = side * identity.eye_spacing + view.gaze_x * 0.3 * ew
        iy = identity.eye_height + view.gaze_y * 0.12 * ew - 0.05 * ew
        for radius, color in ((r, pal.iris), (0.45 * r, (12, 10, 10))):
            cx = ix + radius * np.cos(_CIRCLE)
            cy = iy + radius * np.sin(_CIRCLE)
            cy = np.clip(cy, np.interp(cx, x, y_up), np.interp(cx, x, y_low))
            _poly(img, cam.project(cx, cy, dz), color)
    lash = _shade(pal.brow, 0.6)
    _line(img, cam.project(x, y_up, dz), lash, cam.px(0.04))
    _line(img, cam.project(x[1:-1], y_low[1:-1], dz), _shade(pal.skin, 0.7), cam.px(0.018))
    crease = y_up[2:-2] - 0.05 * ew - 0.25 * ew * (1 - _U9[2:-2] ** 2)
    _line(img, cam.project(x[2:-2], crease, dz), _shade(pal.skin, 0.82), cam.px(0.012))


def _brow_centerline(identity: FaceIdentity, act, side: float) -> tuple[np.ndarray, np.ndarray]:
    """Brow centre line (x, y) in head units, from the inner to the outer end."""
    ew = identity.eye_size
    base = identity.eye_height - identity.brow_gap - 0.08 * act["brow_raise"]
    squeeze = 0.05 * np.clip(act["brow_squeeze"], -0.5, 1.5)
    inner_x = side * (identity.eye_spacing - 0.95 * ew - squeeze)
    outer_x = side * (identity.eye_spacing + 1.2 * ew)
    u = np.linspace(0.0, 1.0, 7)
    x = inner_x + (outer_x - inner_x) * u
    inner = act["brow_inner"]
    arch = 0.025 + 0.03 * max(0.0, act["brow_raise"]) - 0.012 * abs(inner)
    y = base - 0.09 * inner * (1 - u) ** 1.5 + 0.03 * inner * u - arch * np.sin(np.pi * u)
    return x, y


def _draw_brow(img, cam: _Camera, identity, act, pal: _Palette, side: float) -> None:
    """One eyebrow, tapering towards its outer end."""
    x, y = _brow_centerline(identity, act, side)
    half = 0.5 * identity.brow_thickness * (1.0 - 0.45 * np.linspace(0.0, 1.0, 7))
    outline = cam.project(
        np.concatenate([x, x[::-1]]), np.concatenate([y - half, (y + half)[::-1]])
    )
    _poly(img, outline, pal.brow)


def _draw_nose(img, cam: _Camera, identity, act, view: Viewing, pal: _Palette) -> float:
    """Nose side line, base and nostrils (wrinkled for disgust); returns the tip height."""
    wrinkle = max(0.0, act["nose_wrinkle"])
    tip = identity.eye_height + identity.nose_length - 0.025 * wrinkle
    nw = identity.nose_width * (1 + 0.15 * wrinkle)
    side = -1.0 if math.cos(view.light_azimuth) > 0 else 1.0  # the side away from the light
    bridge_x = side * np.array([0.05, 0.06, nw * 0.85])
    bridge_y = np.array([identity.eye_height + 0.05, tip - 0.12, tip - 0.03])
    _line(
        img,
        cam.project(bridge_x, bridge_y, dz=np.array([0.04, 0.12, 0.12])),
        _shade(pal.skin, 0.84),
        cam.px(0.016),
    )
    bx = _U9 * nw
    by = tip + 0.012 - 0.03 * np.abs(_U9) ** 3
    _line(
        img, cam.project(bx, by, dz=0.15 * (1 - np.abs(_U9))), _shade(pal.skin, 0.7), cam.px(0.018)
    )
    for s in (-1.0, 1.0):
        nx = s * nw * 0.45 + 0.028 * np.cos(_CIRCLE)
        ny = tip + 0.006 + 0.013 * np.sin(_CIRCLE)
        _poly(img, cam.project(nx, ny, dz=0.1), _shade(pal.skin, 0.42))
    if wrinkle > 0.3:
        color = _shade(pal.skin, 1.0 - 0.3 * min(wrinkle, 1.3))
        for k in range(3):
            wy = identity.eye_height + 0.03 + 0.04 * k - 0.015 * (1 - _U9[2:-2] ** 2)
            _line(img, cam.project(_U9[2:-2] * 0.085, wy, dz=0.05), color, cam.px(0.02))
    return tip


def _mouth_curves(identity: FaceIdentity, act):
    """Lip contours in head units: outer top/bottom, inner top/bottom, on shared x samples."""
    u = _U13
    half_w = identity.mouth_width * max(0.55, 1.0 + act["mouth_width"])
    y0 = identity.mouth_height + 0.05 * max(0.0, act["jaw_drop"])
    asym = act["mouth_asym"]
    lift = 0.075 * np.where(u < 0, act["mouth_corner"] + asym, act["mouth_corner"] - asym)
    base = y0 - lift * u**2
    rnd = float(np.clip(act["mouth_round"], 0.0, 1.0))
    opening = 0.13 * max(0.0, act["mouth_open"])
    profile = (1.0 - u**2) ** (0.5 + 0.4 * (1.0 - rnd))
    raise_ = 0.035 * max(0.0, act["upper_lip_raise"]) * (1 - u**4) * (1 + 0.6 * asym * u)
    in_top = base - opening * (0.25 + 0.25 * rnd) * profile - raise_
    in_bot = base + opening * (0.75 - 0.25 * rnd) * profile
    lip = identity.lip_thickness * (1.0 - 0.65 * float(np.clip(act["lip_press"], 0.0, 1.0)))
    bow = 0.3 * lip * np.exp(-((u / 0.18) ** 2))
    out_top = in_top - lip * (0.35 + 0.65 * np.sqrt(1 - u**2)) + bow
    out_bot = in_bot + lip * 1.2 * (0.3 + 0.7 * np.sqrt(1 - u**2))
    return u * half_w, out_top, out_bot, in_top, in_bot


def _draw_mouth(img, cam: _Camera, identity, act, pal: _Palette) -> tuple[float, float]:
    """Lips, the opening with teeth, and the lip line; returns (corner half-width, corner y)."""
    x, out_top, out_bot, in_top, in_bot = _mouth_curves(identity, act)
    dz = 0.03
    lips = cam.project(np.concatenate([x, x[::-1]]), np.concatenate([out_top, out_bot[::-1]]), dz)
    _poly(img, lips, pal.lips)
    xi = x * 0.9
    gap = in_bot - in_top
    if gap.max() > 0.01:
        _poly(
            img,
            cam.project(np.concatenate([xi, xi[::-1]]), np.concatenate([in_top, in_bot[::-1]]), dz),
            (58, 22, 26),
        )
        teeth = float(np.clip(act["teeth"], 0.0, 1.0))
        if teeth > 0.15:
            shown = np.minimum(gap, 0.05 * teeth)
            upper = cam.project(
                np.concatenate([xi, xi[::-1]]), np.concatenate([in_top, (in_top + shown)[::-1]]), dz
            )
            _poly(img, upper, (232, 228, 214))
            if act["mouth_open"] > 0.25 and act["mouth_round"] < 0.5:
                lower = np.maximum(in_bot - 0.6 * shown, in_top + shown + 0.008)
                low = cam.project(
                    np.concatenate([xi, xi[::-1]]), np.concatenate([lower, in_bot[::-1]]), dz
                )
                _poly(img, low, (215, 210, 196))
    mid = 0.5 * (in_top + in_bot)
    _line(img, cam.project(x, mid, dz), _shade(pal.lips, 0.5), cam.px(0.024))
    return float(x[-1]), float(0.5 * (out_top[-1] + out_bot[-1]))


def _draw_crow_feet(img, cam: _Camera, identity, act, pal: _Palette) -> None:
    """Short creases fanning out from the outer eye corners."""
    depth = act["eye_crinkle"] + 0.3 * identity.age_lines
    if depth < 0.4:
        return
    color = _shade(pal.skin, 1.0 - 0.25 * min(depth, 1.2))
    ew, ey = identity.eye_size, identity.eye_height
    for side in (-1.0, 1.0):
        x0 = side * (identity.eye_spacing + 1.15 * ew)
        for slope in (-0.6, 0.0, 0.6):
            x = np.array([x0, x0 + side * 0.09])
            y = np.array([ey, ey + slope * 0.09])
            _line(img, cam.project(x, y), color, cam.px(0.016))


def _draw_folds(img, cam: _Camera, identity, act, pal: _Palette, tip: float, corner) -> None:
    """Nose-to-mouth folds: deep in a smile or sneer, faint at rest."""
    depth = act["cheek_raise"] + 0.35 * identity.age_lines
    if depth < 0.25:
        return
    half_w, corner_y = corner
    color = _shade(pal.skin, 1.0 - 0.2 * min(depth, 1.2))
    t = np.linspace(0.0, 1.0, 5)
    for side in (-1.0, 1.0):
        x0, x1 = side * (identity.nose_width + 0.04), side * (half_w + 0.05)
        x = x0 + (x1 - x0) * t + side * 0.05 * np.sin(np.pi * t)
        y = tip - 0.02 + (corner_y + 0.03 - tip + 0.02) * t
        _line(img, cam.project(x, y, dz=0.02), color, cam.px(0.018))


def _draw_glasses(img, cam: _Camera, identity: FaceIdentity) -> None:
    """Thin rectangular frames with a bridge."""
    if identity.glasses <= 0.85:
        return
    ew, ey, es = identity.eye_size, identity.eye_height, identity.eye_spacing
    rx = np.array([-1.35, 1.35, 1.35, -1.35]) * ew
    ry = ey + np.array([-0.8, -0.8, 0.85, 0.85]) * ew
    frame = (30, 30, 34)
    for side in (-1.0, 1.0):
        _line(img, cam.project(side * es + rx, ry, dz=0.06), frame, cam.px(0.022), closed=True)
    bx = np.array([-es + 1.35 * ew, es - 1.35 * ew])
    _line(img, cam.project(bx, np.array([ey - 0.4 * ew] * 2), dz=0.08), frame, cam.px(0.022))


def _light_map(cam: _Camera, view: Viewing, hw: tuple[int, int]) -> np.ndarray:
    """Per-pixel light gain: Lambertian shading of the head blended into a soft room gradient."""
    h, w = hw
    yy, xx = _grid(h, w)
    s = cam.unit / 2.0  # the canvas is twice the output size
    rx = (xx - cam.cx / 2.0) / s
    ry = (yy - cam.cy / 2.0) / s
    ux = (rx * cam.croll + ry * cam.sroll) / (cam.a * cam.sil_x)
    uy = (-rx * cam.sroll + ry * cam.croll) / (cam.b * cam.sil_y)
    r2 = ux * ux + uy * uy
    nz = np.sqrt(np.maximum(1.0 - r2, 0.0))
    el, az = view.light_elevation, view.light_azimuth
    lx, ly, lz = math.sin(el) * math.cos(az), math.sin(el) * math.sin(az), math.cos(el)
    lambert = np.maximum(ux * lx + uy * ly + nz * lz, 0.0)
    k = view.light_strength
    face = (1.0 - k) + k * 1.25 * lambert
    room = 1.0 + 0.3 * k * (lx * (xx / w - 0.5) + ly * (yy / h - 0.5)) * 2.0
    weight = np.clip((1.3 - np.sqrt(r2)) / 0.3, 0.0, 1.0)
    return (room + weight * (face - room)).astype(np.float32)


@functools.lru_cache(maxsize=16)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates of an (h, w) image."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return yy + 0.5, xx + 0.5


def _finish(canvas: np.ndarray, cam: _Camera, view: Viewing, hw, rng) -> np.ndarray:
    """Downsample, light, grade and degrade the canvas into the output image."""
    h, w = hw
    img = cv2.resize(canvas, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)
    gain = _light_map(cam, view, hw)[..., None] * np.asarray(view.color_gain, np.float32)
    img *= gain
    img = (img - 128.0) * view.contrast + 128.0 + view.brightness
    if view.blur > 0.05:
        img = cv2.GaussianBlur(img, (0, 0), view.blur)
    if view.noise > 0:
        img += rng.standard_normal((h, w, 1), dtype=np.float32) * view.noise
    return np.clip(img, 0, 255).astype(np.uint8)


def _size_hw(size: int | tuple[int, int]) -> tuple[int, int]:
    """(height, width) from an int (square) or an (h, w) tuple."""
    if isinstance(size, int | np.integer):
        return int(size), int(size)
    h, w = size
    return int(h), int(w)


def render_face(
    identity: FaceIdentity,
    expression: Expression,
    viewing: Viewing,
    size: int | tuple[int, int] = 64,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Render one face as an (H, W, 3) uint8 RGB image; `size` is an int or (height, width).

    Everything but the sensor noise is fixed by the three descriptions; `rng` draws the noise.
    """
    rng = np.random.default_rng() if rng is None else rng
    hw = _size_hw(size)
    canvas_hw = (2 * hw[0], 2 * hw[1])
    act = expression.actions()
    cam = _Camera(identity, viewing, canvas_hw, act["jaw_drop"])
    pal = _palette(identity, viewing.background_seed)
    img = _background(viewing.background, viewing.background_seed, *canvas_hw)
    _draw_person(img, cam, identity, act, viewing, pal)
    return _finish(img, cam, viewing, hw, rng)


def _draw_person(img, cam: _Camera, identity, act, viewing: Viewing, pal: _Palette) -> None:
    """Draw body, head and features back to front onto the canvas."""
    _draw_body(img, cam, identity, pal)
    _draw_back_hair(img, cam, identity, pal)
    _draw_ears(img, cam, identity, pal)
    _draw_head(img, cam, identity, pal)
    _draw_beard(img, cam, identity, pal)
    brow_y = min(_brow_centerline(identity, act, side)[1].min() for side in (-1.0, 1.0))
    _draw_forehead_lines(img, cam, identity, act, pal, brow_y)
    _draw_hair_top(img, cam, identity, pal, brow_y - identity.brow_thickness)
    for side in (-1.0, 1.0):
        _draw_eye(img, cam, identity, act, viewing, pal, side)
        _draw_brow(img, cam, identity, act, pal, side)
    tip = _draw_nose(img, cam, identity, act, viewing, pal)
    corner = _draw_mouth(img, cam, identity, act, pal)
    _draw_folds(img, cam, identity, act, pal, tip, corner)
    _draw_crow_feet(img, cam, identity, act, pal)
    _draw_glasses(img, cam, identity)


def render_clip(
    identity: FaceIdentity,
    expression: Expression,
    viewing: Viewing,
    n_frames: int = 10,
    size: int | tuple[int, int] = 64,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Render (T, H, W, 3) uint8 frames of one person with small smooth head motion.

    The smile intensity wobbles a little around `expression.smile`; the per-frame values
    are returned as the second element (T,) float32.
    """
    rng = np.random.default_rng() if rng is None else rng
    t = np.arange(n_frames) / max(1, n_frames - 1)
    wave = _smooth_waves(rng, t, 7)
    smiles = np.clip(expression.smile + 0.04 * wave[6] + rng.normal(0, 0.01, n_frames), 0.0, 1.0)
    blinks = _blinks(rng, n_frames)
    frames = []
    for i in range(n_frames):
        view = replace(
            viewing,
            yaw=viewing.yaw + 0.07 * wave[0, i],
            pitch=viewing.pitch + 0.04 * wave[1, i],
            roll=viewing.roll + 0.03 * wave[2, i],
            dx=viewing.dx + 0.015 * wave[3, i],
            dy=viewing.dy + 0.015 * wave[4, i],
            scale=viewing.scale * (1 + 0.02 * wave[5, i]),
            blink=float(blinks[i]),
        )
        expr = replace(expression, smile=float(smiles[i]))
        frames.append(render_face(identity, expr, view, size, rng))
    return np.stack(frames), smiles.astype(np.float32)


def _smooth_waves(rng: np.random.Generator, t: np.ndarray, n: int) -> np.ndarray:
    """n slow random sinusoids over t in [0, 1], each within [-1, 1]."""
    freq = rng.uniform(0.3, 1.2, (n, 1))
    phase = rng.uniform(0, 2 * np.pi, (n, 1))
    return np.sin(2 * np.pi * freq * t[None, :] + phase)


def _blinks(rng: np.random.Generator, n_frames: int) -> np.ndarray:
    """Eyelid closure per frame: one blink in about a quarter of clips."""
    closed = np.zeros(n_frames)
    if n_frames >= 3 and rng.uniform() < 0.25:
        i = int(rng.integers(1, n_frames - 1))
        closed[i] = 1.0
        closed[i - 1] = closed[i + 1] = 0.4
    return closed


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    """JPEG file bytes of an RGB (H, W, 3) or grey (H, W) uint8 image."""
    pixels = image[..., ::-1] if image.ndim == 3 else image
    ok, buf = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """Image after JPEG compression at `quality`: the artefacts real face crops carry."""
    decoded = cv2.imdecode(
        np.frombuffer(encode_jpeg(image, quality), np.uint8), cv2.IMREAD_UNCHANGED
    )
    return decoded[..., ::-1].copy() if image.ndim == 3 else decoded
