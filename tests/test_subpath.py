"""The server under ``/mlflow``, behind nginx configured as the reference ingress.

In production SharingHub serves MLflow under its own host: one origin,
``https://sharinghub.example.com``, where the ingress sends ``/mlflow/`` to
this server (prefix stripped, ``X-Script-Name: /mlflow``) and everything
else to SharingHub. The browser's session cookie is SharingHub's, set for
that host, so it reaches MLflow only because both live on the one origin.
These tests build exactly that shape on loopback (see tests/nginx.py):

- nginx listens on a free port of 127.0.0.1 with ``server_name
  sharinghub.example.com``; ``/mlflow/`` goes to the server, ``/`` to the
  SharingHub stand-in.
- The public origin is ``http://sharinghub.example.com`` (port 80, so the
  Host header is the bare public name, as behind the real ingress). Every
  party resolves it to nginx on loopback: Chromium with
  ``--host-resolver-rules``, this test process with :func:`nginx.resolve`,
  and the server, which asks SharingHub at that origin as in production,
  through nginx as its HTTP proxy (``HTTP_PROXY``; httpx honours it).
- The server's ``SHARINGHUB_URL`` is that origin, so its login redirects,
  the stand-in's login form and its cookie, and MLflow's pages all share one
  origin, and ``MLFLOW_SERVER_ALLOWED_HOSTS`` names the public host.

Nothing leaves loopback: the public name is never looked up in DNS.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import mlflow
import pytest

from browser import chromium, screenshot_path
from nginx import Nginx, resolve
from servers import CROPS, FLOOD, Server, Standin, as_user, unique

PUBLIC_HOST = "sharinghub.example.com"
PUBLIC = f"http://{PUBLIC_HOST}"
GIB = 1 << 30
HTML = {"Accept": "text/html,application/xhtml+xml"}


@dataclass(frozen=True)
class Ingress:
    """The server behind nginx, and the URLs to reach it."""

    nginx: Nginx
    server: Server

    def uri(self, project: str, base: str = PUBLIC) -> str:
        """The project's tracking URI as SharingHub advertises it."""
        return f"{base}/mlflow/{project}/tracking/"


@pytest.fixture(scope="module")
def ingress(
    tmp_path_factory: pytest.TempPathFactory, standin: Standin
) -> Iterator[Ingress]:
    workdir = tmp_path_factory.mktemp("subpath")
    server = Server(
        workdir,
        standin,
        SHARINGHUB_URL=PUBLIC,
        MLFLOW_SERVER_ALLOWED_HOSTS=PUBLIC_HOST,
        LOG_LEVEL="INFO",
    )
    nginx = Nginx(
        server_port=server.port, sharinghub_port=standin.port, public_host=PUBLIC_HOST
    )
    # The server reaches the public origin through nginx; nothing else does.
    server.process.env |= {
        "HTTP_PROXY": nginx.url,
        "NO_PROXY": "127.0.0.1,localhost",
    }
    nginx.start()
    try:
        server.start()
        with resolve(PUBLIC_HOST, 80, nginx.port):
            yield Ingress(nginx, server)
    finally:
        server.stop()
        nginx.stop()


def test_health_answers_through_the_ingress(ingress: Ingress) -> None:
    response = httpx.get(f"{PUBLIC}/mlflow/health")

    assert response.status_code == 200
    assert response.json() == {"status": "healthy"}


