"""Every Metro column and file, named and described once.

The writers take their headers from here and the data dictionary (``metro/README.md``)
is rendered from the same lists, so the dictionary cannot drift from the files.
"""

from __future__ import annotations

from dataclasses import dataclass

from heatmetro.site_builder.metro_tables import BANDS

DIRECTIONS = ("forward", "reverse")
HOURS = range(24)


@dataclass(frozen=True)
class Column:
    """One published column and its data-dictionary entry."""

    name: str
    description: str


def _pair(stem: str, text: str) -> list[Column]:
    return [
        Column(f"{d}_{stem}", f"{text}, {d} ({'a to b' if d == 'forward' else 'b to a'})")
        for d in DIRECTIONS
    ]


def direction_columns(*, with_bands: bool) -> list[Column]:
    """Per-direction count columns shared by the edge files."""
    cols = [
        *_pair("trip_count", "Trips over the segment"),
        *_pair("people_count", "Distinct people who made those trips"),
        Column("total_trip_count", "forward_trip_count + reverse_trip_count (empty counts as 0)"),
        *_pair("commute_trip_count", "Trips flagged as commutes"),
        *_pair("leisure_trip_count", "Trips not flagged as commutes"),
        *_pair("ride_count", "Bike rides other than e-bike rides (ride layer)"),
        *_pair("ebike_ride_count", "E-bike rides (EBikeRide, EMountainBikeRide)"),
    ]
    if with_bands:
        for name, start, end in BANDS:
            cols += _pair(
                f"{name}_trip_count", f"Trips crossing between {start:02d}:00 and {end:02d}:00"
            )
    cols += _pair("average_speed_kmh", "Average speed in km/h (1 decimal)")
    cols += _pair("average_speed_ms", "Average speed in m/s (2 decimals)")
    return cols


EDGE_ID = Column(
    "edge_id", "Street segment: H3 cell a and H3 cell b (Metro resolution, a < b as integers)"
)
LAYER = Column("layer", "Activity layer: all, ride, run (run, walk, hike), water or winter")
MONTH = Column("month", "Local month of the activities, YYYY-MM")
BEARING = Column("forward_bearing_deg", "Compass bearing from a's centre to b's, degrees 0-360")
HEX_ID = Column("hex_id", "H3 cell at the O/D resolution (res 8, about 0.7 km2)")
ORIGIN = Column("origin_hex_id", "H3 cell (res 8) where the published part of the trip starts")
DESTINATION = Column(
    "destination_hex_id", "H3 cell (res 8) where the published part of the trip ends"
)
CELL_COUNTS = [
    Column("trip_count", "Trips"),
    Column("people_count", "Distinct people who made those trips"),
]
CELL_SPEEDS = [
    Column("average_speed_kmh", "Average speed in the cell in km/h (1 decimal)"),
    Column("average_speed_ms", "Average speed in the cell in m/s (2 decimals)"),
]

EDGE_COLUMNS = [EDGE_ID, LAYER, *direction_columns(with_bands=True), BEARING]
EDGE_MONTHLY_COLUMNS = [EDGE_ID, LAYER, MONTH, *direction_columns(with_bands=True), BEARING]
HOURLY_COLUMNS = [
    EDGE_ID,
    LAYER,
    Column("hour", "Local hour of the crossing, 0-23 (12 = 12:00-12:59)"),
    Column("day_type", "weekday (Monday-Friday) or weekend, local time"),
    *direction_columns(with_bands=False),
]
HOURLY_WIDE_COLUMNS = [
    EDGE_ID,
    LAYER,
    *[
        Column(f"{d}_hour_{h}_{what}_count", f"{text} {d} in local hour {h} (all days)")
        for d in DIRECTIONS
        for h in HOURS
        for what, text in (("trip", "Trips"), ("people", "Distinct people"))
    ],
]
HEX_COLUMNS = [HEX_ID, LAYER, *CELL_COUNTS, *CELL_SPEEDS]
HEX_MONTHLY_COLUMNS = [HEX_ID, LAYER, MONTH, *CELL_COUNTS, *CELL_SPEEDS]
OD_COLUMNS = [ORIGIN, DESTINATION, LAYER, *CELL_COUNTS]
OD_MONTHLY_COLUMNS = [ORIGIN, DESTINATION, LAYER, MONTH, *CELL_COUNTS]

# The GeoPackage layers carry the CSV columns plus a geometry.
GPKG_LAYERS = {
    "edges": ("LineString", EDGE_COLUMNS, "line from cell a's centre to cell b's"),
    "hexagons": ("Polygon", HEX_COLUMNS, "the cell's hexagon"),
    "od": ("LineString", OD_COLUMNS, "line from the origin cell's centre to the destination's"),
}

# With a base map: the layer of OSM street edges (columns of streets.csv).
GPKG_STREETS: tuple[str, list[Column], str] = (
    "LineString",
    [],
    "the street edge's own polyline; columns of streets.csv",
)

FILE_DESCRIPTIONS = {
    "edges.csv": "Per segment (a pair of adjacent H3 cells, about a city block) and layer: "
    "trips and people per direction, over the window",
    "edges.geojson": "edges.csv as lines from cell a's centre to cell b's, for GIS",
    "edges_hourly.csv": "The same counts by local hour and weekday/weekend (one row per hour)",
    "edges_hourly_wide.csv": "Trips and people per direction and local hour, one row per segment",
    "edges_monthly.csv": "edges.csv per local month of the window",
    "hexagons.csv": "Trips, people and speed per H3 res-8 cell and layer",
    "hexagons_monthly.csv": "hexagons.csv per local month of the window",
    "od.csv": "Trips and people from origin cell to destination cell (H3 res 8), per layer",
    "od_monthly.csv": "od.csv per local month of the window",
    "metro.gpkg": "GeoPackage: layers edges (lines), hexagons (polygons) and od (lines); "
    "every other CSV file as a table",
    "README.md": "Data dictionary: every column, the window and the privacy rules",
}

# (file names, columns) for the data dictionary, in the order of FILE_DESCRIPTIONS.
DICTIONARY = [
    ("edges.csv, edges.geojson and the GeoPackage layer edges", EDGE_COLUMNS),
    ("edges_hourly.csv", HOURLY_COLUMNS),
    ("edges_hourly_wide.csv", HOURLY_WIDE_COLUMNS),
    ("edges_monthly.csv", EDGE_MONTHLY_COLUMNS),
    ("hexagons.csv and the GeoPackage layer hexagons", HEX_COLUMNS),
    ("hexagons_monthly.csv", HEX_MONTHLY_COLUMNS),
    ("od.csv and the GeoPackage layer od", OD_COLUMNS),
    ("od_monthly.csv", OD_MONTHLY_COLUMNS),
]
