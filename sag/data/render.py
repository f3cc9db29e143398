"""Procedural pedestrians for the synthetic world: identities, cameras, and numpy rasterisation with region labels.

A pedestrian's identity lives in details (hair, shoes, bag, logo, clothing pattern) on top of a body whose colours
may be shared with other identities (a "family"). Every image is drawn with the nuisances of the paper's Figure 1:
per-camera colour and lighting, pose and scale, background clutter and occlusion. Each pixel also gets a region
label: 0 background / clutter / occluder, 1 person, 2 identity-bearing detail.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
from PIL import Image, ImageFilter

BACKGROUND, PERSON, DETAIL = 0, 1, 2  # mask labels
_CHANNELS = np.arange(3)

HAIR_STYLES = ("short", "long", "cap", "bald", "ponytail")
PATTERNS = ("plain", "h-stripes", "v-stripes", "checks", "dots", "two-tone", "diagonal")
BOTTOMS = ("trousers", "shorts", "skirt")
BAGS = ("none", "backpack", "shoulder-bag", "handbag")
LOGOS = ("none", "square", "circle", "diamond", "bar")
VIEWS = ("front", "back", "side")

_SKIN = np.array([[0.96, 0.80, 0.69], [0.90, 0.72, 0.58], [0.78, 0.57, 0.42], [0.58, 0.40, 0.28], [0.38, 0.26, 0.18]])
_HAIR = np.array([[0.08, 0.07, 0.06], [0.30, 0.19, 0.10], [0.55, 0.40, 0.22], [0.85, 0.72, 0.45], [0.6, 0.6, 0.6]])


@dataclass(frozen=True)
class Identity:
    """Everything that makes one person recognisable (colours are RGB in [0, 1])."""

    skin: tuple[float, float, float]
    build: float  # torso width factor
    height: float  # body height factor
    top: tuple[float, float, float]
    long_sleeves: bool
    bottom: tuple[float, float, float]
    bottom_type: int  # index into BOTTOMS
    # identity details (mask label 2)
    hair: tuple[float, float, float]
    hair_style: int  # index into HAIR_STYLES
    cap: tuple[float, float, float]
    pattern: int  # index into PATTERNS
    pattern_color: tuple[float, float, float]
    pattern_period: float  # fraction of the body height
    shoes: tuple[float, float, float]
    bag: int  # index into BAGS
    bag_color: tuple[float, float, float]
    bag_side: int  # -1 left, +1 right
    logo: int  # index into LOGOS
    logo_color: tuple[float, float, float]

    def details(self) -> tuple:
        """The detail attributes, used to keep family members distinct."""
        return (self.hair_style, self.pattern, self.bag, self.logo, _q(self.shoes), _q(self.hair), _q(self.logo_color))


@dataclass(frozen=True)
class Camera:
    """A camera's look: colour response, exposure, sharpness, noise, scene and preferred viewpoints."""

    gains: tuple[float, float, float]
    gamma: float
    exposure: float
    cast: tuple[float, float, float]
    blur: float  # Gaussian blur radius in pixels
    low_res: bool  # rendered at half resolution and upsampled (Market's one low-resolution camera)
    noise: float
    wall: tuple[float, float, float]
    ground: tuple[float, float, float]
    clutter: float  # mean number of background objects
    view_probs: tuple[float, float, float]  # front, back, side


def draw_identity(rng: np.random.Generator, base: Identity | None = None) -> Identity:
    """A random identity; with ``base``, a family member sharing its body and clothing colours, new details."""
    details = {
        "hair": tuple(_jitter(rng, _HAIR[rng.integers(len(_HAIR))], 0.05)),
        "hair_style": int(rng.choice(len(HAIR_STYLES), p=[0.35, 0.25, 0.15, 0.1, 0.15])),
        "cap": _cloth_color(rng),
        "pattern": int(rng.choice(len(PATTERNS), p=[0.3, 0.15, 0.1, 0.1, 0.1, 0.15, 0.1])),
        "pattern_color": _cloth_color(rng),
        "pattern_period": float(rng.uniform(0.035, 0.07)),
        "shoes": _cloth_color(rng),
        "bag": int(rng.choice(len(BAGS), p=[0.35, 0.25, 0.25, 0.15])),
        "bag_color": _cloth_color(rng),
        "bag_side": int(rng.choice([-1, 1])),
        "logo": int(rng.choice(len(LOGOS), p=[0.4, 0.15, 0.15, 0.15, 0.15])),
        "logo_color": _cloth_color(rng, vivid=True),
    }
    if base is not None:
        return replace(base, **details)
    return Identity(
        skin=tuple(_jitter(rng, _SKIN[rng.integers(len(_SKIN))], 0.03)),
        build=float(rng.uniform(0.85, 1.15)),
        height=float(rng.uniform(0.93, 1.04)),
        top=_cloth_color(rng),
        long_sleeves=bool(rng.random() < 0.6),
        bottom=_cloth_color(rng),
        bottom_type=int(rng.choice(len(BOTTOMS), p=[0.6, 0.2, 0.2])),
        **details,
    )


