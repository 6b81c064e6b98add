"""``heatmetro snapshot`` end to end through the CLI: what the published site really holds.

Every test ingests real stream events with ``heatmetro ingest`` and publishes with
``heatmetro snapshot``, then reads the output as a visitor or a host would: PNG tiles
decoded to pixels at the projected position of a real street, CSV rows, the tree of
files and the ``out_dir`` link.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from heatmetro.flows.importers.jsonl import write_jsonl
from heatmetro.flows.importers.valleybike import valleybike_events
from heatmetro.flows.importers.valleybike_csv import DATA_DIR
from heatmetro.site_builder.tile_math import TILE_SIZE, lnglat_to_global_px, m_per_px
from tests.conftest import HEATMETRO, REPO, cli_env, write_config
from tests.streams import (
    NORTH_EAST,
    NORTH_WEST,
    NORTHAMPTON_EAST,
    NORTHAMPTON_WEST,
    activity,
    athlete,
    line,
    street_rides,
    to_jsonl,
)

Run = Callable[..., subprocess.CompletedProcess[str]]

SDE_ENV = cli_env(SOURCE_DATE_EPOCH="1700000000")
PUBLIC_MAX_ZOOM = 12  # the fixture config's zooms: 10..12 public, 13..14 members
ZOOMS = range(10, 15)
MIN_ATHLETES = 3


# --------------------------------------------------------------------------- helpers


def ingest(run_cli: Run, project: Path, events: list[dict], name: str = "events") -> None:
    path = project / f"{name}.jsonl"
    path.write_bytes(to_jsonl(events))
    run_cli("ingest", "-c", project / "config.toml", path)


def snapshot(
    run_cli: Run, project: Path, month: str = "2021-06", **kw
) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return run_cli("snapshot", "-c", project / "config.toml", "--month", month, **kw)


def tile_file(site: Path, layer: str, z: int, x: int, y: int) -> Path:
    root = site / "tiles" if z <= PUBLIC_MAX_ZOOM else site / "members" / "tiles"
    return root / layer / str(z) / str(x) / f"{y}.png"


def decode(path: Path) -> np.ndarray:
    """A tile as ``(256, 256, 4)`` RGBA (tiles are indexed PNGs: convert, never read raw)."""
    return np.asarray(Image.open(path).convert("RGBA"))


def rgba_window(
    site: Path, layer: str, z: int, gx0: int, gy0: int, gx1: int, gy1: int
) -> np.ndarray:
    """Global pixels ``[gx0, gx1) x [gy0, gy1)`` at zoom ``z``, stitched from the tiles.

    A missing tile is blank (the writer skips tiles without heat), i.e. all zeros.
    """
    out = np.zeros((gy1 - gy0, gx1 - gx0, 4), dtype=np.uint8)
    for ty in range(gy0 // TILE_SIZE, (gy1 - 1) // TILE_SIZE + 1):
        for tx in range(gx0 // TILE_SIZE, (gx1 - 1) // TILE_SIZE + 1):
            path = tile_file(site, layer, z, tx, ty)
            if not path.is_file():
                continue
            tile = decode(path)
            x0, y0 = max(gx0, tx * TILE_SIZE), max(gy0, ty * TILE_SIZE)
            x1, y1 = min(gx1, (tx + 1) * TILE_SIZE), min(gy1, (ty + 1) * TILE_SIZE)
            out[y0 - gy0 : y1 - gy0, x0 - gx0 : x1 - gx0] = tile[
                y0 - ty * TILE_SIZE : y1 - ty * TILE_SIZE, x0 - tx * TILE_SIZE : x1 - tx * TILE_SIZE
            ]
    return out


def global_px(lat: float, lng: float, z: int) -> tuple[float, float]:
    px, py = lnglat_to_global_px(lng=lng, lat=lat, z=z)
    return float(px), float(py)


def alpha_near(site: Path, layer: str, z: int, lat: float, lng: float, half: int = 2) -> int:
    """Highest alpha within ``half`` px of the point's projected pixel."""
    px, py = global_px(lat, lng, z)
    x, y = int(math.floor(px)), int(math.floor(py))
    return int(
        rgba_window(site, layer, z, x - half, y - half, x + half + 1, y + half + 1)[..., 3].max()
    )


