"""MLflow's JSON error envelope for every error that escapes MLflow's handlers.

MLflow's Flask handlers answer their own MlflowExceptions in MLflow's format,
but a few errors get past them and would reach the client as Flask's HTML
page with status 500. The handlers here turn each into MLflow's
``{"error_code": ..., "message": ...}``, with the status that says what
happened: a bad request, an artifact store refusal, or a store outage.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from flask import Flask
from flask import Response as FlaskResponse
from werkzeug.exceptions import HTTPException

from mlflow_sharinghub.errors import error_body

logger = logging.getLogger(__name__)


def answer_mlflow_errors_as_json(flask_app: Flask) -> None:
    """Errors that escape MLflow's handlers become MLflow's JSON error.

    A few MLflow handlers lack MLflow's own exception decorator (dataset
    records, for one), and S3 refusals (an unknown multipart upload id) are
    not MlflowExceptions: either would reach the caller as Flask's HTML page
    with status 500. A database that went away mid-request is an outage, as
    MLflow itself says when it catches one: when the rollback fails too (the
    server ended the session), SQLAlchemy's error escapes MLflow's handling.
    """
    from botocore.exceptions import ClientError
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import OperationalError

    def mlflow_error(error: Any) -> FlaskResponse:  # MLflow's exceptions are untyped
        # MLflow's log_batch wraps a failed inner rollback as an internal error.
        cause = error.__cause__ or error.__context__
        if error.error_code == "INTERNAL_ERROR" and isinstance(cause, OperationalError):
            return database_gone(cause)
        return FlaskResponse(
            error.serialize_as_json(),
            status=error.get_http_status_code(),
            mimetype="application/json",
        )

    def store_error(error: ClientError) -> FlaskResponse:
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 500)
        code = _STORE_ERROR_CODES.get(status, "INTERNAL_ERROR")
        if code == "INTERNAL_ERROR":
            logger.error("Artifact store error: %s", error)
            status = 500
        return _json_error(status, code, f"Artifact store: {error}")

    def database_gone(error: OperationalError) -> FlaskResponse:
        logger.warning("Backend store unavailable: %s", type(error.orig).__name__)
        return _json_error(
            503,
            "TEMPORARILY_UNAVAILABLE",
            "The backend store is not answering. Try again in a moment.",
        )

    def unexpected(error: Exception) -> FlaskResponse | HTTPException:
        if isinstance(error, HTTPException):
            return _http_error(error)
        if _body_is_not_an_object():
            # Some MLflow handlers use the body before validating it (runs/log-batch
            # measures it, experiments/create calls .get on it, a JSON string is
            # decoded once more unguarded): whatever broke, the body was bad.
            return _json_error(
                400,
                "INVALID_PARAMETER_VALUE",
                "The request body must be a JSON object.",
            )
        logger.exception("Unexpected error in MLflow")
        return _json_error(500, "INTERNAL_ERROR", "Internal error; see the server log.")

    flask_app.register_error_handler(MlflowException, mlflow_error)
    flask_app.register_error_handler(ClientError, store_error)
    flask_app.register_error_handler(OperationalError, database_gone)
    flask_app.register_error_handler(Exception, unexpected)


def _http_error(error: HTTPException) -> FlaskResponse | HTTPException:
    """Flask's own refusals (no such route, wrong method) in MLflow's format.

    The guard lets through only routes its policy knows, but some of those
    MLflow serves under one spelling of ``/api/`` and ``/ajax-api/`` only.
    Redirects of Flask's routing stay as they are.
    """
    status = error.code or 500
    if status < 400:
        return error
    code = _HTTP_ERROR_CODES.get(
        status, "BAD_REQUEST" if status < 500 else "INTERNAL_ERROR"
    )
    # A 405 still says which methods the route takes.
    allow = [(k, v) for k, v in error.get_headers() if k.lower() == "allow"]
    return _json_error(status, code, error.description or error.name, allow)


_HTTP_ERROR_CODES = {
    404: "ENDPOINT_NOT_FOUND",
    405: "ENDPOINT_NOT_FOUND",
    503: "TEMPORARILY_UNAVAILABLE",
}

_STORE_ERROR_CODES = {
    400: "INVALID_PARAMETER_VALUE",
    404: "RESOURCE_DOES_NOT_EXIST",
}


def _body_is_not_an_object() -> bool:
    """Whether the current request has a body MLflow cannot read as a JSON object.

    MLflow reads a JSON string body as JSON once more, for older clients.
    """
    from flask import request

    if request.method not in ("POST", "PATCH", "PUT", "DELETE"):
        return False
    body = request.get_json(force=True, silent=True)
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except ValueError:
            return True
    return not isinstance(body, dict)


def _json_error(
    status: int, code: str, message: str, headers: Sequence[tuple[str, str]] = ()
) -> FlaskResponse:
    return FlaskResponse(
        error_body(code, message),
        status=status,
        headers=headers,
        mimetype="application/json",
    )
