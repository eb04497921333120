"""The project's error base: anything raised as a :class:`HwnasError` is a user-facing problem whose message
names the file or field and the fix; the CLI prints it as one line and exits with status 2."""


class HwnasError(Exception):
    """A problem with the user's input (file, option, budget, profile) rather than a bug."""
