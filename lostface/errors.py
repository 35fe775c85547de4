"""One exception family: every message says what was wrong and what to do."""

from __future__ import annotations


class LostfaceError(Exception):
    """Base of every error the command line reports as one sentence."""

    exit_code = 1


class InputError(LostfaceError):
    """A file or value given by the user cannot be used."""

    exit_code = 2


class ConfigError(LostfaceError):
    """The configuration (preset, --config file or --set override) is invalid."""

    exit_code = 2


class ModelError(LostfaceError):
    """A model could not be loaded (missing extra, missing weights, bad path)."""

    exit_code = 3


class OutputError(LostfaceError):
    """The output cannot be written where it was asked for."""

    exit_code = 4
