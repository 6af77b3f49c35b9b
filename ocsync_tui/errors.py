"""The exception every user-facing failure derives from.

The CLI prints an OcsyncError's message as one line and exits non-zero; anything else escaping is a bug.
"""


class OcsyncError(Exception):
    """A failure the user can understand and act on; str(error) is the whole message."""
