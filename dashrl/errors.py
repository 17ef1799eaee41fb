"""Errors a user can fix: the CLI prints their message on one line and exits 2."""


class UserError(Exception):
    """Bad input (config, path, data). The message names what and where."""
