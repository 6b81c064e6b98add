"""The items the ingest dataflow hands to the store: one small record per change.

They are plain frozen dataclasses so Bytewax can pickle them and the store can be
tested without a dataflow.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SettingsChange:
    """An athlete's newer settings; the store applies "hide more" to stored activities."""

    athlete_id: str
    updated_ms: int
    opt_out: bool
    hide_start_end_m: float  # the athlete's effective default (config default if unset)
    zones: tuple[tuple[float, float, float], ...]  # effective (jittered) lat, lng, radius_m


@dataclass(frozen=True, slots=True)
class ActivityChange:
    """The trimmed form of an activity version (``path`` empty when it contributes nothing).

    ``status`` is ``active`` (contributes), ``hidden`` (not public / hide_map),
    ``opted_out`` (athlete opted out) or ``empty`` (no usable fix survived).
    """

    activity_id: str
    athlete_id: str
    updated_ms: int
    status: str
    sport_type: str
    layer: str
    commute: bool
    start_s: int
    utc_offset_s: int
    month: str  # local start month, YYYY-MM
    hide_override_m: float | None  # the activity's own hide distance, if it set one
    cut_start_m: float
    cut_end_m: float
    zone_key: str  # JSON list of the effective zones applied
    path: bytes  # PATH_DTYPE
    heat: bytes  # HEAT_DTYPE, this activity's cells (n = 1 each)
    edges: bytes  # EDGE_DTYPE crossings
    hexagons: bytes  # HEX_DTYPE
    od: bytes  # OD_DTYPE (one row, or none)
    fixes_in: int
    fixes_kept: int
    max_speed_ms: float
    # GPS faults cleaned away (``heatmetro.flows.clean``); stored per activity version, so
    # a replay or a re-run after a crash leaves the same counts.
    spike_fixes: int = 0
    bad_end_fixes: int = 0
    vehicle_fixes: int = 0
    vehicle_stretches: int = 0
    pause_splits: int = 0
    overlong_fixes: int = 0  # beyond the longest track one activity draws (core.limits)
    clock_resets: int = 0  # steps back in time taken as resets (core.clock)
    wrong_time_fixes: int = 0  # fixes dropped for a wrong time (core.clock)
    streets: bytes = b""  # STREET_DTYPE (state.street_ops), with a base map only
    metro_path: bytes = b""  # PATH_DTYPE at the Metro resolution (crossings by hysteresis)


@dataclass(frozen=True, slots=True)
class ActivityDelete:
    activity_id: str
    athlete_id: str
    updated_ms: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record that broke the contract (or could not be processed), with its position."""

    source: str
    position: int
    reason: str
    raw: str


StoreItem = SettingsChange | ActivityChange | ActivityDelete | DeadLetter
