"""Real servers on loopback for the end-to-end tests, and the MLflow client.

The SharingHub stand-in and mlflow-sharinghub run as subprocesses, the way an
operator runs them; the tests drive them with the MLflow client and httpx.
Servers are shared by a whole session, so tests use fresh names (``unique``).

The stores are real too: a throw-away PostgreSQL cluster made with the Debian
``postgresql`` package's ``initdb`` and ``pg_ctl``, and moto's S3 server.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

import boto3
import httpx
import mlflow
import psycopg
import pytest

FIXTURES = Path(__file__).with_name("fixtures")
STANDIN_CONFIG = FIXTURES / "sharinghub-test.yaml"
COMMAND = str(Path(sys.executable).with_name("mlflow-sharinghub"))
MOTO_SERVER = str(Path(sys.executable).with_name("moto_server"))
POSTGRES_ROOT = Path("/usr/lib/postgresql")

FLOOD = "eo/flood-model"  # project 42
CROPS = "eo/crop-classifier"  # project 43
TILES = "eo/sentinel-tiles"  # project 44, a dataset
DEMO = "public/demo-model"  # project 45, public


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Service(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...


S = TypeVar("S", bound=Service)


@contextmanager
def running(service: S) -> Iterator[S]:
    """``service`` started, and stopped again however the block ends."""
    service.start()
    try:
        yield service
    finally:
        service.stop()


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
        self.settings = env
        self.process = Process([COMMAND, "server"], env, workdir / "server.log")

    def start(self) -> None:
        self.process.start(f"{self.url}/ready")

    @property
    def pid(self) -> int:
        if self.process.process is None:
            raise RuntimeError("the server is not running")
        return self.process.process.pid

    def stop(self) -> None:
        self.process.stop()

    def uri(self, project: str | int) -> str:
        """The project's tracking URI."""
        return f"{self.url}/{project}/tracking/"

    def output(self) -> str:
        return self.process.output()


def postgres_binaries() -> Path:
    """The newest ``/usr/lib/postgresql/<version>/bin``; fails the test if none."""
    found = [p.parent for p in POSTGRES_ROOT.glob("*/bin/initdb")]
    found = [p for p in found if (p / "pg_ctl").exists() and (p / "postgres").exists()]
    if not found:
        pytest.fail(
            f"PostgreSQL's server binaries are not installed (no initdb under "
            f"{POSTGRES_ROOT}/*/bin): the tests run MLflow against a throw-away "
            "cluster. Install them with `apt-get install --no-install-recommends "
            "postgresql` (.ci/run does it).",
            pytrace=False,
        )
    return max(found, key=_version)


def _version(binaries: Path) -> int:
    name = binaries.parent.name
    return int(name) if name.isdigit() else 0


class Postgres:
    """A throw-away PostgreSQL cluster on a free loopback port.

    The cluster lives in its own temporary directory (data, log and unix
    socket), outside pytest's, which is private to the user running the tests.
    ``initdb`` refuses to run as root: when the tests run as root (as CI does),
    the directory is given to ``nobody`` and every PostgreSQL command runs as
    that user through ``runuser``. Clients connect over TCP with a password,
    as MLflow does in production; fsync is off, since nothing here must last.
    """

    user = "mlflow"

    def __init__(self) -> None:
        self.binaries = postgres_binaries()
        self.port = free_port()
        self.password = f"pg-{uuid.uuid4().hex}"
        self.root = Path(tempfile.mkdtemp(prefix="mlflow-sharinghub-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.owner = pwd.getpwnam("nobody") if os.geteuid() == 0 else None

    def start(self) -> None:
        password_file = self.root / "password"
        password_file.write_text(self.password)
        if self.owner is not None:
            for path in (self.root, password_file):
                os.chown(path, self.owner.pw_uid, self.owner.pw_gid)
        self._run(
            "initdb",
            f"--pgdata={self.data}",
            f"--username={self.user}",
            f"--pwfile={password_file}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        password_file.unlink()
        self.start_server()

    def start_server(self) -> None:
        """Start the cluster's server, again after ``stop_server``, on its port."""
        options = [
            f"-p {self.port}",
            "-c listen_addresses=127.0.0.1",
            f"-c unix_socket_directories={shlex.quote(str(self.root))}",
            "-c max_connections=200",
            "-c fsync=off",
            "-c synchronous_commit=off",
            "-c full_page_writes=off",
        ]
        self._run(
            "pg_ctl",
            f"--pgdata={self.data}",
            f"--log={self.log}",
            f"--options={' '.join(options)}",
            "--wait",
            "--timeout=60",
            "start",
        )

    def stop_server(self) -> None:
        """Stop the server as an operator's restart does: sessions are ended."""
        self._run("pg_ctl", f"--pgdata={self.data}", "--mode=fast", "--wait", "stop")

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", f"--pgdata={self.data}", "--mode=immediate", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def create_database(self, name: str) -> str:
        """A new database ``name``; its URI, password included."""
        with self._connect("postgres") as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{name}"

    def query(self, database: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with self._connect(database) as connection:
            return connection.execute(sql, args or None).fetchall()

    def _connect(self, database: str) -> psycopg.Connection[tuple[Any, ...]]:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=database,
            autocommit=True,
        )

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.binaries / program), *args]
        if self.owner is not None:
            command = ["runuser", "-u", self.owner.pw_name, "--", *command]
        done = subprocess.run(
            command, cwd=self.root, capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            output = done.stdout + done.stderr + log
            pytest.fail(f"{program} failed ({done.returncode}):\n{output}")


class S3:
    """moto's S3 server on a free loopback port, as a subprocess.

    Only mlflow-sharinghub gets the credentials (``server_settings``); the
    tests read the buckets with their own boto3 client.
    """

    access_key = "sharinghub-test-key"

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.secret_key = f"s3-{uuid.uuid4().hex}"
        args = [MOTO_SERVER, "-H", "127.0.0.1", "-p", str(self.port)]
        self.process = Process(args, {}, workdir / "s3.log")

    def start(self) -> None:
        self.process.start(f"{self.url}/moto-api/")

    def stop(self) -> None:
        self.process.stop()

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
        )

    def create_bucket(self, name: str) -> dict[str, str]:
        """A new bucket ``name``; the settings that send a server's artifacts there."""
        self.client().create_bucket(Bucket=name)
        return {
            "MLFLOW_ARTIFACTS_DESTINATION": f"s3://{name}",
            "MLFLOW_S3_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2")
        return [
            item["Key"]
            for page in pages.paginate(Bucket=bucket, Prefix=prefix)
            for item in page.get("Contents", [])
        ]


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
