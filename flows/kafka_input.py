"""Kafka topics as ingest input: ``kafka://host:port[,host:port]/topic``.

Built on Bytewax's ``KafkaSource``: each Kafka partition is one Bytewax input partition
whose resume state is the next offset to read, so a rerun continues after the last
snapshot (the first run starts at the beginning of the topic). Without ``--follow`` a
partition ends at the end of the topic as it was when reached. In a multi-process run
every process builds the source and Bytewax gives each Kafka partition to one worker.

Items are ``StreamMessage(source="kafka:{topic}:{partition}", position=offset, data=value)``.
A message without a value (a tombstone) or delivered as a Kafka error becomes a record
with empty data, which the parse step dead-letters as an empty (invalid JSON) document.
A message longer than ``max_record_bytes`` becomes a dead letter at once, keeping only
its first bytes: it is never copied or parsed. (librdkafka has received it whole by
then; the brokers' own ``message.max.bytes``, 1 MB by default, bounds that.)
"""

from __future__ import annotations

import logging
import math
import os
import re
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaError, KafkaSource, KafkaSourceMessage
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, KafkaException
from confluent_kafka.admin import AdminClient

from heatmetro.core.cluster_join import formed
from heatmetro.core.config import DEFAULT_MAX_RECORD_BYTES
from heatmetro.core.errors import InputError
from heatmetro.flows.sources import HEAD_BYTES, StreamMessage, too_long

SCHEME = "kafka://"
METADATA_TIMEOUT_S = 15.0  # how long to wait for the brokers before giving up (default)
BATCH_SIZE = 500  # messages per poll; activities are large, keep batches modest
_BROKER = re.compile(
    r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?):(\d{1,5})$"
)
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


@dataclass(frozen=True, slots=True)
class KafkaUrl:
    """A parsed ``kafka://`` input."""

    brokers: list[str]
    topic: str


def metadata_timeout_s() -> float:
    """How long to wait for the brokers' first answer: ``HEATMETRO_KAFKA_TIMEOUT_S``
    (a far or slow cluster needs longer, a script that probes a list of them shorter),
    else ``METADATA_TIMEOUT_S``. A value that is not a positive number is refused."""
    raw = os.environ.get("HEATMETRO_KAFKA_TIMEOUT_S", "").strip()
    if not raw:
        return METADATA_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        msg = f"HEATMETRO_KAFKA_TIMEOUT_S={raw!r}: not a number of seconds above 0"
        raise InputError(msg)
    return value


def parse_kafka_url(url: str) -> KafkaUrl:
    """Split ``kafka://host:port[,host:port]/topic`` into brokers and topic.

    Raises:
        InputError: naming the input and what is wrong with it.
    """
    example = "expected kafka://host:port[,host:port]/topic"
    if not url.startswith(SCHEME):
        msg = f"input {url!r}: not a Kafka URL ({example})"
        raise InputError(msg)
    rest = url[len(SCHEME) :]
    hosts, sep, topic = rest.partition("/")
    if not sep or not topic:
        msg = f"input {url!r}: no topic ({example})"
        raise InputError(msg)
    if not _TOPIC.match(topic) or topic in {".", ".."}:
        msg = (
            f"input {url!r}: topic {topic!r} is not a valid Kafka topic name "
            "(up to 249 of A-Z a-z 0-9 . _ -)"
        )
        raise InputError(msg)
    brokers = hosts.split(",") if hosts else []
    if not brokers:
        msg = f"input {url!r}: no broker ({example})"
        raise InputError(msg)
    for broker in brokers:
        m = _BROKER.match(broker)
        if m is None:
            msg = f"input {url!r}: broker {broker!r} is not host:port ({example})"
            raise InputError(msg)
        if not 1 <= int(m.group(1)) <= 65535:
            msg = f"input {url!r}: broker {broker!r}: port {m.group(1)} out of range 1-65535"
            raise InputError(msg)
    return KafkaUrl(brokers, topic)


def to_raw_record(
    msg: KafkaSourceMessage[Any, Any] | KafkaError[Any, Any],
    max_bytes: int = DEFAULT_MAX_RECORD_BYTES,
) -> StreamMessage:
    """One Kafka message (or error) as a ``StreamMessage``; no value -> empty data; a value
    longer than ``max_bytes`` -> its head and an ``error`` (a dead letter)."""
    if isinstance(msg, KafkaError):
        print(
            f"kafka:{msg.msg.topic}:{msg.msg.partition} offset {msg.msg.offset}: "
            f"Kafka error {msg.err}; dead-lettered",
            file=sys.stderr,
        )
        m, data = msg.msg, b""
    else:
        m, data = msg, msg.value if msg.value is not None else b""
    source, offset = f"kafka:{m.topic}:{m.partition}", int(m.offset or 0)
    if len(data) > max_bytes:
        return StreamMessage(
            source, offset, bytes(data[:HEAD_BYTES]), too_long(len(data), max_bytes)
        )
    return StreamMessage(source, offset, bytes(data))


