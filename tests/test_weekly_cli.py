"""``heatmetro snapshot --weekly`` through the CLI: its stricter k and zoom, its window
of local start dates, and its publish beside the monthly site's atomic swap."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from heatmetro.site_builder.tile_math import tile_bounds
from tests.streams import (
    NORTH_EAST,
    NORTH_WEST,
    NORTHAMPTON_EAST,
    NORTHAMPTON_WEST,
    activity,
    athlete,
    line,
    to_jsonl,
)
from tests.test_personal_cli import tile_alpha

Run = Callable[..., subprocess.CompletedProcess[str]]
MID = (NORTHAMPTON_WEST[0], -72.6350)
ELM = line(NORTHAMPTON_WEST, NORTHAMPTON_EAST)


# Every test here reads the clock's day as the CLI does: none runs across midnight UTC.
pytestmark = pytest.mark.usefixtures("same_utc_day")


def yesterday() -> date:
    """The weekly map's default end: the clock's yesterday (UTC)."""
    return (datetime.now(UTC) - timedelta(days=1)).date()


def recent(who: str, days_ago: int) -> dict:
    """A ride on Elm Street ``days_ago`` days before today (by the clock, as the weekly
    map's default window), at 15:00 UTC."""
    day = datetime.now(UTC).date() - timedelta(days=days_ago)
    start = datetime(day.year, day.month, day.day, 15, 0, tzinfo=UTC)
    return activity(f"{who}-{day}", who, ELM, start=start)


def month_of_recent(days_ago: int) -> list[str]:
    """``--month M`` for the month of a recent ride (``--partial`` if it is this one)."""
    day = datetime.now(UTC).date() - timedelta(days=days_ago)
    args = ["--month", f"{day:%Y-%m}"]
    today = datetime.now(UTC).date()
    return args + (["--partial"] if (day.year, day.month) == (today.year, today.month) else [])


def ride(who: str, day: int, hour: int = 15) -> dict:
    start = datetime(2021, 6, day, hour, 0, tzinfo=UTC)
    return activity(f"{who}-{day}-{hour}", who, ELM, start=start)


def weekly_zooms(site: Path) -> set[int]:
    return {int(p.relative_to(site / "weekly" / "tiles").parts[1]) for p in
            (site / "weekly" / "tiles").rglob("*.png")}  # fmt: skip


def test_weekly_map_needs_five_people_and_stops_at_zoom_11(project: Path, run_cli: Run) -> None:
    config = project / "config.toml"
    site = project / "site"

    def ingest(events: list[dict], name: str) -> None:
        (project / name).write_bytes(to_jsonl(events))
        run_cli("ingest", "-c", config, project / name)

    # Four people in the week of 2021-06-14..20, and a fifth whose ride started on
    # 2021-06-14 02:00 UTC, i.e. 2021-06-13 22:00 local time (UTC-4): not in the week.
    ingest([ride(f"a{i}", 15 + i) for i in range(4)] + [ride("a4", 14, hour=2)], "one.jsonl")
    run_cli("snapshot", "-c", config, "--month", "2021-06")
    assert tile_alpha(site / "tiles", "all", 11, *MID) > 0  # 5 >= 3 on the monthly map
    monthly_index = (site / "index.html").read_bytes()

    out = run_cli("snapshot", "-c", config, "--weekly", "--until", "2021-06-20",
                  env=None).stdout  # fmt: skip
    weekly = site / "weekly"
    assert (weekly / "index.html").is_file()
    for z in (10, 11):
        assert tile_alpha(weekly / "tiles", "all", z, *MID) == 0, f"4 people lit z{z}"
    meta = json.loads((weekly / "metadata.json").read_text())
    assert meta["thresholds"]["min_athletes"] == 5 and meta["thresholds"]["max_zoom"] == 11
    assert meta["window"] == {"first_day": "2021-06-14", "last_day": "2021-06-20"}
    assert meta["counts"]["athletes"] == 4, out
    # An empty week says why: people rode, but no spot had 5 of them.
    text = (weekly / "index.html").read_text()
    assert "4 public activities by 4 people, and no spot reached 5 people" in text, text
    # The monthly site is untouched by the weekly publish.
    assert (site / "index.html").read_bytes() == monthly_index

    # A fifth person rides on Saturday: now the week has heat, but never past zoom 11.
    ingest([ride("a5", 19)], "two.jsonl")
    run_cli("snapshot", "-c", config, "--weekly", "--until", "2021-06-20")
    for z in (10, 11):
        assert tile_alpha(weekly / "tiles", "all", z, *MID) > 0, f"5 people, no heat at z{z}"
    assert weekly_zooms(site) == {10, 11}
    assert not (weekly / "members").exists()
    page = (weekly / "index.html").read_text()
    assert "tiles/all/{z}/{x}/{y}.png" in page and "2021-06-14" in page
    # Zoom 11 told as ground at Northampton (42.3 N): 76.4 m * cos(42.3) = 57 m a pixel.
    assert "stops at zoom 11 (a screen pixel is about 57 m of ground)" in page

    # The next monthly build rebuilds the weekly map for the last 7 days by the clock (as
    # the weekly job would: nothing here) and links to it; about.html explains.
    run_cli("snapshot", "-c", config, "--month", "2021-06")
    meta = json.loads((weekly / "metadata.json").read_text())
    assert meta["window"]["last_day"] == str(yesterday()) and meta["counts"]["athletes"] == 0
    index = (site / "index.html").read_text()
    assert 'href="weekly/index.html"' in index
    # ... but a week without heat is no choice in the layer switcher (its tiles would all
    # be 404s): the link says which days it is.
    assert "weekly/tiles/all" not in index and "Last 7 days" not in index
    assert f">7 days to {yesterday()}</a>" in index
    about = (site / "about.html").read_text()
    assert "2024" in about and "<strong>5</strong>" in about and "<strong>11</strong>" in about


def test_weekly_cli_mistakes(project: Path, run_cli: Run) -> None:
    config = project / "config.toml"
    for args, message in (
        (["--weekly", "--until", "2021-6-20"], "expected YYYY-MM-DD"),
        (["--until", "2021-06-20"], "only applies with --weekly"),
        (["--weekly", "--month", "2021-06"], "cannot be combined"),
        (["--weekly", "--until", "2099-01-01"], "2099-01-01: that day is not over"),
        (["--weekly", "--until", str(datetime.now(UTC).date())], "that day is not over"),
    ):
        proc = run_cli("snapshot", "-c", config, *args, check=False)
        assert proc.returncode == 1 and message in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr


@pytest.mark.browser
@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="needs Debian chromium")
@pytest.mark.parametrize("tiles_format", ["png", "pmtiles"])
def test_monthly_page_switches_to_the_weekly_layer_in_chromium(
    project: Path, run_cli: Run, tiles_format: str
) -> None:
    from tests.browser import open_site
    from tests.conftest import write_config

    config = write_config(project, tiles_format=tiles_format)
    (project / "week.jsonl").write_bytes(to_jsonl([recent(f"a{i}", 2) for i in range(5)]))
    run_cli("ingest", "-c", config, project / "week.jsonl")
    run_cli("snapshot", "-c", config, *month_of_recent(2))
    run_cli("snapshot", "-c", config, "--weekly")
    run_cli("snapshot", "-c", config, *month_of_recent(2))  # now the page offers the week
    index = (project / "site" / "index.html").read_text()
    # Named by its days (a stopped weekly job must not pass for "the last 7 days"), and
    # drawn natively only up to zoom 11.
    assert f'"7 days to {yesterday()}"' in index and "Last 7 days" not in index
    assert '"maxNativeZoom": 11' in index
    # ... asking for weekly tiles only where the weekly map has heat (no 404s around it)
    south, west, north, east = json.loads(
        (project / "site" / "weekly" / "metadata.json").read_text()
    )["bounds"]
    assert south < MID[0] < north and west < MID[1] < east
    index = (project / "site" / "index.html").read_text()
    weekly_layer = index[index.index("weekly/tiles/all") :]
    weekly_layer = weekly_layer[: weekly_layer.index(".addTo(")]
    numbers = [float(v) for v in re.findall(r"-?\d+\.\d+", weekly_layer.split('"bounds"')[1])]
    assert numbers[:4] == [south, west, north, east], weekly_layer
    weekly_tiles = project / "site" / "weekly" / "tiles"
    if tiles_format == "pmtiles":  # one archive per layer, as the monthly map
        assert (weekly_tiles / "all.pmtiles").is_file() and not list(weekly_tiles.rglob("*.png"))
    with open_site(project / "site") as site:
        site.wait_for_map()
        before = len(site.tiles)
        site.click_layer(f"7 days to {yesterday()}")
        site.wait_for_tiles()
        weekly = site.tiles[before:]
        assert site.page_errors == [] and site.blocked_except_basemap() == []
    assert weekly and all("/weekly/tiles/all" in u for u, _ in weekly), weekly
    statuses = {status for _, status in weekly}
    if tiles_format == "pmtiles":  # byte ranges of the one archive
        assert statuses == {206}, weekly
    else:  # a PNG per tile (404 where the week has no heat)
        assert 200 in statuses and statuses <= {200, 404}, weekly


