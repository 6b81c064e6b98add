"""The ``heatmetro`` command: one entry point, a subcommand per job.

User mistakes become one clean line on stderr and a non-zero exit (no traceback); this
is the one place where ``HeatmetroError`` is turned into that.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import signal
import sqlite3
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NoReturn

import heatmetro.core.blas_threads  # before numpy loads (os only): no idle BLAS threads
import heatmetro.core.early_stop  # before the rest: a signal while loading gives one line
from heatmetro import __version__
from heatmetro.core.config import ENV_OVERRIDES, load_config
from heatmetro.core.environment import describe_os_error, describe_store_error, user_caused
from heatmetro.core.errors import HeatmetroError
from heatmetro.flows.importers.capped import DEFAULT_MAX_FILE_BYTES

EPILOG_ENV = (
    "environment:\n"
    + "\n".join(f"  {env:<22} overrides `{key}`" for env, key in ENV_OVERRIDES.items())
    + "\n  SOURCE_DATE_EPOCH      build date stamped on a snapshot (byte-identical rebuilds)"
)


#: Commands whose process, once they succeeded, ends without Python's teardown (``run``):
#: freeing a snapshot's ~1 GB of arrays and ~500 modules one object at a time costs
#: ~0.1 s of CPU (measured: ~3% of a rebuild where 1% of athletes changed), for nothing.
#: A snapshot has closed its files and stores, and reaped its processes, when it returns.
QUICK_EXIT_COMMANDS = ("snapshot",)
_SUCCEEDED: list[str] = []  # the command ``main`` ran, once it returned 0


def _config(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    config = load_config(args.config)
    args.db_path = config.store_dir  # named in store errors
    return config


def cmd_ingest(args: argparse.Namespace) -> int:
    from heatmetro.flows.runner import run_ingest, warn_default_salt
    from heatmetro.state.shards import ShardedStore
    from heatmetro.state.store import count_dead_letters

    config = _config(args)
    warn_default_salt(config)
    # Dead letters are kept by source and position (a rerun files the same ones again):
    # the summary says how many this run added, and how many are on file.
    before = count_dead_letters(ShardedStore(config.state_dir, config.shards).connect_all())
    dead = run_ingest(
        config,
        args.inputs or ["-"],
        follow=args.follow,
        workers=args.workers,
        member=_member(args),
        # Progress lines are for a terminal, or a log with -v (timestamped there).
        quiet=args.quiet or not (sys.stderr.isatty() or args.verbose),
    )
    s = ShardedStore.open(config.state_dir, config.shards).stats()
    if not args.quiet:
        print(
            f"ingested: {s['athletes']:,} athletes, {s['activities']:,} activities "
            f"({_fmt_status(s['activities_by_status'])}), {dead - before:,} new dead letters"
            + (f" ({dead:,} on file: {config.dead_letter_path})" if dead else "")
        )
    return 0


def _member(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """This process's place in a cluster (``-a``/``-i``/``-w``), or None when alone."""
    from heatmetro.core.cluster import ClusterMember, parse_addresses

    if args.addresses is None:
        if args.process_id is not None:
            msg = "-i needs -a (the addresses of every process)"
            raise HeatmetroError(msg)
        return None
    if args.process_id is None:
        msg = "-a needs -i (this process's index in the addresses)"
        raise HeatmetroError(msg)
    addresses = parse_addresses(args.addresses, args.process_id)
    return ClusterMember(addresses, args.process_id, getattr(args, "workers", 1))


def _add_cluster_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-a",
        "--addresses",
        help='every process of a cluster, "host:port;host:port" (as python -m bytewax.run)',
    )
    p.add_argument(
        "-i", "--process-id", type=int, help="this process's index in --addresses (0, 1, ...)"
    )


def _fmt_status(by_status: dict[str, int]) -> str:
    return ", ".join(f"{n:,} {k}" for k, n in sorted(by_status.items())) or "none"


def _fmt_faults(faults: dict[str, int]) -> str:
    from heatmetro.state.store import GPS_FAULTS

    return "; ".join(f"{faults[k]:,} {label}" for k, label in GPS_FAULTS.items())


