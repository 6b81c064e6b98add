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
import json
import os
import re
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

from heatmetro import __version__
from heatmetro.core.config import Config
from heatmetro.core.errors import PublishError
from heatmetro.core.sports import KNOWN_SPORTS, canonical_sport
from heatmetro.site_builder.activity_layers import ActivityPath, layer_heat
from heatmetro.site_builder.map_page import PageText, page_meta, write_layer_tiles, write_map_page
from heatmetro.site_builder.pages import LAYER_LABELS
from heatmetro.state.personal_store import (
    PersonalFilter,
    athlete_activities,
    athlete_sport_types,
    athlete_zones,
    connect_personal,
    knows_athlete,
    personal_db_path,
)
from heatmetro.state.shards import ShardedStore

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
    if not config.personal_heatmaps:
        # Ingest keeps no personal store then (it removes one): a store left from before
        # would miss every later delete and privacy zone (flows/runner.py).
        msg = (
            "personal_heatmaps = false in this config: no personal store is kept; set it to "
            "true and ingest the activities again to build personal maps"
        )
        raise PublishError(msg)
    _check_out(out_dir, config)
    db = connect_personal(personal_db_path(config.state_dir), create=False)
    try:
        # The salt the store was made with, as every other command checks it: another
        # one means this shell is not the one the activities were ingested with.
        ShardedStore.open(config.state_dir, config.shards, salt=config.salt)
        if not knows_athlete(db, athlete_id):
            msg = (
                f"--athlete {athlete_id!r}: no such athlete in {personal_db_path(config.state_dir)}"
            )
            raise PublishError(msg)
        flt = _checked_sports(flt, athlete_sport_types(db, athlete_id))
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
    # Through a link, the folder it points to is replaced (the link kept): renaming the
    # link away left the old private map where it pointed, and a stray link beside.
    out_dir = out_dir.resolve() if out_dir.is_symlink() else out_dir
    build = _fresh_dir(out_dir)
    n_tiles, bounds = write_layer_tiles(heat, build, config, max_zoom=config.max_zoom)
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
        window=f"Your own activities, {filters_text(flt)}: {len(acts):,}",
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


def _checked_sports(flt: PersonalFilter, own: set[str]) -> PersonalFilter:
    """``flt`` with its sports named as ingest stores them (``walk`` is ``Walk``, as
    ``canonical_sport`` makes it there); a name that is neither a known sport type nor
    one of the athlete's own is refused: it would build an empty map over theirs."""
    by_key = {_sport_key(s): s for s in own}
    sports = []
    for given in flt.sports:
        name = canonical_sport(given)
        name = name if name in KNOWN_SPORTS else by_key.get(_sport_key(name), name)
        if name not in KNOWN_SPORTS and name not in own:
            others = sorted(own - set(KNOWN_SPORTS))
            msg = f"--sport {given!r}: not a sport type; known: {', '.join(KNOWN_SPORTS)}" + (
                f" (and this athlete's own: {', '.join(others)})" if others else ""
            )
            raise PublishError(msg)
        sports.append(name)
    return replace(flt, sports=tuple(dict.fromkeys(sports)))


def _sport_key(name: str) -> str:
    return re.sub(r"[\s_-]", "", name).lower()


_VISIBILITY_LABELS = {
    "everyone": "public",
    "followers_only": "followers only",
    "only_me": "only me",
}


def filters_text(flt: PersonalFilter) -> str:
    """What the map shows, for its header: the dates and every other filter applied
    (``all time`` alone when there is none)."""
    parts = [_span(flt)]
    if flt.sports:
        parts.append("sport " + ", ".join(flt.sports))
    if flt.layers:
        parts.append("group " + ", ".join(LAYER_LABELS.get(g, g.capitalize()) for g in flt.layers))
    if not flt.commutes:
        parts.append("no commutes")
    if set(flt.visibilities) != set(PersonalFilter.visibilities):
        parts.append("visibility " + ", ".join(_VISIBILITY_LABELS[v] for v in flt.visibilities))
    return "; ".join(parts)


