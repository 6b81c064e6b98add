"""The configuration as text: the annotated example shipped with the package, and the
settings in force written back as TOML (``heatmetro config``)."""

from __future__ import annotations

import json
import re
from importlib.resources import files
from pathlib import Path
from typing import Any

from heatmetro.core.config import DEV_SALT, Config

__all__ = ["example_config", "effective_config"]

# The example is the repository's config.toml (set up for `make demo`): its two paths are
# given back their defaults, which is where a new project's store and site go.
_DEMO_PATHS = re.compile(r'^(state_dir|out_dir)( *= *)"[^"]*" *', re.MULTILINE)
# What the weekly map uses: the stricter of its own setting and the monthly one.
_IN_FORCE = {"weekly_min_athletes": "weekly_k", "weekly_public_max_zoom": "weekly_max_zoom"}


def example_config() -> str:
    """The annotated ``config.toml``: every key, its default and what it means."""
    text = files("heatmetro.core").joinpath("config.example.toml").read_text(encoding="utf-8")
    defaults = {k: str(Config.model_fields[k].default) for k in ("state_dir", "out_dir")}
    text = re.sub(r", except the two paths\n# \(set here for `make demo`[^\n]*", ".", text)
    return _DEMO_PATHS.sub(lambda m: f'{m[1]}{m[2]}"{defaults[m[1]]}" '.ljust(len(m[0])), text)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, tuple):
        value = list(value)
    return json.dumps(value)  # strings, numbers and arrays of them read back as TOML


def effective_config(config: Config) -> str:
    """Every setting in force (file, environment, defaults) as TOML that reads back to the
    same settings; the salt is never printed, only whether one is set."""
    lines = ["# heatmetro: the settings in force (config file, HEATMETRO_* environment, defaults)"]
    for name in Config.model_fields:
        value = getattr(config, _IN_FORCE.get(name, name))
        if name == "salt":
            said = "the public development salt: set HEATMETRO_SALT" if value == DEV_SALT else "set"
            lines.append(f"# salt = ...  ({said}; never printed)")
        elif value is None:
            lines.append(f"# {name} = (unset)")
        else:
            lines.append(f"{name} = {_toml(value)}")
    return "\n".join(lines) + "\n"
