"""Typed configuration, read once from ``config.toml`` into a frozen object.

Environment overrides (all prefixed ``HEATMETRO_``, listed in ``heatmetro --help``):

* ``HEATMETRO_SALT``: the secret salt behind hidden-start/end and zone jitter.
* ``HEATMETRO_STATE_DIR`` / ``HEATMETRO_OUT_DIR``: where the store and the site live.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from heatmetro.core.errors import ConfigError
from heatmetro.core.limits import MAX_FIXES_PER_ACTIVITY
from heatmetro.core.sports import DEFAULT_SPORT_LAYERS, KNOWN_SPORTS

ENV_OVERRIDES = {
    "HEATMETRO_SALT": "salt",
    "HEATMETRO_STATE_DIR": "state_dir",
    "HEATMETRO_OUT_DIR": "out_dir",
}

#: The default basemap: OpenStreetMap's standard tiles, with the attribution they require.
OSM_TILES = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
OSM_ATTRIBUTION = (
    '&copy; <a href="https://www.openstreetmap.org/copyright">OpenStreetMap</a> contributors'
)

# One stream record (a JSONL line, a Kafka message) longer than this is a dead letter,
# never read whole. 200,000 fixes (the contract's limit) take ~10 MB of JSON.
DEFAULT_MAX_RECORD_BYTES = 64 * 2**20

# Used only when neither config nor environment gives a salt; `heatmetro ingest` warns.
DEV_SALT = "heatmetro-development-salt-change-me"

# A count (an athlete threshold, a rounding step) no city's heatmap ever reaches: a
# larger one would only ever publish nothing.
MAX_ATHLETES = 10**6


class Config(BaseModel):
    """Every setting heatmetro reads; see ``config.toml`` for what each one means."""

    # Strict: TOML has types, so `night_layer = "yes"` or `epoch_s = "2"` is a mistake to
    # name, not a value to guess (paths and lists still come as TOML strings and arrays).
    # No float setting means anything as NaN or infinity (NaN even passes every bound).
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)
    # Every integer has an upper bound: an unbounded one (TOML takes 20 digits) passes
    # here and overflows later in numpy, SQLite or C (int64 / C long). The bounds below are
    # far beyond any real deployment and well inside int64.

    state_dir: Path = Field(Path("state_data"), strict=False)
    out_dir: Path = Field(Path("out"), strict=False)
    min_athletes: int = Field(3, ge=1, le=MAX_ATHLETES)
    max_per_athlete: int = Field(10, ge=1, le=65535)
    round_to: int = Field(5, ge=1, le=MAX_ATHLETES)
    default_hide_start_end_m: float = Field(200.0, ge=0, le=1609)
    hide_jitter_m: float = Field(150.0, ge=0, le=2000)
    zone_jitter_fraction: float = Field(0.25, ge=0, le=1)
    salt: str = DEV_SALT
    min_zoom: int = Field(2, ge=0, le=22)
    public_max_zoom: int = Field(12, ge=0, le=22)
    max_zoom: int = Field(16, ge=0, le=22)
    basemap_url: str = OSM_TILES
    basemap_attribution: str = OSM_ATTRIBUTION
    tiles_format: Literal["png", "pmtiles"] = "png"
    tile_workers: int = Field(0, ge=0, le=256)
    template_dir: Path | None = Field(None, strict=False)
    # An OpenStreetMap .osm.pbf: Metro counts per street edge.
    base_map: Path | None = Field(None, strict=False)
    heat_resolution: int = Field(13, ge=5, le=13)
    # A heat cell is drawn if min_athletes distinct athletes rode it or a cell within this
    # many rings of it (README "Tiles"): 0 = the cell alone; default 1 at heat_resolution
    # 13 (a neighbourhood the size of one res-12 cell), else 0.
    threshold_ring: int = Field(-1, ge=-1, le=1_000_000)  # 0 or 1: checked below, by name
    metro_resolution: int = Field(10, ge=5, le=12)
    od_resolution: int = Field(8, ge=4, le=10)
    max_gap_fill_m: float = Field(1000.0, gt=0)
    max_fixes_per_activity: int = Field(MAX_FIXES_PER_ACTIVITY, ge=2, le=10_000_000)
    epoch_s: float = Field(2.0, gt=0)
    max_record_bytes: int = Field(DEFAULT_MAX_RECORD_BYTES, ge=1024, le=2**32)
    # Layers beyond the five sport groups (see README "Layers").
    sport_layers: tuple[str, ...] = Field(DEFAULT_SPORT_LAYERS, strict=False)
    night_layer: bool = True
    # The weekly map: a short window leaks more, so it is stricter (never looser than
    # min_athletes / public_max_zoom: the defaults follow them, a looser value is refused).
    weekly_min_athletes: int = Field(5, ge=1, le=MAX_ATHLETES)
    weekly_public_max_zoom: int = Field(11, ge=0, le=22)
    # Keep each athlete's own non-public activities in state_dir/personal.db for
    # `heatmetro personal` (never read by a snapshot).
    personal_heatmaps: bool = True
    shards: int = Field(16, ge=1, le=1024)
    metrics_port: int = Field(0, ge=0, le=65535)
    metro_epsilon: float | None = Field(None, gt=0)  # None: exact Metro counts (no DP noise)
    metro_delta: float | None = Field(None, gt=0, lt=1)

    @model_validator(mode="before")
    @classmethod
    def _basemap_attribution(cls, values: Any) -> Any:
        # OSM's attribution goes with OSM's tiles only: another basemap must bring its own.
        if isinstance(values, dict) and "basemap_attribution" not in values:
            if values.get("basemap_url", OSM_TILES) != OSM_TILES:
                values = {**values, "basemap_attribution": ""}
        return values

    @model_validator(mode="before")
    @classmethod
    def _threshold_ring(cls, values: Any) -> Any:
        if isinstance(values, dict) and values.get("threshold_ring") is None:
            # Not int(): a heat_resolution of the wrong type is named by its own field.
            res = values.get("heat_resolution", 13)
            fine = isinstance(res, int) and res >= 13
            values = {**values, "threshold_ring": 1 if fine else 0}
        return values

    @field_validator("salt")
    @classmethod
    def _secret_salt(cls, value: str) -> str:
        # A blank salt is no secret: anyone could compute the jitter it seeds.
        if not value.strip():
            msg = "must not be empty or blank: it is the secret behind the jitter of hidden ends and privacy zones"
            raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _check_orders(self) -> Config:
        if self.threshold_ring not in (0, 1) or (self.threshold_ring and self.heat_resolution < 13):
            msg = (
                f"threshold_ring must be 0 or 1, and 1 only at heat_resolution 13 (the "
                f"neighbourhood must not be coarser than a res-12 cell), got {self.threshold_ring} "
                f"at heat_resolution {self.heat_resolution}"
            )
            raise ValueError(msg)
        if not self.min_zoom <= self.public_max_zoom <= self.max_zoom:
            msg = (
                f"zooms must satisfy min_zoom <= public_max_zoom <= max_zoom, got "
                f"{self.min_zoom}, {self.public_max_zoom}, {self.max_zoom}"
            )
            raise ValueError(msg)
        if not self.od_resolution <= self.metro_resolution <= self.heat_resolution:
            msg = (
                "resolutions must satisfy od_resolution <= metro_resolution <= heat_resolution, "
                f"got {self.od_resolution}, {self.metro_resolution}, {self.heat_resolution}"
            )
            raise ValueError(msg)
        # The weekly map is never looser than the monthly one: a default follows the monthly
        # setting, a value set looser is a mistake to name.
        for weekly, monthly, looser in (
            ("weekly_min_athletes", "min_athletes", self.weekly_min_athletes < self.min_athletes),
            ("weekly_public_max_zoom", "public_max_zoom",
             self.weekly_public_max_zoom > self.public_max_zoom),
        ):  # fmt: skip
            if looser and weekly in self.model_fields_set:
                msg = (
                    f"{weekly} = {getattr(self, weekly)} is looser than {monthly} = "
                    f"{getattr(self, monthly)}: a week's map shows fewer people, so it must be "
                    "at least as strict as the monthly one"
                )
                raise ValueError(msg)
        if self.basemap_url and not self.basemap_attribution.strip():
            msg = (
                f"basemap_url {self.basemap_url!r} needs its basemap_attribution: tile "
                "providers require their credit on the map (set basemap_attribution, or "
                'basemap_url = "" for no basemap)'
            )
            raise ValueError(msg)
        if self.template_dir is not None and not self.template_dir.is_dir():
            msg = f"template_dir {self.template_dir} is not a folder"
            raise ValueError(msg)
        unknown = sorted(set(self.sport_layers) - set(KNOWN_SPORTS))
        if unknown:
            msg = f"sport_layers: unknown sport type(s) {unknown}; known: {', '.join(KNOWN_SPORTS)}"
            raise ValueError(msg)
        return self

    @property
    def weekly_k(self) -> int:
        """Distinct athletes a weekly cell needs: the stricter of the two settings."""
        return max(self.weekly_min_athletes, self.min_athletes)

    @property
    def weekly_max_zoom(self) -> int:
        """Deepest weekly tile zoom: the stricter of the two settings (and >= min_zoom)."""
        return max(min(self.weekly_public_max_zoom, self.public_max_zoom), self.min_zoom)

    @property
    def store_dir(self) -> Path:
        """Where the store's shard files are (``state/shards.py``)."""
        return self.state_dir / "shards"

    @property
    def recovery_dir(self) -> Path:
        return self.state_dir / "recovery"

    @property
    def dead_letter_path(self) -> Path:
        return self.state_dir / "dead_letters.jsonl"

    @property
    def salt_is_default(self) -> bool:
        return self.salt == DEV_SALT

    @property
    def store_resolutions(self) -> dict[str, int]:
        """The H3 resolutions the store's cells are at (fixed when it is made)."""
        return {
            "heat_resolution": self.heat_resolution,
            "metro_resolution": self.metro_resolution,
            "od_resolution": self.od_resolution,
        }


