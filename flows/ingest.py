"""The ingest dataflow: stream -> parse -> per-athlete fold (privacy trimming) -> store.

Run it with ``heatmetro ingest`` or directly with Bytewax::

    HEATMETRO_INPUTS=events.jsonl python -m bytewax.run "heatmetro.flows.ingest:build_flow()" -r db -s 2 -b 0
"""

from __future__ import annotations

import os
from functools import partial
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow

from heatmetro.core.config import Config, load_config
from heatmetro.core.contract import PrivacyZone, decode, opt_out_within, validate_event
from heatmetro.core.errors import HeatmetroError, StreamRecordError
from heatmetro.core.masking import mask_locations
from heatmetro.flows.batch import TrimJob, finish_batch
from heatmetro.flows.fold import AthleteFold
from heatmetro.flows.personal import route
from heatmetro.flows.sources import JsonlSource, StreamMessage, expand_inputs
from heatmetro.flows.store_sink import ShardSink, shard_key
from heatmetro.state.changes import DeadLetter, StoreItem
from heatmetro.state.settings import AthleteSettings
from heatmetro.state.street_network import network_for

RAW_KEEP = 2000  # characters of a bad record kept in the dead-letter file
# Characters of a dead letter's reason: it names the record and the value (an id may be a
# megabyte long in a record the contract refuses), the record itself is at its position.
REASON_KEEP = 500


class Decoded:
    """A record with its decoded JSON value, which crosses processes as raw bytes.

    Within a worker the value decoded for routing is reused; when Bytewax sends the item
    to another worker process, pickling the bytes (and decoding again there) is far
    cheaper than pickling millions of small lists and floats.
    """

    __slots__ = ("rec", "_obj")

    def __init__(self, rec: StreamMessage, obj: Any = None) -> None:
        self.rec, self._obj = rec, obj

    @property
    def obj(self) -> Any:
        if self._obj is None:
            self._obj = decode(self.rec.data)
        return self._obj

    def __reduce__(self) -> tuple[Any, ...]:
        return (Decoded, (self.rec,))


def decode_record(rec: StreamMessage) -> Decoded | DeadLetter:
    """The record's JSON value with its position, or a dead letter if it is not JSON.

    Only this cheap step runs where the stream is read; the contract is checked by the
    athlete's worker, so ``-w N`` spreads that work too.
    """
    if rec.error is not None:  # refused where it was read (longer than max_record_bytes)
        return _dead(rec, rec.error)
    try:
        return Decoded(rec, decode(rec.data))
    except StreamRecordError as exc:
        return _dead(rec, str(exc))


def _raw_text(data: bytes) -> str:
    return mask_locations(data[:RAW_KEEP].decode("utf-8", errors="replace"))


def dead_reason(reason: str) -> str:
    """The reason a dead letter keeps: masked (whole, so no number is cut to fewer
    decimals than the mask takes), then cut to ``REASON_KEEP`` characters, saying so."""
    masked = mask_locations(reason)
    if len(masked) <= REASON_KEEP:
        return masked
    return f"{masked[:REASON_KEEP]}… ({len(masked):,} characters)"


def _dead(rec: StreamMessage, reason: str) -> DeadLetter:
    # The reason keeps its values: it names one refused fix (out of range, not a number),
    # which is the operator's clue, not a track.
    return DeadLetter(rec.source, rec.position, dead_reason(reason), _raw_text(rec.data))


class FoldStep:
    """The ``stateful_map`` mapper: validate, then per-athlete settings in, changes out."""

    def __init__(self, config: Config) -> None:
        self.fold = AthleteFold(config)
        self.max_fixes = config.max_fixes_per_activity

    def __call__(self, state: Any, item: Any) -> tuple[Any, list[Any]]:  # item: Decoded
        rec = item.rec
        try:
            event = validate_event(item.obj, rec.data, max_fixes=self.max_fixes)
        except (RecursionError, MemoryError, OverflowError, TypeError, ValueError) as exc:
            # StreamRecordError is a ValueError; a shape no rule foresaw is one bad record
            # too, and must not stop the stream (nor lose an opt-out it carries).
            known = isinstance(exc, StreamRecordError)
            reason = str(exc) if known else f"record: cannot validate: {type(exc).__name__}"
            opt_out = opt_out_within(item.obj)  # a privacy request fails closed
            if opt_out is None:
                return state, [_dead(rec, reason)]
            # ... and nothing else changes: the zones and hide distance stay the athlete's
            # own (the broken record's are the broken part; an opt-out must never cost them).
            kept = state or AthleteSettings()
            opt_out = opt_out.model_copy(
                update={
                    "hide_start_end_m": kept.hide_start_end_m,
                    "privacy_zones": [PrivacyZone(lat=z.lat, lng=z.lng, radius_m=z.radius_m)
                                      for z in kept.zones],
                }
            )  # fmt: skip
            dead = _dead(rec, f"{reason} (its aggregate_opt_out was applied, nothing else of it)")
            state, out = self.fold.plan(state, opt_out, rec.source, rec.position)
            return state, [dead, *out]
        try:
            return self.fold.plan(state, event, rec.source, rec.position)
        except Exception as exc:  # noqa: BLE001 - one bad record must not stop the stream
            name = getattr(event, "activity_id", event.athlete_id)
            return state, [_dead(rec, f"{event.kind} {name}: cannot process: {exc!r}")]


