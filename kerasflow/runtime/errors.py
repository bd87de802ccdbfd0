"""Errors a user can cause, as opposed to bugs of ours."""


class UserError(Exception):
    """A problem with the user's input (data, config, flags, request).

    The CLI prints its message as one line and exits non-zero; no traceback.
    """


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
