"""Fixtures: the SharingHub stand-in and servers, shared by a whole session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from servers import Server, Standin


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
    os.environ.pop("MLFLOW_TRACKING_TOKEN", None)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standin]:
    hub = Standin(tmp_path_factory.mktemp("standin"))
    hub.start()
    yield hub
    hub.stop()


@pytest.fixture(scope="session")
def server(
    tmp_path_factory: pytest.TempPathFactory, standin: Standin
) -> Iterator[Server]:
    """The server as deployed by default: anonymous callers are refused."""
    instance = Server(tmp_path_factory.mktemp("server"), standin)
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture(scope="session")
def open_server(
    tmp_path_factory: pytest.TempPathFactory, standin: Standin
) -> Iterator[Server]:
    """A server with SHARINGHUB_AUTH_DEFAULT_TOKEN on: anonymous callers read."""
    instance = Server(
        tmp_path_factory.mktemp("open-server"),
        standin,
        SHARINGHUB_AUTH_DEFAULT_TOKEN="true",
        MLFLOW_SERVER_ALLOWED_HOSTS="mlflow.example.com",
    )
    instance.start()
    yield instance
    instance.stop()