def cmd_stats(args: argparse.Namespace) -> int:
    import json

    from heatmetro.state.shards import ShardedStore

    config = _config(args)
    s = ShardedStore.open(config.state_dir, config.shards).stats()
    s["version"] = __version__
    if args.json:
        print(json.dumps(s, indent=2, sort_keys=True))
        return 0
    months = s["months"]
    print(
        f"store            {config.store_dir} ({s['db_bytes'] / 1e6:,.1f} MB, "
        f"{s['shards_local']} of {s['shards']} shards here)"
    )
    print(f"version          heatmetro {__version__}, store schema {', '.join(s['schema'])}")
    print(
        f"athletes         {s['athletes']:,} ({s['athletes_contributing']:,} contributing, {s['athletes_opted_out']:,} opted out)"
    )
    print(f"activities       {s['activities']:,} ({_fmt_status(s['activities_by_status'])})")
    print(f"path cells       {s['path_cells']:,}")
    print(f"GPS faults       {_fmt_faults(s['gps_faults'])}")
    print(
        f"aggregates       {s['aggregate_rows']:,} athlete-month-layer rows: {s['heat_entries']:,} cells, {s['edge_entries']:,} edge entries"
    )
    print(f"months           {months[0] + ' .. ' + months[-1] if months else '-'} ({len(months)})")
    print(
        f"dead letters     {s['dead_letters']:,}"
        + (f" ({config.dead_letter_path})" if s["dead_letters"] else "")
    )
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from heatmetro.core.config_text import effective_config, example_config

    sys.stdout.write(example_config() if args.example else effective_config(_config(args)))
    return 0


def cmd_shards(args: argparse.Namespace) -> int:
    from heatmetro.state.shard_moves import export_files, import_files
    from heatmetro.state.shards import ShardedStore

    config = _config(args)
    if args.action == "list":
        store = ShardedStore.open(config.state_dir, config.shards)
        print(f"{len(store.local())} of {store.shards} shards in {store.dir}")
        for shard in store.local():
            path = store.path(shard)
            size = sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())
            print(f"  {path.name}  {size / 1e6:8.1f} MB")
        parts = sorted(config.recovery_dir.glob("part-*.sqlite3"))
        print(f"recovery partitions here: {', '.join(p.name for p in parts) or '-'}")
        return 0
    if args.action == "export":
        if not args.to:
            msg = "shards export needs --to FOLDER"
            raise HeatmetroError(msg)
        store = ShardedStore.open(config.state_dir, config.shards)
        moved = export_files(
            store,
            config.recovery_dir,
            _numbers(args.shards, "--shards"),
            _numbers(args.recovery, "--recovery"),
            Path(args.to),
        )
    else:
        store = ShardedStore.open(config.state_dir, config.shards, create=True, owned=[])
        moved = import_files(store, config.recovery_dir, [Path(f) for f in args.files])
    if not args.quiet:
        for path in moved:
            print(f"moved {path}")
    return 0


def _numbers(text: str, flag: str) -> list[int]:
    try:
        return sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        msg = f"{flag} {text!r}: expected numbers separated by commas"
        raise HeatmetroError(msg) from None


def cmd_snapshot(args: argparse.Namespace) -> int:
    config = _config(args)
    if args.weekly and args.addresses is not None:
        msg = (
            "the weekly map reads every shard in one process: run `snapshot --weekly` "
            "without -a/-i, on one machine holding every shard"
        )
        raise HeatmetroError(msg)
    if args.weekly:
        # Not through the monthly snapshot's module: Metro and its GIS imports are a
        # third of the weekly run's start-up.
        from heatmetro.core.environment import build_time
        from heatmetro.site_builder.weekly import run_weekly

        if args.month is not None:
            msg = "--weekly and --month cannot be combined (the weekly map ends --until a day)"
            raise HeatmetroError(msg)
        if args.allow_empty:
            msg = "--allow-empty only applies to the monthly map (a quiet week is published)"
            raise HeatmetroError(msg)
        if args.partial:
            msg = "--partial only applies to the monthly map (the weekly one ends --until a day)"
            raise HeatmetroError(msg)
        weekly = run_weekly(config, until=args.until, when=build_time(), quiet=args.quiet)
        if not args.quiet:
            print(weekly.summary())
        return 0
    if args.until is not None:
        msg = "--until only applies with --weekly"
        raise HeatmetroError(msg)
    from heatmetro.site_builder.snapshot import run_snapshot

    member = _member(args)
    if member is None:
        result = run_snapshot(
            config,
            month=args.month,
            quiet=args.quiet,
            cache=not args.no_cache,
            allow_empty=args.allow_empty,
            partial=args.partial,
        )
    else:
        from heatmetro.site_builder.distributed import run_distributed_snapshot

        result = run_distributed_snapshot(
            config,
            addresses=member.addresses,
            process_id=member.process_id,
            month=args.month,
            quiet=args.quiet,
            allow_empty=args.allow_empty,
            partial=args.partial,
        )
    if not args.quiet:
        print(result.summary())
    return 0