class TrimStep:
    """The ``flat_map_batch`` mapper: finish a batch's ``TrimJob``s together."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def __call__(self, items: list[Any]) -> list[StoreItem]:
        jobs = [i for i in items if isinstance(i, TrimJob)]
        if not jobs:
            return items
        try:
            done = iter(finish_batch(jobs, self.config))
            finished = [(i, next(done)) if isinstance(i, TrimJob) else (i, i) for i in items]
        except Exception:  # noqa: BLE001 - find the culprit one by one
            finished = [(i, self._one(i)) if isinstance(i, TrimJob) else (i, i) for i in items]
        out: list[Any] = []
        for item, result in finished:  # public and personal store items
            out.extend(route(item, result, self.config) if isinstance(item, TrimJob) else [item])
        return out

    def _one(self, job: TrimJob) -> StoreItem:
        try:
            return finish_batch([job], self.config)[0]
        except Exception as exc:  # noqa: BLE001 - one bad record must not stop the stream
            reason = f"activity {job.base['activity_id']}: cannot process: {exc!r}"
            return DeadLetter(job.source, job.position, dead_reason(reason), "")


def build_flow(
    config: Config | None = None,
    inputs: list[str] | None = None,
    *,
    follow: bool = False,
    allow_empty: bool = False,
    stdin_elsewhere: bool = False,
    quiet: bool = False,
) -> Dataflow:
    """The ingest dataflow. Without arguments it reads ``HEATMETRO_CONFIG`` and
    ``HEATMETRO_INPUTS`` (``os.pathsep``-separated), for ``python -m bytewax.run``."""
    if config is None:
        config = load_config(os.environ.get("HEATMETRO_CONFIG"))
    if inputs is None:
        inputs = os.environ.get("HEATMETRO_INPUTS", "-").split(os.pathsep)
    network_for(config)  # a bad base_map fails here, once; workers then load the cache
    sources = [s for s in inputs if s.startswith("kafka://")]
    files = expand_inputs([s for s in inputs if not s.startswith("kafka://")])

    flow = Dataflow("heatmetro_ingest")
    streams = []
    # Always built, even for Kafka-only runs: its partitions and recovered state must be
    # the same in every run and every cluster member.
    source = JsonlSource(
        files,
        follow=follow,
        with_stdin=not stdin_elsewhere,
        max_record_bytes=config.max_record_bytes,
    )
    streams.append(op.input("read", flow, source))  # StreamMessage
    for i, url in enumerate(sources):
        from heatmetro.flows.kafka_input import kafka_records

        streams.append(
            kafka_records(
                flow, f"kafka_{i}", url, follow=follow, max_record_bytes=config.max_record_bytes
            )
        )  # StreamMessage
    if not files and not sources and not allow_empty:
        msg = "no input: name JSONL files, folders, - for stdin, or kafka://host:port/topic"
        raise HeatmetroError(msg)
    raw = streams[0] if len(streams) == 1 else op.merge("merge", *streams)
    decoded = op.map("decode", raw, decode_record)  # Decoded | DeadLetter
    split = op.branch("valid", decoded, _is_valid)
    keyed = op.key_on("by_athlete", split.trues, _athlete_of)  # (athlete, Decoded)
    folded = op.stateful_map("fold", keyed, FoldStep(config))  # (athlete, [StoreItem|TrimJob])
    planned = op.flat_map("changes", folded, lambda kv: kv[1])  # StoreItem | TrimJob
    changes = op.flat_map_batch("trim", planned, TrimStep(config))  # StoreItem
    everything: Any = op.merge("with_dead_letters", changes, split.falses)  # StoreItem
    by_shard = op.map("by_shard", everything, partial(shard_key, config))  # (shard, StoreItem)
    op.output("store", by_shard, ShardSink(config, quiet=quiet, follow=follow))
    return flow


def _is_valid(x: Any) -> bool:
    return not isinstance(x, DeadLetter)


def _athlete_of(x: Any) -> str:
    # A record without a usable athlete_id still needs a key; its worker rejects it.
    obj = x.obj
    athlete = obj.get("athlete_id") if isinstance(obj, dict) else None
    return athlete if isinstance(athlete, str) else ""