def alpha_in_disc(
    site: Path, layer: str, z: int, lat: float, lng: float, radius_m: float
) -> np.ndarray:
    """Alphas of every pixel whose centre lies within ``radius_m`` of the point."""
    px, py = global_px(lat, lng, z)
    r = radius_m / float(m_per_px(lat, z))
    gx0, gy0 = int(math.floor(px - r)) - 1, int(math.floor(py - r)) - 1
    gx1, gy1 = int(math.ceil(px + r)) + 2, int(math.ceil(py + r)) + 2
    win = rgba_window(site, layer, z, gx0, gy0, gx1, gy1)
    ys, xs = np.mgrid[gy0:gy1, gx0:gx1]
    inside = (xs + 0.5 - px) ** 2 + (ys + 0.5 - py) ** 2 <= r * r
    return win[..., 3][inside]


def along(start: tuple[float, float], end: tuple[float, float], f: float) -> tuple[float, float]:
    return start[0] + (end[0] - start[0]) * f, start[1] + (end[1] - start[1]) * f


def csv_rows(path: Path) -> list[str]:
    lines = path.read_text().splitlines()
    assert lines, f"{path} has no header"
    return lines[1:]


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (hidden ones too) by relative path."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def tile_zooms(root: Path) -> set[int]:
    return {int(p.relative_to(root).parts[1]) for p in root.rglob("*.png")}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def real_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project whose store holds the bundled real ValleyBike rides of June 2018."""
    project = tmp_path_factory.mktemp("real")
    write_config(project)
    events = project / "june2018.jsonl"
    write_jsonl(valleybike_events([DATA_DIR / "june2018.csv.gz"]), events)
    subprocess.run(
        [*HEATMETRO, "ingest", "-c", str(project / "config.toml"), str(events)],
        check=True, capture_output=True, env=cli_env(), cwd=REPO, timeout=300,
    )  # fmt: skip
    return project


def copy_project(src: Path, dst: Path) -> Path:
    """A project with its own copy of ``src``'s store (and no site yet)."""
    dst.mkdir(parents=True, exist_ok=True)
    write_config(dst)
    shutil.copytree(src / "state", dst / "state")
    return dst


# --------------------------------------------------------------------------- threshold


def test_street_of_min_athletes_minus_one_shows_nothing_then_lights_up(
    project: Path, run_cli: Run
) -> None:
    mid = along(NORTHAMPTON_WEST, NORTHAMPTON_EAST, 0.5)
    ingest(run_cli, project, street_rides(MIN_ATHLETES - 1, prefix="a"), "two")
    snapshot(run_cli, project)
    site = project / "site"

    for z in ZOOMS:
        (x0, y0), (x1, y1) = global_px(*NORTHAMPTON_WEST, z), global_px(*NORTHAMPTON_EAST, z)
        win = rgba_window(site, "all", z, int(x0) - 64, int(y0) - 64, int(x1) + 64, int(y1) + 64)
        assert win[..., 3].max() == 0, (
            f"heat near the street at z{z} from {MIN_ATHLETES - 1} people"
        )
    for png in [*site.glob("tiles/**/*.png"), *site.glob("members/tiles/**/*.png")]:
        assert decode(png)[..., 3].max() == 0, f"{png} has heat"
    for name in ("edges.csv", "edges_hourly.csv", "hexagons.csv", "od.csv"):
        assert csv_rows(site / "metro" / name) == [], f"{name} published a row"
    meta = json.loads((site / "metadata.json").read_text())
    assert meta["counts"]["cells"] == 0 and meta["counts"]["edges"] == 0

    # One more athlete on the same street: now it is published, at every zoom.
    ingest(run_cli, project, street_rides(1, prefix="b"), "third")
    snapshot(run_cli, project)
    for z in ZOOMS:
        assert alpha_near(site, "all", z, *mid) > 0, f"street not drawn at z{z}"
        assert alpha_near(site, "ride", z, *mid) > 0, f"street not on the ride layer at z{z}"
        # ... and nothing 1 km north of it (the parallel street nobody rode).
        assert alpha_near(site, "all", z, *along(NORTH_WEST, NORTH_EAST, 0.5)) == 0
    edges = csv_rows(site / "metro" / "edges.csv")
    assert edges, "3 people on a street must publish Metro rows"
    meta = json.loads((site / "metadata.json").read_text())
    assert meta["counts"]["cells"] > 0 and meta["counts"]["edges"] == len(edges)
    # The rule as published: the patch a spot's people are counted in, with its size.
    assert meta["thresholds"]["threshold_ring"] == 1
    about = re.sub(r"<[^>]+>", "", (site / "about.html").read_text())
    assert "in a patch about 21 m across" in " ".join(about.split())


