"""Personal heatmaps end to end through the CLI: ``ingest`` -> ``snapshot`` -> ``personal``.

Three people ride Elm Street privately (``only_me``, ``followers_only``, a hidden map):
three is the public threshold, yet the public site shows no heat there at any zoom in
any layer and the Metro files have no row there, while each rider's personal site shows
the street. A personal site shows the athlete's own public streets and nothing of
anyone else's; a deleted activity disappears from it; opting out keeps it.
"""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import h3
import numpy as np
import pytest
from PIL import Image

from heatmetro.core.geo import haversine_m
from heatmetro.site_builder.tile_math import TILE_SIZE, lnglat_to_global_px
from tests.streams import (
    NORTHAMPTON_EAST,
    NORTHAMPTON_WEST,
    activity,
    athlete,
    deleted,
    line,
    to_jsonl,
)

Run = Callable[..., subprocess.CompletedProcess[str]]

ELM_MID = ((NORTHAMPTON_WEST[0] + NORTHAMPTON_EAST[0]) / 2, -72.6350)
ELM_SIDE = (ELM_MID[0], -72.6390)  # 330 m west of the middle, outside p2's later zone
# A public street in Amherst, ~9 km away: the public site is not empty.
AMHERST_WEST, AMHERST_EAST = (42.3732, -72.5300), (42.3732, -72.5100)
AMHERST_MID = (42.3732, -72.5200)
# A third street, ridden privately once by p0 and then deleted.
SOUTH_WEST, SOUTH_EAST = (42.3000, -72.6450), (42.3000, -72.6250)
SOUTH_MID = (42.3000, -72.6350)
ZOOMS = range(10, 15)  # the fixture config: min_zoom 10, public 12, max 14
JUNE = datetime(2021, 6, 15, 11, 0, tzinfo=UTC)


def events() -> list[dict]:
    elm = line(NORTHAMPTON_WEST, NORTHAMPTON_EAST)
    amherst = line(AMHERST_WEST, AMHERST_EAST)
    evs = [
        activity("p0-elm", "p0", elm, visibility="only_me"),
        activity("p1-elm", "p1", elm, visibility="followers_only", commute=True),
        activity("p2-elm", "p2", elm, hide_map=True),
        # A sport heatmetro does not know: p3's own type, which --sport may name.
        activity("p3-elm", "p3", elm, visibility="only_me", sport_type="Skateboard"),
        # p0 also rides in public with two others: p0's own public street.
        *[activity(f"{a}-amh", a, amherst) for a in ("p0", "q1", "q2")],
        activity("p0-south", "p0", line(SOUTH_WEST, SOUTH_EAST), visibility="only_me"),
        deleted("p0-south", "p0", updated=datetime(2021, 6, 20, tzinfo=UTC)),
        # p1 opts out of aggregates afterwards: their own map keeps everything.
        athlete("p1", updated=datetime(2021, 6, 25, tzinfo=UTC), aggregate_opt_out=True),
        # p2 adds a privacy zone on Elm Street afterwards: hiding more applies backwards.
        athlete(
            "p2",
            updated=datetime(2021, 6, 26, tzinfo=UTC),
            privacy_zones=[{"lat": ELM_MID[0], "lng": ELM_MID[1], "radius_m": 150}],
        ),
    ]
    return evs


