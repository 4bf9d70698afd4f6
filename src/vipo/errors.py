"""Errors a user can fix. The CLI prints them as one line and exits non-zero, without a traceback."""


class UserError(Exception):
    """Bad input or configuration: the message names the file, line or field."""


class StageAborted(UserError):
    """A stage stopped on purpose (threshold passed, too many skipped steps); the message says why."""
