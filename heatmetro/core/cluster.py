"""A process's place in a Bytewax cluster: the ``-a``/``-i``/``-w`` flags of
``python -m bytewax.run``, shared by ``heatmetro ingest`` and ``heatmetro snapshot``."""

from __future__ import annotations

from dataclasses import dataclass

from heatmetro.core.errors import HeatmetroError


@dataclass(frozen=True)
class ClusterMember:
    """``-a``/``-i``/``-w`` of ``python -m bytewax.run``: this process in a cluster."""

    addresses: list[str]
    process_id: int
    workers_per_process: int = 1

    def owns(self, part: int) -> bool:
        """Shards and recovery partitions are dealt round-robin when first created."""
        return part % len(self.addresses) == self.process_id


def parse_addresses(text: str, process_id: int) -> list[str]:
    addresses = [a.strip() for a in text.split(";") if a.strip()]
    if not addresses or any(":" not in a for a in addresses):
        msg = f"-a {text!r}: expected host:port addresses separated by ';'"
        raise HeatmetroError(msg)
    if not 0 <= process_id < len(addresses):
        msg = f"-i {process_id}: expected 0..{len(addresses) - 1} for {len(addresses)} addresses"
        raise HeatmetroError(msg)
    return addresses
