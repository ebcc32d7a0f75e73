"""Fixtures: the SharingHub stand-in and servers, shared by a whole session.

The servers run once per store ``backend``, with readable test ids:

- ``sqlite``: SQLite and artifacts in local files, the defaults;
- ``postgresql``: PostgreSQL (a throw-away cluster) and artifacts in S3 (moto).

pytest groups the tests by backend, and the servers of one backend stop when
the next backend's start. A module that needs one backend only narrows it
with ``pytest.mark.parametrize("backend", [...], indirect=True)``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from servers import S3, Postgres, Server, Standin, running

BACKENDS = ["sqlite", "postgresql"]

# The client side never holds store credentials: artifacts go through the server.
STORE_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_REGION",
    "MLFLOW_S3_ENDPOINT_URL",
    "MLFLOW_BACKEND_STORE_URI",
    "MLFLOW_ARTIFACTS_DESTINATION",
)


@pytest.fixture(scope="session", autouse=True)
def _client_environment() -> Iterator[None]:
    """MLflow client settings for the whole run: fail fast, log traces at once."""
    saved = dict(os.environ)
    os.environ.update(
        {
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
            "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
            "MLFLOW_ENABLE_ASYNC_TRACE_LOGGING": "false",
            "MLFLOW_ENABLE_ASYNC_LOGGING": "false",
        }
    )
    for name in ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_URI", *STORE_VARIABLES):
        os.environ.pop(name, None)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standin]:
    with running(Standin(tmp_path_factory.mktemp("standin"))) as hub:
        yield hub


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    cluster = Postgres()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3]:
    with running(S3(tmp_path_factory.mktemp("s3"))) as service:
        yield service


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The stores of the servers: ``sqlite`` or ``postgresql`` (with S3)."""
    name: str = request.param
    return name


def store_settings(
    request: pytest.FixtureRequest, backend: str, name: str
) -> dict[str, str]:
    """The settings that give server ``name`` its own stores of ``backend``."""
    if backend == "sqlite":
        return {}
    postgres: Postgres = request.getfixturevalue("postgres")
    s3: S3 = request.getfixturevalue("s3")
    uri = postgres.create_database(name.replace("-", "_"))
    return {"MLFLOW_BACKEND_STORE_URI": uri} | s3.create_bucket(f"mlflow-{name}")


@pytest.fixture(scope="session")
def server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    standin: Standin,
    backend: str,
) -> Iterator[Server]:
    """The server as deployed by default: anonymous callers are refused."""
    with running(
        Server(
            tmp_path_factory.mktemp(f"server-{backend}"),
            standin,
            **store_settings(request, backend, "server"),
        )
    ) as instance:
        yield instance


@pytest.fixture(scope="session")
def open_server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    standin: Standin,
    backend: str,
) -> Iterator[Server]:
    """A server with SHARINGHUB_AUTH_DEFAULT_TOKEN on: anonymous callers read."""
    with running(
        Server(
            tmp_path_factory.mktemp(f"open-server-{backend}"),
            standin,
            SHARINGHUB_AUTH_DEFAULT_TOKEN="true",
            MLFLOW_SERVER_ALLOWED_HOSTS="mlflow.example.com",
            **store_settings(request, backend, "open-server"),
        )
    ) as instance:
        yield instance
