"""The one exception type that the CLI turns into a one-line message and exit code 2."""


class UserError(Exception):
    """Bad input from the user: a wrong name, a missing file, an out-of-range value."""


class CorruptFile(UserError):
    """A file of ours that is torn or fails its checksum: never to be used as valid."""