def cmd_personal(args: argparse.Namespace) -> int:
    from heatmetro.core.environment import build_time
    from heatmetro.site_builder.personal import build_personal
    from heatmetro.state.personal_store import PersonalFilter

    for flag, value in (("--from", args.date_from), ("--to", args.date_to)):
        if value is not None and not _is_date(value):
            msg = f"{flag} {value!r}: expected YYYY-MM-DD, e.g. 2021-06-30"
            raise HeatmetroError(msg)
    if args.date_from and args.date_to and args.date_from > args.date_to:
        msg = f"--from {args.date_from} is after --to {args.date_to}: no day is in between"
        raise HeatmetroError(msg)
    flt = PersonalFilter(
        date_from=args.date_from,
        date_to=args.date_to,
        sports=tuple(args.sport or ()),
        layers=tuple(args.layer or ()),
        commutes=args.commutes,
        visibilities=tuple(args.visibility or PersonalFilter.visibilities),
    )
    result = build_personal(
        _config(args),
        args.athlete,
        Path(args.out),
        flt,
        show_zones=args.show_zones,
        build_date=build_time().strftime("%Y-%m-%d"),
    )
    if not args.quiet:
        print(result.summary())
    return 0


def _is_date(text: str) -> bool:
    import re
    from datetime import date

    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        return False
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def cmd_import(args: argparse.Namespace) -> int:
    import orjson

    from heatmetro.flows.importers.tracks import import_tracks

    failures: list[str] = []

    def on_error(path: Path, reason: str) -> None:
        failures.append(f"{path}: {reason}")
        print(f"skipped {path}: {reason}", file=sys.stderr)

    def on_warning(path: Path, note: str) -> None:
        print(f"{path}: {note}", file=sys.stderr)

    out = sys.stdout.buffer
    n = 0
    for event in import_tracks(
        [Path(p) for p in args.files],
        athlete_id=args.athlete_id,
        visibility=args.visibility,
        sport_type=args.sport_type,
        on_error=on_error,
        on_warning=on_warning,
        max_file_bytes=args.max_file_bytes,
        updated_at=args.updated_at,
    ):
        out.write(orjson.dumps(event) + b"\n")
        n += 1
    out.flush()
    if not n and not failures:  # an empty folder, or only files of other kinds
        names = ", ".join(str(f) for f in args.files)
        msg = f"no GPX, FIT or TCX file (or export zip) found in {names}"
        raise HeatmetroError(msg)
    activities = "activity" if n == 1 else "activities"
    files = "file" if len(failures) == 1 else "files"
    print(f"imported {n:,} {activities}, skipped {len(failures):,} {files}", file=sys.stderr)
    return 0 if n else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from heatmetro.demo import run_demo

    return run_demo(
        config_path=args.config,
        workers=args.workers,
        all_data=args.all_data,
        serve=args.serve,
        quiet=args.quiet,
    )


def cmd_serve(args: argparse.Namespace) -> int:
    from heatmetro.site_builder.serve import serve

    config = _config(args)
    directory = Path(args.directory) if args.directory else config.out_dir
    if not (directory / "index.html").exists():
        msg = f"no site in {directory}: run `heatmetro snapshot` (or `make demo`) first"
        raise HeatmetroError(msg)
    serve(directory, args.port)  # prints "Serving DIR at URL (Ctrl-C to stop)" when ready
    return 0


def version_time(text: str) -> datetime:
    """``now`` or an ISO 8601 time with its zone (``2026-11-30T12:00:00Z``)."""
    if text == "now":
        return datetime.now(UTC).replace(microsecond=0)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        msg = f"expected 'now' or an ISO 8601 time such as 2026-11-30T12:00:00Z, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if when.tzinfo is None:
        msg = f"{text!r} has no time zone: add Z (UTC) or an offset such as +02:00"
        raise argparse.ArgumentTypeError(msg)
    if when > datetime.now(UTC) + timedelta(days=1):
        # A version from the future outranks every real update: the activity could no
        # longer be deleted or made private by the platform.
        msg = f"{text!r} is in the future: a later update or deletion would then be ignored"
        raise argparse.ArgumentTypeError(msg)
    return when


