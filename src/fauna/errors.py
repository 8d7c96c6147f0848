"""One base class for the errors a user should see as one line, not a traceback."""


class FaunaError(RuntimeError):
    """An expected failure with a message that tells the user what to do."""
