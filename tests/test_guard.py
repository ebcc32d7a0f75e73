"""The guard in front of MLflow, end to end: who is refused, how, and why.

Raw HTTP (httpx) where the answer itself matters, the MLflow client where a
user would meet it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import mlflow
import pytest
from itsdangerous import URLSafeSerializer
from mlflow.exceptions import MlflowException

from servers import CROPS, DEMO, FLOOD, TILES, Server, Standin, as_user, running, unique

SEARCH = "api/2.0/mlflow/experiments/search"
CREATE = "api/2.0/mlflow/experiments/create"
QUERY = {"max_results": 100}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def create_experiment(uri: str, token: str, **headers: str) -> str:
    response = httpx.post(
        uri + CREATE,
        json={"name": unique("guarded")},
        headers=bearer(token) | headers,
    )
    assert response.status_code == 200, response.text
    experiment_id: str = response.json()["experiment_id"]
    return experiment_id


def experiment_ids(uri: str, token: str, **headers: str) -> list[str]:
    response = httpx.post(
        uri + SEARCH, json={"max_results": 1000}, headers=bearer(token) | headers
    )
    assert response.status_code == 200, response.text
    return [e["experiment_id"] for e in response.json().get("experiments", [])]


def assert_mlflow_error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error_code"] == code
    message: str = body["message"]
    return message


class TestCredentials:
    def test_anonymous_caller_is_told_to_set_a_token(self, server: Server) -> None:
        response = httpx.post(server.uri(FLOOD) + SEARCH, json=QUERY)

        message = assert_mlflow_error(response, 401, "UNAUTHENTICATED")
        assert "MLFLOW_TRACKING_TOKEN" in message
        assert response.headers["www-authenticate"].startswith("Bearer")

    def test_mlflow_client_without_a_token_is_refused(self, server: Server) -> None:
        with (
            as_user(server.uri(FLOOD), None) as client,
            pytest.raises(MlflowException, match="MLFLOW_TRACKING_TOKEN"),
        ):
            client.search_experiments()

    def test_unknown_token_is_refused(self, server: Server) -> None:
        response = httpx.post(
            server.uri(FLOOD) + SEARCH, json=QUERY, headers=bearer("stolen")
        )

        assert_mlflow_error(response, 401, "UNAUTHENTICATED")

    def test_other_authorization_schemes_are_refused(self, server: Server) -> None:
        response = httpx.post(
            server.uri(FLOOD) + SEARCH,
            json=QUERY,
            headers={"Authorization": "Basic eDp5"},
        )

        assert_mlflow_error(response, 401, "UNAUTHENTICATED")

    def test_sharinghub_session_cookie_is_a_credential(self, server: Server) -> None:
        signer = URLSafeSerializer("test-session-secret", salt="sharinghub-session")
        cookies = {"sharinghub-session": signer.dumps("dev-a")}

        read = httpx.post(server.uri(FLOOD) + SEARCH, json=QUERY, cookies=cookies)
        elsewhere = httpx.post(server.uri(CROPS) + SEARCH, json=QUERY, cookies=cookies)

        assert read.status_code == 200, read.text
        assert_mlflow_error(elsewhere, 404, "RESOURCE_DOES_NOT_EXIST")


class TestAnonymousReaders:
    """SHARINGHUB_AUTH_DEFAULT_TOKEN on: SharingHub's default token decides."""

    def test_anonymous_caller_reads_a_public_project(self, open_server: Server) -> None:
        with as_user(open_server.uri(DEMO), None) as client:
            experiments = client.search_experiments()

        assert [e.name for e in experiments] == []

    def test_anonymous_caller_never_writes(
        self, open_server: Server, standin: Standin
    ) -> None:
        # Even where SharingHub's default token could write, anonymous is read-only.
        standin.put_project(
            46, "open/shared-model", topics=["sharinghub:aimodel"], public=False
        )
        standin.put_user("default-token", {45: 2, 46: 3})
        uri = open_server.uri("open/shared-model")

        read = httpx.post(uri + SEARCH, json=QUERY)
        write = httpx.post(uri + CREATE, json={"name": unique("anonymous")})

        assert read.status_code == 200, read.text
        message = assert_mlflow_error(write, 403, "PERMISSION_DENIED")
        assert "MLFLOW_TRACKING_TOKEN" in message

    def test_anonymous_caller_cannot_see_private_projects(
        self, open_server: Server
    ) -> None:
        response = httpx.post(open_server.uri(FLOOD) + SEARCH, json=QUERY)

        assert_mlflow_error(response, 404, "RESOURCE_DOES_NOT_EXIST")

    def test_token_holders_keep_their_rights(self, open_server: Server) -> None:
        experiment_id = create_experiment(open_server.uri(FLOOD), "dev-a")

        assert experiment_id in experiment_ids(open_server.uri(FLOOD), "rep-a")


