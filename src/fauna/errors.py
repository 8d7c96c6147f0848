"""One base class for the errors a user should see as one line, not a traceback.

Exit codes of the `fauna` command (what KFP, the CronJob and a shell see):

    0   done; a decision is a success too ("not promoted: does not beat the champion")
    2   a FaunaError: something to fix (input, settings, a store that lacks a feature);
        running the same command again gives the same answer
    75  a TransientError (EX_TEMPFAIL of sysexits.h): the store or a service failed for
        now (5xx, throttling, timeouts, unreachable); nothing was promoted or half-written,
        so running the same command again is safe and may succeed: retry it
"""

EXIT_ERROR = 2
EXIT_TRANSIENT = 75


class FaunaError(RuntimeError):
    """An expected failure with a message that tells the user what to do."""

    exit_code = EXIT_ERROR


class TransientError(FaunaError):
    """A failure that may pass by itself (an outage, throttling): retry the command."""

    exit_code = EXIT_TRANSIENT
