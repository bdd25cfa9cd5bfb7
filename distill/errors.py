"""User-facing errors: one line naming what to fix (docs/design.md, Errors).

Entry points catch :class:`DistillError`, print ``error: <message>`` on one
line and exit non-zero; anything else is a bug and keeps its traceback.
"""


class DistillError(Exception):
    """Base class; the message must say what to change."""

    exit_code = 2
    # Every process of a multi-process job meets this error alike (it comes from the shared config or
    # data): only rank 0 prints it. False for an error of one process (a lost peer, a local disk).
    same_on_every_rank = True


class ConfigError(DistillError):
    """A config value is missing, out of range or inconsistent."""


class DataError(DistillError):
    """A data file or split is missing, malformed or empty."""


class ModelError(DistillError):
    """A model or checkpoint cannot be loaded, or two models do not fit together."""


class PeerLost(DistillError):
    """Another process of a multi-process job stopped (killed, out of memory) or stopped answering."""

    same_on_every_rank = False


class TrainingDiverged(DistillError):
    """A loss became NaN or inf; the last good checkpoint is kept."""

    exit_code = 3


class Interrupted(DistillError):
    """SIGINT or SIGTERM stopped the command; the message says what was saved and how to continue."""

    prefix = "interrupted"

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


class SignalInterrupt(KeyboardInterrupt):
    """Raised by the CLI's SIGTERM handler (and the loop's second signal): unwinds like Ctrl-C."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