class TestProjects:
    @pytest.mark.parametrize("project", [TILES, 44])
    def test_project_outside_the_collection_is_refused(
        self, server: Server, project: str | int
    ) -> None:
        # alice is a maintainer of the dataset project.
        response = httpx.post(
            server.uri(project) + SEARCH, json=QUERY, headers=bearer("alice")
        )

        message = assert_mlflow_error(response, 403, "PERMISSION_DENIED")
        assert "'ai-model' collection" in message

    @pytest.mark.parametrize("project", ["eo/no-such-model", 99999])
    def test_unknown_project_is_not_found(
        self, server: Server, project: str | int
    ) -> None:
        response = httpx.post(
            server.uri(project) + SEARCH, json=QUERY, headers=bearer("alice")
        )

        assert_mlflow_error(response, 404, "RESOURCE_DOES_NOT_EXIST")

    def test_reporter_is_told_which_access_is_needed(self, server: Server) -> None:
        response = httpx.post(
            server.uri(FLOOD) + CREATE, json={"name": "x"}, headers=bearer("rep-a")
        )

        message = assert_mlflow_error(response, 403, "PERMISSION_DENIED")
        assert "developer" in message.lower() or "write" in message.lower()

    def test_client_workspace_header_is_ignored(self, server: Server) -> None:
        hidden = create_experiment(server.uri(FLOOD), "dev-a")
        spoof = {"X-MLflow-Workspace": "p-42"}

        seen_from_b = experiment_ids(server.uri(CROPS), "dev-b", **spoof)
        planted = create_experiment(server.uri(CROPS), "dev-b", **spoof)

        assert hidden not in seen_from_b
        assert planted not in experiment_ids(server.uri(FLOOD), "dev-a")
        assert planted in experiment_ids(server.uri(CROPS), "dev-b")

    def test_workspace_administration_is_refused(self, server: Server) -> None:
        response = httpx.get(
            server.uri(FLOOD) + "api/3.0/mlflow/workspaces", headers=bearer("maint-a")
        )

        assert_mlflow_error(response, 403, "PERMISSION_DENIED")

    def test_unknown_endpoint_is_not_found(self, server: Server) -> None:
        response = httpx.get(
            server.uri(FLOOD) + "api/2.0/mlflow/no-such-thing", headers=bearer("dev-a")
        )

        assert_mlflow_error(response, 404, "ENDPOINT_NOT_FOUND")

    def test_a_route_mlflow_serves_under_another_spelling_is_a_json_404(
        self, server: Server
    ) -> None:
        """The policy knows it under /api/ too; MLflow only under /ajax-api/."""
        route = "experiments/search-datasets"
        served = httpx.post(
            server.uri(FLOOD) + f"ajax-api/2.0/mlflow/{route}",
            json={"experiment_ids": ["0"]},
            headers=bearer("dev-a"),
        )
        unserved = httpx.post(
            server.uri(FLOOD) + f"api/2.0/mlflow/{route}",
            json={"experiment_ids": ["0"]},
            headers=bearer("dev-a"),
        )

        assert served.headers["content-type"].startswith("application/json")
        assert_mlflow_error(unserved, 404, "ENDPOINT_NOT_FOUND")

    def test_root_api_explains_the_tracking_uris(self, server: Server) -> None:
        response = httpx.post(
            f"{server.url}/{SEARCH}", json=QUERY, headers=bearer("dev-a")
        )

        message = assert_mlflow_error(response, 404, "ENDPOINT_NOT_FOUND")
        assert "/tracking/" in message

    def test_landing_page_explains_the_tracking_uris(self, server: Server) -> None:
        response = httpx.get(server.url + "/")

        assert response.status_code == 200
        assert "text/html" in response.headers["content-type"]
        assert "/tracking/" in response.text

    def test_mlflows_version_and_ui_files_answer_outside_projects(
        self, server: Server
    ) -> None:
        version = httpx.get(server.url + "/version")
        favicon = httpx.get(server.url + "/static-files/favicon.ico")

        assert (version.status_code, version.text) == (200, mlflow.__version__)
        assert favicon.status_code == 200
        assert favicon.headers["content-type"].startswith("image/")


