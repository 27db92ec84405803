"""Error types a user can act on.

Every error says what is wrong and how to fix it; the CLI prints `message` and `fix` on one line
each and exits with code 2 (bad input), the dashboard shows them and stays up.
"""

from __future__ import annotations


class BsnnError(Exception):
    """Base class: a problem the user can fix. `fix` says how."""

    exit_code = 2

    def __init__(self, message: str, fix: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.message} — {self.fix}" if self.fix else self.message


class ConfigError(BsnnError):
    """An option has a value that cannot work (percentile 120, T=0, ...)."""


class CheckpointError(BsnnError):
    """A model file is missing, corrupt, unsafe or does not fit the architecture."""


class DataError(BsnnError):
    """A data set is missing, empty or laid out wrongly on disk."""


class ConversionError(BsnnError):
    """The ANN holds something that cannot be turned into IF neurons."""


class DeviceError(BsnnError):
    """The device asked for is not there, or ran out of memory."""


class RunStorageError(BsnnError):
    """The run folder cannot be written (permissions, full disk)."""
