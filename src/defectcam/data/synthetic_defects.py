"""Defect models, weak ellipse labels and harmless deviations of the synthetic DAGM generator.

A defect model first draws its extent (`DefectShape`, image fractions, in its own frame), from which
the weak label ellipse follows with a margin; the ellipse is then placed uniformly over the area
that keeps it inside the image, and the defect is drawn in the ellipse's frame. Intensities are in
texture units (about one standard deviation of the fine texture), scaled by `contrast`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from defectcam.data.synthetic_textures import Texture, pixel_grid

# Defect changes fade out before this normalized ellipse radius, so every changed pixel lies well
# inside the rasterized label even after rounding.
_WINDOW_EDGE = 0.94
# Image fraction added to both semi-axes, so the label stays loose even around thin defects.
_ELLIPSE_PAD = 0.02

Retexture = Callable[[np.random.Generator, float], np.ndarray]


@dataclass(frozen=True)
class DefectShape:
    """Extent of a defect in its own frame (half sizes as image fractions) and how to draw it."""

    half_length: float
    half_width: float
    angle: float  # radians, direction of half_length
    margin: float  # ellipse semi-axis / defect half extent
    params: dict[str, float | np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class Ellipse:
    """A label ellipse in image fractions: centre, semi-axes along/across `angle` (radians)."""

    cx: float
    cy: float
    a: float
    b: float
    angle: float

    def local(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates (s along the major axis, t across), image fractions, each (n, n)."""
        x, y = pixel_grid(n)
        dx, dy = x - self.cx, y - self.cy
        c, s = np.float32(np.cos(self.angle)), np.float32(np.sin(self.angle))
        return dx * c + dy * s, -dx * s + dy * c

    def radius(self, n: int) -> np.ndarray:
        """Normalized elliptic radius of every pixel centre (1 on the boundary), (n, n)."""
        s, t = self.local(n)
        return np.sqrt((s / self.a) ** 2 + (t / self.b) ** 2)

    def mask(self, n: int) -> np.ndarray:
        """The label mask: uint8 (n, n), 255 inside the ellipse, 0 outside."""
        return np.where(self.radius(n) <= 1.0, 255, 0).astype(np.uint8)

    def box(self, n: int) -> tuple[slice, slice]:
        """Row and column slices of the pixels whose centres can lie inside the ellipse."""
        ex, ey = self.half_extent()
        rows = slice(max(int((self.cy - ey) * n) - 1, 0), min(int((self.cy + ey) * n) + 2, n))
        cols = slice(max(int((self.cx - ex) * n) - 1, 0), min(int((self.cx + ex) * n) + 2, n))
        return rows, cols

    def half_extent(self) -> tuple[float, float]:
        """Half width and half height of the ellipse's axis-aligned bounding box."""
        c, s = np.cos(self.angle), np.sin(self.angle)
        return float(np.hypot(self.a * c, self.b * s)), float(np.hypot(self.a * s, self.b * c))


@dataclass(frozen=True)
class DefectContext:
    """Everything a defect's draw function may use."""

    texture: Texture
    shape: DefectShape
    ellipse: Ellipse
    s: np.ndarray  # local coordinate along the defect, (n, n)
    t: np.ndarray  # local coordinate across the defect, (n, n)
    contrast: float
    retexture: Retexture  # renders the problem's texture at a scale factor


@dataclass(frozen=True)
class DefectModel:
    """A defect type: how big it is and how it changes the texture."""

    shape: Callable[[np.random.Generator, Texture, int], DefectShape]
    draw: Callable[[np.random.Generator, DefectContext], np.ndarray]


def smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    """Hermite step from 0 at `edge0` to 1 at `edge1` (either order)."""
    u = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return u * u * (3.0 - 2.0 * u)


def place_ellipse(rng: np.random.Generator, shape: DefectShape, n: int) -> Ellipse:
    """The label ellipse around `shape`, centred uniformly where it stays inside the image."""
    a = shape.half_length * shape.margin + _ELLIPSE_PAD
    b = shape.half_width * shape.margin + _ELLIPSE_PAD
    probe = Ellipse(0.0, 0.0, a, b, shape.angle)
    ex, ey = probe.half_extent()
    border = 1.0 / n
    cx = rng.uniform(ex + border, 1.0 - ex - border)
    cy = rng.uniform(ey + border, 1.0 - ey - border)
    return Ellipse(float(cx), float(cy), a, b, shape.angle)