def test_a_rolled_back_site_survives_the_next_builds(project: Path, run_cli: Run) -> None:
    """The rollback of docs/operations.md: the site served stays until the next build
    replaces it, and every kept monthly build's weekly link still leads somewhere."""
    config, site = project / "config.toml", project / "site"
    (project / "one.jsonl").write_bytes(to_jsonl([ride(f"a{i}", 15 + i) for i in range(5)]))
    run_cli("ingest", "-c", config, project / "one.jsonl")

    def monthly() -> Path:
        run_cli("snapshot", "-c", config, "--month", "2021-06")
        return site.resolve()

    def weekly(until: str) -> None:
        run_cli("snapshot", "-c", config, "--weekly", "--until", until)

    first = monthly()
    weekly("2021-06-19")  # served through the first monthly build's own link
    second = monthly()
    weekly("2021-06-20")
    weekly("2021-06-21")  # the first build's weekly map is now two weekly builds old
    for build in (first, second):
        assert (build / "weekly" / "index.html").is_file(), f"{build.name}: weekly link broken"

    # Roll back to the first build, as docs/operations.md says.
    subprocess.run(
        ["sh", "-c", f"ln -sfn .site.builds/{first.name} site.new && mv -T site.new site"],
        cwd=project, check=True,
    )  # fmt: skip
    assert site.resolve() == first
    copy = subprocess.run(["cp", "-rL", str(site), str(project / "cdn")], capture_output=True)
    assert copy.returncode == 0, copy.stderr
    third = monthly()
    assert first.is_dir(), "the build served at the time of the next build was removed"
    assert not second.exists() and third.is_dir()
    assert sorted(p.name for p in (project / ".site.builds").iterdir()) == [first.name, third.name]
    weekly("2021-06-22")
    for build in (first, third):
        assert (build / "weekly" / "index.html").is_file(), f"{build.name}: weekly link broken"