class TestBrowsers:
    def test_browser_without_session_goes_to_sharinghub_login(
        self, open_server: Server, standin: Standin
    ) -> None:
        response = httpx.get(
            open_server.uri(FLOOD),
            headers={
                "Accept": "text/html,application/xhtml+xml",
                "Host": "mlflow.example.com",
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": "mlflow.example.com",
                "X-Script-Name": "/mlflow",
            },
        )

        page = "https://mlflow.example.com/mlflow/eo/flood-model/tracking/"
        assert response.status_code == 302
        assert response.headers["location"] == (
            f"{standin.url}/api/auth/login?redirect_uri={quote(page, safe='')}"
        )

    @pytest.mark.parametrize("path", ["/health", "/ready"])
    def test_probes_answer_whatever_the_host(self, server: Server, path: str) -> None:
        # The kubelet sends the pod's address, which may be outside private ranges.
        response = httpx.get(server.url + path, headers={"Host": "100.64.3.4:5000"})

        assert response.status_code == 200, response.text

    def test_unknown_host_is_refused(self, server: Server) -> None:
        response = httpx.get(server.url + "/", headers={"Host": "evil.example.com"})

        assert_mlflow_error(response, 403, "PERMISSION_DENIED")

    def test_api_answers_carry_mlflow_security_headers(self, server: Server) -> None:
        response = httpx.post(
            server.uri(FLOOD) + SEARCH, json=QUERY, headers=bearer("dev-a")
        )

        assert response.status_code == 200, response.text
        assert response.headers["x-content-type-options"] == "nosniff"

    def test_writes_from_a_foreign_origin_are_refused(self, server: Server) -> None:
        name = unique("cross-origin")
        foreign = {"Origin": "https://evil.example.com"}

        response = httpx.post(
            server.uri(FLOOD) + CREATE,
            json={"name": name},
            headers=bearer("dev-a") | foreign,
        )

        assert_mlflow_error(response, 403, "PERMISSION_DENIED")
        lookup = httpx.get(
            server.uri(FLOOD) + "api/2.0/mlflow/experiments/get-by-name",
            params={"experiment_name": name},
            headers=bearer("dev-a"),
        )
        assert_mlflow_error(lookup, 404, "RESOURCE_DOES_NOT_EXIST")

    def test_preflight_from_the_servers_own_origin_is_answered(
        self, server: Server
    ) -> None:
        origin = server.url
        response = httpx.options(
            server.uri(FLOOD) + CREATE,
            headers=bearer("dev-a")
            | {"Origin": origin, "Access-Control-Request-Method": "POST"},
        )

        assert response.status_code in (200, 204), response.text
        assert response.headers["access-control-allow-origin"] == origin

    def test_ui_may_be_framed_by_sharinghub_only(
        self, server: Server, standin: Standin
    ) -> None:
        response = httpx.get(server.uri(FLOOD), headers=bearer("dev-a"))

        assert response.status_code == 200
        assert "x-frame-options" not in response.headers
        policy = response.headers["content-security-policy"]
        assert policy == f"frame-ancestors 'self' {standin.url}"


