"""Error types: every message says what was expected, what was found and how to fix it."""


class TLCircuitsError(Exception):
    """Base class of every error tl_circuits raises on purpose."""


class ConfigError(TLCircuitsError, ValueError):
    """A model, transcoder or argument does not fit what the operation needs."""


class FileFormatError(TLCircuitsError, ValueError):
    """A file on disk is missing, corrupt, truncated or of an unsupported version."""
