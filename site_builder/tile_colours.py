"""Colour schemes of the heat: the "hot" ramp baked into the tiles and the others made from it.

Tiles are drawn once, in "hot". The other schemes (blue, purple, gray, bluered) are real
palettes applied in the browser by an SVG filter on the heat pane: the filter copies the
tiles' green channel, which rises strictly with intensity in the hot ramp, into every
channel, then looks each value up in the scheme's table (``feComponentTransfer``). One
tile set therefore serves five palettes, and a palette is a few hundred bytes of page,
not a second pyramid.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "MIN_ALPHA",
    "MIN_INTENSITY",
    "ON_LIGHT",
    "SCHEMES",
    "SCHEME_LABELS",
    "heat_ramp",
    "levels_to_rgba",
    "scheme_gradient",
    "scheme_tables",
]

#: Lowest intensity any published cell gets: the quietest street must still be seen.
MIN_INTENSITY = 0.25
#: Alpha of the faintest heat pixel; the top of the ramp is opaque.
MIN_ALPHA = 150

Stops = tuple[tuple[float, int, int, int], ...]

#: Colour stops by intensity (MIN_INTENSITY..1) of each scheme, dimmest first.
SCHEMES: dict[str, Stops] = {
    # dark red, red, orange, yellow, near-white: what the tiles hold
    "hot": (
        (0.25, 110, 0, 0),
        (0.40, 190, 10, 0),
        (0.55, 240, 60, 0),
        (0.70, 255, 140, 0),
        (0.85, 255, 215, 40),
        (1.00, 255, 255, 225),
    ),
    "blue": ((0.25, 0, 30, 120), (0.50, 0, 90, 220), (0.75, 40, 170, 255), (1.00, 225, 250, 255)),
    "purple": (
        (0.25, 70, 0, 100),
        (0.50, 140, 30, 190),
        (0.75, 205, 90, 240),
        (1.00, 255, 225, 255),
    ),
    "gray": ((0.25, 80, 80, 80), (1.00, 255, 255, 255)),
    # diverging: quiet streets blue, busy ones red
    "bluered": (
        (0.25, 30, 80, 230),
        (0.55, 150, 60, 200),
        (0.80, 235, 40, 90),
        (1.00, 255, 20, 20),
    ),
}
# Schemes drawn otherwise on a light ground (a basemap under the heat): their near-white
# tops, made for the dark ground, would vanish into a street map's paper (242, 239, 233:
# about 1.1:1), so the busiest streets would be the faintest. On the paper they deepen
# instead, and the busiest street is the darkest (~7:1).
ON_LIGHT: dict[str, Stops] = {
    "hot": (
        (0.25, 255, 170, 40),
        (0.45, 250, 125, 15),
        (0.65, 240, 70, 10),
        (0.85, 210, 25, 15),
        (1.00, 175, 0, 30),
    ),
    "blue": ((0.25, 90, 170, 255), (0.60, 20, 90, 220), (1.00, 10, 30, 140)),
    "purple": ((0.25, 210, 130, 240), (0.60, 150, 40, 200), (1.00, 85, 0, 120)),
    "gray": ((0.25, 170, 170, 170), (1.00, 20, 20, 20)),
}
SCHEME_LABELS: dict[str, str] = {
    "hot": "Hot",
    "blue": "Blue",
    "purple": "Purple",
    "gray": "Gray",
    "bluered": "Blue-red",
}


def _interp(stops: Stops, t: np.ndarray) -> np.ndarray:
    s = np.array(stops, dtype=np.float64)
    return np.stack([np.interp(t, s[:, 0], s[:, c + 1]) for c in range(3)], axis=-1)


def heat_ramp() -> np.ndarray:
    """The tiles' colour table: ``(256, 4)`` uint8 RGBA indexed by ``round(255 * intensity)``.

    Index 0 is exactly transparent ``(0, 0, 0, 0)``; indices below ``255 * MIN_INTENSITY``
    are never drawn but still get the darkest colour so the table has no holes.
    """
    t = np.arange(256, dtype=np.float64) / 255.0
    lut = np.empty((256, 4), dtype=np.uint8)
    lut[:, :3] = np.rint(_interp(SCHEMES["hot"], t))
    frac = np.clip((t - MIN_INTENSITY) / (1.0 - MIN_INTENSITY), 0.0, 1.0)
    lut[:, 3] = np.rint(MIN_ALPHA + (255 - MIN_ALPHA) * frac)
    lut[0] = 0
    return lut


LUT = heat_ramp()
# Each RGBA entry as one uint32: gathering 4-byte words is ~10x faster than a (256, 4) table.
_LUT32 = np.ascontiguousarray(LUT).view(np.uint32).reshape(256)


def levels_to_rgba(levels: np.ndarray) -> np.ndarray:
    """Colour an array of ramp indices: ``(..., 4)`` uint8 RGBA, as the tiles decode."""
    return _LUT32[levels].view(np.uint8).reshape(*levels.shape, 4)


def scheme_tables(
    scheme: str, steps: int = 64, *, light: bool = False
) -> tuple[list[float], list[float], list[float]]:
    """``feComponentTransfer`` tables (R, G, B in 0..1) that turn hot tiles into ``scheme``
    (its ``ON_LIGHT`` form with ``light``: a basemap under the heat).

    Entry ``i`` answers the hot green value ``i / steps``: the intensity with that green in
    the hot ramp, coloured by the scheme.
    """
    hot = np.array(SCHEMES["hot"], dtype=np.float64)
    green = np.linspace(0.0, 255.0, steps + 1)
    t = np.interp(green, hot[:, 2], hot[:, 0])  # the hot ramp's green rises strictly
    rgb = _interp(_stops(scheme, light), t) / 255.0
    return tuple(np.round(rgb[:, c], 3).tolist() for c in range(3))  # type: ignore[return-value]


def scheme_gradient(scheme: str, *, light: bool = False) -> str:
    """A CSS ``linear-gradient`` of the scheme, for the legend."""
    colours = ", ".join(
        f"rgb({r}, {g}, {b}) {100 * (t - MIN_INTENSITY) / (1 - MIN_INTENSITY):.0f}%"
        for t, r, g, b in _stops(scheme, light)
    )
    return f"linear-gradient(to right, {colours})"


def _stops(scheme: str, light: bool) -> Stops:
    return ON_LIGHT.get(scheme, SCHEMES[scheme]) if light else SCHEMES[scheme]