def load_config(path: str | Path | None = None, **overrides: Any) -> Config:
    """Read ``path`` (default: ``./config.toml`` if present), apply env and keyword overrides.

    Relative paths in the file are resolved against the file's folder, so a config works
    from any working directory.
    """
    values: dict[str, Any] = {}
    base = Path.cwd()
    if path is None and Path("config.toml").is_file():
        path = Path("config.toml")
    if path is not None:
        path = Path(path)
        try:
            with path.open("rb") as fh:
                values = tomllib.load(fh)
        except FileNotFoundError:
            msg = f"config file {path} does not exist"
            raise ConfigError(msg) from None
        except tomllib.TOMLDecodeError as exc:
            msg = f"config file {path}: {exc}"
            raise ConfigError(msg) from None
        except UnicodeDecodeError as exc:
            msg = f"config file {path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); TOML is UTF-8"
            raise ConfigError(msg) from None
        base = path.resolve().parent
    from_env: dict[str, str] = {}  # setting -> the variable it came from, named in errors
    for env, key in ENV_OVERRIDES.items():
        if env in os.environ and (os.environ[env] or key == "salt"):
            # An empty HEATMETRO_SALT is a mistake (`$(cat missing-file)`), not "unset".
            values[key], from_env[key] = os.environ[env], env
    values.update({k: v for k, v in overrides.items() if v is not None})
    for key in ("state_dir", "out_dir", "template_dir", "base_map"):
        # Only a string is a path; another type (`state_dir = 3`) is named by pydantic.
        if isinstance(values.get(key), str | Path):
            p = Path(values[key])
            values[key] = p if p.is_absolute() else (base / p)
    try:
        return Config(**values)
    except ValidationError as exc:
        raise _config_error(exc, path, from_env) from None