def tile_alpha(root: Path, layer: str, z: int, lat: float, lng: float, half: int = 3) -> int:
    """Highest alpha within ``half`` px of the point, reading ``root/{layer}/{z}/...``."""
    px, py = (float(v) for v in lnglat_to_global_px(lng=lng, lat=lat, z=z))
    best = 0
    for gx in range(int(px) - half, int(px) + half + 1):
        for gy in range(int(py) - half, int(py) + half + 1):
            path = root / layer / str(z) / str(gx // TILE_SIZE) / f"{gy // TILE_SIZE}.png"
            if path.is_file():
                rgba = np.asarray(Image.open(path).convert("RGBA"))
                best = max(best, int(rgba[gy % TILE_SIZE, gx % TILE_SIZE, 3]))
    return best


def public_alpha(site: Path, layer: str, z: int, lat: float, lng: float) -> int:
    root = site / "tiles" if z <= 12 else site / "members" / "tiles"
    return tile_alpha(root, layer, z, lat, lng)


def near(cell: str, point: tuple[float, float], metres: float) -> bool:
    lat, lng = h3.cell_to_latlng(cell)
    return float(haversine_m(lat, lng, point[0], point[1])) < metres


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project with the events ingested, the public site and three personal sites."""
    from tests.conftest import heatmetro, write_config

    project = tmp_path_factory.mktemp("personal")
    config = str(write_config(project))
    (project / "events.jsonl").write_bytes(to_jsonl(events()))

    def run(*args: str) -> None:
        proc = heatmetro(*args)
        assert proc.returncode == 0, proc.stderr

    run("ingest", "-c", config, str(project / "events.jsonl"))
    run("snapshot", "-c", config, "--month", "2021-06")
    for who in ("p0", "p1", "p2"):
        run("personal", "-c", config, "--athlete", who, "--out", str(project / f"me-{who}"),
            "--show-zones")  # fmt: skip
    return project


def test_public_site_never_shows_the_privately_ridden_street(built: Path) -> None:
    site = built / "site"
    layers = [p.name for p in (site / "tiles").iterdir()]
    assert "all" in layers
    for z in ZOOMS:
        assert public_alpha(site, "all", z, *AMHERST_MID) > 0, f"public street missing at z{z}"
        for layer in layers:
            for f in (0.2, 0.5, 0.8):
                lng = NORTHAMPTON_WEST[1] + (NORTHAMPTON_EAST[1] - NORTHAMPTON_WEST[1]) * f
                assert public_alpha(site, layer, z, ELM_MID[0], lng) == 0, (
                    f"private street drawn in public layer {layer} at z{z}"
                )
    for name, columns in (
        ("edges.csv", ("edge_id",)),
        ("edges_hourly.csv", ("edge_id",)),
        ("hexagons.csv", ("hex_id",)),
        ("od.csv", ("origin_hex_id", "destination_hex_id")),
    ):
        with (site / "metro" / name).open() as fh:
            rows = list(csv.DictReader(fh))
        assert rows, f"{name}: the public street should have rows"
        for row in rows:
            for col in columns:
                for cell in row[col].split("-"):
                    assert not near(cell, ELM_MID, 2000), f"{name} has a row at Elm Street: {row}"
    meta = json.loads((site / "metadata.json").read_text())
    assert meta["counts"]["athletes"] == 3  # p0, q1, q2 in Amherst; no private rider counted


@pytest.mark.parametrize("who", ["p0", "p1", "p2"])
def test_each_private_rider_sees_the_street_on_their_own_map(built: Path, who: str) -> None:
    me = built / f"me-{who}"
    assert (me / "index.html").is_file()
    assert not (me / "members").exists(), "a personal site keeps every zoom under tiles/"
    zooms = {int(p.name) for p in (me / "tiles" / "all").iterdir()}
    assert zooms == set(ZOOMS), f"personal tiles should go up to max_zoom: {zooms}"
    for z in ZOOMS:
        assert tile_alpha(me / "tiles", "all", z, *ELM_SIDE) > 0, f"{who}: Elm St missing at z{z}"
        assert tile_alpha(me / "tiles", "ride", z, *ELM_SIDE) > 0
        if z >= 13:  # p2's zone was cut from the stored path; the others' is whole
            mid = tile_alpha(me / "tiles", "all", z, *ELM_MID)
            assert (mid == 0) is (who == "p2"), f"{who}: Elm St middle at z{z} = {mid}"
        # Nothing of anyone else's: only p0 rode in Amherst.
        mine = tile_alpha(me / "tiles", "all", z, *AMHERST_MID)
        assert (mine > 0) is (who == "p0"), f"{who}: Amherst at z{z} = {mine}"
        # The deleted activity is gone from the personal map too.
        assert tile_alpha(me / "tiles", "all", z, *SOUTH_MID) == 0
    page = (me / "index.html").read_text()
    assert "noindex" in page and "Personal Heatmap" in page
    # Why it has no street map (a visitor's review: not said anywhere).
    assert "No street map under it" in page and "tile.openstreetmap.org" not in page
    # --show-zones draws the athlete's own zones (only p2 has one).
    assert ("L.circle(" in page) is (who == "p2")
    # Self-contained: the only remote URLs are the (default) OpenStreetMap basemap's.
    remote = re.findall(r"https?://[^\s\"'<>]+", page)
    assert all("openstreetmap.org" in u for u in remote), remote


def test_filters_and_zones(built: Path, run_cli: Run) -> None:
    config = built / "config.toml"
    out = built / "p0-public-only"
    run_cli("personal", "-c", config, "--athlete", "p0", "--out", out, "--visibility", "everyone")
    assert tile_alpha(out / "tiles", "all", 12, *ELM_SIDE) == 0
    assert tile_alpha(out / "tiles", "all", 12, *AMHERST_MID) > 0
    # p1's only ride is a commute; dates and sports filter too.
    for args in (["--no-commutes"], ["--from", "2021-06-16"], ["--sport", "Run"]):
        out = built / f"p1-{math.floor(len(str(args)))}-{args[0].strip('-')}"
        run_cli("personal", "-c", config, "--athlete", "p1", "--out", out, *args)
        assert not list((out / "tiles").rglob("*.png")), f"{args} left heat"
    out = built / "p1-range"
    run_cli("personal", "-c", config, "--athlete", "p1", "--out", out, "--from", "2021-06-15",
            "--to", "2021-06-15", "--layer", "ride")  # fmt: skip
    assert tile_alpha(out / "tiles", "all", 12, *ELM_SIDE) > 0


def test_cli_mistakes_are_one_line(built: Path, run_cli: Run) -> None:
    config = built / "config.toml"
    bad = run_cli(
        "personal", "-c", config, "--athlete", "nobody", "--out", built / "x", check=False
    )
    assert bad.returncode == 1 and "nobody" in bad.stderr and "Traceback" not in bad.stderr
    bad = run_cli("personal", "-c", config, "--athlete", "p0", "--out", built / "y", "--from",
                  "2021-13-01", check=False)  # fmt: skip
    assert bad.returncode == 1 and "--from" in bad.stderr and "Traceback" not in bad.stderr
    # Never inside the public site, which is copied to a CDN.
    bad = run_cli("personal", "-c", config, "--athlete", "p0", "--out", built / "site" / "me",
                  check=False)  # fmt: skip
    assert bad.returncode == 1 and "public site" in bad.stderr
    assert not (built / "site" / "me").exists()
    # ... nor through its links into the build folders beside it (the weekly map's).
    run_cli("snapshot", "-c", config, "--weekly", "--until", "2021-06-20")
    weekly = built / "site" / "weekly"
    assert weekly.is_symlink() and (weekly / "index.html").exists()
    bad = run_cli("personal", "-c", config, "--athlete", "p0", "--out", weekly / "me",
                  check=False)  # fmt: skip
    assert bad.returncode == 1 and "public site" in bad.stderr, bad.stderr
    assert not (weekly / "me").exists()
    # Never replaces a folder that is not a heatmap site.
    other = built / "documents"
    other.mkdir()
    (other / "thesis.txt").write_text("precious")
    bad = run_cli("personal", "-c", config, "--athlete", "p0", "--out", other, check=False)
    assert bad.returncode == 1 and (other / "thesis.txt").read_text() == "precious"
    # A path through a file: the user's path named, not the build folder beside it.
    bad = run_cli("personal", "-c", config, "--athlete", "p0", "--out", other / "thesis.txt" / "me",
                  check=False)  # fmt: skip
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1, bad.stderr
    assert f"--out {other / 'thesis.txt' / 'me'}: " in bad.stderr and ".building" not in bad.stderr
    # --commutes and --no-commutes contradict each other (the last one won).
    bad = run_cli("personal", "-c", config, "--athlete", "p1", "--out", built / "both",
                  "--commutes", "--no-commutes", check=False)  # fmt: skip
    assert bad.returncode == 2 and "not allowed with" in bad.stderr, bad.stderr
    assert not (built / "both").exists()


def site_files(root: Path) -> dict[Path, bytes]:
    return {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_never_in_or_over_any_published_site(built: Path, run_cli: Run) -> None:
    """Not only the configured out_dir: a site published with an override, or by another
    config (as PMTiles), is neither written into nor replaced (an outside review)."""
    from tests.conftest import cli_env, write_config

    config = built / "config.toml"
    public = built / "elsewhere"
    run_cli("snapshot", "-c", config, "--month", "2021-06",
            env=cli_env(HEATMETRO_OUT_DIR=str(public)))  # fmt: skip
    other = built / "pm-project"
    other.mkdir()
    shutil.copytree(built / "state", other / "state")
    run_cli("snapshot", "-c", write_config(other, tiles_format="pmtiles"), "--month", "2021-06")
    pm_site = other / "site"
    assert list((pm_site / "tiles").glob("*.pmtiles"))
    # A link into the site's members/ (no metadata.json there): refused once resolved.
    into_members = built / "members-link"
    into_members.symlink_to(public / "members")
    before = {site: site_files(site) for site in (public, pm_site)}
    for out in (
        public / "me",
        public,
        public / "members" / "me",
        into_members / "me",
        built / ".elsewhere.builds" / "me",
        pm_site,
        pm_site / "tiles" / "me",
    ):
        bad = run_cli("personal", "-c", config, "--athlete", "p0", "--out", out, check=False)
        assert bad.returncode == 1 and "public site" in bad.stderr, (out, bad.stderr)
        assert bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
    assert {site: site_files(site) for site in (public, pm_site)} == before
    assert not (built / ".elsewhere.builds" / "me").exists()
    # An earlier personal site is replaced, as before; one with more in it is not.
    mine = built / "mine"
    for _ in range(2):
        run_cli("personal", "-c", config, "--athlete", "p0", "--out", mine)
    (mine / "notes.txt").write_text("mine")
    bad = run_cli("personal", "-c", config, "--athlete", "p0", "--out", mine, check=False)
    assert bad.returncode == 1 and "not a personal heatmap site" in bad.stderr
    assert (mine / "notes.txt").read_text() == "mine"
    # Through a link, the site it points to is replaced and the link kept (renaming the
    # link away left the old map where it pointed, and a stray link beside it).
    (mine / "notes.txt").unlink()
    link = built / "mine-link"
    link.symlink_to(mine)
    run_cli("personal", "-c", config, "--athlete", "p0", "--out", link, "--from", "2099-01-01")
    assert link.is_symlink() and link.resolve() == mine.resolve()
    assert "2099-01-01" in window_line(mine)
    assert (
        sorted(p.name for p in built.iterdir() if ".old-" in p.name or ".building-" in p.name) == []
    )


def window_line(site: Path) -> str:
    found = re.search(r'class="hm-window">([^<]*)<', (site / "index.html").read_text())
    assert found, "no header line"
    return found.group(1)


def test_sports_are_named_as_ingest_names_them_and_checked(built: Path, run_cli: Run) -> None:
    config = built / "config.toml"
    out = built / "p1-ride"
    # Any case or spacing, as ingest and import take it (the stored type is "Ride").
    run_cli("personal", "-c", config, "--athlete", "p1", "--out", out, "--sport", "ride")
    assert tile_alpha(out / "tiles", "all", 12, *ELM_SIDE) > 0
    assert window_line(out) == "Your own activities, all time; sport Ride: 1"
    # A type heatmetro does not know is taken when it is the athlete's own.
    own = built / "p3-skate"
    run_cli("personal", "-c", config, "--athlete", "p3", "--out", own, "--sport", "skate_board")
    assert tile_alpha(own / "tiles", "all", 12, *ELM_SIDE) > 0
    # Anything else is refused, and the map there is kept (was: replaced by an empty one).
    kept = site_files(out)
    for name in ("Bogus", "skateboard"):  # p1 has no Skateboard activity
        bad = run_cli("personal", "-c", config, "--athlete", "p1", "--out", out, "--sport", name,
                      check=False)  # fmt: skip
        assert bad.returncode == 1 and bad.stderr.count("\n") == 1, bad.stderr
        assert f"--sport {name!r}: not a sport type" in bad.stderr and "Walk" in bad.stderr
    assert site_files(out) == kept


def test_header_states_every_filter(built: Path, run_cli: Run) -> None:
    config = built / "config.toml"
    assert window_line(built / "me-p0") == "Your own activities, all time: 2"
    out = built / "p0-filtered"
    run_cli("personal", "-c", config, "--athlete", "p0", "--out", out, "--from", "2021-06-01",
            "--layer", "ride", "--layer", "run", "--no-commutes", "--visibility", "only_me",
            "--visibility", "everyone")  # fmt: skip
    assert window_line(out) == (
        "Your own activities, since 2021-06-01; group Ride, Run/Walk/Hike; no commutes; "
        "visibility only me, public: 2"
    )


def test_personal_heatmaps_off_keeps_no_private_data(tmp_path: Path, run_cli: Run) -> None:
    """Off, ingest wrote no personal store, yet `personal` drew the old one: a deleted
    ride still shown, a new zone not cut (an outside review). Off now keeps none."""
    from tests.conftest import write_config

    on = write_config(tmp_path)
    off = tmp_path / "off.toml"
    off.write_text(on.read_text() + "personal_heatmaps = false\n")
    elm, south = line(NORTHAMPTON_WEST, NORTHAMPTON_EAST), line(SOUTH_WEST, SOUTH_EAST)
    store = tmp_path / "state" / "personal.db"

    def ingest(cfg: Path, *evs: dict) -> subprocess.CompletedProcess[str]:
        return run_cli("ingest", "-c", cfg, "-", stdin=to_jsonl(list(evs)))

    ingest(on, activity("a-elm", "a", elm, visibility="only_me"),
           activity("a-south", "a", south, visibility="only_me"))  # fmt: skip
    assert store.is_file()
    # Turned off, the store is not drawn even before an ingest removes it.
    bad = run_cli("personal", "-c", off, "--athlete", "a", "--out", tmp_path / "me", check=False)
    assert bad.returncode == 1 and "personal_heatmaps = false" in bad.stderr, bad.stderr
    later = datetime(2021, 6, 29, tzinfo=UTC)
    zone = {"lat": ELM_MID[0], "lng": ELM_MID[1], "radius_m": 150}
    done = ingest(off, deleted("a-south", "a", updated=later),
                  athlete("a", updated=later, privacy_zones=[zone]))  # fmt: skip
    notice = [ln for ln in done.stderr.splitlines() if "personal" in ln]
    assert len(notice) == 1 and "removed the personal store" in notice[0], done.stderr
    assert not list(store.parent.glob("personal.db*"))
    bad = run_cli("personal", "-c", off, "--athlete", "a", "--out", tmp_path / "me", check=False)
    assert bad.returncode == 1 and "personal_heatmaps = false" in bad.stderr, bad.stderr
    assert bad.stderr.count("\n") == 1 and not (tmp_path / "me").exists()
    # Turned back on, the store starts empty: only what is ingested after is drawn.
    ingest(on, activity("a-later", "a", line(AMHERST_WEST, AMHERST_EAST), visibility="only_me",
                        start=datetime(2021, 6, 30, 11, tzinfo=UTC)))  # fmt: skip
    done = run_cli("personal", "-c", on, "--athlete", "a", "--out", tmp_path / "me")
    assert done.returncode == 0
    me = tmp_path / "me" / "tiles"
    assert tile_alpha(me, "all", 12, *AMHERST_MID) > 0
    assert tile_alpha(me, "all", 12, *SOUTH_MID) == 0 and tile_alpha(me, "all", 12, *ELM_SIDE) == 0


def test_personal_site_is_reproducible(built: Path, run_cli: Run) -> None:
    from tests.conftest import cli_env

    env = cli_env(SOURCE_DATE_EPOCH="1700000000")
    trees = []
    for name in ("again-1", "again-2"):
        out = built / name
        run_cli("personal", "-c", built / "config.toml", "--athlete", "p0", "--out", out, env=env)
        trees.append({p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()})
    assert trees[0] == trees[1] and len(trees[0]) > 5


@pytest.mark.browser
@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="needs Debian chromium")
def test_personal_site_in_chromium_shows_the_street_and_the_zone(built: Path) -> None:
    from tests.browser import open_site

    with open_site(built / "me-p2") as site:
        site.wait_for_map()
        site.wait_for_tiles()
        shot = site.screenshot(built / "me-p2.png", hide_controls=True)
        elm = site.region_of((ELM_MID[0] - 0.002, -72.6450, ELM_MID[0] + 0.002, -72.6250))
        zones = site.page.locator("path.hm-zone").count()
        assert site.page_errors == [] and site.blocked_except_basemap() == []
        assert site.failed == []
        assert site.tiles and {status for _, status in site.tiles} == {200}
        left, top, right, bottom = elm
        # One rider: every cell is at the top of the ramp (near white) on the dark ground.
        lit = shot[max(top, 0) : bottom, max(left, 0) : right, 0] > 150
        assert lit.sum() > 100, "Elm Street not drawn on p2's own map"
        assert zones == 1, "--show-zones should draw p2's zone"


def test_another_programs_metadata_json_above_out_is_no_site(built: Path, run_cli: Run) -> None:
    """Only a snapshot's ``metadata.json`` (naming heatmetro, or unreadable: it may be a
    damaged one) makes a folder a published site; another program's file of that name
    above ``--out`` does not refuse it."""
    config = built / "config.toml"
    photos = built / "photos"
    photos.mkdir()
    (photos / "metadata.json").write_text('{"title": "holidays", "software": {"name": "gimp"}}')
    run_cli("personal", "-c", config, "--athlete", "p0", "--out", photos / "me")
    assert (photos / "me" / "index.html").exists()
    (photos / "metadata.json").write_text('{"software": {"name": "heat')  # torn: maybe ours
    bad = run_cli("personal", "-c", config, "--athlete", "p0", "--out", photos / "you", check=False)
    assert bad.returncode == 1 and "public site" in bad.stderr, bad.stderr
    assert not (photos / "you").exists()
