"""The errors easyrec reports to users as one line, without a traceback."""


class EasyrecError(Exception):
    """A problem with what the user gave us (config, data, files), not a bug in easyrec."""

    exit_code = 1


class ConfigError(EasyrecError):
    """An invalid configuration value; the message names the key."""

    exit_code = 2


class DataError(EasyrecError):
    """Unreadable or invalid data; the message names the file and the column or row."""
