"""Errors that are the user's to fix: the CLI prints them as one line and exits non-zero."""


class UserError(Exception):
    """Bad input (config, paths, checkpoints): reported as one line, no traceback."""


class ConfigError(UserError):
    """An experiment file, `--set` override or hyperparameter that cannot be used."""


class CheckpointError(UserError):
    """A run directory or checkpoint that is missing, empty or unreadable."""


class FilesystemError(UserError):
    """A path the run writes that the filesystem refuses: read-only, full, not a directory."""