class _Partition(StatefulSourcePartition[StreamMessage, int | None]):
    """Bytewax's Kafka partition, turning messages into ``StreamMessage`` and keeping the
    resume offset itself: the inner partition would also advance to an error's offset,
    and an error not tied to a message carries none (-1001), which must never become
    the offset a rerun starts from."""

    def __init__(
        self, inner: StatefulSourcePartition[Any, int | None], start: int | None, max_bytes: int
    ):
        self.inner = inner
        self.next_offset = start
        self.max_bytes = max_bytes

    def next_batch(self) -> list[StreamMessage]:
        out: list[StreamMessage] = []
        for item in self.inner.next_batch():
            m = item.msg if isinstance(item, KafkaError) else item
            if m.offset is None or m.offset < 0:  # a client-level error, not a message
                print(f"kafka:{m.topic}:{m.partition}: {getattr(item, 'err', '')}", file=sys.stderr)
                continue
            out.append(to_raw_record(item, self.max_bytes))
            self.next_offset = m.offset + 1
        return out

    def next_awake(self) -> datetime | None:
        return self.inner.next_awake()

    def snapshot(self) -> int | None:
        return self.next_offset

    def close(self) -> None:
        self.inner.close()


class HeatmetroKafkaSource(FixedPartitionedSource[StreamMessage, int | None]):
    """Bytewax's ``KafkaSource`` for one topic, yielding ``StreamMessage`` items and failing
    fast (``InputError``) when the brokers do not answer."""

    def __init__(
        self, url: KafkaUrl, *, follow: bool, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    ) -> None:
        self.url = url
        self.max_record_bytes = max_record_bytes
        self.kafka = KafkaSource(
            url.brokers,
            [url.topic],
            tail=follow,
            starting_offset=OFFSET_BEGINNING,
            add_config={"logger": kafka_logger()},  # type: ignore[dict-item]
            batch_size=BATCH_SIZE,
            raise_on_errors=False,
        )

    def list_parts(self) -> list[str]:
        formed()  # every worker lists them, once connected (heatmetro.core.cluster_join)
        return [f"{i}-{self.url.topic}" for i in topic_partitions(self.url)]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _Partition:
        inner = self.kafka.build_part(step_id, for_part, resume_state)
        return _Partition(inner, resume_state, self.max_record_bytes)


class _OncePerMinute(logging.Filter):
    """librdkafka says the same thing on every retry, from every partition's consumer (a
    broker down: ~80 lines a second here): each complaint at most once a minute."""

    def __init__(self) -> None:
        super().__init__()
        self.last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        text = _VARYING.sub("", record.getMessage())  # which consumer, thread, how long
        now = time.monotonic()
        if now - self.last.get(text, -_QUIET_S) < _QUIET_S:
            return False
        self.last[text] = now
        return True


_VARYING = re.compile(r"rdkafka#\w+-\d+|\[thrd:[^\]]*\]|\d+ms|\d+ identical error\(s\) suppressed")
_QUIET_S = 60.0


def kafka_logger() -> logging.Logger:
    """Where the consumers' librdkafka log goes: stderr, one line per complaint a minute,
    each line saying it comes from Kafka (the run keeps waiting for the brokers)."""
    logger = logging.getLogger("heatmetro.kafka")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("heatmetro ingest: kafka: %(message)s"))
        handler.addFilter(_OncePerMinute())
        logger.addHandler(handler)
        logger.setLevel(logging.WARNING)  # librdkafka's notices and debug stay out
        logger.propagate = False
    return logger


def topic_partitions(url: KafkaUrl) -> list[int]:
    """The topic's partition numbers (a broker may auto-create the topic).

    Raises:
        InputError: the brokers do not answer in time, or the topic cannot be read.
    """
    # librdkafka's own log off (level 0): a broker that does not answer would print a
    # line per retry (~290 in the 15 s) above the one line that says so below.
    client = AdminClient({"bootstrap.servers": ",".join(url.brokers), "log_level": 0})
    where = f"kafka://{','.join(url.brokers)}/{url.topic}"
    timeout_s = metadata_timeout_s()
    try:
        meta = client.list_topics(url.topic, timeout=timeout_s)
    except KafkaException as exc:
        msg = f"input {where}: no answer from the Kafka brokers in {timeout_s:g} s: {exc}"
        raise InputError(msg) from None
    topic = meta.topics.get(url.topic)
    if topic is None or topic.error is not None:
        why = topic.error.str() if topic is not None and topic.error else "unknown topic"
        msg = f"input {where}: cannot read the topic: {why}"
        raise InputError(msg)
    return sorted(topic.partitions)


def kafka_records(
    flow: Dataflow,
    step_id: str,
    url: str,
    *,
    follow: bool,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
) -> Stream[StreamMessage]:
    """The messages of the topic in ``url`` as ``StreamMessage`` items.

    Raises:
        InputError: the URL is malformed (checked before anything connects), the
            brokers do not answer, or the topic cannot be read.
    """
    parsed = parse_kafka_url(url)
    topic_partitions(parsed)  # fail here, as a clean CLI error, rather than inside Bytewax
    source = HeatmetroKafkaSource(parsed, follow=follow, max_record_bytes=max_record_bytes)
    return op.input(step_id, flow, source)
