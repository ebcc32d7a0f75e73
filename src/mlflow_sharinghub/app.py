"""The ASGI application: MLflow's own server, with the SharingHub guard in front.

``create_app`` is the ``mlflow.app`` entry point ``sharinghub``, so both
``mlflow server --app-name sharinghub`` and ``mlflow-sharinghub server`` run
it in each worker process. It reads the settings, gives MLflow the
environment this product needs (workspaces on, the job runner off, the host
and origin allowlists), and only then imports MLflow's server, which reads
that environment when it is imported.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
from functools import cache
from urllib.parse import urlsplit

import anyio.to_thread
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.types import ASGIApp

from mlflow_sharinghub.json_errors import answer_mlflow_errors_as_json
from mlflow_sharinghub.metrics import Metrics, use_shared_directory
from mlflow_sharinghub.settings import Settings, load_settings
from mlflow_sharinghub.sqlite import database_file

logger = logging.getLogger(__name__)

WORKSPACE_STORE_URI = "sharinghub://"


def configure_logging(level: str) -> None:
    """Send this package's log lines to stderr as ``LEVEL:logger:message``.

    uvicorn's access log, a line per request at INFO, follows the same level.
    """
    logging.getLogger("uvicorn.access").setLevel(level)
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


# Starlette reads a file it serves 64 KiB at a time, each read a thread hop;
# MLflow serves artifact downloads that way. 1 MiB reads move a 50 MB file
# in 50 hops instead of 800.
FILE_CHUNK_BYTES = 1 << 20


def block_basic_auth_app() -> None:
    """Make ``mlflow.server.auth`` unimportable in this worker process.

    MLflow's search-runs handler imports its basic-auth app on every call, to
    filter by its permissions if it runs. This server never runs that app;
    without Flask-WTF the import fails after running 500 lines of the module
    (about 3 ms of every search), and a second thread arriving meanwhile can
    get the half-made module and answer 500. A ``None`` in ``sys.modules``
    makes the import fail at once, which the handler already allows for.
    """
    sys.modules.setdefault("mlflow.server.auth", None)  # type: ignore[arg-type]


def stores_on_this_machine() -> bool:
    """Whether this worker's MLflow keeps SQLite files and an artifact directory.

    ``mlflow server`` hands its workers their stores in these variables,
    whichever command started it and with whatever flags.
    """
    from mlflow.server.constants import (
        ARTIFACTS_DESTINATION_ENV_VAR,
        BACKEND_STORE_URI_ENV_VAR,
        READ_REPLICA_BACKEND_STORE_URI_ENV_VAR,
        REGISTRY_STORE_URI_ENV_VAR,
    )

    databases = [os.environ.get(BACKEND_STORE_URI_ENV_VAR, "")] + [
        os.environ[name]
        for name in (REGISTRY_STORE_URI_ENV_VAR, READ_REPLICA_BACKEND_STORE_URI_ENV_VAR)
        if os.environ.get(name)
    ]
    artifacts = os.environ.get(ARTIFACTS_DESTINATION_ENV_VAR, "")
    return (
        all(database_file(uri) is not None for uri in databases)
        and bool(artifacts)
        and urlsplit(artifacts).scheme in ("", "file")
    )


def create_app() -> ASGIApp:
    """Build the guarded MLflow application of one worker process."""
    settings = load_settings()
    configure_logging(settings.log_level)
    prepare_mlflow_environment(settings)
    # Before anything imports prometheus_client: its mode is fixed at import.
    runtime = use_shared_directory()
    block_basic_auth_app()

    from mlflow.server import app as flask_app
    from mlflow.server.fastapi_app import app as mlflow_app
    from mlflow.tracking._workspace.registry import get_workspace_store

    from mlflow_sharinghub.middleware import SharingHubMiddleware
    from mlflow_sharinghub.shared_answers import FILE_NAME
    from mlflow_sharinghub.sharinghub import SharingHubClient
    from mlflow_sharinghub.workspaces import SharingHubWorkspaceStore
    from mlflow_sharinghub.wsgi import FlaskBridge, native_route_prefixes

    answer_mlflow_errors_as_json(flask_app)
    FileResponse.chunk_size = FILE_CHUNK_BYTES
    metrics = Metrics()
    sharinghub = SharingHubClient(
        settings.sharinghub_url,
        timeout=settings.sharinghub_timeout,
        cache_ttl=settings.sharinghub_cache_ttl,
        session_cookie=settings.sharinghub_session_cookie,
        metrics=metrics,
        shared_answers=runtime / FILE_NAME,
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

    on_loop = stores_on_this_machine()
    logger.debug(
        "Worker %d serving SharingHub %s; MLflow's handlers run %s",
        os.getpid(),
        settings.sharinghub_url,
        "on the event loop (local stores)" if on_loop else "in threads",
    )
    guard = SharingHubMiddleware(
        mlflow_app,
        settings=settings,
        sharinghub=sharinghub,
        workspaces=workspaces,
        readiness=readiness,
        metrics=metrics,
        # MLflow's Flask app checks hosts and origins and sets its security
        # headers itself, as under gunicorn; FastAPI's copies of those checks
        # stay on FastAPI's own routes only.
        flask=FlaskBridge(flask_app, on_loop=on_loop),
        native_prefixes=native_route_prefixes(mlflow_app),
    )
    # MLflow's modules leave over 300,000 objects that live as long as the
    # worker. Out of the collector's sight, a full collection no longer walks
    # them all: 100 to 250 ms measured, each time stalling every request in
    # flight in the worker.
    gc.freeze()
    return guard
