"""A real browser for tests: Debian's Chromium driven by Playwright, offline by force.

Every request that does not go to ``http://127.0.0.1`` (or ``file://`` / ``data:``) is
aborted and recorded, so a page that secretly needs the internet shows up in
``SitePage.blocked`` instead of silently working on a developer's laptop.

Typical use::

    from tests.browser import chromium_available, launch, open_site

    with launch() as browser, open_site(site_dir, browser=browser) as site:
        site.wait_for_map()
        assert site.page_errors == [] and site.blocked == []
        shot = site.screenshot()
        assert heat_pixels(shot, site.region_of(bounds)) > 500
        site.click_radio("Ride")

``open_site`` accepts a URL or a folder (served on 127.0.0.1 for the duration).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from playwright.sync_api import Browser, ConsoleMessage, Page, Route, sync_playwright

from heatmetro.site_builder.serve import start_background

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",  # tests run as root in CI
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
LOCAL_PREFIXES = ("http://127.0.0.1", "file://", "data:", "blob:")
#: The default basemap (OpenStreetMap's tiles): aborted like everything remote, and the
#: page must still show its heat without it.
BASEMAP_PREFIX = "https://tile.openstreetmap.org/"
VIEWPORT = (1000, 700)

_HIDE_CONTROLS_JS = """hide => {
    let style = document.getElementById("harness-hide-controls");
    if (hide && !style) {
        style = document.createElement("style");
        style.id = "harness-hide-controls";
        style.textContent = ".leaflet-control-container { visibility: hidden !important; }";
        document.head.appendChild(style);
    } else if (!hide && style) {
        style.remove();
    }
}"""

Region = tuple[int, int, int, int]  # (left, top, right, bottom) in CSS pixels


def chromium_available() -> bool:
    """Whether Debian's Chromium is installed where the harness expects it."""
    return CHROMIUM.is_file()


@contextmanager
def launch() -> Iterator[Browser]:
    """Start headless Chromium (share one per test module: launching takes ~1 s)."""
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class SitePage:
    """One open page and everything it tried to do.

    Attributes:
        page: the Playwright page, for anything the helpers do not cover.
        url: the URL that was opened.
        blocked: URLs of non-local requests that were aborted.
        page_errors: uncaught exceptions thrown in the page.
        console_errors: ``console.error`` messages (including failed resource loads).
        tiles: ``(url, status)`` of every response under ``/tiles/``.
        failed: local requests that failed without a response.
    """

    page: Page
    url: str
    blocked: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    tiles: list[tuple[str, int]] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def console_errors_except_missing_tiles(self) -> list[str]:
        """``console_errors`` without the 404s of tiles.

        The tile writer skips empty tiles, so a real site answers 404 for blank squares
        inside the heat's bounds, and Chromium logs each one; that is not a bug.
        """
        return [
            e
            for e in self.console_errors
            if not ("status of 404" in e and "/tiles/" in e and e.endswith(".png)"))
            and not e.endswith(f"({BASEMAP_PREFIX}")
            and f"({BASEMAP_PREFIX}" not in e
        ]

    def blocked_except_basemap(self) -> list[str]:
        """``blocked`` without the basemap's tiles: what else tried to leave 127.0.0.1."""
        return [u for u in self.blocked if not u.startswith(BASEMAP_PREFIX)]

    def wait_for_map(self, timeout_ms: int = 10_000) -> None:
        """Wait until Leaflet is loaded and every visible tile has finished loading."""
        self.page.wait_for_function("typeof window.L !== 'undefined'", timeout=timeout_ms)
        self.wait_for_tiles(timeout_ms)

    def wait_for_tiles(self, timeout_ms: int = 10_000) -> None:
        """Wait for tile images to settle, including Leaflet's 200 ms fade-in."""
        self.page.wait_for_load_state("networkidle", timeout=timeout_ms)
        # `complete` is also true for a tile that failed: a 404 must not hang the test.
        self.page.wait_for_function(
            "[...document.querySelectorAll('img.leaflet-tile')].every(i => i.complete)",
            timeout=timeout_ms,
        )
        self.page.wait_for_timeout(400)

    def leaflet_loaded(self) -> bool:
        """Whether ``window.L`` (Leaflet) is defined in the page."""
        return bool(self.page.evaluate("typeof window.L !== 'undefined'"))

    def screenshot(self, path: Path | None = None, *, hide_controls: bool = False) -> np.ndarray:
        """The viewport as an ``(height, width, 3)`` uint8 RGB array.

        Args:
            path: also save the PNG there (look at it when a test fails).
            hide_controls: hide Leaflet's controls (legend, panels) so that only the
                map's panes are counted; the legend's colour ramp looks like heat too.
        """
        self.page.evaluate(_HIDE_CONTROLS_JS, hide_controls)
        png = self.page.screenshot(path=str(path) if path else None)
        self.page.evaluate(_HIDE_CONTROLS_JS, False)
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))

    def region_of(self, bounds: tuple[float, float, float, float]) -> Region:
        """Screen region of ``(south, west, north, east)`` on the page's Leaflet map.

        Needs the map in ``window.heatmetro.map`` (set by the site's heatmetro.js).
        """
        south, west, north, east = bounds
        box = self.page.evaluate(
            """([s, w, n, e]) => {
                const map = window.heatmetro.map;
                const r = map.getContainer().getBoundingClientRect();
                const sw = map.latLngToContainerPoint([s, w]);
                const ne = map.latLngToContainerPoint([n, e]);
                return [r.left + sw.x, r.top + ne.y, r.left + ne.x, r.top + sw.y];
            }""",
            [south, west, north, east],
        )
        left, top, right, bottom = (round(v) for v in box)
        return left, top, right, bottom

    def click_radio(self, label: str) -> None:
        """Click the radio button labelled ``label`` (a layer or a colour scheme)."""
        self.page.get_by_role("radio", name=label, exact=True).click()
        self.wait_for_tiles()

    def click_layer(self, label: str) -> None:
        """Choose the base layer ``label`` in Leaflet's layer control."""
        control = self.page.locator(".leaflet-control-layers")
        control.hover()  # a collapsed control only opens on hover
        control.get_by_role("radio", name=label, exact=True).click()
        self.wait_for_tiles()


