"""The ASGI application: MLflow's own server, with the SharingHub guard in front.

``create_app`` is the ``mlflow.app`` entry point ``sharinghub``, so both
``mlflow server --app-name sharinghub`` and ``mlflow-sharinghub server`` run
it in each worker process. It reads the settings, gives MLflow the
environment this product needs (workspaces on, the job runner off, the host
and origin allowlists), and only then imports MLflow's server, which reads
that environment when it is imported.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from functools import cache
from typing import Any

import anyio.to_thread
from flask import Flask
from flask import Response as FlaskResponse
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp

from mlflow_sharinghub.metrics import Metrics, use_shared_directory
from mlflow_sharinghub.settings import Settings, load_settings

logger = logging.getLogger(__name__)

WORKSPACE_STORE_URI = "sharinghub://"


def configure_logging(level: str) -> None:
    """Send this package's log lines to stderr as ``LEVEL:logger:message``."""
    package_logger = logging.getLogger("mlflow_sharinghub")
    package_logger.setLevel(level)
    if not package_logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s:%(name)s:%(message)s"))
        package_logger.addHandler(handler)
        package_logger.propagate = False


def prepare_mlflow_environment(settings: Settings) -> None:
    """Put the settings where MLflow's server reads them."""
    for name, value in settings.mlflow_environment().items():
        if name == "MLFLOW_FLASK_SERVER_SECRET_KEY" and os.environ.get(name):
            continue
        os.environ[name] = value


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
    from werkzeug.exceptions import HTTPException

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
            return error
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


def _json_error(status: int, code: str, message: str) -> FlaskResponse:
    body = json.dumps({"error_code": code, "message": message})
    return FlaskResponse(body, status=status, mimetype="application/json")


def create_app() -> ASGIApp:
    """Build the guarded MLflow application of one worker process."""
    settings = load_settings()
    configure_logging(settings.log_level)
    prepare_mlflow_environment(settings)
    # Before anything imports prometheus_client: its mode is fixed at import.
    use_shared_directory()

    from mlflow.server import app as flask_app
    from mlflow.server.fastapi_app import app as mlflow_app
    from mlflow.tracking._workspace.registry import get_workspace_store

    from mlflow_sharinghub.middleware import SharingHubMiddleware
    from mlflow_sharinghub.sharinghub import SharingHubClient
    from mlflow_sharinghub.workspaces import SharingHubWorkspaceStore

    answer_mlflow_errors_as_json(flask_app)
    metrics = Metrics()
    sharinghub = SharingHubClient(
        settings.sharinghub_url,
        timeout=settings.sharinghub_timeout,
        cache_ttl=settings.sharinghub_cache_ttl,
        session_cookie=settings.sharinghub_session_cookie,
        metrics=metrics,
    )

    @cache
    def workspaces() -> SharingHubWorkspaceStore:
        store = get_workspace_store(WORKSPACE_STORE_URI)
        if not isinstance(store, SharingHubWorkspaceStore):
            raise TypeError(f"unexpected workspace store {type(store).__name__}")
        return store

    async def readiness() -> Response:
        checks = {"backend_store": "ok", "sharinghub": "ok"}
        try:
            await anyio.to_thread.run_sync(lambda: workspaces().ping())
        except Exception as exc:  # any failure of the store means "not ready"
            logger.warning("Readiness: backend store failed: %s", type(exc).__name__)
            checks["backend_store"] = "failing"
        if not await sharinghub.ping():
            checks["sharinghub"] = "failing"
        ready = all(value == "ok" for value in checks.values())
        body = {"status": "ready" if ready else "not ready", "checks": checks}
        return JSONResponse(body, status_code=200 if ready else 503)

    logger.debug(
        "Worker %d serving SharingHub %s", os.getpid(), settings.sharinghub_url
    )
    return SharingHubMiddleware(
        mlflow_app,
        settings=settings,
        sharinghub=sharinghub,
        workspaces=workspaces,
        readiness=readiness,
        metrics=metrics,
    )
