"""Texture families of the synthetic DAGM generator.

Every texture is a float32 (n, n) field of zero-ish mean whose fine, local fluctuation has a
standard deviation of about 1; defects and deviations are expressed in that unit. Spatial scales
are in cycles per image (or fractions of the image side), so a 512 px image is a finer-sampled
version of a 128 px one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class Texture:
    """A rendered texture field plus what defect models need to know about its structure."""

    image: np.ndarray  # float32 (n, n)
    angle: float = 0.0  # dominant orientation in radians (grain, thread direction)
    period: float = 0.0  # repeat length as an image fraction, for periodic textures
    layers: dict[str, np.ndarray] = field(default_factory=dict)  # named sub-renderings


TextureFn = Callable[[np.random.Generator, int, float, float], Texture]


@lru_cache(maxsize=8)
def pixel_grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (x, y) in [0, 1], each float32 (n, n), read-only."""
    c = (np.arange(n, dtype=np.float32) + 0.5) / n
    y, x = np.meshgrid(c, c, indexing="ij")
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


@lru_cache(maxsize=8)
def _freq_grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Frequencies of an rfft2 spectrum in cycles per image: fx (1, n//2+1), fy (n, 1)."""
    fy = np.fft.fftfreq(n, 1.0 / n)[:, None]
    fx = np.fft.rfftfreq(n, 1.0 / n)[None, :]
    return fx, fy


def spectral_noise(
    rng: np.random.Generator,
    n: int,
    amplitude: Callable[[np.ndarray, np.ndarray], np.ndarray],
    oversample: int = 1,
) -> np.ndarray:
    """White noise shaped by `amplitude(fx, fy)` (cycles/image), standardized, float32 (n, n).

    `oversample` > 1 filters a larger periodic canvas and crops it: oblique structures on a torus
    must bend somewhere, and this moves the bend out of the image.
    """
    m = n * oversample
    fx, fy = _freq_grid(m)
    # complex Gaussian coefficients are the spectrum of white noise: one FFT instead of two
    shape = (m, m // 2 + 1)
    spectrum = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    spectrum *= amplitude(fx / oversample, fy / oversample)
    spectrum[0, 0] = 0.0
    field_ = np.fft.irfft2(spectrum, s=(m, m))[:n, :n].astype(np.float32)
    field_ -= field_.mean()
    return field_ / max(float(field_.std()), 1e-6)


def gaussian_lowpass(sigma: float) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Isotropic Gaussian amplitude with `sigma` cycles per image."""
    return lambda fx, fy: np.exp(-0.5 * (fx**2 + fy**2) / sigma**2)


def _rotated(fx: np.ndarray, fy: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Frequencies along and across the direction `angle`."""
    c, s = np.cos(angle), np.sin(angle)
    return fx * c + fy * s, -fx * s + fy * c


def brushed_metal(rng: np.random.Generator, n: int, scale: float, angle_deg: float) -> Texture:
    """Directional grain: noise that varies slowly along the brushing direction, fast across it."""
    angle = np.deg2rad(angle_deg + rng.uniform(-12.0, 12.0))
    along_sigma = rng.uniform(0.8, 1.6) * scale
    across_sigma = rng.uniform(45.0, 60.0) * scale

    def grain_amp(fx: np.ndarray, fy: np.ndarray) -> np.ndarray:
        along, across = _rotated(fx, fy, angle)
        return np.exp(-0.5 * (along / along_sigma) ** 2 - 0.5 * (across / across_sigma) ** 2)

    grain = spectral_noise(rng, n, grain_amp, oversample=2)
    sheen = spectral_noise(rng, n, gaussian_lowpass(2.5))
    image = grain + rng.uniform(0.3, 0.5) * sheen
    return Texture(image.astype(np.float32), angle=float(angle))


def blotchy(rng: np.random.Generator, n: int, scale: float, angle_deg: float) -> Texture:
    """Cloudy low-frequency blotches with a fine grain on top."""
    f0 = rng.uniform(2.5, 4.0) * scale
    blotch = spectral_noise(rng, n, lambda fx, fy: (1.0 + (fx**2 + fy**2) / f0**2) ** -1.4)
    grain = spectral_noise(rng, n, gaussian_lowpass(40.0 * scale))
    # tanh sharpens blotch borders so they look like patches, not fog
    image = 1.3 * np.tanh(1.2 * blotch) + rng.uniform(0.5, 0.7) * grain
    return Texture(image.astype(np.float32))


def fine_speckle(rng: np.random.Generator, n: int, scale: float, angle_deg: float) -> Texture:
    """Fine isotropic speckle over a faint low-frequency shading."""
    speckle = spectral_noise(rng, n, gaussian_lowpass(rng.uniform(34.0, 44.0) * scale))
    shade = spectral_noise(rng, n, gaussian_lowpass(3.0))
    image = speckle + rng.uniform(0.3, 0.6) * shade
    return Texture(image.astype(np.float32))


def gradient_mottle(rng: np.random.Generator, n: int, scale: float, angle_deg: float) -> Texture:
    """A smooth brightness gradient, broad shading and a soft mid-frequency mottling."""
    x, y = pixel_grid(n)
    direction = rng.uniform(0.0, 2.0 * np.pi)
    ramp = (x - 0.5) * np.cos(direction) + (y - 0.5) * np.sin(direction)
    shade = spectral_noise(rng, n, gaussian_lowpass(1.8))
    f0 = rng.uniform(8.0, 12.0) * scale
    mottle = spectral_noise(
        rng, n, lambda fx, fy: np.exp(-0.5 * ((np.hypot(fx, fy) - f0) / (0.5 * f0)) ** 2)
    )
    grain = spectral_noise(rng, n, gaussian_lowpass(45.0 * scale))
    image = rng.uniform(2.5, 4.0) * ramp + 0.8 * shade + 0.6 * mottle + 0.35 * grain
    return Texture(image.astype(np.float32))


def woven(rng: np.random.Generator, n: int, scale: float, angle_deg: float) -> Texture:
    """Plain weave: two perpendicular thread sets alternating over/under, with jitter."""
    x, y = pixel_grid(n)
    angle = np.deg2rad(angle_deg + rng.uniform(-6.0, 6.0))
    period = 1.0 / (rng.uniform(14.0, 17.0) * scale)  # image fraction per thread
    # thread coordinates (one unit per thread), gently bent as in real cloth
    u = (x * np.cos(angle) + y * np.sin(angle)) / period
    v = (-x * np.sin(angle) + y * np.cos(angle)) / period
    u = u + 0.12 * spectral_noise(rng, n, gaussian_lowpass(3.0))
    v = v + 0.12 * spectral_noise(rng, n, gaussian_lowpass(3.0))
    iu, iv = np.floor(u).astype(np.int32), np.floor(v).astype(np.int32)
    fu, fv = u - iu, v - iv
    tone_u = rng.normal(0.0, 0.35, size=int(iu.max() - iu.min()) + 1).astype(np.float32)
    tone_v = rng.normal(0.0, 0.35, size=int(iv.max() - iv.min()) + 1).astype(np.float32)
    # a thread is bright at its axis and dark at its edges; it arches along its length
    warp = 3.0 * np.sin(np.pi * fu) ** 0.7 * (0.75 + 0.25 * np.sin(np.pi * fv)) - 1.5
    weft = 3.0 * np.sin(np.pi * fv) ** 0.7 * (0.75 + 0.25 * np.sin(np.pi * fu)) - 1.5
    warp = warp + tone_u[iu - iu.min()]
    weft = weft + tone_v[iv - iv.min()]
    warp_on_top = (iu + iv) % 2 == 0
    fibre = spectral_noise(rng, n, gaussian_lowpass(50.0 * scale))
    image = np.where(warp_on_top, warp, weft) + 0.35 * fibre
    layers = {"warp": warp, "weft": weft, "warp_index": iu, "weft_index": iv}
    return Texture(image.astype(np.float32), float(angle), float(period), layers)


def voronoi_distances(
    rng: np.random.Generator, n: int, cells: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest and second-nearest seed distance (cell units) and nearest seed id, each (n, n)."""
    x, y = pixel_grid(n)
    side = cells + 2  # one ring of extra cells so border pixels see all their neighbours
    jitter = rng.uniform(0.1, 0.9, size=(side, side, 2)).astype(np.float32)
    grid = np.arange(-1, cells + 1, dtype=np.float32)
    seed_y = (grid[:, None] + jitter[..., 0]).ravel()
    seed_x = (grid[None, :] + jitter[..., 1]).ravel()
    gx, gy = x * cells, y * cells
    home = (np.floor(gy).astype(np.int32) + 1) * side + np.floor(gx).astype(np.int32) + 1
    f1 = np.full(gx.shape, np.inf, dtype=np.float32)
    f2 = f1.copy()
    nearest = np.zeros(gx.shape, dtype=np.int32)
    # a running two-smallest over the 3x3 neighbour cells; cheaper than sorting nine candidates
    for offset in (dy * side + dx for dy in (-1, 0, 1) for dx in (-1, 0, 1)):
        idx = home + offset
        d = np.hypot(gx - seed_x.take(idx), gy - seed_y.take(idx))
        closer = d < f1
        np.minimum(f2, d, out=f2)
        f2[closer] = f1[closer]
        f1[closer] = d[closer]
        nearest[closer] = idx[closer]
    return f1, f2, nearest


def cellular(rng: np.random.Generator, n: int, scale: float, angle_deg: float) -> Texture:
    """Cracked surface: Voronoi cells of varied tone separated by thin dark cracks."""
    cells = int(round(rng.uniform(6.0, 8.0) * scale))
    f1, f2, nearest = voronoi_distances(rng, n, cells)
    tone = rng.normal(0.0, 0.7, size=(cells + 2) ** 2).astype(np.float32)[nearest]
    crack_width = 0.9 / n * cells + 0.03  # at least ~1 px wide whatever the cell count
    crack = np.exp(-(((f2 - f1) / crack_width) ** 2))
    grain = spectral_noise(rng, n, gaussian_lowpass(40.0))
    image = tone - 0.5 * f1 - 2.6 * crack + 0.45 * grain + 0.6  # + 0.6: cracks pull the mean down
    return Texture(image.astype(np.float32))


TEXTURES: dict[str, TextureFn] = {
    "brushed_metal": brushed_metal,
    "blotchy": blotchy,
    "woven": woven,
    "fine_speckle": fine_speckle,
    "gradient_mottle": gradient_mottle,
    "cellular": cellular,
}
