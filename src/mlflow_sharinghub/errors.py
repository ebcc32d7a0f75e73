"""One exception tree, one error shape: MLflow's JSON error envelope.

MLflow clients parse ``{"error_code": ..., "message": ...}`` and show the
message, so every refusal this server makes uses that body, with a message
that says what to do next.
"""

from __future__ import annotations

import json


def error_body(error_code: str, message: str) -> bytes:
    """MLflow's JSON error envelope."""
    return json.dumps({"error_code": error_code, "message": message}).encode()


class ConfigurationError(Exception):
    """A setting is missing or malformed; startup stops with this message."""


class RequestRefused(Exception):
    """A request this server answers itself, with an MLflow-format error."""

    status = 400
    error_code = "BAD_REQUEST"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}

    def body(self) -> bytes:
        return error_body(self.error_code, self.message)


class Unauthenticated(RequestRefused):
    status = 401
    error_code = "UNAUTHENTICATED"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class PermissionDenied(RequestRefused):
    status = 403
    error_code = "PERMISSION_DENIED"


class NotFound(RequestRefused):
    status = 404
    error_code = "RESOURCE_DOES_NOT_EXIST"


class EndpointNotFound(NotFound):
    error_code = "ENDPOINT_NOT_FOUND"


class Unavailable(RequestRefused):
    status = 503
    error_code = "TEMPORARILY_UNAVAILABLE"
