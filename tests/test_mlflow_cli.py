"""``mlflow server --app-name sharinghub``: MLflow's own command runs this product.

The original image started the server that way, so deployments that keep
their command line must get the same guard: per-project URIs, SharingHub's
decision, one workspace per project. MLflow's own flags turn workspaces and
the artifact proxy on; the settings come from the same environment variables.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from servers import CROPS, FLOOD, Process, Standin, free_port, unique

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)

MLFLOW = str(Path(sys.executable).with_name("mlflow"))


@pytest.fixture(scope="module")
def mlflow_server(
    tmp_path_factory: pytest.TempPathFactory, standin: Standin, backend: str
) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("mlflow-cli")
    port = free_port()
    args = [
        MLFLOW,
        "server",
        "--app-name=sharinghub",
        f"--artifacts-destination={workdir / 'mlartifacts'}",
        "--serve-artifacts",
        "--enable-workspaces",
        "--workspace-store-uri=sharinghub://",
        f"--port={port}",
        "--workers=1",
    ]
    env = {
        "SHARINGHUB_URL": standin.url,
        # The variable, not the flag: this product's workspace provider reads
        # it when MLflow builds the stores, before any worker starts.
        "MLFLOW_BACKEND_STORE_URI": f"sqlite:///{workdir / 'mlflow.db'}",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    process = Process(args, env, workdir / "server.log")
    url = f"http://127.0.0.1:{port}"
    process.start(f"{url}/health")
    yield url
    process.stop()


def call(method: str, url: str, token: str | None, **kwargs: object) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.request(method, url, headers=headers, timeout=30, **kwargs)  # type: ignore[arg-type]


def test_health_answers(mlflow_server: str) -> None:
    response = call("GET", f"{mlflow_server}/health", None)

    assert response.json() == {"status": "healthy"}


def test_projects_are_guarded_and_kept_apart(mlflow_server: str) -> None:
    name = unique("cli")
    create = f"{mlflow_server}/{FLOOD}/tracking/api/2.0/mlflow/experiments/create"
    search_a = f"{mlflow_server}/{FLOOD}/tracking/api/2.0/mlflow/experiments/search"
    search_b = f"{mlflow_server}/{CROPS}/tracking/api/2.0/mlflow/experiments/search"
    body = {"max_results": 100}

    created = call("POST", create, "dev-a", json={"name": name})
    by_reporter = call("POST", create, "rep-a", json={"name": unique("cli")})
    anonymous = call("POST", search_a, None, json=body)
    seen_by_a = call("POST", search_a, "dev-a", json=body).json()
    seen_by_b = call("POST", search_b, "dev-b", json=body).json()
    b_at_a = call("POST", search_a, "dev-b", json=body)

    assert created.status_code == 200, created.text
    assert by_reporter.json()["error_code"] == "PERMISSION_DENIED"
    assert anonymous.json()["error_code"] == "UNAUTHENTICATED"
    assert name in [e["name"] for e in seen_by_a["experiments"]]
    assert name not in [e["name"] for e in seen_by_b.get("experiments", [])]
    assert b_at_a.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"


def test_unscoped_api_is_refused(mlflow_server: str) -> None:
    url = f"{mlflow_server}/api/2.0/mlflow/experiments/search"

    response = call("POST", url, "dev-a", json={"max_results": 10})

    assert response.json()["error_code"] == "ENDPOINT_NOT_FOUND"
