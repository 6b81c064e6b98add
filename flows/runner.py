"""Run the ingest dataflow with recovery always on (what ``heatmetro ingest`` calls)."""

from __future__ import annotations

import sys
from datetime import timedelta

from bytewax._bytewax import cli_main
from bytewax.recovery import RecoveryConfig, init_db_dir

from flows.ingest import build_flow
from heatmetro.config import Config
from state.store import connect, export_dead_letters

# Recovery partitions are fixed when the folder is created; runs may use up to this
# many workers (Bytewax can resume with any worker count).
RECOVERY_PARTITIONS = 8


def ensure_recovery(config: Config) -> None:
    if not config.recovery_dir.exists():
        config.recovery_dir.mkdir(parents=True)
        init_db_dir(config.recovery_dir, RECOVERY_PARTITIONS)


def run_ingest(config: Config, inputs: list[str], *, follow: bool = False, workers: int = 1) -> int:
    """Ingest ``inputs`` into the store; returns the number of dead letters now on file."""
    config.state_dir.mkdir(parents=True, exist_ok=True)
    connect(config.db_path).close()  # create / migrate before the workers race for it
    ensure_recovery(config)
    flow = build_flow(config, inputs, follow=follow)
    cli_main(
        flow,
        workers_per_process=workers,
        epoch_interval=timedelta(seconds=config.epoch_s),
        recovery_config=RecoveryConfig(str(config.recovery_dir), timedelta(0)),
    )
    db = connect(config.db_path)
    try:
        return export_dead_letters(db, config.dead_letter_path)
    finally:
        db.close()


def warn_default_salt(config: Config) -> None:
    if config.salt_is_default:
        print(
            "warning: using the built-in development salt; set HEATMETRO_SALT to a secret "
            "before ingesting real athletes' data",
            file=sys.stderr,
        )
