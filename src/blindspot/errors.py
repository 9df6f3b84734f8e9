"""The one exception type for user mistakes (bad file, bad option, bad data).

The CLI prints its message as a single sentence and exits with status 2, without a traceback;
library callers can catch it as a ``ValueError``.
"""


class BlindspotError(ValueError):
    """A user-facing error whose message names the file or parameter and what was expected."""