def draw_camera(rng: np.random.Generator, low_res: bool = False) -> Camera:
    """A random camera: colour gains, gamma, exposure, a colour cast, blur, noise, its scene and viewpoints."""
    wall = _hsv(rng.random(), rng.uniform(0.05, 0.35), rng.uniform(0.35, 0.85))
    ground = _hsv(rng.random(), rng.uniform(0.0, 0.2), rng.uniform(0.25, 0.6))
    return Camera(
        gains=tuple(np.clip(1 + rng.normal(0, 0.12, 3), 0.7, 1.3).tolist()),
        gamma=float(np.exp(rng.normal(0, 0.2))),
        exposure=float(rng.uniform(0.75, 1.2)),
        cast=tuple(rng.normal(0, 0.03, 3).tolist()),
        blur=float(rng.uniform(0.2, 0.8)),
        low_res=low_res,
        noise=float(rng.uniform(0.005, 0.03)),
        wall=wall,
        ground=ground,
        clutter=float(rng.uniform(1.0, 4.0)),
        view_probs=tuple(rng.dirichlet([2.0, 2.0, 2.0]).tolist()),
    )


def render(
    rng: np.random.Generator,
    identity: Identity | None,
    camera: Camera,
    size: tuple[int, int],
    kind: str = "person",
    clean: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """One image (H, W, 3) uint8 and its region mask (H, W) uint8.

    ``kind``: "person" (a well-framed pedestrian), "junk" (a badly framed box of ``identity``), "distractor"
    (a box that mostly misses people; ``identity`` is ignored). ``clean``: no occluder (hand-drawn boxes).
    """
    height, width = size
    canvas = _Canvas(height, width)
    _background(canvas, rng, camera)
    if kind == "person":
        scale = rng.uniform(0.78, 0.96)
        foot = height * rng.uniform(0.96, 1.0)
        cx = width * (0.5 + rng.normal(0, 0.05))
        _person(canvas, rng, identity, camera, cx, foot, scale * height * identity.height)
        if not clean and rng.random() < 0.3:
            _occluder(canvas, rng, camera)
    elif kind == "junk":  # IoU with the true box between 0.2 and 0.5: a part of the person, or far too loose a box
        if rng.random() < 0.6:
            body = height * rng.uniform(1.4, 2.0)
            foot = height * rng.uniform(0.6, 1.0) + (body - height) * rng.choice([0.0, 1.0])
            cx = width * rng.uniform(0.2, 0.8)
        else:
            body = height * rng.uniform(0.42, 0.55)
            foot = height * rng.uniform(0.55, 1.0)
            cx = width * rng.uniform(0.25, 0.75)
        _person(canvas, rng, identity, camera, cx, foot, body)
    elif kind == "distractor":  # a false detection: background, maybe a sliver of someone
        for _ in range(rng.integers(1, 4)):
            _clutter_object(canvas, rng, camera)
        if rng.random() < 0.5:
            passer = draw_identity(rng)
            side = rng.choice([-1.0, 1.0])
            _person(canvas, rng, passer, camera, width * (0.5 + side * rng.uniform(0.5, 0.75)), height, height * 0.9)
    else:
        raise ValueError(f"unknown image kind {kind!r}; expected person, junk or distractor")
    return _camera_response(canvas, rng, camera), canvas.label


class _Canvas:
    """An RGB float image and its label mask, painted shape by shape inside bounding boxes."""

    def __init__(self, height: int, width: int) -> None:
        self.h, self.w = height, width
        self.rgb = np.zeros((height, width, 3), np.float32)
        self.label = np.zeros((height, width), np.uint8)
        self.ys, self.xs = _centres(height, width)
        self.force_label: int | None = None  # when set, every shape gets this label (occluding passers-by)

    def window(self, x0: float, y0: float, x1: float, y1: float) -> tuple[slice, slice, np.ndarray, np.ndarray] | None:
        """Slices of the pixels whose centres may lie in [x0, x1] x [y0, y1], and their centre coordinates."""
        r0, r1 = max(int(np.floor(y0)), 0), min(int(np.ceil(y1)) + 1, self.h)
        c0, c1 = max(int(np.floor(x0)), 0), min(int(np.ceil(x1)) + 1, self.w)
        if r0 >= r1 or c0 >= c1:
            return None
        return slice(r0, r1), slice(c0, c1), self.ys[r0:r1, None], self.xs[None, c0:c1]

    def paint(self, rows: slice, cols: slice, mask: np.ndarray, color, label: int, shade=None) -> None:
        """Colour the masked pixels (optionally times a shading factor) and set their label."""
        color = np.asarray(color, np.float32)
        if shade is None:
            self.rgb[rows, cols][mask] = color
        else:
            self.rgb[rows, cols][mask] = (np.broadcast_to(shade, mask.shape)[mask][:, None] * color).astype(np.float32)
        self.label[rows, cols][mask] = label if self.force_label is None else self.force_label

    def ellipse(self, cx, cy, rx, ry, color, label, clip=None) -> None:
        """Filled ellipse; ``clip(y, x) -> bool mask`` restricts it."""
        win = self.window(cx - rx, cy - ry, cx + rx, cy + ry)
        if win is None:
            return
        rows, cols, y, x = win
        d = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2
        mask = d <= 1
        if clip is not None:
            mask &= clip(y, x)
        self.paint(rows, cols, mask, color, label, shade=1 - 0.2 * d)

    def capsule(self, ax, ay, bx, by, r, color, label) -> None:
        """A limb: all points within ``r`` of the segment a-b, shaded like a cylinder."""
        win = self.window(min(ax, bx) - r, min(ay, by) - r, max(ax, bx) + r, max(ay, by) + r)
        if win is None:
            return
        rows, cols, y, x = win
        dx, dy = bx - ax, by - ay
        t = np.clip(((x - ax) * dx + (y - ay) * dy) / max(dx * dx + dy * dy, 1e-6), 0, 1)
        d2 = (x - ax - t * dx) ** 2 + (y - ay - t * dy) ** 2
        mask = d2 <= r * r
        self.paint(rows, cols, mask, color, label, shade=1 - 0.3 * d2 / (r * r))

    def polygon(self, points, color, label, texture=None):
        """Filled convex polygon; ``texture(y, x, inside) -> (mask, color, label)`` paints a pattern on top."""
        pts = np.asarray(points, np.float32)
        win = self.window(pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max())
        if win is None:
            return
        rows, cols, y, x = win
        nxt = np.roll(pts, -1, axis=0)
        area = np.sum(pts[:, 0] * nxt[:, 1] - nxt[:, 0] * pts[:, 1])
        sign = 1.0 if area >= 0 else -1.0
        mask = np.ones((y.shape[0], x.shape[1]), bool)
        for (px, py), (qx, qy) in zip(pts, nxt, strict=True):
            mask &= sign * ((qx - px) * (y - py) - (qy - py) * (x - px)) >= 0
        mid = pts[:, 0].mean()
        half = max((pts[:, 0].max() - pts[:, 0].min()) / 2, 1e-3)
        self.paint(rows, cols, mask, color, label, shade=1 - 0.25 * ((x - mid) / half) ** 2)
        if texture is not None:
            tmask, tcolor, tlabel = texture(y, x, mask)
            self.paint(rows, cols, tmask, tcolor, tlabel)

    def rect(self, x0, y0, x1, y1, color, label) -> None:
        """Axis-aligned filled rectangle."""
        win = self.window(x0, y0, x1, y1)
        if win is None:
            return
        rows, cols, y, x = win
        mask = (y >= y0) & (y <= y1) & (x >= x0) & (x <= x1)
        self.paint(rows, cols, mask, color, label)


def _person(canvas: _Canvas, rng: np.random.Generator, ident: Identity, camera: Camera, cx, foot, body) -> None:
    """Draw ``ident`` standing on ``foot`` (y), centred on ``cx``, ``body`` pixels tall, in a random pose."""
    view = int(rng.choice(3, p=camera.view_probs))
    facing = 1.0 if rng.random() < 0.5 else -1.0
    stride = rng.uniform(-1, 1)
    u = body  # the unit of every body measure: the person's height in pixels
    top = foot - u
    side = view == 2
    bw = ident.build * (0.55 if side else 1.0)
    sh_y, hip_y, ankle_y = top + 0.16 * u, top + 0.5 * u, top + 0.94 * u
    sh_w, hip_w = 0.13 * u * bw, 0.11 * u * bw
    bag_fx = ident.bag_side * (1 if view != 1 else -1)  # the bag's side flips when seen from behind

    def dark(color, f=0.78):
        return tuple(c * f for c in color)

    # legs: hip -> ankle, spread by the stride (along x for side views, slightly for front/back)
    spread = (0.13 if side else 0.035) * u * stride
    legs = [(cx - (0.0 if side else 0.055 * u * bw), -spread), (cx + (0.0 if side else 0.055 * u * bw), spread)]
    if side:
        legs.sort(key=lambda leg: leg[1] * facing)  # the leg further back first
    leg_r = 0.048 * u * (0.9 + 0.1 * ident.build)
    knee_y = top + 0.72 * u
    # backpack seen from the front or side: behind the body
    if ident.bag == 1 and view != 1:
        if side:
            bx = cx - facing * (0.12 * u)
            canvas.rect(bx - 0.06 * u, sh_y + 0.01 * u, bx + 0.06 * u, top + 0.44 * u, ident.bag_color, DETAIL)
        else:
            canvas.rect(
                cx - sh_w - 0.025 * u,
                sh_y + 0.02 * u,
                cx + sh_w + 0.025 * u,
                top + 0.42 * u,
                dark(ident.bag_color),
                DETAIL,
            )
    for i, (lx, dxa) in enumerate(legs):
        back_leg = side and i == 0
        bottom = dark(ident.bottom) if back_leg else ident.bottom
        skin = dark(ident.skin) if back_leg else ident.skin
        ax_, ay_ = lx + dxa, ankle_y
        kx, ky = lx + dxa * 0.5, knee_y
        if BOTTOMS[ident.bottom_type] == "trousers":
            canvas.capsule(lx, hip_y, ax_, ay_, leg_r, bottom, PERSON)
        else:
            canvas.capsule(lx, hip_y, kx, ky, leg_r, bottom, PERSON)
            canvas.capsule(kx, ky, ax_, ay_, leg_r * 0.8, skin, PERSON)
        shoe_dx = facing * 0.03 * u if side else 0.0
        canvas.ellipse(
            ax_ + shoe_dx, ay_ + 0.025 * u, 0.045 * u, 0.026 * u, dark(ident.shoes) if back_leg else ident.shoes, DETAIL
        )
    # hips / skirt
    if BOTTOMS[ident.bottom_type] == "skirt":
        canvas.polygon(
            [
                (cx - hip_w, top + 0.47 * u),
                (cx + hip_w, top + 0.47 * u),
                (cx + hip_w * 1.5, top + 0.72 * u),
                (cx - hip_w * 1.5, top + 0.72 * u),
            ],
            ident.bottom,
            PERSON,
        )
    else:
        canvas.polygon(
            [
                (cx - hip_w, top + 0.46 * u),
                (cx + hip_w, top + 0.46 * u),
                (cx + hip_w, top + 0.56 * u),
                (cx - hip_w, top + 0.56 * u),
            ],
            ident.bottom,
            PERSON,
        )
    # the arm behind (side view)
    arm_r = 0.034 * u
    swing = 0.12 * u * stride
    if side:
        _arm(
            canvas,
            ident,
            cx,
            sh_y + 0.01 * u,
            cx + swing * facing,
            top + 0.47 * u,
            arm_r,
            dark(ident.top),
            dark(ident.skin),
        )
    # torso with its pattern and logo
    torso = [(cx - sh_w, sh_y), (cx + sh_w, sh_y), (cx + hip_w, hip_y), (cx - hip_w, hip_y)]
    canvas.polygon(torso, ident.top, PERSON, texture=_pattern_texture(ident, u, sh_y, hip_y, cx))
    if ident.logo and view == 0:
        _logo(canvas, ident, cx + 0.04 * u * ident.bag_side, top + 0.26 * u, 0.032 * u)
    if ident.logo and side:
        _logo(canvas, ident, cx + facing * 0.02 * u, top + 0.26 * u, 0.022 * u)
    # backpack seen from behind: on the torso; from the front: its straps
    if ident.bag == 1 and view == 1:
        canvas.rect(cx - 0.1 * u * bw, sh_y + 0.03 * u, cx + 0.1 * u * bw, top + 0.43 * u, ident.bag_color, DETAIL)
        canvas.rect(cx - 0.1 * u * bw, top + 0.3 * u, cx + 0.1 * u * bw, top + 0.315 * u, dark(ident.bag_color), DETAIL)
    elif ident.bag == 1 and view == 0:
        for s in (-1, 1):
            canvas.capsule(
                cx + s * 0.08 * u * bw,
                sh_y,
                cx + s * 0.075 * u * bw,
                top + 0.36 * u,
                0.014 * u,
                dark(ident.bag_color),
                DETAIL,
            )
    # shoulder bag: strap across the torso, bag at the hip
    if ident.bag == 2:
        canvas.capsule(
            cx - bag_fx * sh_w * 0.8,
            sh_y,
            cx + bag_fx * (hip_w + 0.02 * u),
            top + 0.5 * u,
            0.012 * u,
            dark(ident.bag_color, 0.6),
            DETAIL,
        )
        bx = cx + bag_fx * (hip_w + 0.03 * u) if not side else cx - facing * 0.02 * u
        canvas.rect(bx - 0.055 * u, top + 0.46 * u, bx + 0.055 * u, top + 0.58 * u, ident.bag_color, DETAIL)
    # arms (front arm only in side views)
    hand_y = top + 0.47 * u
    if side:
        _arm(canvas, ident, cx, sh_y + 0.01 * u, cx - swing * facing, hand_y, arm_r, ident.top, ident.skin)
        hands = [(cx - swing * facing, hand_y)]
    else:
        hands = []
        for s in (-1, 1):
            hx = cx + s * (sh_w + 0.025 * u)
            _arm(
                canvas,
                ident,
                cx + s * (sh_w - 0.01 * u),
                sh_y + 0.015 * u,
                hx,
                hand_y + 0.01 * u * s * stride,
                arm_r,
                ident.top,
                ident.skin,
            )
            hands.append((hx, hand_y))
    if ident.bag == 3:  # handbag hanging from one hand
        hx, hy = hands[0] if side else hands[0 if bag_fx < 0 else 1]
        canvas.capsule(hx, hy, hx, hy + 0.05 * u, 0.008 * u, dark(ident.bag_color, 0.6), DETAIL)
        canvas.rect(hx - 0.05 * u, hy + 0.04 * u, hx + 0.05 * u, hy + 0.13 * u, ident.bag_color, DETAIL)
    # neck, head, hair
    head_x = cx + (facing * 0.015 * u if side else 0.0)
    head_y, head_rx, head_ry = top + 0.075 * u, 0.056 * u * (0.85 if side else 1.0), 0.07 * u
    canvas.rect(head_x - 0.025 * u, head_y + 0.05 * u, head_x + 0.025 * u, sh_y + 0.01 * u, ident.skin, PERSON)
    canvas.ellipse(head_x, head_y, head_rx, head_ry, ident.skin, PERSON)
    _hair(canvas, ident, view, facing, head_x, head_y, head_rx, head_ry, u)


def _arm(canvas, ident, sx, sy, hx, hy, r, sleeve, skin) -> None:
    """Upper arm in the top's colour, forearm in the sleeve's or the skin's, and a hand."""
    ex, ey = (sx + hx) / 2, (sy + hy) / 2
    canvas.capsule(sx, sy, ex, ey, r, sleeve, PERSON)
    canvas.capsule(ex, ey, hx, hy, r * 0.9, sleeve if ident.long_sleeves else skin, PERSON)
    canvas.ellipse(hx, hy + r * 0.5, r * 0.9, r * 1.1, skin, PERSON)


def _hair(canvas, ident, view, facing, x, y, rx, ry, u) -> None:
    """Hair (or a cap) on the head; from behind it covers the head."""
    style = HAIR_STYLES[ident.hair_style]
    if style == "bald":
        canvas.ellipse(
            x, y - 0.35 * ry, rx * 0.9, ry * 0.55, ident.hair, DETAIL, clip=lambda yy, xx: yy < y - 0.55 * ry
        )
        return
    if style == "cap":
        canvas.ellipse(x, y - 0.25 * ry, rx * 1.08, ry * 0.8, ident.cap, DETAIL, clip=lambda yy, xx: yy < y - 0.2 * ry)
        brim = facing if view == 2 else 0.0
        canvas.rect(
            x - rx * 1.1 + brim * rx * 0.6,
            y - 0.3 * ry,
            x + rx * 1.1 + brim * rx * 0.6,
            y - 0.12 * ry,
            ident.cap,
            DETAIL,
        )
        return
    cut = y + (ry * 0.9 if view == 1 else -0.3 * ry)
    canvas.ellipse(x, y - 0.15 * ry, rx * 1.12, ry * 1.0, ident.hair, DETAIL, clip=lambda yy, xx: yy < cut)
    if style == "long":
        canvas.rect(x - rx * 1.12, y - 0.2 * ry, x - rx * 0.6, y + 0.25 * u * 0.6, ident.hair, DETAIL)
        canvas.rect(x + rx * 0.6, y - 0.2 * ry, x + rx * 1.12, y + 0.25 * u * 0.6, ident.hair, DETAIL)
        if view == 1:
            canvas.rect(x - rx * 1.12, y, x + rx * 1.12, y + 0.14 * u, ident.hair, DETAIL)
    elif style == "ponytail" and view != 0:
        px = x - facing * rx * 1.1 if view == 2 else x
        canvas.capsule(
            px, y - 0.2 * ry, px - (facing * 0.02 * u if view == 2 else 0), y + 0.1 * u, 0.018 * u, ident.hair, DETAIL
        )


def _logo(canvas, ident, x, y, r) -> None:
    """A small emblem on the chest."""
    shape = LOGOS[ident.logo]
    if shape == "square":
        canvas.rect(x - r, y - r, x + r, y + r, ident.logo_color, DETAIL)
    elif shape == "circle":
        canvas.ellipse(x, y, r * 1.1, r * 1.1, ident.logo_color, DETAIL)
    elif shape == "diamond":
        canvas.polygon(
            [(x, y - r * 1.3), (x + r * 1.3, y), (x, y + r * 1.3), (x - r * 1.3, y)], ident.logo_color, DETAIL
        )
    elif shape == "bar":
        canvas.rect(x - r * 1.6, y - r * 0.5, x + r * 1.6, y + r * 0.5, ident.logo_color, DETAIL)


def _pattern_texture(ident: Identity, u: float, y0: float, y1: float, cx: float):
    """The torso's pattern as a texture function for ``_Canvas.polygon`` (None when plain)."""
    name = PATTERNS[ident.pattern]
    if name == "plain":
        return None
    p = ident.pattern_period * u

    def texture(y, x, inside):
        u, v = (x - cx) / p, (y - y0) / p
        if name == "h-stripes":
            on = np.floor(v).astype(np.int64) % 2 == 0
        elif name == "v-stripes":
            on = np.floor(u).astype(np.int64) % 2 == 0
        elif name == "checks":
            on = (np.floor(u).astype(np.int64) + np.floor(v).astype(np.int64)) % 2 == 0
        elif name == "dots":
            on = ((u % 1 - 0.5) ** 2 + (v % 1 - 0.5) ** 2) < 0.09
        elif name == "two-tone":
            on = np.broadcast_to(y > (y0 + y1) / 2, inside.shape)
        else:  # diagonal
            on = np.floor(u + v).astype(np.int64) % 2 == 0
        return inside & on, ident.pattern_color, DETAIL

    return texture


def _background(canvas: _Canvas, rng: np.random.Generator, camera: Camera) -> None:
    """Wall and ground with a low-frequency texture and random clutter objects (label 0)."""
    h, w = canvas.h, canvas.w
    horizon = h * rng.uniform(0.35, 0.75)
    wall = np.clip(np.asarray(camera.wall) * (1 + rng.normal(0, 0.08, 3)), 0, 1)
    ground = np.clip(np.asarray(camera.ground) * (1 + rng.normal(0, 0.08, 3)), 0, 1)
    ys = canvas.ys[:, None, None]
    base = np.where(ys < horizon, wall, ground) * (0.9 + 0.2 * ys / h)  # (H, 1, 3)
    blotches = rng.normal(0, 0.08, (6, 4, 1)) + rng.normal(0, 0.02, (6, 4, 3))  # mostly brightness, a little hue
    texture = _upsample(blotches.astype(np.float32), h, w)  # (H, W, 3) smooth blotches
    canvas.rgb[:] = base + texture
    for _ in range(rng.poisson(camera.clutter)):
        _clutter_object(canvas, rng, camera)


def _clutter_object(canvas: _Canvas, rng: np.random.Generator, camera: Camera) -> None:
    """One background object: a shop window, a pole, a sign, a kerb line or a blob."""
    h, w = canvas.h, canvas.w
    color = (
        _cloth_color(rng)
        if rng.random() < 0.5
        else tuple(np.clip(np.asarray(camera.wall) * rng.uniform(0.5, 1.4), 0, 1))
    )
    kind = rng.integers(5)
    if kind == 0:  # window / shop front
        x0, y0 = rng.uniform(-0.2, 0.9) * w, rng.uniform(0.0, 0.5) * h
        canvas.rect(x0, y0, x0 + rng.uniform(0.2, 0.6) * w, y0 + rng.uniform(0.1, 0.3) * h, color, BACKGROUND)
    elif kind == 1:  # pole
        x0 = rng.uniform(0, 1) * w
        canvas.rect(x0, 0, x0 + rng.uniform(0.03, 0.08) * w, h, color, BACKGROUND)
    elif kind == 2:  # round sign / tree crown
        canvas.ellipse(
            rng.uniform(0, 1) * w,
            rng.uniform(0, 0.5) * h,
            rng.uniform(0.08, 0.25) * w,
            rng.uniform(0.05, 0.15) * h,
            color,
            BACKGROUND,
        )
    elif kind == 3:  # kerb / floor marking
        y0 = rng.uniform(0.6, 0.98) * h
        canvas.rect(0, y0, w, y0 + rng.uniform(0.01, 0.03) * h, color, BACKGROUND)
    else:  # a bin, a bollard
        x0 = rng.uniform(-0.1, 0.9) * w
        y1 = rng.uniform(0.7, 1.0) * h
        canvas.rect(x0, y1 - rng.uniform(0.1, 0.25) * h, x0 + rng.uniform(0.1, 0.3) * w, y1, color, BACKGROUND)


def _occluder(canvas: _Canvas, rng: np.random.Generator, camera: Camera) -> None:
    """Something in front of the person (label 0): a pole, a car or bench, a sign, or another passer-by."""
    h, w = canvas.h, canvas.w
    kind = rng.integers(4)
    color = _cloth_color(rng)
    if kind == 0:
        x0 = rng.uniform(0.1, 0.8) * w
        canvas.rect(x0, 0, x0 + rng.uniform(0.08, 0.18) * w, h, color, BACKGROUND)
    elif kind == 1:
        y0 = h * (1 - rng.uniform(0.2, 0.42))
        canvas.rect(-1, y0, w + 1, h + 1, color, BACKGROUND)
        canvas.rect(-1, y0 + 0.04 * h, w + 1, y0 + 0.07 * h, tuple(c * 0.6 for c in color), BACKGROUND)
    elif kind == 2:
        x0 = -1 if rng.random() < 0.5 else w * (1 - rng.uniform(0.2, 0.35))
        width = rng.uniform(0.2, 0.35) * w
        canvas.rect(x0, rng.uniform(0.0, 0.5) * h, x0 + width + 1, h + 1, color, BACKGROUND)
    else:
        passer = draw_identity(rng)
        side = rng.choice([-1.0, 1.0])
        canvas.force_label = BACKGROUND  # a passer-by in front is an occluder, not the subject
        _person(canvas, rng, passer, camera, w * (0.5 + side * rng.uniform(0.45, 0.6)), h * rng.uniform(0.98, 1.1), h)
        canvas.force_label = None


def _camera_response(canvas: _Canvas, rng: np.random.Generator, camera: Camera) -> np.ndarray:
    """Camera look on the drawn scene: optics blur, colour response, lighting, noise -> uint8 (H, W, 3)."""
    if rng.random() < 0.5:  # mirror the whole scene: people walk both ways
        canvas.rgb = canvas.rgb[:, ::-1]
        canvas.label = np.ascontiguousarray(canvas.label[:, ::-1])
    h, w = canvas.h, canvas.w
    image = Image.fromarray((np.clip(canvas.rgb, 0, 1) * 255 + 0.5).astype(np.uint8))
    if camera.low_res:
        image = image.resize((max(w // 2, 1), max(h // 2, 1)), Image.BILINEAR).resize((w, h), Image.BILINEAR)
    image = image.filter(ImageFilter.GaussianBlur(camera.blur))
    light = camera.exposure * (1 + rng.normal(0, 0.08))
    levels = np.arange(256, dtype=np.float32) / 255
    lut = (levels[:, None] ** camera.gamma * np.asarray(camera.gains, np.float32) * light).astype(np.float32)
    rgb = lut[np.asarray(image), _CHANNELS]  # (H, W, 3): gamma, channel gains, exposure per camera
    ramp = (  # uneven lighting across the box
        rng.normal(0, 0.15) * (canvas.xs[None, :, None] / w - 0.5)
        + rng.normal(0, 0.1) * (canvas.ys[:, None, None] / h - 0.5)
    ).astype(np.float32)
    rgb *= 1 + ramp
    rgb += np.asarray(camera.cast, np.float32)
    rgb += rng.standard_normal(rgb.shape, dtype=np.float32) * np.float32(camera.noise)
    return (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)


def _cloth_color(rng: np.random.Generator, vivid: bool = False) -> tuple[float, float, float]:
    """A clothing colour: often dark or neutral, otherwise a saturated hue."""
    if not vivid and rng.random() < 0.3:
        v = rng.choice([0.08, 0.2, 0.45, 0.7, 0.92]) + rng.normal(0, 0.03)
        return _hsv(rng.random(), rng.uniform(0, 0.12), float(np.clip(v, 0, 1)))
    return _hsv(rng.random(), rng.uniform(0.45, 0.95), rng.uniform(0.35, 0.95))


def _hsv(h: float, s: float, v: float) -> tuple[float, float, float]:
    """HSV -> RGB tuple of floats."""
    return tuple(float(c) for c in colorsys.hsv_to_rgb(h, s, v))


def _jitter(rng: np.random.Generator, color: np.ndarray, sigma: float) -> list[float]:
    """A colour with a little Gaussian noise, clipped to [0, 1]."""
    return np.clip(color + rng.normal(0, sigma, 3), 0, 1).tolist()


def _q(color: tuple[float, float, float]) -> tuple[int, ...]:
    """A coarse colour key (for telling details apart)."""
    return tuple(int(c * 4) for c in color)


@lru_cache(maxsize=8)
def _centres(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates: ys (H,), xs (W,)."""
    return np.arange(height, dtype=np.float32) + 0.5, np.arange(width, dtype=np.float32) + 0.5


@lru_cache(maxsize=8)
def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """Linear interpolation weights (n_out, n_in) for resizing a 1-D signal."""
    pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    m = np.zeros((n_out, n_in), np.float32)
    m[np.arange(n_out), lo] += 1 - (pos - lo)
    m[np.arange(n_out), hi] += pos - lo
    return m


def _upsample(small: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear upsampling of (h, w, C) to (H, W, C), as two small matrix products."""
    h, w, c = small.shape
    rows = _interp_matrix(height, h) @ small.reshape(h, w * c)  # (H, w*C)
    cols = rows.reshape(height, w, c).transpose(0, 2, 1) @ _interp_matrix(width, w).T  # (H, C, W)
    return cols.transpose(0, 2, 1)
