"""``heatmetro personal``: one athlete's own heatmap, as a self-contained private site.

It reads the athlete's activities of every visibility from the personal store
(``state/personal_store.py``) — never the public store's aggregates, and nothing of
anyone else — and draws them with no threshold (it is one person's map) up to
``max_zoom``, all under ``tiles/`` (the whole site is private: the platform serves it
behind its own login, see docs/operations.md).

Privacy zones: the stored paths were trimmed by the athlete's zones (and hidden
start/end) on ingest, so the personal map never shows what is inside a zone; there is
nothing to reveal. ``--show-zones`` draws the zones themselves as circles, so the
owner sees why a street stops there.
"""

from __future__ import annotations

import glob
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from heatmetro import __version__
from heatmetro.core.config import Config
from heatmetro.core.errors import PublishError
from heatmetro.site_builder.activity_layers import ActivityPath, layer_heat
from heatmetro.site_builder.map_page import PageText, page_meta, write_layer_tiles, write_map_page
from heatmetro.site_builder.weekly import weekly_builds_dir
from heatmetro.state.personal_store import (
    PersonalFilter,
    athlete_activities,
    athlete_zones,
    connect_personal,
    knows_athlete,
    personal_db_path,
)

NO_CAP = 2**31 - 1


@dataclass(frozen=True)
class PersonalResult:
    athlete_id: str
    out_dir: Path
    activities: int
    tiles: int
    seconds: float

    def summary(self) -> str:
        return (
            f"personal heatmap of {self.athlete_id}: {self.activities:,} "
            f"{'activity' if self.activities == 1 else 'activities'}, "
            f"{self.tiles:,} tiles in {self.seconds:.1f} s -> {self.out_dir}"
        )


def build_personal(
    config: Config,
    athlete_id: str,
    out_dir: Path,
    flt: PersonalFilter,
    *,
    show_zones: bool = False,
    build_date: str,
) -> PersonalResult:
    """Write the athlete's personal site to ``out_dir`` (replacing what was there)."""
    t0 = time.monotonic()
    _check_out(out_dir, config)
    db = connect_personal(personal_db_path(config.state_dir), create=False)
    try:
        if not knows_athlete(db, athlete_id):
            msg = (
                f"--athlete {athlete_id!r}: no such athlete in {personal_db_path(config.state_dir)}"
            )
            raise PublishError(msg)
        acts = athlete_activities(db, athlete_id, flt)
        zones = athlete_zones(db, athlete_id) if show_zones else []
    finally:
        db.close()
    heat = layer_heat(
        (ActivityPath(0, a.layer, a.sport_type, a.start_s, a.utc_offset_s, a.path) for a in acts),
        group_layers=True,
        sport_layers=tuple(sorted(set(config.sport_layers) | set(flt.sports))),
        night=config.night_layer,
        min_athletes=1,  # the athlete's own data: no threshold, no cap
        max_per_athlete=NO_CAP,
        threshold_ring=0,
    )
    build = _fresh_dir(out_dir)
    n_tiles, bounds = write_layer_tiles(heat, build, config, max_zoom=config.max_zoom)
    span = _span(flt)
    meta = page_meta(
        config,
        first=flt.date_from or "",
        last=flt.date_to or "",
        max_zoom=config.max_zoom,
        min_athletes=1,
        layers=tuple(heat),
        bounds=bounds,
        heat=heat,
        counts={"activities": len(acts), "tiles": n_tiles},
        version=__version__,
        build_date=build_date,
        # No remote basemap on a private map: its tile requests would tell a third party
        # which streets (home!) the athlete looks at.
        basemap=False,
    )
    page = PageText(
        title="Personal heatmap",
        heading="Personal Heatmap",
        window=f"Your own activities, {span}: {len(acts):,}",
        empty="None of your activities matches these filters.",
        legend="Your activities per cell, log scale",
        notes=(
            "Private: only you should see this map. It includes your followers-only and "
            "only-me activities.",
            "Your start and end and your privacy zones are left out, as everywhere.",
            "No street map under it: its tiles would come from another server, which "
            "would then learn which streets you look at.",
        ),
        private=True,
        zones=zones,
    )
    write_map_page(build, meta, page, template_dir=config.template_dir)
    _swap_in(build, out_dir)
    return PersonalResult(athlete_id, out_dir, len(acts), n_tiles, time.monotonic() - t0)


def _span(flt: PersonalFilter) -> str:
    if flt.date_from and flt.date_to:
        return f"{flt.date_from} to {flt.date_to}"
    if flt.date_from:
        return f"since {flt.date_from}"
    if flt.date_to:
        return f"until {flt.date_to}"
    return "all time"


def _check_out(out_dir: Path, config: Config) -> None:
    """Only ever replace an empty folder or an earlier heatmap site, and never write a
    private map where the public site is published from (it would be copied to the CDN)."""
    # The site, and every build folder beside it (monthly, weekly: out_dir's links point
    # into them, so a map written there is served and copied with the site).
    site = config.out_dir
    builds = [site.parent / f".{site.name}.builds", weekly_builds_dir(site)]
    public = [site, *builds, *sorted(site.parent.glob(f".{glob.escape(site.name)}.*"))]
    target = out_dir.resolve()
    for root in public:
        if target == root.resolve() or root.resolve() in target.parents:
            msg = f"--out {out_dir}: inside the public site {root}; a personal map is private"
            raise PublishError(msg)
    if out_dir.is_file() or (
        out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / "index.html").exists()
    ):
        msg = f"--out {out_dir}: exists and is not a heatmap site; refusing to replace it"
        raise PublishError(msg)


def _fresh_dir(out_dir: Path) -> Path:
    """An empty folder beside ``out_dir`` to build in (so a failed build leaves the old)."""
    build = out_dir.with_name(f".{out_dir.name}.building-{os.getpid()}")
    shutil.rmtree(build, ignore_errors=True)
    build.mkdir(parents=True)
    return build


def _swap_in(build: Path, out_dir: Path) -> None:
    """Replace ``out_dir`` by ``build``: two renames, the old copy removed after."""
    old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    if out_dir.exists():
        out_dir.rename(old)
    build.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)
