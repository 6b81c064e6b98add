"""Preview the published site on 127.0.0.1 (``heatmetro serve``).

A plain static file server, like any CDN: if the site works here from a sub-folder, it
works on a static host. It binds to the loopback interface only, because ``out/`` also
holds the ``members/`` tiles that a real host keeps behind authentication.
"""

from __future__ import annotations

import errno
import io
import re
import threading
from collections.abc import Callable
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from heatmetro.core.errors import PublishError

HOST = "127.0.0.1"
_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


class _QuietHandler(SimpleHTTPRequestHandler):
    """Static files with no per-request log lines and no caching."""

    extensions_map = {
        **SimpleHTTPRequestHandler.extensions_map,
        ".geojson": "application/geo+json",
        ".csv": "text/csv; charset=utf-8",
        ".md": "text/markdown; charset=utf-8",
        ".json": "application/json",
    }

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 -- base signature
        """Say nothing: a preview server's access log is noise in the terminal."""

    def end_headers(self) -> None:
        # A preview is rebuilt often; a cached tile from the previous build would lie.
        self.send_header("Cache-Control", "no-store")
        self.send_header("Accept-Ranges", "bytes")
        super().end_headers()

    def send_head(self):  # type: ignore[no-untyped-def]
        """Answer ``Range: bytes=a-b`` with 206 and that slice, as CDNs do (PMTiles needs it)."""
        match = _RANGE.fullmatch(self.headers.get("Range", "").strip())
        path = Path(self.translate_path(self.path))
        if match is None or not path.is_file():
            return super().send_head()
        size = path.stat().st_size
        first = int(match.group(1))
        last = min(int(match.group(2)) if match.group(2) else size - 1, size - 1)
        if first >= size or last < first:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        with path.open("rb") as fh:
            fh.seek(first)
            body = fh.read(last - first + 1)
        self.send_response(206)
        self.send_header("Content-Type", self.guess_type(str(path)))
        self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        return io.BytesIO(body)


def _make_server(out_dir: Path, port: int) -> ThreadingHTTPServer:
    if not out_dir.is_dir():
        msg = f"serve: {out_dir} is not a folder; run `heatmetro snapshot` first"
        raise FileNotFoundError(msg)
    handler = partial(_QuietHandler, directory=str(out_dir))
    try:
        return ThreadingHTTPServer((HOST, port), handler)
    except OSError as exc:
        hint = "; pick another with --port" if exc.errno == errno.EADDRINUSE else ""
        msg = f"cannot listen on {HOST}:{port}: {exc.strerror}{hint}"
        raise PublishError(msg) from None


def _url(server: ThreadingHTTPServer) -> str:
    """The address the socket is really bound to (not the one asked for)."""
    host, port = server.socket.getsockname()[:2]
    return f"http://{host}:{port}/"


def ready_line(out_dir: Path, url: str) -> str:
    """What ``heatmetro serve`` prints once it listens (tests wait for it)."""
    return f"Serving {out_dir} at {url} (Ctrl-C to stop)"


def serve(out_dir: Path, port: int = 8000, *, ready: Callable[[str], None] | None = None) -> None:
    """Serve ``out_dir`` on ``http://127.0.0.1:port/`` until Ctrl-C.

    Args:
        out_dir: the published site.
        port: TCP port; 0 picks a free one.
        ready: called with the URL once the server listens; by default the URL is printed.

    Raises:
        FileNotFoundError: ``out_dir`` does not exist.
        PublishError: the port is taken (or cannot be bound).
    """
    with _make_server(out_dir, port) as server:
        url = _url(server)
        try:
            if ready is not None:
                ready(url)
            else:
                print(ready_line(out_dir, url), flush=True)
            server.serve_forever()
        except KeyboardInterrupt:
            # Ctrl-C is the normal way out of a preview: no traceback.
            pass


def start_background(out_dir: Path, port: int = 0) -> tuple[str, Callable[[], None]]:
    """Serve ``out_dir`` from a daemon thread, for tests.

    Args:
        out_dir: the published site.
        port: TCP port; 0 (the default) picks a free one.

    Returns:
        The base URL (ending in ``/``) and a function that stops the server.
    """
    server = _make_server(out_dir, port)
    thread = threading.Thread(target=server.serve_forever, name="heatmetro-serve", daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return _url(server), stop
