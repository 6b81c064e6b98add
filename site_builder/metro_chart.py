"""The small "segment crossings per month" chart on ``metro/index.html``, as inline SVG.

Drawn at build time from ``edges_monthly.csv``'s rows, so it works offline, needs no
script and shows exactly what the file holds: per layer and local month, the sum of
``total_trip_count`` over all published edges.
"""

from __future__ import annotations

from collections.abc import Iterable
from html import escape

from heatmetro.core.months import month_index, month_of_index
from heatmetro.site_builder.metro_rows import Rows, Value, values_of
from heatmetro.state.records import LAYERS

COLOURS = {
    "all": "#222222",
    "ride": "#d95f02",
    "run": "#1b9e77",
    "water": "#3366cc",
    "winter": "#7570b3",
}
WIDTH, HEIGHT = 640, 240
LEFT, RIGHT, TOP, BOTTOM = 56, 96, 16, 40


def monthly_totals(
    rows: Rows, layer_at: int, month_at: int, total_at: int
) -> dict[str, dict[str, int]]:
    """Per layer, per month ``YYYY-MM``: published trips summed over edges."""
    out: dict[str, dict[str, int]] = {}
    triples: Iterable[tuple[Value, ...]]
    if rows.columns is not None:  # three columns, not every row made
        picked = [values_of(rows.columns[i]) for i in (layer_at, month_at, total_at)]
        triples = zip(*picked, strict=True)
    else:
        triples = ((row[layer_at], row[month_at], row[total_at]) for row in rows.values)
    for layer_, month_, total in triples:
        layer, month = str(layer_), str(month_)
        per = out.setdefault(layer, {})
        per[month] = per.get(month, 0) + int(total or 0)
    return out


def window(first: str, last: str) -> list[str]:
    """Every month ``first..last`` as ``YYYY-MM``."""
    return [month_of_index(i) for i in range(month_index(first), month_index(last) + 1)]


def chart_svg(totals: dict[str, dict[str, int]], months: list[str]) -> str:
    """One line per layer over ``months``; a month without published trips is 0."""
    layers = [k for k in LAYERS if k in totals] + sorted(set(totals) - set(LAYERS))
    top = max([1, *(v for per in totals.values() for v in per.values())])
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    step = plot_w / max(len(months) - 1, 1)

    def x(i: int) -> float:
        return LEFT + i * step

    def y(v: int) -> float:
        return TOP + plot_h * (1 - v / top)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img" class="metro-chart" '
        'aria-labelledby="metro-chart-title">',
        '<title id="metro-chart-title">Segment crossings per month (published trip counts '
        "summed over all segments), per layer</title>",
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{LEFT + plot_w}" y2="{TOP + plot_h}" '
        'stroke="#999"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}" stroke="#999"/>',
        f'<text x="{LEFT - 6}" y="{TOP + 4}" text-anchor="end" font-size="11">{top:,}</text>',
        f'<text x="{LEFT - 6}" y="{TOP + plot_h}" text-anchor="end" font-size="11">0</text>',
    ]
    for i, m in enumerate(months):
        parts.append(
            f'<text x="{x(i):.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" '
            f'font-size="10">{escape(m[2:])}</text>'
        )
    for n, layer in enumerate(layers):
        per = totals[layer]
        colour = COLOURS.get(layer, "#888888")
        points = " ".join(f"{x(i):.1f},{y(per.get(m, 0)):.1f}" for i, m in enumerate(months))
        parts.append(
            f'<polyline class="layer" data-layer="{escape(layer)}" fill="none" '
            f'stroke="{colour}" stroke-width="2" points="{points}"/>'
        )
        for i, m in enumerate(months):
            parts.append(
                f'<circle cx="{x(i):.1f}" cy="{y(per.get(m, 0)):.1f}" r="2.5" fill="{colour}" '
                f'data-layer="{escape(layer)}" data-month="{m}" data-trips="{per.get(m, 0)}">'
                f"<title>{escape(layer)} {m}: {_trips(per.get(m, 0))}</title></circle>"
            )
        ly = TOP + 14 * n + 8
        parts.append(
            f'<text x="{WIDTH - RIGHT + 10}" y="{ly}" font-size="11" fill="{colour}">'
            f"{escape(layer)}</text>"
        )
    parts.append("</svg>")
    return "\n".join(parts)


def _trips(n: int) -> str:
    # "Empty means hidden, never zero" (the data dictionary): a month whose counts were
    # all below the threshold has no published trips, not 0 trips.
    return f"{n:,} segment crossings" if n else "no published counts"
