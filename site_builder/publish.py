"""Atomic publishing: build beside ``out_dir``, then swap it in with one rename.

``out_dir`` is a symbolic link to the current build in ``.{name}.builds/``. A new build
is written there completely, then a fresh link is renamed over ``out_dir`` (``rename``
is atomic on POSIX), so readers see the old site or the new one, never a mix; a
failed or killed build leaves the old site serving. The build served until the swap
is kept for rollback (after a rollback too); older ones are removed: by ``publish``, or
beforehand while the new build is made (``start_pruning``).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from heatmetro.core.errors import PublishError
from heatmetro.site_builder.forked import ForkedJob


def builds_dir(out_dir: Path) -> Path:
    return out_dir.parent / f".{out_dir.name}.builds"


def lock_path(out_dir: Path, name: str) -> Path:
    """The file ``out_dir_lock`` locks: ``.{out_dir name}.{name}.lock`` beside ``out_dir``."""
    return out_dir.parent / f".{out_dir.name}.{name}.lock"


@contextmanager
def out_dir_lock(out_dir: Path, name: str, *, waiting: str | None = None) -> Iterator[None]:
    """Hold the lock file ``.{out_dir name}.{name}.lock`` beside ``out_dir`` (blocking);
    with ``waiting``, say it on stderr first if another process holds it."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with lock_path(out_dir, name).open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting:  # said even with --quiet: a cron job's log should tell why
                print(waiting, file=sys.stderr, flush=True)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build_lock(out_dir: Path) -> AbstractContextManager[None]:
    """One monthly build at a time for ``out_dir``: a second snapshot waits (and says so)
    instead of numbering its build as the first one's and removing it as stale."""
    waiting = f"another snapshot of {out_dir} is running: waiting for it to finish"
    return out_dir_lock(out_dir, "build", waiting=waiting)


def new_build_dir(out_dir: Path, label: str) -> Path:
    """An empty folder for the next build (unfinished ones from killed runs are removed)."""
    check_replaceable(out_dir)
    return new_build_in(builds_dir(out_dir), label)


def check_replaceable(out_dir: Path) -> None:
    """``out_dir`` may become a link to the new site only if it is one already, is
    missing or empty, or is a heatmap site from before links: never someone's folder."""
    if out_dir.is_symlink() or not out_dir.exists():
        return
    if not out_dir.is_dir():
        msg = f"out_dir {out_dir}: is a file, not a site folder; refusing to replace it"
        raise PublishError(msg)
    site = (out_dir / "index.html").exists() and (out_dir / "metadata.json").exists()
    if not site and any(out_dir.iterdir()):
        msg = (
            f"out_dir {out_dir}: exists and is not a heatmap site; refusing to replace it "
            "(move it away, or set out_dir to a new folder)"
        )
        raise PublishError(msg)


def new_build_in(root: Path, label: str) -> Path:
    """An empty ``NNNNNN-label.partial`` folder in ``root``, numbered after the last build;
    unfinished builds of killed runs are removed first."""
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob("*.partial"):
        shutil.rmtree(stale, ignore_errors=True)
    n = 1 + max(
        (int(p.name.split("-")[0]) for p in root.iterdir() if p.name.split("-")[0].isdigit()),
        default=0,
    )
    build = root / f"{n:06d}-{label}.partial"
    build.mkdir()
    return build


def published_counts(out_dir: Path) -> dict[str, object] | None:
    """What the published site's ``metadata.json`` says it holds (its ``counts``,
    ``month`` and whether that month was in progress); None without a site or with a
    metadata file that cannot be read."""
    try:
        meta = json.loads((out_dir / "metadata.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or not isinstance(meta.get("counts"), dict):
        return None
    window = meta.get("window")
    in_progress = isinstance(window, dict) and bool(window.get("last_month_in_progress"))
    return {**meta["counts"], "month": meta.get("month"), "month_in_progress": in_progress}


def discard(build: Path) -> None:
    """Remove an unfinished build (the published site is untouched)."""
    shutil.rmtree(build, ignore_errors=True)


def publish(build: Path, out_dir: Path) -> Path:
    """Make ``build`` the published site in one atomic step; returns its final folder."""
    check_replaceable(out_dir)  # before the build is finished: _give_up can discard it
    final = build.with_name(build.name.removesuffix(".partial"))
    build.rename(final)
    # The build served until now stays for rollback: after a rollback it is not the
    # newest older one, and pruning by number alone would delete the site being served.
    served = out_dir.resolve() if out_dir.is_symlink() else None
    target = os.path.relpath(final, out_dir.parent)
    if out_dir.exists() and not out_dir.is_symlink():
        # A site folder from before links: moved aside once, and kept like a served build.
        served = builds_dir(out_dir) / f"000000-previous-{out_dir.name}"
        out_dir.rename(served)
    link = out_dir.with_name(f".{out_dir.name}.link-{os.getpid()}")
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target, target_is_directory=True)
    link.replace(out_dir)
    stop_pruning(builds_dir(out_dir))
    prune_builds(builds_dir(out_dir), keep={final, served})
    return final


# Per builds folder: the forked process removing its older builds while a new one is made.
_PRUNING: dict[Path, ForkedJob[None]] = {}


def start_pruning(out_dir: Path, *, parallel: bool) -> None:
    """Start removing the finished builds other than the one served now: those
    ``publish`` would remove at its end anyway (the served one stays for rollback).
    Removing a build of ~10,000 files and folders took ~0.5 s of a rebuild's last
    stage on these disks, most of it waiting for the disk: with ``parallel``, a forked
    process does it while the new build is made (not a thread: the snapshot forks its
    writers and tile workers meanwhile). ``publish`` waits for it, as does
    ``stop_pruning``."""
    if not parallel or not out_dir.is_symlink():  # one core, or no build to keep yet
        return
    root = builds_dir(out_dir)
    stop_pruning(root)
    # The build served now is read from (its tiles and Metro files are reused); the link
    # is read again before each removal: a build rolled back to meanwhile stays too.
    served = out_dir.resolve()
    _PRUNING[root] = ForkedJob(
        lambda: prune_builds(root, {served}, served_by=out_dir),
        parallel=True,
        what="removing older builds",
    )


def stop_pruning(root: Path) -> None:
    """Wait for the removal ``start_pruning`` began in the builds folder ``root``, if any."""
    job = _PRUNING.pop(root, None)
    if job is not None:
        job.cancel(kill=False)  # let it finish: a build half removed is no use to anyone


def prune_builds(root: Path, keep: set[Path | None], *, served_by: Path | None = None) -> None:
    """Remove the finished builds in ``root`` other than ``keep`` and the one the link
    ``served_by`` points to as each is removed (unfinished ones are ``new_build_in``'s to
    clear: a build may be under way beside this one)."""
    kept = {p.resolve() for p in keep if p is not None}
    for old in sorted(root.iterdir()):
        if not old.name.endswith(".partial") and old.resolve() not in kept | _served(served_by):
            shutil.rmtree(old, ignore_errors=True)


def _served(link: Path | None) -> set[Path]:
    return {link.resolve()} if link is not None and link.is_symlink() else set()
