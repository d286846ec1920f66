"""The one exception type that the command line turns into a one-line message and exit code 2."""


class UsageError(ValueError):
    """Bad input from a user: an unknown name, a value out of range, a missing or damaged file.

    The message names the offending value and says how to fix it; `iat` prints it on one line
    and exits with code 2.
    """
