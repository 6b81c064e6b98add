"""Sport types (the platform's names): which layer they draw in and how fast they can go."""

from __future__ import annotations

import re

_LAYER = {
    "ride": (
        "Ride",
        "GravelRide",
        "MountainBikeRide",
        "EBikeRide",
        "EMountainBikeRide",
        "VirtualRide",
        "Velomobile",
        "Handcycle",
        "Wheelchair",
    ),
    "run": ("Run", "TrailRun", "VirtualRun", "Walk", "Hike"),
    "water": (
        "Kayaking",
        "Canoeing",
        "Rowing",
        "StandUpPaddling",
        "Swim",
        "Surfing",
        "Kitesurf",
        "Windsurf",
        "Sail",
    ),
    "winter": (
        "AlpineSki",
        "BackcountrySki",
        "NordicSki",
        "Snowboard",
        "Snowshoe",
        "IceSkate",
    ),
}
SPORT_LAYER = {sport: layer for layer, sports in _LAYER.items() for sport in sports}

# Fastest plausible speed (m/s) per layer; a fix implying more is a GPS teleport.
# Generous on purpose: a descent on a bike or skis is fast, a bad fix is far faster.
_MAX_SPEED = {"ride": 30.0, "run": 12.0, "water": 15.0, "winter": 45.0, "other": 60.0}
_MAX_SPEED_SPORT = {"EBikeRide": 20.0, "Walk": 5.0, "Hike": 5.0, "Swim": 4.0}


_BY_KEY = {re.sub(r"[\s_-]", "", sport).lower(): sport for sport in SPORT_LAYER}


def canonical_sport(sport_type: str) -> str:
    """The platform's name of a sport written in another case or spacing (``walk``,
    `` Ride ``, ``mountain_bike_ride``, ``E-Bike Ride``); an unknown name, trimmed. Taken
    as written, ``walk`` would be an unknown type: no walking speed limit (a train ride
    recorded as a walk would be drawn) and no layer but ``all``."""
    name = sport_type.strip()
    return _BY_KEY.get(re.sub(r"[\s_-]", "", name).lower(), name)


def layer_of(sport_type: str) -> str:
    """The sport layer an activity draws in; unknown types count in ``all`` only."""
    return SPORT_LAYER.get(sport_type, "other")


def max_speed_ms(sport_type: str) -> float:
    return _MAX_SPEED_SPORT.get(sport_type, _MAX_SPEED[layer_of(sport_type)])


#: Every sport type heatmetro knows by name (the others count in ``all`` only).
KNOWN_SPORTS = tuple(sport for sports in _LAYER.values() for sport in sports)
#: Per-sport layers built when the config does not say (``sport_layers``): the sports whose
#: places differ most from their group's (trails, gravel roads) and are asked for most.
DEFAULT_SPORT_LAYERS = ("TrailRun", "MountainBikeRide", "GravelRide", "Hike")
#: The layer of activity parts recorded between sunset and sunrise.
NIGHT_LAYER = "night"


def sport_layer(sport_type: str) -> str:
    """The per-sport layer name of a sport type: ``sport_trailrun`` for ``TrailRun``.

    Lower case, like every layer name: it is a folder in tile URLs, and static hosts
    differ on whether ``TrailRun`` and ``trailrun`` are the same path.
    """
    return f"sport_{sport_type.lower()}"


def sport_label(sport_type: str) -> str:
    """``MountainBikeRide`` -> ``Mountain Bike Ride`` (for the layer switcher)."""
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", sport_type)


#: Labels of every possible per-sport layer, in the order the page lists them.
SPORT_LAYER_LABELS = {sport_layer(s): sport_label(s) for s in KNOWN_SPORTS}
# E-bikes count in the ride layer but are published apart (``ebike_ride_count``): planners
# size lanes and parking differently for them.
EBIKE_SPORTS = frozenset({"EBikeRide", "EMountainBikeRide"})


def is_ebike(sport_type: str) -> bool:
    return sport_type in EBIKE_SPORTS
