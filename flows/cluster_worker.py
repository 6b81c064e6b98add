"""Entry point of the extra worker processes that ``heatmetro ingest -w N`` starts."""

from __future__ import annotations

import json
import os
import sys

from heatmetro.core.config import Config
from heatmetro.flows.runner import run_worker


def main(argv: list[str]) -> None:
    process_id, addresses, inputs, follow, quiet = argv
    config = Config.model_validate_json(os.environ["HEATMETRO_CONFIG_JSON"])
    run_worker(
        config,
        json.loads(inputs),
        follow=follow == "1",
        process_id=int(process_id),
        addresses=json.loads(addresses),
        quiet=quiet == "1",
    )


if __name__ == "__main__":
    main(sys.argv[1:])