def _config_error(exc: ValidationError, path: Path | None, from_env: dict[str, str]) -> ConfigError:
    """The first mistake in one line: where (the key, or the variable that set it), what."""
    first = exc.errors(include_url=False)[0]
    where = ".".join(str(x) for x in first["loc"])
    if first["type"] == "extra_forbidden":
        msg = (
            f"config {path or '(defaults)'}: {where}: not a heatmetro setting{_did_you_mean(where)}"
        )
        return ConfigError(msg)
    # A model-level check (zoom order ...) names its keys itself; a ValueError's message
    # comes with pydantic's "Value error, " before it.
    what = first["msg"].removeprefix("Value error, ")
    if first["type"] == "finite_number":  # NaN passes every bound check: said as itself
        what = "not a number" if first.get("input") != first.get("input") else "not finite"
    elif first["type"] == "path_type":
        what = "expected a path (a TOML string)"
    # The salt is a secret: never echoed, whatever it is.
    shown = "input" in first and where and where != "salt"
    got = f" (got {first['input']!r})" if shown else ""
    if where in from_env:
        where = f"{from_env[where]} (overrides `{where}`)"
    prefix = f"config {path or '(defaults)'}: " + (f"{where}: " if where else "")
    return ConfigError(prefix + what + got)


def _did_you_mean(key: str) -> str:
    """ ", did you mean X?" for a key close to a real one (a typo, a missing underscore)."""
    import difflib

    known = sorted(Config.model_fields)
    squashed = {k.replace("_", ""): k for k in known}
    close = [
        squashed[k] for k in difflib.get_close_matches(key.replace("_", ""), squashed, 2, 0.75)
    ]
    if not close:
        return " (config.toml lists every key with its default)"
    return ", did you mean " + " or ".join(f"`{k}`" for k in close) + "?"
