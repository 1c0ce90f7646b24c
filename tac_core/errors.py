"""Errors a user can cause: each message names the file or value and says what to do.

The CLI prints them as one line and the app shows them as text, so they must never need a traceback
to be understood. Programming errors stay ordinary Python exceptions.
"""


class TacError(Exception):
    """Base of every user-facing error of the engine.

    ``str()`` is the message for the command line; ``app_message``, where given, says the same in the app's
    words (the app has no ``--checkpoint`` flag): :meth:`for_app`.
    """

    def __init__(self, message: str = "", app_message: str | None = None) -> None:
        super().__init__(message)
        self.app_message = app_message

    def for_app(self) -> str:
        return self.app_message or str(self)


class InvalidInputError(TacError, ValueError):
    """A parameter, array or file given by the user cannot be used as it is."""


class WeightsUnavailableError(TacError):
    """Model weights could not be found or downloaded."""


class EmptyInputError(InvalidInputError):
    """There is nothing to work on (no images, empty vocabulary, ...)."""


class ParameterError(InvalidInputError):
    """A run parameter out of range or not among its choices.

    ``field`` names the parameter as :class:`~tac_core.run.params.RunParams` spells it and ``minimum`` is the
    lower bound a whole number missed (None for other problems), so a front end can word the message its own
    way (the CLI names its flags) without checking the values a second time.
    """

    def __init__(self, message: str, field: str, value: object, minimum: int | None = None) -> None:
        super().__init__(message)
        self.field, self.value, self.minimum = field, value, minimum


class RunStatusError(TacError):
    """A run cannot move to the status asked for (e.g. a cancelled run cannot start running)."""