def byte_size(text: str) -> int:
    """``65536``, ``64K``, ``256M``, ``1G`` -> bytes (binary units)."""
    units = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}
    number, unit = text.strip().upper().removesuffix("B"), ""
    if number[-1:] in units:
        number, unit = number[:-1], number[-1]
    if not number.isdigit() or int(number) * units[unit] < 1:
        msg = f"{text!r}: expected a positive size such as 65536, 64K, 256M or 1G"
        raise argparse.ArgumentTypeError(msg)
    return int(number) * units[unit]


def port_number(text: str) -> int:
    """A TCP port, 0..65535 (0: any free one)."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        msg = f"{text!r}: expected a port number from 0 to 65535"
        raise argparse.ArgumentTypeError(msg)
    return port


def _contract_check(field: str, value: str) -> None:
    """``value`` as the stream contract's ``activity`` event takes its ``field`` (its
    type and length), or the contract's own words for why not: an option the contract
    refuses would only make events that ingest files as dead letters."""
    from pydantic import ValidationError, create_model

    from heatmetro.core.contract import ActivityEvent  # not at start-up: ingest's models

    info = ActivityEvent.model_fields[field]
    option = create_model("Option", value=(info.annotation or str, info))
    try:
        option(value=value)
    except ValidationError as exc:
        said = exc.errors(include_url=False)[0]["msg"]
        msg = f"{said[:1].lower()}{said[1:]}"
        raise argparse.ArgumentTypeError(msg) from None


def athlete_id(text: str) -> str:
    """``--athlete-id``: a contract athlete id that also leaves room, in the activity ids
    made from it (``ID:`` + 16 hex digits, ``-N`` per further leg), for the contract's
    activity id limit."""
    if not text.strip():
        msg = "must not be empty or blank"
        raise argparse.ArgumentTypeError(msg)
    _contract_check("athlete_id", text)
    try:
        _contract_check("activity_id", f"{text}:{'0' * 16}-99")
    except argparse.ArgumentTypeError:
        msg = f"too long ({len(text)} characters) for the activity ids made from it"
        raise argparse.ArgumentTypeError(msg) from None
    return text


def sport_type(text: str) -> str:
    """``--sport-type``: a sport type as the contract takes it (its canonical name)."""
    from heatmetro.core.sports import canonical_sport

    name = canonical_sport(text)
    if not name:
        msg = f"{text!r}: a sport type of spaces only"
        raise argparse.ArgumentTypeError(msg)
    _contract_check("sport_type", name)
    return name


class _OneLineParser(argparse.ArgumentParser):
    """argparse's usage errors as one line, like every other mistake (exit code 2, as
    argparse's own): the usage block it prints would bury the one line that matters."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = _OneLineParser(
        prog="heatmetro",
        description="Privacy-first Global Heatmap and Metro street counts from a GPS activity stream.",
        epilog=EPILOG_ENV + "\n\nexample:\n  heatmetro demo",
        formatter_class=fmt,
    )
    parser.add_argument("--version", action="version", version=f"heatmetro {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, func: Callable[[argparse.Namespace], int], help_: str, example: str
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            help=help_,
            description=help_,
            epilog=f"example:\n  {example}\n\n{EPILOG_ENV}",
            formatter_class=fmt,
        )
        p.add_argument("-c", "--config", help="config file (default: ./config.toml if present)")
        p.add_argument("-v", "--verbose", action="store_true", help="say more")
        p.add_argument("-q", "--quiet", action="store_true", help="print only errors")
        p.set_defaults(func=func, command_parser=p)
        return p

    p = add(
        "ingest",
        cmd_ingest,
        "fold a stream of activity events into the store (resumes after a crash)",
        "heatmetro ingest events.jsonl.gz more/ -w 2",
    )
    p.add_argument(
        "inputs",
        nargs="*",
        metavar="INPUT",
        help=".jsonl/.jsonl.gz files, folders, - for stdin, kafka://host:port/topic",
    )
    p.add_argument(
        "--follow", action="store_true", help="keep reading as inputs grow (runs until stopped)"
    )
    p.add_argument(
        "-w",
        "--workers",
        type=int,
        default=1,
        help="worker processes (a Bytewax cluster on 127.0.0.1; default 1, at most 8); "
        "with -a: worker threads per process, as in python -m bytewax.run",
    )
    _add_cluster_flags(p)

    p = add("stats", cmd_stats, "print what the store holds", "heatmetro stats --json")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = add(
        "config",
        cmd_config,
        "print the settings in force as TOML (the salt never), or an annotated example",
        "heatmetro config --example > config.toml",
    )
    p.add_argument(
        "--example",
        action="store_true",
        help="print the annotated config.toml shipped with heatmetro (every key, its default)",
    )

    p = add(
        "shards",
        cmd_shards,
        "list this machine's shards, or move whole shard files when machines change",
        "heatmetro shards export --shards 1,3 --recovery 1,3 --to /tmp/move  (docs/scaling.md)",
    )
    p.add_argument("action", nargs="?", default="list", choices=["list", "export", "import"])
    p.add_argument(
        "files", nargs="*", metavar="FILE", help="import: NNNN.db / part-N.sqlite3 files"
    )
    p.add_argument("--shards", default="", help="export: shard numbers, e.g. 1,3,5")
    p.add_argument("--recovery", default="", help="export: recovery partitions, e.g. 1,3")
    p.add_argument("--to", help="export: folder to move the files into")

    p = add(
        "snapshot",
        cmd_snapshot,
        "publish the heatmap site and Metro files for a month",
        "heatmetro snapshot --month 2021-02",
    )
    p.add_argument(
        "--month", help="YYYY-MM, last month of the 12-month window (default: last complete month)"
    )
    _add_cluster_flags(p)
    p.add_argument(
        "--no-cache",
        action="store_true",
        help="read the whole window from the store and count every Metro edge (the window "
        "and Metro caches in state_dir are rewritten)",
    )
    p.add_argument(
        "--allow-empty",
        action="store_true",
        help="publish even when no athlete is in the window (refused by default while the "
        "published site has heat: a mistyped --month would empty the public map)",
    )
    p.add_argument(
        "--partial",
        action="store_true",
        help="publish the month in progress (refused by default: its counts would read as a "
        "whole month's); the pages, metadata.json and Metro README then say it is partial",
    )
    p.add_argument(
        "--weekly",
        action="store_true",
        help="publish the last 7 days under out_dir/weekly/ instead (stricter threshold and zoom)",
    )
    p.add_argument(
        "--until", metavar="YYYY-MM-DD", help="with --weekly: the last day (default: yesterday)"
    )

    p = add(
        "personal",
        cmd_personal,
        "build one athlete's own private heatmap (all their visibilities, no threshold)",
        "heatmetro personal -c config.toml --athlete a-17 --out private/a-17 --from 2021-01-01",
    )
    p.add_argument("--athlete", required=True, metavar="ID", help="the athlete's id")
    p.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="folder of the site (an earlier personal site there is replaced; never in a "
        "published site)",
    )
    p.add_argument("--from", dest="date_from", metavar="YYYY-MM-DD", help="first local start date")
    p.add_argument("--to", dest="date_to", metavar="YYYY-MM-DD", help="last local start date")
    p.add_argument(
        "--sport",
        action="append",
        metavar="TYPE",
        help="only this sport type, e.g. Ride or walk (repeatable; an unknown one is refused)",
    )
    p.add_argument(
        "--layer",
        action="append",
        choices=["ride", "run", "water", "winter", "other"],
        help="only this sport group (repeatable)",
    )
    # Two actions, so that argparse refuses both at once (one BooleanOptionalAction
    # would take the last of them).
    commutes = p.add_mutually_exclusive_group()
    commutes.add_argument(
        "--commutes", action="store_true", help="include activities marked as commutes (default)"
    )
    commutes.add_argument(
        "--no-commutes", dest="commutes", action="store_false", help="leave commutes out"
    )
    p.set_defaults(commutes=True)
    p.add_argument(
        "--visibility",
        action="append",
        choices=["everyone", "followers_only", "only_me"],
        help="only this visibility (repeatable; default: all three)",
    )
    p.add_argument(
        "--show-zones",
        action="store_true",
        help="draw your privacy zones as circles (what is inside them is never stored)",
    )

    p = add(
        "import",
        cmd_import,
        "turn GPX/FIT/TCX files or a bulk-export zip into stream events on stdout",
        "heatmetro import ride.fit run.gpx --athlete-id a-17 > events.jsonl",
    )
    p.add_argument("files", nargs="+", metavar="FILE_OR_ZIP")
    p.add_argument("--athlete-id", required=True, type=athlete_id)
    p.add_argument(
        "--visibility",
        default="everyone",
        choices=["everyone", "followers_only", "only_me"],
        help="who may see the activities (default: everyone, i.e. public: they reach the "
        "public heatmap and Metro files; use only_me for files whose owner chose nothing)",
    )
    p.add_argument(
        "--sport-type",
        type=sport_type,
        help="override the sport type found in the files (a file naming none is taken as "
        "Ride, and said so)",
    )
    p.add_argument(
        "--updated-at",
        type=version_time,
        metavar="TIME",
        help="the events' version time: 'now' or ISO 8601 with a zone (default: each "
        "activity's start, so a re-import is the same event; a later time makes a re-import "
        "with another --visibility or --sport-type replace it)",
    )
    p.add_argument(
        "--max-file-bytes",
        type=byte_size,
        default=DEFAULT_MAX_FILE_BYTES,
        metavar="SIZE",
        help="refuse a file whose uncompressed content is larger (e.g. 64M, 1G; default 256M)",
    )

    p = add(
        "demo",
        cmd_demo,
        "the whole job on bundled real data (ValleyBike rides), end to end",
        "heatmetro demo",
    )
    p.add_argument("-w", "--workers", type=int, default=2)
    p.add_argument(
        "--all-data",
        action="store_true",
        help="use all six ValleyBike months from ../shared/data if present",
    )
    p.add_argument("--serve", action="store_true", help="serve the site when done")

    p = add(
        "serve", cmd_serve, "preview the published site on 127.0.0.1", "heatmetro serve --port 8000"
    )
    p.add_argument("--port", type=port_number, default=8000)
    p.add_argument("--directory", help="site folder (default: out_dir from the config)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args, extra = build_parser().parse_known_args(argv)
    if extra and args.command == "shards" and args.action == "import":
        # argparse takes `import` and its files as one group of positionals: files after
        # an option (`shards import -c m0.toml FILES`, as docs/scaling.md writes it)
        # come back unparsed. They are the files, unless one looks like an option.
        args.files += [e for e in extra if not e.startswith("-")]
        extra = [e for e in extra if e.startswith("-")]
    if extra:  # named by the command they were given to, not by ``heatmetro``
        args.command_parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command != "ingest":  # ingest stops in one line to the end (flows/stop.py)
        heatmetro.core.early_stop.release()
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _terminated)
    if getattr(args, "workers", 1) is not None and not 1 <= getattr(args, "workers", 1) <= 8:
        print(
            f"heatmetro {args.command}: error: --workers must be between 1 and 8", file=sys.stderr
        )
        return 2
    try:
        code = args.func(args)
        if code == 0:
            _SUCCEEDED.append(args.command)
        return code
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, Stopped) else signal.SIGINT
        name = signal.Signals(signum).name
        print(f"heatmetro {args.command}: stopped by {name}", file=sys.stderr)
        return 128 + signum
    except BrokenPipeError:  # `heatmetro stats | head`: the reader left, nothing to say
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - Python flushes it at exit
        return 0
    except Exception as exc:
        # User mistakes and a broken environment (full disk, corrupt store, port in use)
        # become one line; anything else is a bug and keeps its traceback.
        cause = user_caused(exc)
        if cause is None:
            raise
        print(f"heatmetro {args.command}: error: {_one_line(cause, args)}", file=sys.stderr)
        return 1


class Stopped(KeyboardInterrupt):
    """SIGTERM (systemd, Kubernetes), raised where the command stands as Ctrl-C is: the
    same clean-up (a snapshot discards its unfinished build), then one line."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _terminated(signum: int, frame: object) -> None:
    raise Stopped(signum)


def _one_line(exc: BaseException, args: argparse.Namespace) -> str:
    if isinstance(exc, HeatmetroError):
        return str(exc)
    if isinstance(exc, sqlite3.Error):
        return describe_store_error(exc, getattr(args, "db_path", "(unknown path)"))
    assert isinstance(exc, OSError)
    return describe_os_error(exc)


def run() -> NoReturn:
    """The ``heatmetro`` command: ``main``, then out (``QUICK_EXIT_COMMANDS``)."""
    code = main()
    if _SUCCEEDED and _SUCCEEDED[-1] in QUICK_EXIT_COMMANDS:
        quick_exit(code)
    sys.exit(code)


def quick_exit(code: int) -> NoReturn:
    """End the process as ``sys.exit(code)`` would, less freeing every object: the exit
    functions run and the output is flushed, then ``os._exit``."""
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a reader gone (`| head`): nothing to say
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
