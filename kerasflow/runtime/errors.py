"""Errors a user can cause, as opposed to bugs of ours."""


class UserError(Exception):
    """A problem with the user's input (data, config, flags, request).

    The CLI prints its message as one line and exits non-zero; no traceback.
    """
