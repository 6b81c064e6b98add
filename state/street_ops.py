"""An activity's matched street sequence (``STREET_DTYPE``) and trimming it further.

One row per street edge the trimmed track travelled, in order: the edge's stable key
(see ``street_network.edge_key``), whether it went the way's digitised direction, and
when it entered and left the edge (seconds since ``start_date``) and its speed there.
Like the H3 path it is derived only from points that survived privacy trimming.

When an athlete hides more later, the raw points are gone, so the cut is made on the
sequence, always erring on the side of removing more: a whole edge goes as soon as
any part of it touches a new zone or lies in the newly hidden start/end.
"""

from __future__ import annotations

import numpy as np

from heatmetro.state.settings import EffectiveZone
from heatmetro.state.street_network import StreetNetwork

STREET_DTYPE = np.dtype(
    [("edge", "<u8"), ("fwd", "u1"), ("t", "<f4"), ("t_out", "<f4"), ("v", "<f4")]
)


def drop_zone_edges(
    streets: np.ndarray, net: StreetNetwork, zones: tuple[EffectiveZone, ...]
) -> np.ndarray:
    """Remove every visit to an edge whose polyline comes within a zone."""
    if not zones or len(streets) == 0:
        return streets
    idx = net.index_of(streets["edge"])
    bad = idx < 0  # an edge the current base map lacks cannot be checked: drop it
    touching = np.zeros(len(net), dtype=bool)
    for z in zones:
        touching |= net.edges_touching(z.lat, z.lng, z.radius_m)
    bad |= touching[np.maximum(idx, 0)]
    return streets[~bad]


def cut_street_ends(streets: np.ndarray, t_first: float, t_last: float) -> np.ndarray:
    """Keep the visits lying wholly within ``[t_first, t_last]`` (the times the stored
    H3 path still covers after its ends were cut)."""
    if len(streets) == 0:
        return streets
    keep = (streets["t"] >= np.float32(t_first)) & (streets["t_out"] <= np.float32(t_last))
    return streets[keep]


def recut_streets(
    blob: bytes | None,
    old_path: np.ndarray,
    cut: np.ndarray,
    extra_start_m: float,
    extra_end_m: float,
    new_zones: tuple[EffectiveZone, ...],
    net: StreetNetwork | None,
) -> bytes | None:
    """``blob`` after an athlete hid more: ends cut like the H3 path, new zones removed.

    ``old_path`` is the stored H3 path before this cut and ``cut`` the same with its
    ends cut (``HidePlan.cut_ends``): the visits outside the times it still covers are
    dropped.
    """
    if not blob:
        return blob
    streets = np.frombuffer(blob, dtype=STREET_DTYPE).copy()
    if extra_start_m > 0 or extra_end_m > 0:
        t_first, t_last = -np.inf, np.inf
        if len(cut) == 0:
            t_first = np.inf
        else:
            if extra_start_m > 0:
                t_first = float(cut["t"][0])
            if extra_end_m > 0:
                later = old_path["t"][old_path["t"] > cut["t"][-1]]
                t_last = float(later.min()) if len(later) else np.inf
        streets = cut_street_ends(streets, t_first, t_last)
    if new_zones:
        if net is None:  # the base map was removed from the config: cannot check, drop all
            streets = streets[:0]
        else:
            streets = drop_zone_edges(streets, net, new_zones)
    return streets.tobytes()
