"""Errors a user can act on: each message names the file or key and says how to fix it."""


class ICDError(Exception):
    """Base class for errors caused by user input rather than by a bug."""


class DataError(ICDError):
    """The dataset on disk is missing, malformed or inconsistent."""


class ConfigError(ICDError):
    """The configuration is invalid."""