def apply_defect(
    rng: np.random.Generator,
    model: DefectModel,
    texture: Texture,
    contrast: float,
    size_scale: float,
    retexture: Retexture,
) -> tuple[np.ndarray, Ellipse]:
    """Draw one defect of `model` into `texture`; return the new field and its label ellipse."""
    n = texture.image.shape[0]
    shape = model.shape(rng, texture, n)
    shape = replace(
        shape, half_length=shape.half_length * size_scale, half_width=shape.half_width * size_scale
    )
    ellipse = place_ellipse(rng, shape, n)
    s, t = ellipse.local(n)
    ctx = DefectContext(texture, shape, ellipse, s, t, contrast, retexture)
    drawn = model.draw(rng, ctx)
    window = smoothstep(_WINDOW_EDGE, _WINDOW_EDGE - 0.1, ellipse.radius(n))
    return texture.image + window * (drawn - texture.image), ellipse


def _blob_radius(ctx: DefectContext, aspect: float, harmonics: np.ndarray) -> np.ndarray:
    """Irregular normalized radius of a blob of half size `half_length / 1.2` (1 on its edge)."""
    r0 = ctx.shape.half_length / 1.2
    su, tu = ctx.s / r0, ctx.t / (r0 * aspect)
    psi = np.arctan2(tu, su)
    wobble = np.ones_like(psi)
    for k, (amp, phase) in enumerate(harmonics, start=2):
        wobble = wobble + amp * np.cos(k * psi + phase)
    return np.hypot(su, tu) * wobble


def _blob_shape(
    rng: np.random.Generator, r_range: tuple[float, float], margin: tuple[float, float]
) -> DefectShape:
    """An irregular blob: radius, aspect, three boundary harmonics (extent rarely beyond 1.2 r)."""
    r0 = rng.uniform(*r_range)
    aspect = rng.uniform(0.55, 1.0)
    harmonics = np.stack([rng.uniform(-0.09, 0.09, 3), rng.uniform(0, 2 * np.pi, 3)], axis=1)
    return DefectShape(
        1.2 * r0, 1.2 * r0 * aspect, rng.uniform(0, np.pi), rng.uniform(*margin),
        {"aspect": aspect, "harmonics": harmonics},
    )


# --- scratch: a thin curved bright or dark line across the grain --------------------------------


def _scratch_shape(rng: np.random.Generator, texture: Texture, n: int) -> DefectShape:
    """A 0.3-0.54 image-long arc, 1.5-2.5 px wide at 128 px, crossing the grain at 35-90 degrees."""
    half_len = rng.uniform(0.15, 0.27)
    bulge = half_len * rng.uniform(-0.22, 0.22)
    width = max(rng.uniform(0.012, 0.02), 1.0 / n)
    cross = np.deg2rad(rng.uniform(35.0, 90.0)) * rng.choice([-1.0, 1.0])
    return DefectShape(
        half_len, abs(bulge) / 2 + 2 * width, texture.angle + cross, rng.uniform(1.15, 1.3),
        {"bulge": bulge, "width": width},
    )


def _scratch_draw(rng: np.random.Generator, ctx: DefectContext) -> np.ndarray:
    """Gaussian line profile along a parabolic arc, tapered at both ends."""
    n = ctx.s.shape[0]
    half_len, bulge = ctx.shape.half_length, float(ctx.shape.params["bulge"])
    sigma = max(float(ctx.shape.params["width"]) / 2, 0.6 / n)  # below 0.6 px the line aliases
    sn = ctx.s / half_len
    dist = (ctx.t - bulge * (0.5 - sn**2)) / np.sqrt(1.0 + (2.0 * bulge * ctx.s / half_len**2) ** 2)
    line = np.exp(-0.5 * (dist / sigma) ** 2) * smoothstep(1.0, 0.75, np.abs(sn))
    # real scratches are uneven along their length
    line *= 0.75 + 0.25 * np.cos(2 * np.pi * rng.uniform(1.0, 3.0) * sn + rng.uniform(0, 2 * np.pi))
    polarity = 1.0 if rng.random() < 0.6 else -1.0
    return ctx.texture.image + polarity * ctx.contrast * rng.uniform(4.5, 5.5) * line


# --- stain: a soft dark blob with a darker rim ---------------------------------------------------


