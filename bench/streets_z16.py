"""Draw the README's zoom-16 street picture (``docs/streets_z16_after.png``) from the
bundled rides: 3 x 2 tiles of Northampton, window ending 2020-10, over the map's dark
background. Usage::

    .venv/bin/python bench/streets_z16.py OUT.png [--threshold-ring N] [--heat-resolution R]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.valleybike_project import write_events  # noqa: E402
from heatmetro.flows.importers.valleybike_csv import bundled_csvs  # noqa: E402

X0, Y0, Z = 19544, 24248, 16  # the top-left tile: Northampton's rail trail and Route 5
BACKGROUND = np.array([22, 22, 28], dtype=np.float64)
SALT = "bench-salt-not-secret"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--threshold-ring", type=int, default=None)
    parser.add_argument("--heat-resolution", type=int, default=13)
    args = parser.parse_args()
    env = {"HEATMETRO_SALT": SALT, "HEATMETRO_QUIET": "1", "PATH": "/usr/bin:/bin"}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ring = "" if args.threshold_ring is None else f"threshold_ring = {args.threshold_ring}\n"
        (root / "config.toml").write_text(
            'state_dir = "state"\nout_dir = "site"\nshards = 1\nbasemap_url = ""\n'
            f"min_zoom = {Z}\npublic_max_zoom = {Z}\nmax_zoom = {Z}\n"
            f"heat_resolution = {args.heat_resolution}\n{ring}"
        )
        events = root / "events.jsonl"
        write_events(events, bundled_csvs())
        cli = [sys.executable, "-m", "heatmetro.cli"]
        config = str(root / "config.toml")
        subprocess.run(
            [*cli, "ingest", "-q", "-c", config, str(events)], check=True, env=env, cwd=REPO
        )
        subprocess.run([*cli, "snapshot", "-q", "-c", config, "--month", "2020-10"], check=True, env=env, cwd=REPO)  # fmt: skip
        rgba = np.zeros((512, 768, 4), dtype=np.float64)
        for dx in range(3):
            for dy in range(2):
                tile = root / "site" / "tiles" / "all" / str(Z) / str(X0 + dx) / f"{Y0 + dy}.png"
                if tile.exists():
                    with Image.open(tile) as im:
                        rgba[dy * 256 : (dy + 1) * 256, dx * 256 : (dx + 1) * 256] = np.asarray(
                            im.convert("RGBA")
                        )
    alpha = rgba[:, :, 3:4] / 255.0
    rgb = rgba[:, :, :3] * alpha + BACKGROUND * (1.0 - alpha)
    Image.fromarray(np.rint(rgb).astype(np.uint8)).save(args.out, optimize=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
