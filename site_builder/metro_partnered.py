"""An edge table of one layer, published with the counts ``metro_plan`` hides.

One rule set for both kinds of edge: the H3 edges (keyed ``a, b``) and the OSM street
edges (keyed ``a``); the plan covers the four edge tables of every layer at once.
"""

from __future__ import annotations

from heatmetro.site_builder.metro_plan import EdgePlan
from heatmetro.site_builder.metro_tables import DirectionTable, Publication, publish_directions


def publish_planned(plan: EdgePlan, table: str, layer: str, pub: Publication) -> DirectionTable:
    """Table ``table`` (``metro_plan.TABLE_BY``) of ``layer``, the plan's counts hidden."""
    hide, sub = plan.hides(table, layer)
    return publish_directions(plan.sums(table, layer), pub, hide=hide, sub_hide=sub or None)
