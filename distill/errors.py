"""User-facing errors: one line naming what to fix (SPEC §9).

Entry points catch :class:`DistillError`, print ``error: <message>`` on one
line and exit non-zero; anything else is a bug and keeps its traceback.
"""


class DistillError(Exception):
    """Base class; the message must say what to change."""

    exit_code = 2


class ConfigError(DistillError):
    """A config value is missing, out of range or inconsistent."""


class DataError(DistillError):
    """A data file or split is missing, malformed or empty."""


class ModelError(DistillError):
    """A model or checkpoint cannot be loaded, or two models do not fit together."""


class TrainingDiverged(DistillError):
    """A loss became NaN or inf; the last good checkpoint is kept."""

    exit_code = 3
