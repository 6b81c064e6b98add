"""The one base exception and its specific kinds.

Each specific error also subclasses the matching built-in (as h3-py's ``H3ValueError``
does), so callers can catch either. Messages name the step, the record and the value.
"""


class HeatmetroError(Exception):
    """Base class for every error heatmetro raises on purpose."""


class ConfigError(HeatmetroError, ValueError):
    """The configuration file or an environment override is invalid."""


class StreamRecordError(HeatmetroError, ValueError):
    """A stream record breaks the v1 contract; it goes to the dead-letter file."""


class InputError(HeatmetroError, OSError):
    """An input named on the command line cannot be read."""


class ImportFileError(HeatmetroError, ValueError):
    """A GPX/FIT/TCX file or export zip cannot be turned into stream events."""


class StoreError(HeatmetroError, RuntimeError):
    """The SQLite store is missing, locked or from an unknown schema."""


class PublishError(HeatmetroError, RuntimeError):
    """A snapshot could not be built or published."""
