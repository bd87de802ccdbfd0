"""Request errors with the status codes TensorFlow Serving answers with.

One exception type carries a canonical code; the REST frontend maps it to an HTTP status and the
gRPC frontend to a grpc.StatusCode of the same name, so both frontends agree on every error.
"""

from __future__ import annotations

import enum

from kerasflow.runtime.errors import UserError


class Code(enum.IntEnum):
    """Canonical status codes (the numbers of tensorflow.error.Code and grpc.StatusCode)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


# The HTTP status TF Serving's REST handler gives each code.
_HTTP_STATUS = {
    Code.OK: 200,
    Code.CANCELLED: 499,
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500,
    Code.UNAUTHENTICATED: 401,
}


def http_status(code: Code) -> int:
    """The HTTP status TF Serving's REST API uses for `code`."""
    return _HTTP_STATUS.get(code, 500)


class ServingError(Exception):
    """A request or load failure with a canonical code and a one-line message."""

    def __init__(self, code: Code, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def invalid_argument(message: str) -> ServingError:
    """A ServingError with code INVALID_ARGUMENT."""
    return ServingError(Code.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
    """A ServingError with code NOT_FOUND."""
    return ServingError(Code.NOT_FOUND, message)


class InfraValidationError(UserError):
    """A model export that does not load or does not answer the way the server runs it."""