# --------------------------------------------------------------------------- zoom trees


def test_public_tiles_stop_at_public_max_zoom(
    real_store: Path, run_cli: Run, tmp_path: Path
) -> None:
    project = copy_project(real_store, tmp_path / "p")
    snapshot(run_cli, project, "2018-06")
    site = project / "site"
    public, members = site / "tiles", site / "members" / "tiles"

    assert tile_zooms(public) == set(range(10, PUBLIC_MAX_ZOOM + 1))
    assert tile_zooms(members) == set(range(PUBLIC_MAX_ZOOM + 1, 15))
    # No zoom folder (even an empty one) above the public maximum in the public tree.
    assert {int(p.name) for p in public.glob("*/*") if p.is_dir()} <= set(
        range(10, PUBLIC_MAX_ZOOM + 1)
    )
    # Street level is members only, and the public map never points into members/.
    html = (site / "index.html").read_text()
    templates = {t for t in __import__("re").findall(r'"([^"]*\{z\}[^"]*)"', html)}
    templates.discard("https://tile.openstreetmap.org/{z}/{x}/{y}.png")  # the default basemap
    assert templates and all(t.startswith("tiles/") for t in templates), templates
    # The members' tree has real heat (decoded), not empty placeholders.
    some = next(iter(sorted(members.rglob("*.png"))))
    assert decode(some)[..., 3].max() > 0
    # ... and says, inside the folder a host would sync, that it is not for the public.
    notice = (site / "members" / "README.txt").read_text()
    assert f"zooms {PUBLIC_MAX_ZOOM + 1} to 14" in notice and "never copy it to a public" in notice


# --------------------------------------------------------------------------- privacy zones


def test_privacy_zones_leave_a_gap_where_only_two_people_remain(
    project: Path, run_cli: Run
) -> None:
    """Three people ride Elm Street end to end (no hidden start/end); each has a privacy
    zone on a different stretch. Inside a zone only the two others remain: below
    ``min_athletes``, so no heat may be drawn inside any nominal zone circle. The same
    rides on a parallel street without zones are the control: heat at the same spots.
    """
    radius_m = 80.0
    fractions = (0.25, 0.5, 0.75)
    elm = line(NORTHAMPTON_WEST, NORTHAMPTON_EAST)
    north = line(NORTH_WEST, NORTH_EAST)
    zones = [along(NORTHAMPTON_WEST, NORTHAMPTON_EAST, f) for f in fractions]
    later = datetime(2021, 7, 1, tzinfo=UTC)

    def zone_of(i: int) -> dict:
        return {"lat": zones[i][0], "lng": zones[i][1], "radius_m": radius_m}

    events = [athlete("z0", privacy_zones=[zone_of(0)])]  # known before its ride is ingested
    for i in range(3):
        events.append(activity(f"z{i}-r1", f"z{i}", elm, hide_start_end_m=0))
        events.append(activity(f"c{i}-r1", f"c{i}", north, hide_start_end_m=0))
    # Declared after the rides are stored: must apply to them too (hiding more works backwards).
    events += [athlete(f"z{i}", updated=later, privacy_zones=[zone_of(i)]) for i in (1, 2)]
    ingest(run_cli, project, events)
    snapshot(run_cli, project)
    site = project / "site"

    for z in (13, 14):  # street-level zooms, members' tree: drawn at the heat resolution
        for f, (lat, lng) in zip(fractions, zones, strict=True):
            inside = alpha_in_disc(site, "all", z, lat, lng, radius_m)
            assert inside.size > 50  # the whole disc was read (about 100 px at z13, 400 at z14)
            assert inside.max() == 0, f"heat inside the zone at {f:.0%} of the street, z{z}"
            control = along(NORTH_WEST, NORTH_EAST, f)
            assert alpha_near(site, "all", z, *control) > 0, f"control street dark at {f:.0%}, z{z}"
        for f in (0.05, 0.95):  # outside every zone all three count: the street is drawn
            assert alpha_near(site, "all", z, *along(NORTHAMPTON_WEST, NORTHAMPTON_EAST, f)) > 0


# --------------------------------------------------------------------------- reproducible