def _span(flt: PersonalFilter) -> str:
    if flt.date_from and flt.date_to:
        return f"{flt.date_from} to {flt.date_to}"
    if flt.date_from:
        return f"since {flt.date_from}"
    if flt.date_to:
        return f"until {flt.date_to}"
    return "all time"


#: Every published site holds this file (the monthly and the weekly snapshot write it; a
#: personal site never does): a folder holding it is a public site, whatever config
#: published it (another out_dir, an HEATMETRO_OUT_DIR override).
PUBLIC_SITE_MARKER = "metadata.json"
#: All a personal site holds: a folder holding anything else is not one, and not replaced.
PERSONAL_SITE_ENTRIES = frozenset({"index.html", "assets", "tiles"})
#: Build folders of published sites: ``.{out}.builds`` and ``.{out}.weekly.builds``.
_BUILDS_NAME = re.compile(r"\..+\.builds")


def _check_out(out_dir: Path, config: Config) -> None:
    """Only ever replace an empty folder or an earlier personal site, and never write a
    private map in or over a published site (it would be copied to the CDN)."""
    shown = f"--out {out_dir}"
    public = _public_site_around(out_dir, config)
    if public is not None:
        where = "is" if public.resolve() == out_dir.resolve() else "lies inside"
        msg = f"{shown}: {where} the public site {public}; a personal map is private"
        raise PublishError(msg)
    blocker = next((p for p in out_dir.parents if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        msg = f"{shown}: {blocker} is a file, not a folder"
        raise PublishError(msg)
    if out_dir.is_file():
        msg = f"{shown}: is a file, not a heatmap site; refusing to replace it"
        raise PublishError(msg)
    if out_dir.is_dir():
        entries = {p.name for p in out_dir.iterdir()}
        strange = sorted(entries - PERSONAL_SITE_ENTRIES)
        if strange or (entries and "index.html" not in entries):
            holds = f" (it holds {strange[0]})" if strange else ""
            msg = (
                f"{shown}: exists and is not a personal heatmap site{holds}; refusing to replace it"
            )
            raise PublishError(msg)


def _public_site_around(out_dir: Path, config: Config) -> Path | None:
    """The published site ``out_dir`` is, or lies inside (as written, or through symbolic
    links), or None."""
    # The configured site, and every folder beside it of its own (builds, monthly and
    # weekly: out_dir's links point into them, so a map written there is served too).
    site = config.out_dir
    own = [site, *sorted(site.parent.glob(f".{glob.escape(site.name)}.*"))]
    written = out_dir.absolute()
    resolved = out_dir.resolve()
    for root in own:
        if root.resolve() == resolved or root.resolve() in resolved.parents:
            return root
    # Any other published site: a folder (or build folder) on either path to out_dir.
    for path in (written, resolved):
        for folder in (path, *path.parents):
            if _published_by_us(folder / PUBLIC_SITE_MARKER) or _BUILDS_NAME.fullmatch(folder.name):
                return folder
    return None


def _published_by_us(marker: Path) -> bool:
    """``marker`` is a snapshot's ``metadata.json``: one that names heatmetro, or one that
    cannot be read (a damaged one may be ours: on the safe side). Another program's file
    of that name (readable JSON naming no heatmetro) does not make a folder a site."""
    if not marker.exists():
        return False
    try:
        meta = json.loads(marker.read_bytes())
    except (OSError, ValueError):
        return True
    if not isinstance(meta, dict):
        return False
    software = meta.get("software")
    return isinstance(software, dict) and software.get("name") == "heatmetro"


def _fresh_dir(out_dir: Path) -> Path:
    """An empty folder beside ``out_dir`` to build in (so a failed build leaves the old)."""
    build = out_dir.with_name(f".{out_dir.name}.building-{os.getpid()}")
    shutil.rmtree(build, ignore_errors=True)
    try:
        build.mkdir(parents=True)
    except OSError as exc:  # named by the user's path, not by the build folder's
        msg = f"--out {out_dir}: cannot write in {out_dir.parent}: {exc.strerror or exc}"
        raise PublishError(msg) from None
    return build


def _swap_in(build: Path, out_dir: Path) -> None:
    """Replace ``out_dir`` by ``build``: two renames, the old copy removed after."""
    old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    if out_dir.exists():
        out_dir.rename(old)
    build.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)