def heat_mask(image: np.ndarray) -> np.ndarray:
    """Pixels that look like heat: strongly red, orange or yellow."""
    rgb = image[..., :3].astype(np.int16)
    r, b = rgb[..., 0], rgb[..., 2]
    return (r > 150) & (r > b + 60)


def heat_pixels(image: np.ndarray, region: Region | None = None) -> int:
    """Count heat pixels in ``image``, optionally only inside ``region``."""
    mask = heat_mask(image)
    if region is not None:
        left, top, right, bottom = region
        h, w = mask.shape
        mask = mask[max(top, 0) : min(bottom, h), max(left, 0) : min(right, w)]
    return int(mask.sum())


@contextmanager
def open_site(
    url_or_dir: str | Path,
    *,
    browser: Browser | None = None,
    viewport: tuple[int, int] = VIEWPORT,
    path: str = "",
    device_scale_factor: float = 1.0,
) -> Iterator[SitePage]:
    """Open a site in Chromium with the network cut off from everything but 127.0.0.1.

    Args:
        url_or_dir: a URL, or a folder to serve on 127.0.0.1 while the page is open.
        browser: a browser from :func:`launch` to reuse; a new one otherwise.
        viewport: ``(width, height)`` in CSS pixels.
        path: appended to the served folder's URL (e.g. ``"about.html"``).
        device_scale_factor: device pixels per CSS pixel (2 = a high-DPI screen).

    Yields:
        The open page, after ``load``; call :meth:`SitePage.wait_for_map` for maps.
    """
    stop = None
    if isinstance(url_or_dir, Path) or not str(url_or_dir).startswith(("http:", "file:")):
        base, stop = start_background(Path(url_or_dir))
        url = base + path
    else:
        url = str(url_or_dir) + path
    try:
        with nullcontext(browser) if browser else launch() as chromium:
            context = chromium.new_context(
                viewport={"width": viewport[0], "height": viewport[1]},
                device_scale_factor=device_scale_factor,
                service_workers="block",
            )
            page = context.new_page()
            site = SitePage(page=page, url=url)
            _watch(site, page)
            try:
                page.goto(url, wait_until="load")
                yield site
            finally:
                context.close()
    finally:
        if stop is not None:
            stop()


def _watch(site: SitePage, page: Page) -> None:
    def route(r: Route) -> None:
        if r.request.url.startswith(LOCAL_PREFIXES):
            r.continue_()
        else:
            site.blocked.append(r.request.url)
            r.abort()

    def console(msg: ConsoleMessage) -> None:
        if msg.type == "error":
            site.console_errors.append(f"{msg.text} ({msg.location.get('url', '')})")

    page.route("**/*", route)
    page.on("pageerror", lambda exc: site.page_errors.append(str(exc)))
    page.on("console", console)
    page.on(
        "response",
        lambda resp: site.tiles.append((resp.url, resp.status)) if "/tiles/" in resp.url else None,
    )
    page.on(
        "requestfailed",
        lambda req: None if req.url in site.blocked else site.failed.append(req.url),
    )
