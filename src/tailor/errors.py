"""The one error type users see: a clear paragraph, exit code 2, no traceback."""


class TailorError(Exception):
    """Bad input or a state the user can fix. The CLI prints the message and exits with 2."""

    exit_code = 2
