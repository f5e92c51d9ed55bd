"""The one exception type that the CLI turns into a one-line error and a non-zero exit code.

Messages name the file or field, the problem, and what was expected vs what was found.
"""


class SnnEdgeError(Exception):
    """Bad input or a state the user can fix; the message is shown as is."""


class DataError(SnnEdgeError):
    """A recording, dataset folder or cache entry that cannot be used."""