def test_an_opt_out_leaves_the_weekly_map_by_the_next_monthly_snapshot(
    project: Path, run_cli: Run
) -> None:
    """DESIGN rules 5 and 6 ("by the next snapshot") hold for the weekly map too, even
    when nobody runs the weekly job again: the monthly snapshot rebuilds it (for the last
    7 days, as the weekly job would: the same days again would differ by nothing but the
    opt-outs, and show whose they were)."""
    config, site = project / "config.toml", project / "site"
    (project / "one.jsonl").write_bytes(to_jsonl([recent(f"a{i}", 2) for i in range(6)]))
    run_cli("ingest", "-c", config, project / "one.jsonl")
    run_cli("snapshot", "-c", config, *month_of_recent(2))
    run_cli("snapshot", "-c", config, "--weekly")
    assert tile_alpha(site / "weekly" / "tiles", "all", 11, *MID) > 0  # 6 people >= 5

    # Two of the six opt out: four left, below the weekly k of 5 (still >= 3 monthly).
    opt_outs = [athlete(f"a{i}", aggregate_opt_out=True) for i in range(2)]
    (project / "two.jsonl").write_bytes(to_jsonl(opt_outs))
    run_cli("ingest", "-c", config, project / "two.jsonl")
    proc = run_cli("snapshot", "-c", config, *month_of_recent(2))
    first = yesterday() - timedelta(days=6)
    assert f"weekly map rebuilt from the store as it is now: {first}..{yesterday()}" in proc.stderr
    assert tile_alpha(site / "weekly" / "tiles", "all", 11, *MID) == 0, "opted out, still weekly"
    meta = json.loads((site / "weekly" / "metadata.json").read_text())
    assert meta["counts"]["athletes"] == 4
    assert tile_alpha(site / "tiles", "all", 11, *MID) > 0  # 4 >= 3 on the monthly map
    assert 'href="weekly/index.html"' in (site / "index.html").read_text()