class TestSharingHubCalls:
    """What SharingHub itself calls to build a project's STAC item."""

    def test_sharinghub_lists_the_models_and_reads_mlmodel(
        self, server: Server, tmp_path: Path
    ) -> None:
        model = unique("listed")
        with as_user(server.uri(FLOOD), "dev-a"):
            mlflow.set_experiment(unique("listed"))
            with mlflow.start_run() as run:
                mlflow.pyfunc.save_model(
                    tmp_path / "model",
                    python_model=mlflow.pyfunc.PythonModel(),
                    pip_requirements=[],
                )
                mlflow.log_artifacts(str(tmp_path / "model"), "model")
            mlflow.register_model(f"runs:/{run.info.run_id}/model", model)
        with as_user(server.uri(CROPS), "alice") as client:
            client.create_registered_model(unique("other-project"))

        listing = httpx.get(
            server.uri(FLOOD) + "api/2.0/mlflow/registered-models/search",
            headers=bearer("rep-a"),
        )
        assert listing.status_code == 200, listing.text
        models = listing.json()["registered_models"]
        assert model in [m["name"] for m in models]
        assert not [m for m in models if m["name"].startswith("other-project")]

        latest = next(m for m in models if m["name"] == model)["latest_versions"][0]
        path = latest["source"].split("/artifacts/", 1)[1]
        mlmodel = httpx.get(
            server.uri(FLOOD) + "get-artifact",
            params={"path": f"{path}/MLmodel", "run_uuid": latest["run_id"]},
            headers=bearer("rep-a"),
        )
        assert mlmodel.status_code == 200, mlmodel.text
        assert "python_function" in mlmodel.text

        elsewhere = httpx.get(
            server.uri(CROPS) + "get-artifact",
            params={"path": f"{path}/MLmodel", "run_uuid": latest["run_id"]},
            headers=bearer("dev-b"),
        )
        assert elsewhere.status_code == 404
        assert "python_function" not in elsewhere.text

    def test_artifacts_of_another_workspace_are_refused(self, server: Server) -> None:
        with as_user(server.uri(FLOOD), "dev-a") as client:
            run = client.create_run(client.create_experiment(unique("files")))
            client.log_text(run.info.run_id, "secret", "secret.txt")
        relative = run.info.artifact_uri.split("mlflow-artifacts:/", 1)[1]
        url = "api/2.0/mlflow-artifacts/artifacts/" + relative + "/secret.txt"

        own = httpx.get(server.uri(FLOOD) + url, headers=bearer("dev-a"))
        other = httpx.get(server.uri(CROPS) + url, headers=bearer("dev-b"))

        assert own.text == "secret"
        assert_mlflow_error(other, 400, "INVALID_PARAMETER_VALUE")


def test_many_requests_cost_one_sharinghub_check(
    server: Server, standin: Standin
) -> None:
    token = f"busy-{uuid.uuid4().hex[:8]}"
    standin.put_user(token, {42: 3})
    standin.reset()

    with (
        as_user(server.uri(FLOOD), token),
        mlflow.start_run(experiment_id=create_experiment(server.uri(FLOOD), token)),
    ):
        for step in range(500):
            mlflow.log_metric("loss", 1 / (step + 1), step=step)

    checks = [c for c in standin.calls() if c["credential"] == f"token:{token}"]
    assert len(checks) == 1


class TestSharingHubOutage:
    @pytest.fixture(scope="class")
    def hub(self, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standin]:
        with running(Standin(tmp_path_factory.mktemp("outage-standin"))) as hub:
            yield hub

    @pytest.fixture(scope="class")
    def guarded(
        self, tmp_path_factory: pytest.TempPathFactory, hub: Standin
    ) -> Iterator[Server]:
        with running(
            Server(
                tmp_path_factory.mktemp("outage-server"), hub, SHARINGHUB_TIMEOUT="1"
            )
        ) as instance:
            yield instance

    def test_outage_is_503_quickly_and_service_resumes(
        self, guarded: Server, hub: Standin
    ) -> None:
        hub.stop()
        started = time.monotonic()
        down = httpx.post(
            guarded.uri(FLOOD) + SEARCH, json=QUERY, headers=bearer("dev-a")
        )
        elapsed = time.monotonic() - started
        ready = httpx.get(guarded.url + "/ready")
        health = httpx.get(guarded.url + "/health")

        message = assert_mlflow_error(down, 503, "TEMPORARILY_UNAVAILABLE")
        assert "SharingHub" in message
        assert elapsed < 10
        assert ready.status_code == 503
        assert ready.json()["checks"]["sharinghub"] == "failing"
        assert health.json() == {"status": "healthy"}

        hub.start()
        up = httpx.post(
            guarded.uri(FLOOD) + SEARCH, json=QUERY, headers=bearer("dev-a")
        )
        assert up.status_code == 200, up.text
        assert httpx.get(guarded.url + "/ready").status_code == 200

    def test_slow_sharinghub_is_503_within_the_timeout(
        self, guarded: Server, hub: Standin
    ) -> None:
        hub.delay(30)
        try:
            started = time.monotonic()
            slow = httpx.post(
                guarded.uri(FLOOD) + SEARCH,
                json=QUERY,
                headers=bearer("rep-a"),
                timeout=60,
            )
            elapsed = time.monotonic() - started
        finally:
            hub.delay(0)

        assert_mlflow_error(slow, 503, "TEMPORARILY_UNAVAILABLE")
        assert elapsed < 10