def _stain_shape(rng: np.random.Generator, texture: Texture, n: int) -> DefectShape:
    """An irregular blob 0.11-0.2 of the image across."""
    return _blob_shape(rng, (0.055, 0.10), (1.25, 1.5))


def _stain_draw(rng: np.random.Generator, ctx: DefectContext) -> np.ndarray:
    """Cover the texture with a dark film, darker at the rim (a dried-liquid edge).

    The film mostly hides the tone beneath, so a stain is darker than the darkest natural blotch
    wherever it lands; lower `contrast` lets the blotches show through and lightens it.
    """
    r = _blob_radius(ctx, float(ctx.shape.params["aspect"]), ctx.shape.params["harmonics"])
    body = smoothstep(1.0, 0.8, r)
    rim = np.exp(-(((r - 0.92) / 0.08) ** 2))
    depth = ctx.contrast * rng.uniform(2.6, 3.2)
    cover = 0.7 * min(ctx.contrast, 1.0)
    return ctx.texture.image * (1.0 - cover * body) - depth * (body + 0.4 * rim)


# --- missing thread: one thread of the weave absent over a stretch -------------------------------


def _thread_shape(rng: np.random.Generator, texture: Texture, n: int) -> DefectShape:
    """A stretch 0.2-0.4 of the image long, along the warp or the weft."""
    along_warp = rng.random() < 0.5
    angle = texture.angle + (np.pi / 2 if along_warp else 0.0)
    return DefectShape(
        rng.uniform(0.10, 0.20), texture.period, angle, rng.uniform(1.15, 1.3),
        {"along_warp": float(along_warp)},
    )


def _thread_draw(rng: np.random.Generator, ctx: DefectContext) -> np.ndarray:
    """Replace the thread through the centre by the shadowed thread layer beneath it."""
    n = ctx.s.shape[0]
    along_warp = bool(ctx.shape.params["along_warp"])
    index = ctx.texture.layers["warp_index" if along_warp else "weft_index"]
    beneath = ctx.texture.layers["weft" if along_warp else "warp"]
    row = min(int(ctx.ellipse.cy * n), n - 1)
    col = min(int(ctx.ellipse.cx * n), n - 1)
    gap = (index == index[row, col]) * smoothstep(1.0, 0.85, np.abs(ctx.s) / ctx.shape.half_length)
    strength = min(ctx.contrast, 1.0)
    target = 0.4 * beneath - 2.3 * max(ctx.contrast, 1.0) * rng.uniform(0.9, 1.1)
    return ctx.texture.image + strength * gap * (target - ctx.texture.image)


# --- pit cluster: a few small dark pits with a highlight on one side ----------------------------


def _pits_shape(rng: np.random.Generator, texture: Texture, n: int) -> DefectShape:
    """A cluster 0.11-0.2 of the image across holding 4-9 pits of 1.2-2 px radius at 128 px."""
    extent = rng.uniform(0.055, 0.10)
    aspect = rng.uniform(0.5, 0.95)
    count = int(rng.integers(5, 11))
    radii = np.maximum(rng.uniform(0.012, 0.02, count), 1.3 / n)
    r = np.sqrt(rng.random(count))
    phi = rng.uniform(0, 2 * np.pi, count)
    centres = np.stack([r * np.cos(phi), r * np.sin(phi)], axis=1)  # unit disk, scaled when drawn
    return DefectShape(
        extent, extent * aspect, rng.uniform(0, np.pi), rng.uniform(1.25, 1.5),
        {"radii": radii, "centres": centres},
    )


def _pits_draw(rng: np.random.Generator, ctx: DefectContext) -> np.ndarray:
    """Flat-bottomed dark pits, each with a small highlight towards one light direction."""
    radii = np.asarray(ctx.shape.params["radii"])
    room = np.array([ctx.shape.half_length, ctx.shape.half_width]) - radii.max()
    centres = np.asarray(ctx.shape.params["centres"]) * np.maximum(room, 0.0)
    light = rng.uniform(0, 2 * np.pi)
    lx, ly = np.cos(light), np.sin(light)
    depth = ctx.contrast * rng.uniform(4.5, 6.0)
    box = ctx.ellipse.box(ctx.s.shape[0])  # pits are many small stamps: only touch the label box
    s, t = ctx.s[box], ctx.t[box]
    hole = np.zeros_like(s)
    glints = np.zeros_like(s)
    for (cs, ct), rho in zip(centres, radii):
        d = np.hypot(s - cs, t - ct) / rho
        glint = np.hypot(s - cs - 1.1 * rho * lx, t - ct - 1.1 * rho * ly) / (0.45 * rho)
        hole = np.maximum(hole, np.exp(-(d**4)))  # overlapping pits merge, they do not deepen
        glints += np.exp(-(glint**2))
    drawn = ctx.texture.image.copy()
    drawn[box] += depth * (0.3 * np.minimum(glints, 1.0) * (1.0 - hole) - hole)
    return drawn