def test_a_damaged_weekly_map_does_not_block_the_monthly_snapshot(
    project: Path, run_cli: Run
) -> None:
    """Nothing of the published weekly map is read: a damaged metadata.json (a change's
    review: it stopped every monthly snapshot, and with it every opt-out) is replaced."""
    config, site = project / "config.toml", project / "site"
    (project / "one.jsonl").write_bytes(to_jsonl([recent(f"a{i}", 2) for i in range(5)]))
    run_cli("ingest", "-c", config, project / "one.jsonl")
    run_cli("snapshot", "-c", config, *month_of_recent(2))
    run_cli("snapshot", "-c", config, "--weekly")
    (site / "weekly" / "metadata.json").write_text('{"window": {"last_day": "garbage"}')
    run_cli("snapshot", "-c", config, *month_of_recent(2))
    meta = json.loads((site / "weekly" / "metadata.json").read_text())
    assert meta["window"]["last_day"] == str(yesterday())


def test_weekly_in_a_cluster_is_refused_in_one_line(project: Path, run_cli: Run) -> None:
    proc = run_cli("snapshot", "-c", project / "config.toml", "--weekly", "-a",
                   "127.0.0.1:1;127.0.0.1:2", "-i", "0", check=False)  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "without -a/-i, on one machine holding every shard" in proc.stderr


def _tile_bounds(url: str) -> tuple[float, float, float, float]:
    """(south, west, north, east) of the tile ``…/{z}/{x}/{y}.png``."""
    z, x, y = (int(v) for v in re.findall(r"/(\d+)/(\d+)/(\d+)\.png", url)[0])
    b = tile_bounds(x, y, z)
    return b.south, b.west, b.north, b.east


@pytest.mark.browser
@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="needs Debian chromium")
def test_the_monthly_page_follows_the_weekly_jobs_newer_week(project: Path, run_cli: Run) -> None:
    """The monthly page is built once a month, the weekly map every week: the page's
    weekly layer must name the week now published and ask for its tiles where that week
    has heat. It kept the days and bounds of the week it was built with (an outside
    review: "7 days to 2026-11-30" and the old week's bounds all month)."""
    from tests.browser import open_site

    config = project / "config.toml"
    north = line(NORTH_WEST, NORTH_EAST)
    day10 = datetime.now(UTC).date() - timedelta(days=10)
    start10 = datetime(day10.year, day10.month, day10.day, 15, 0, tzinfo=UTC)
    events = [recent(f"a{i}", 2) for i in range(5)]  # Elm Street, 2 days ago
    events += [activity(f"n{i}", f"n{i}", north, start=start10) for i in range(5)]
    (project / "rides.jsonl").write_bytes(to_jsonl(events))
    run_cli("ingest", "-c", config, project / "rides.jsonl")
    run_cli("snapshot", "-c", config, *month_of_recent(2))
    run_cli("snapshot", "-c", config, "--weekly")
    run_cli("snapshot", "-c", config, *month_of_recent(2))  # offers the week to yesterday
    index = (project / "site" / "index.html").read_bytes()
    # The weekly job's next run (here: a week back, with heat on the northern street only).
    until = datetime.now(UTC).date() - timedelta(days=8)
    run_cli("snapshot", "-c", config, "--weekly", "--until", str(until))
    assert (project / "site" / "index.html").read_bytes() == index  # the page as built
    south, west, north_lat, east = json.loads(
        (project / "site" / "weekly" / "metadata.json").read_text()
    )["bounds"]
    assert south <= NORTH_WEST[0] <= north_lat and not south <= NORTHAMPTON_WEST[0] <= north_lat
    with open_site(project / "site") as site:
        site.wait_for_map()
        link = site.page.locator("#hm-weekly-link").text_content()
        before = len(site.tiles)
        site.click_layer(f"7 days to {until}")
        weekly = site.tiles[before:]
        assert site.page_errors == [] and site.blocked_except_basemap() == []
    assert link == f"7 days to {until}"
    assert weekly and 200 in {status for _, status in weekly}, weekly
    for url, _ in weekly:  # only where the published week has heat
        s, w, n, e = _tile_bounds(url)
        assert s <= north_lat and n >= south and w <= east and e >= west, url
