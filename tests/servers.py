"""Real servers on loopback for the end-to-end tests, and the MLflow client.

The SharingHub stand-in and mlflow-sharinghub run as subprocesses, the way an
operator runs them; the tests drive them with the MLflow client and httpx.
Servers are shared by a whole session, so tests use fresh names (``unique``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import mlflow
import pytest

FIXTURES = Path(__file__).with_name("fixtures")
STANDIN_CONFIG = FIXTURES / "sharinghub-test.yaml"
COMMAND = str(Path(sys.executable).with_name("mlflow-sharinghub"))

FLOOD = "eo/flood-model"  # project 42
CROPS = "eo/crop-classifier"  # project 43
TILES = "eo/sentinel-tiles"  # project 44, a dataset
DEMO = "public/demo-model"  # project 45, public


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class Process:
    """A command run in the background, its output kept in a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.args = args
        self.env = os.environ | env
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, ready_url: str, timeout: float = 90) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.args, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"{self.args[:2]} exited:\n{self.output()}")
            try:
                if httpx.get(ready_url, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        pytest.fail(f"{self.args[:2]} did not start:\n{self.output()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]


class Standin:
    """The SharingHub stand-in, with its control API."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [
            COMMAND,
            "standin",
            "--config",
            str(STANDIN_CONFIG),
            "--port",
            str(self.port),
        ]
        self.process = Process(args, {}, workdir / "standin.log")

    def start(self) -> None:
        self.process.start(f"{self.url}/_standin/calls")

    def stop(self) -> None:
        self.process.stop()

    def calls(self) -> list[dict[str, Any]]:
        calls: list[dict[str, Any]] = httpx.get(f"{self.url}/_standin/calls").json()
        return calls

    def reset(self) -> None:
        httpx.post(f"{self.url}/_standin/reset").raise_for_status()

    def delay(self, seconds: float) -> None:
        body = {"seconds": seconds}
        httpx.post(f"{self.url}/_standin/delay", json=body).raise_for_status()

    def put_project(self, project_id: int, path: str, **fields: Any) -> None:
        body = {"id": project_id, "path": path, "name": path} | fields
        url = f"{self.url}/_standin/projects/{project_id}"
        httpx.put(url, json=body).raise_for_status()

    def put_user(self, token: str, access: dict[int, int]) -> None:
        body = {"name": token, "access": {str(k): v for k, v in access.items()}}
        httpx.put(f"{self.url}/_standin/users/{token}", json=body).raise_for_status()


class Server:
    """mlflow-sharinghub, as ``mlflow-sharinghub server`` runs it."""

    def __init__(self, workdir: Path, standin: Standin, **settings: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            "SHARINGHUB_URL": standin.url,
            "MLFLOW_DATA_DIR": str(workdir / "data"),
            "MLFLOW_PORT": str(self.port),
            "MLFLOW_WORKERS": "1",
            "LOG_LEVEL": "INFO",
        } | settings
        self.process = Process([COMMAND, "server"], env, workdir / "server.log")

    def start(self) -> None:
        self.process.start(f"{self.url}/ready")

    def stop(self) -> None:
        self.process.stop()

    def uri(self, project: str | int) -> str:
        """The project's tracking URI."""
        return f"{self.url}/{project}/tracking/"

    def output(self) -> str:
        return self.process.output()


@contextmanager
def as_user(uri: str, token: str | None) -> Iterator[mlflow.MlflowClient]:
    """Point the MLflow client (fluent API included) at ``uri`` as ``token``."""
    previous = mlflow.get_tracking_uri()
    if token is None:
        os.environ.pop("MLFLOW_TRACKING_TOKEN", None)
    else:
        os.environ["MLFLOW_TRACKING_TOKEN"] = token
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    finally:
        if mlflow.active_run():
            mlflow.end_run()
        os.environ.pop("MLFLOW_TRACKING_TOKEN", None)
        mlflow.set_tracking_uri(previous)
        mlflow.set_registry_uri(previous)