def test_two_snapshots_of_one_store_are_byte_identical(
    real_store: Path, run_cli: Run, tmp_path: Path
) -> None:
    project = copy_project(real_store, tmp_path / "p")
    # Two fresh interpreters with other string hashes (the other tests' commands share
    # one: tests/warm_cli.py): no output may follow the order of a set or a dict of strings.
    snapshot(run_cli, project, "2018-06", env={**SDE_ENV, "PYTHONHASHSEED": "1"})
    first = (project / "site").resolve()
    snapshot(run_cli, project, "2018-06", env={**SDE_ENV, "PYTHONHASHSEED": "2"})
    second = (project / "site").resolve()

    assert first != second and first.is_dir(), "the previous build is kept beside the new one"
    a, b = tree(first), tree(second)
    assert sorted(a) == sorted(b)
    differ = [name for name in a if a[name] != b[name]]
    assert differ == [], f"{len(differ)} files differ, e.g. {differ[:5]}"
    # The comparison covered a real site: tiles, pages, count files, zip, metadata.
    for name in (
        "index.html",
        "about.html",
        "metadata.json",
        "metro/edges.csv",
        "metro/heatmetro-metro-2018-06.zip",
    ):
        assert name in a, name
    assert sum(n.endswith(".png") and n.startswith(("tiles/", "members/")) for n in a) > 20
    assert json.loads(a["metadata.json"])["built_at"] == "2023-11-14T22:13:20Z"


# --------------------------------------------------------------------------- atomic publish


def test_a_killed_snapshot_leaves_the_previous_site_serving(
    real_store: Path, run_cli: Run, tmp_path: Path
) -> None:
    project = copy_project(real_store, tmp_path / "p")
    site, builds = project / "site", project / ".site.builds"
    snapshot(run_cli, project, "2018-06", env=SDE_ENV)
    published = site.resolve()
    before = tree(site)

    # A snapshot of ANOTHER month (different metadata, window and counts), killed mid-build.
    cmd = [*HEATMETRO, "snapshot", "-c", str(project / "config.toml"), "--month", "2018-07"]
    proc = subprocess.Popen(
        cmd, env=SDE_ENV, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    partial: Path | None = None
    deadline = time.monotonic() + 60
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            found = sorted(builds.glob("*.partial"))
            # Part-way: the build folder exists and the tiles have started to land in it.
            if found and (found[0] / "tiles").exists():
                partial = found[0]
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.001)
    finally:
        if proc.poll() is None and partial is None:
            proc.kill()
        proc.wait(timeout=30)
    assert partial is not None, f"snapshot ended (rc {proc.returncode}) before it could be killed"
    assert proc.returncode == -signal.SIGKILL

    # Readers still get the previous complete site, byte for byte.
    assert partial.is_dir(), "the killed build was expected to be left unfinished"
    assert site.resolve() == published
    assert tree(site) == before
    assert json.loads((site / "metadata.json").read_text())["month"] == "2018-06"
    assert (site / "index.html").is_file() and (site / "tiles" / "all").is_dir()

    # The next snapshot succeeds, publishes the new month and clears the debris.
    snapshot(run_cli, project, "2018-07", env=SDE_ENV)
    assert not partial.exists()
    assert sorted(builds.glob("*.partial")) == []
    assert site.resolve() != published
    assert json.loads((site / "metadata.json").read_text())["month"] == "2018-07"
    assert published.is_dir(), "the previous build is kept for rollback"


