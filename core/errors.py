"""Errors a user can fix: printed as one ``location: message`` line, exit code 2, no traceback.

Anything else is a bug in our code (or a plugin's) and keeps its traceback. ``STILLROOM_RAISE_ERRORS=1``
re-raises handled errors too, for debugging.
"""

import difflib


class UserError(Exception):
    """An error the user can fix; the CLI prints ``location: message`` and exits 2."""

    def __init__(self, message: str, location: str | None = None):
        super().__init__(message)
        self.message = message
        self.location = location
        self.lines = [str(self)]  # the error as printed, one item per line (a spec error names several)

    def __str__(self) -> str:
        return f"{self.location}: {self.message}" if self.location else self.message


class BudgetExceeded(UserError):
    """A call or cost budget would be exceeded; the run stops cleanly before it is."""


def suggest(name: str, candidates) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest candidate, or an empty string."""
    close = difflib.get_close_matches(str(name), [str(c) for c in candidates], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