class TinyModel(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    def predict(
        self, context: Any, model_input: list[str], params: Any = None
    ) -> list[int]:
        return [len(value) for value in model_input]


@pytest.mark.parametrize("base", [PUBLIC, None], ids=["public-host", "loopback"])
def test_mlflow_client_works_under_the_prefix(
    ingress: Ingress, base: str | None, tmp_path: Path
) -> None:
    uri = ingress.uri(FLOOD, base or ingress.nginx.url)
    with as_user(uri, "dev-a") as client:
        experiment_id = mlflow.create_experiment(unique("subpath"))
        with mlflow.start_run(experiment_id=experiment_id) as run:
            mlflow.log_param("prefix", "/mlflow")
            mlflow.log_metric("iou", 0.81)
            # The rewrite decodes the path and nginx encodes it again upstream.
            notes = tmp_path / "notes #1, 100% sûr.txt"
            notes.write_text("behind the ingress")
            mlflow.log_artifact(str(notes), artifact_path="reports")
            mlflow.pyfunc.save_model(
                tmp_path / "model", python_model=TinyModel(), pip_requirements=[]
            )
            mlflow.log_artifacts(str(tmp_path / "model"), "model")
        name = unique("subpath-model")
        version = mlflow.register_model(f"runs:/{run.info.run_id}/model", name)

        read = client.get_run(run.info.run_id)
        assert read.data.params == {"prefix": "/mlflow"}
        assert read.data.metrics == {"iou": 0.81}
        downloaded = client.download_artifacts(
            run.info.run_id, "reports/notes #1, 100% sûr.txt", str(tmp_path / "back")
        )
        assert Path(downloaded).read_text() == "behind the ingress"
        assert client.get_model_version(name, version.version).status == "READY"
        model = mlflow.pyfunc.load_model(f"models:/{name}/{version.version}")
        assert list(model.predict(["abc", "de"])) == [3, 2]


def test_tracking_without_slash_redirects_under_the_prefix(ingress: Ingress) -> None:
    page = ingress.uri(FLOOD).rstrip("/")
    response = httpx.get(page, headers=HTML)

    assert response.status_code == 308
    assert urljoin(page, response.headers["location"]) == ingress.uri(FLOOD)


def test_landing_page_gives_public_tracking_uris(ingress: Ingress) -> None:
    response = httpx.get(f"{PUBLIC}/mlflow/", headers=HTML)

    assert response.status_code == 200
    assert f"{PUBLIC}/mlflow/&lt;group&gt;/&lt;project&gt;/tracking/" in response.text


def test_ui_links_carry_the_prefix_and_public_origin(ingress: Ingress) -> None:
    ui = ingress.uri(FLOOD)
    response = httpx.get(
        f"{ui}sharinghub/context", headers={"Authorization": "Bearer dev-a"}
    )

    assert response.status_code == 200, response.text
    context = response.json()
    assert context["home_url"] == f"{PUBLIC}/mlflow/"
    for link in ("login_url", "logout_url"):
        url = urlsplit(context[link])
        assert f"{url.scheme}://{url.netloc}" == PUBLIC
        assert parse_qs(url.query)["redirect_uri"] == [ui]


def test_public_host_is_let_through_and_others_are_not(ingress: Ingress) -> None:
    search = "api/2.0/mlflow/experiments/search?max_results=1"
    token = {"Authorization": "Bearer dev-a"}

    public = httpx.get(ingress.uri(FLOOD) + search, headers=token)
    other = httpx.get(
        ingress.uri(FLOOD, ingress.nginx.url) + search,
        headers=token | {"Host": "elsewhere.example.org"},
    )

    assert public.status_code == 200, public.text
    assert other.status_code == 403
    assert other.json()["error_code"] == "PERMISSION_DENIED"


def test_gigabyte_artifact_passes_the_ingress(
    ingress: Ingress, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Sparse: a gigabyte of zeros that takes no disk and is read in chunks.
    big = tmp_path / "weights.bin"
    with big.open("wb") as file:
        file.truncate(GIB)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "900")
    uri = ingress.uri(FLOOD)
    with as_user(uri, "dev-a") as client:
        experiment_id = mlflow.create_experiment(unique("gigabyte"))
        run = client.create_run(experiment_id)
        started = time.monotonic()
        try:
            client.log_artifact(run.info.run_id, str(big))
            elapsed = time.monotonic() - started
            sizes = {
                a.path: a.file_size for a in client.list_artifacts(run.info.run_id)
            }
            assert sizes == {"weights.bin": GIB}
        finally:
            _delete_artifact(uri, run.info.artifact_uri, "weights.bin")
        assert client.list_artifacts(run.info.run_id) == []
    print(f"1 GiB upload through nginx: {elapsed:.1f}s")


def _delete_artifact(uri: str, artifact_uri: str, name: str) -> None:
    """Delete one of a run's artifacts through the project's artifact proxy."""
    root = artifact_uri.removeprefix("mlflow-artifacts:").lstrip("/")
    response = httpx.delete(
        f"{uri}api/2.0/mlflow-artifacts/artifacts/{root}/{name}",
        headers={"Authorization": "Bearer dev-a"},
        timeout=120,
    )
    assert response.status_code == 200, response.text


@dataclass(frozen=True)
class Created:
    experiment_id: str
    experiment: str
    run_id: str
    run_name: str


def _create(ingress: Ingress, project: str, token: str, prefix: str) -> Created:
    with as_user(ingress.uri(project), token):
        name = unique(prefix)
        experiment_id = mlflow.create_experiment(name)
        run_name = unique(f"{prefix}-run")
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
            mlflow.log_metric("score", 0.5)
        return Created(experiment_id, name, run.info.run_id, run_name)


def test_browser_logs_in_and_sees_only_its_project(ingress: Ingress) -> None:
    mine = _create(ingress, FLOOD, "dev-a", "flood-browser")
    theirs = _create(ingress, CROPS, "dev-b", "crops-secret")
    ui = ingress.uri(FLOOD)
    rules = f"--host-resolver-rules=MAP {PUBLIC_HOST}:80 127.0.0.1:{ingress.nginx.port}"

    with chromium([rules]) as browser:
        page = browser.new_context().new_page()
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        page.goto(ui)

        login = urlsplit(page.url)
        assert f"{login.scheme}://{login.netloc}{login.path}" == (
            f"{PUBLIC}/api/auth/login"
        )
        assert parse_qs(login.query)["redirect_uri"] == [ui]

        page.fill('input[name="token"]', "dev-a")
        page.click('button[type="submit"]')
        page.wait_for_url(lambda url: url.startswith(ui))
        page.get_by_text(mine.experiment).first.wait_for()
        _assert_absent(page.content(), theirs)

        page.goto(f"{ui}#/experiments/{mine.experiment_id}")
        page.get_by_text(mine.run_name).first.wait_for()
        _assert_absent(page.content(), theirs)
        page.screenshot(path=screenshot_path("subpath-project-runs"), full_page=True)

    # Every URL the UI built stayed under the prefix (the login page aside).
    outside = [
        url
        for url in requested
        if not url.startswith((f"{PUBLIC}/mlflow/", f"{PUBLIC}/api/auth/login"))
    ]
    assert outside == []


def _assert_absent(html: str, other: Created) -> None:
    for value in (other.experiment, other.run_id, other.run_name):
        assert value not in html
    assert f'experiments/{other.experiment_id}"' not in html