def test_sigterm_stops_a_snapshot_in_one_line_and_keeps_the_site(
    real_store: Path, run_cli: Run, tmp_path: Path
) -> None:
    """systemd's or Kubernetes' stop: as Ctrl-C, one line, exit 143, the unfinished build
    removed and the published site as it was."""
    project = copy_project(real_store, tmp_path / "p")
    site, builds = project / "site", project / ".site.builds"
    snapshot(run_cli, project, "2018-06", env=SDE_ENV)
    before = tree(site)
    cmd = [*HEATMETRO, "snapshot", "-c", str(project / "config.toml"), "--month", "2018-07"]
    proc = subprocess.Popen(cmd, env=SDE_ENV, cwd=REPO, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    try:
        while proc.poll() is None and not list(builds.glob("*.partial/tiles")):
            assert time.monotonic() < deadline, "no build under way within 60 s"
            time.sleep(0.001)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == "heatmetro snapshot: stopped by SIGTERM", err
    assert "Traceback" not in err
    assert sorted(builds.glob("*.partial")) == [], "the unfinished build was left behind"
    assert tree(site) == before


# --------------------------------------------------------------------------- user mistakes


@pytest.mark.parametrize("month", ["2021-13", "2021-6", "21-06", "2021-06-01", " 2021-06", ""])
def test_bad_month_is_a_clean_error(
    real_store: Path, run_cli: Run, tmp_path: Path, month: str
) -> None:
    project = copy_project(real_store, tmp_path / "p")
    proc = snapshot(run_cli, project, month, check=False)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr  # one line
    assert "--month" in proc.stderr and "YYYY-MM" in proc.stderr and repr(month) in proc.stderr
    assert not (project / "site").exists()
    assert sorted(project.glob(".site.builds/*")) == [], "nothing may be built for a bad month"


def test_snapshot_without_a_store_is_a_clean_error(project: Path, run_cli: Run) -> None:
    proc = snapshot(run_cli, project, check=False)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "store" in proc.stderr and "heatmetro ingest" in proc.stderr
    assert str(project / "state") in proc.stderr  # says where it looked
    assert not (project / "state" / "shards").exists(), "a snapshot must not create a store"
    assert not (project / "site").exists()


def test_out_dir_that_is_someone_elses_folder_is_never_replaced(
    real_store: Path, run_cli: Run, tmp_path: Path
) -> None:
    """A snapshot swaps a link at ``out_dir``. A folder already there is replaced only if
    it is a heatmap site from before links (and then kept beside the builds); someone's
    documents, or a file, are refused in one line and left as they were."""
    project = copy_project(real_store, tmp_path / "p")
    thesis = project / "site" / "docs" / "thesis.txt"
    thesis.parent.mkdir(parents=True)
    thesis.write_text("precious")
    proc = snapshot(run_cli, project, "2018-06", check=False)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert "not a heatmap site" in proc.stderr and "Traceback" not in proc.stderr
    assert thesis.read_text() == "precious" and not (project / "site").is_symlink()
    assert [p.name for p in (project / "site").iterdir()] == ["docs"]  # no weekly map either
    proc = run_cli("snapshot", "-c", project / "config.toml", "--weekly", "--until",
                   "2018-06-20", check=False)  # fmt: skip
    assert proc.returncode == 1 and "not a heatmap site" in proc.stderr, proc.stderr
    assert [p.name for p in (project / "site").iterdir()] == ["docs"]
    assert not list(project.glob(".site.builds/*"))
    shutil.rmtree(project / "site")
    (project / "site").write_text("notes")
    proc = snapshot(run_cli, project, "2018-06", check=False)
    assert proc.returncode == 1 and "is a file" in proc.stderr, proc.stderr
    assert (project / "site").read_text() == "notes"
    # An earlier site, a plain folder: the new one replaces it, and it is kept.
    (project / "site").unlink()
    snapshot(run_cli, project, "2018-06")
    old = project / "old-site"
    (project / "site").resolve().rename(old)
    (project / "site").unlink()
    old.rename(project / "site")
    snapshot(run_cli, project, "2018-06")
    assert (project / "site").is_symlink() and (project / "site" / "index.html").exists()
    kept = project / ".site.builds" / "000000-previous-site"
    assert (kept / "metadata.json").exists() and (kept / "index.html").exists()


def test_a_release_overlapping_the_published_one_warns_about_exact_metro_counts(
    real_store: Path, run_cli: Run, tmp_path: Path
) -> None:
    """Two monthly releases differ by a month's part less the month that left (README rule
    9): without metro_epsilon, publishing the next month says so; the same month again,
    or a window that does not overlap, does not."""
    project = copy_project(real_store, tmp_path / "p")
    warning = "overlapping windows"
    first = snapshot(run_cli, project, "2018-06", env=cli_env(HEATMETRO_QUIET="0"))
    assert warning not in first.stderr
    again = snapshot(run_cli, project, "2018-06", env=cli_env(HEATMETRO_QUIET="0"))
    assert warning not in again.stderr
    later = snapshot(run_cli, project, "2018-07", env=cli_env(HEATMETRO_QUIET="0"))
    assert warning in later.stderr and "2018-06 and 2018-07" in later.stderr, later.stderr
    apart = snapshot(run_cli, project, "2019-07", env=cli_env(HEATMETRO_QUIET="0"),
                     check=False)  # fmt: skip
    assert warning not in apart.stderr