# --- bright spot: a compact bright core with a soft halo -----------------------------------------


def _spot_shape(rng: np.random.Generator, texture: Texture, n: int) -> DefectShape:
    """A spot whose halo is 0.16-0.26 of the image across (core about half of that)."""
    extent = rng.uniform(0.08, 0.13)
    return DefectShape(
        extent, extent * rng.uniform(0.6, 1.0), rng.uniform(0, np.pi), rng.uniform(1.15, 1.3)
    )


def _spot_draw(rng: np.random.Generator, ctx: DefectContext) -> np.ndarray:
    """Brighten a core and, more weakly, a halo; the core is smoother than the surface around it."""
    r = np.hypot(ctx.s / ctx.shape.half_length, ctx.t / ctx.shape.half_width)
    core = smoothstep(0.62, 0.47, r)
    halo = np.exp(-((r / 0.55) ** 2))
    height = ctx.contrast * rng.uniform(4.0, 5.0)
    return ctx.texture.image * (1.0 - 0.5 * core) + height * (0.7 * core + 0.3 * halo)


# --- rough patch: the texture locally at a much finer scale --------------------------------------


def _rough_shape(rng: np.random.Generator, texture: Texture, n: int) -> DefectShape:
    """An irregular patch 0.16-0.24 of the image across."""
    return _blob_shape(rng, (0.08, 0.12), (1.15, 1.3))


def _rough_draw(rng: np.random.Generator, ctx: DefectContext) -> np.ndarray:
    """Blend in the problem's own texture rendered 3-4x finer, coarser in contrast and darker."""
    r = _blob_radius(ctx, float(ctx.shape.params["aspect"]), ctx.shape.params["harmonics"])
    body = smoothstep(1.0, 0.75, r)
    fine = 1.4 * ctx.retexture(rng, rng.uniform(3.0, 4.0))
    strength = min(ctx.contrast, 1.0)
    change = strength * (fine - ctx.texture.image) - 1.4 * ctx.contrast
    return ctx.texture.image + body * change


DEFECTS: dict[str, DefectModel] = {
    "scratch": DefectModel(_scratch_shape, _scratch_draw),
    "stain": DefectModel(_stain_shape, _stain_draw),
    "missing_thread": DefectModel(_thread_shape, _thread_draw),
    "pit_cluster": DefectModel(_pits_shape, _pits_draw),
    "bright_spot": DefectModel(_spot_shape, _spot_draw),
    "rough_patch": DefectModel(_rough_shape, _rough_draw),
}


# --- harmless deviations (defect-free images) ----------------------------------------------------


def _soft_region(rng: np.random.Generator, n: int) -> np.ndarray:
    """A broad Gaussian weight (sigma 0.2-0.35 of the image) centred anywhere, (n, n) in [0, 1]."""
    x, y = pixel_grid(n)
    cx, cy, sigma = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.2, 0.35)
    return np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma**2))


def deviate(rng: np.random.Generator, image: np.ndarray, retexture: Retexture) -> np.ndarray:
    """Apply one harmless deviation: light ramp, broad tone or contrast shift, texture change."""
    n = image.shape[0]
    kind = int(rng.integers(4))
    if kind == 0:
        x, y = pixel_grid(n)
        d = rng.uniform(0, 2 * np.pi)
        ramp = (x - 0.5) * np.cos(d) + (y - 0.5) * np.sin(d)
        return image + rng.uniform(2.0, 3.5) * ramp
    region = _soft_region(rng, n)
    if kind == 1:
        return image + rng.choice([-1.0, 1.0]) * rng.uniform(0.8, 1.4) * region
    if kind == 2:
        return image * (1.0 + rng.choice([-0.35, 0.45]) * region)
    # a slightly different texture over a broad area: same family, 15-30 % finer or coarser
    other = retexture(rng, float(rng.choice([rng.uniform(0.7, 0.87), rng.uniform(1.15, 1.3)])))
    return image + 0.8 * region * (other - image)
