"""The exception types for user mistakes and faults (bad file, bad option, bad data, a full disk).

The CLI prints their message as a single sentence and exits with status 2, without a traceback;
library callers can catch them as a ``ValueError``.
"""


class BlindspotError(ValueError):
    """A user-facing error whose message names the file or parameter and what was expected."""


class WriteError(BlindspotError):
    """Writing a result failed (full disk, permissions); the work done so far is kept where possible."""
