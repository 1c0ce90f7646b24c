"""Errors a user can cause: each message names the file or value and says what to do.

The CLI prints them as one line and the app shows them as text, so they must never need a traceback
to be understood. Programming errors stay ordinary Python exceptions.
"""


class TacError(Exception):
    """Base of every user-facing error of the engine."""


class InvalidInputError(TacError, ValueError):
    """A parameter, array or file given by the user cannot be used as it is."""


class WeightsUnavailableError(TacError):
    """Model weights could not be found or downloaded."""


class EmptyInputError(InvalidInputError):
    """There is nothing to work on (no images, empty vocabulary, ...)."""
