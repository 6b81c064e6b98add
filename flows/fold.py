"""The per-athlete fold: settings in state, every event turned into store changes.

``AthleteFold`` is a plain class (tested without a dataflow); the dataflow keeps one
``AthleteSettings`` per athlete, which is all the state ingest needs: activity versions
are compared in the store, so a stale or re-delivered event changes nothing there.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson

from heatmetro.core.config import Config
from heatmetro.core.contract import (
    ActivityDeletedEvent,
    ActivityEvent,
    AthleteEvent,
    Event,
    epoch_ms,
)
from heatmetro.core.sports import layer_of, max_speed_ms
from heatmetro.flows.batch import TrimJob, finish_batch
from heatmetro.flows.personal import Routed, route
from heatmetro.state.changes import ActivityChange, ActivityDelete, SettingsChange, StoreItem
from heatmetro.state.records import PATH_DTYPE, to_blob
from heatmetro.state.settings import (
    AthleteSettings,
    EffectiveZone,
    Zone,
    effective_zones,
    hide_cuts_m,
    zone_key,
)

_EMPTY_PATH = to_blob(np.zeros(0, PATH_DTYPE))


class AthleteFold:
    """Turns one athlete's events into store changes, given the settings so far."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def apply(
        self, settings: AthleteSettings | None, event: Event
    ) -> tuple[AthleteSettings, list[Routed]]:
        """Settings after ``event`` and the store changes it makes (trimmed at once),
        personal-store items included (``flows/personal.py``)."""
        new, items = self.plan(settings, event)
        out: list[Routed] = []
        for i in items:
            if isinstance(i, TrimJob):
                out.extend(route(i, finish_batch([i], self.config)[0], self.config))
            else:
                out.append(i)
        return new, out

    def plan(
        self, settings: AthleteSettings | None, event: Event, source: str = "", position: int = 0
    ) -> tuple[AthleteSettings, list[StoreItem | TrimJob]]:
        """Like ``apply`` but contributing activities come back as ``TrimJob`` to be
        finished in batches (``heatmetro.flows.batch``)."""
        settings = settings or AthleteSettings()
        if isinstance(event, AthleteEvent):
            new, changes = self._settings(settings, event)
            return new, list(changes)
        if isinstance(event, ActivityDeletedEvent):
            return settings, [
                ActivityDelete(event.activity_id, event.athlete_id, epoch_ms(event.updated_at))
            ]
        return settings, [self._activity(settings, event, source, position)]

    def zones(self, settings: AthleteSettings, athlete_id: str) -> tuple[EffectiveZone, ...]:
        return effective_zones(
            settings,
            athlete_id=athlete_id,
            salt=self.config.salt,
            jitter_fraction=self.config.zone_jitter_fraction,
        )

    def _hide_default(self, settings: AthleteSettings) -> float:
        if settings.hide_start_end_m is None:
            return self.config.default_hide_start_end_m
        return settings.hide_start_end_m

    def _settings(
        self, settings: AthleteSettings, event: AthleteEvent
    ) -> tuple[AthleteSettings, list[StoreItem]]:
        updated = epoch_ms(event.updated_at)
        if updated <= settings.updated_ms:
            return settings, []  # stale or re-delivered
        new = AthleteSettings(
            updated_ms=updated,
            opt_out=event.aggregate_opt_out,
            hide_start_end_m=event.hide_start_end_m,
            zones=tuple(Zone(z.lat, z.lng, z.radius_m) for z in event.privacy_zones),
        )
        zones = self.zones(new, event.athlete_id)
        change = SettingsChange(
            athlete_id=event.athlete_id,
            updated_ms=updated,
            opt_out=new.opt_out,
            hide_start_end_m=self._hide_default(new),
            zones=tuple((z.lat, z.lng, z.radius_m) for z in zones),
        )
        return new, [change]

    def _activity(
        self, settings: AthleteSettings, ev: ActivityEvent, source: str, position: int
    ) -> ActivityChange | TrimJob:
        cfg = self.config
        start_s = int(ev.start_date.timestamp())
        local_start = datetime.fromtimestamp(start_s + ev.utc_offset_s, tz=UTC)
        hide_m = (
            ev.hide_start_end_m if ev.hide_start_end_m is not None else self._hide_default(settings)
        )
        cut_start, cut_end = hide_cuts_m(
            hide_m, activity_id=ev.activity_id, salt=cfg.salt, jitter_m=cfg.hide_jitter_m
        )
        zones = self.zones(settings, ev.athlete_id)
        track = ev.streams  # a contract.Track once parsed
        n_in = len(track) + track.wrong  # as received: a wrong time's fix too
        base: dict[str, Any] = dict(
            activity_id=ev.activity_id,
            athlete_id=ev.athlete_id,
            updated_ms=epoch_ms(ev.updated_at),
            sport_type=ev.sport_type,
            layer=layer_of(ev.sport_type),
            commute=ev.commute,
            start_s=start_s,
            utc_offset_s=ev.utc_offset_s,
            month=f"{local_start.year:04d}-{local_start.month:02d}",
            hide_override_m=ev.hide_start_end_m,
            cut_start_m=cut_start,
            cut_end_m=cut_end,
            zone_key=orjson.dumps(zone_key(zones)).decode(),
            fixes_in=n_in,
            max_speed_ms=max_speed_ms(ev.sport_type),
            clock_resets=track.resets,
            wrong_time_fixes=track.wrong,
        )
        withheld = ""
        if settings.opt_out or ev.visibility != "everyone" or ev.hide_map:
            withheld = "opted_out" if settings.opt_out else "hidden"
        if withheld and cfg.personal_heatmaps:
            # Trimmed like a public one, for the owner's personal store only (routing).
            return TrimJob(
                base, track.lat, track.lng, track.t, zones, source, position,
                visibility=ev.visibility, hide_map=ev.hide_map, withheld=withheld,
            )  # fmt: skip
        if withheld:
            status = withheld
            return ActivityChange(
                status=status,
                path=_EMPTY_PATH,
                heat=b"",
                edges=b"",
                hexagons=b"",
                od=b"",
                fixes_kept=0,
                **base,
            )  # type: ignore[arg-type]
        return TrimJob(
            base, track.lat, track.lng, track.t, zones, source, position, visibility=ev.visibility
        )
