"""The known tricks of multi-tenant MLflow servers, each a named test.

Project A (eo/flood-model, 42) holds the objects of ``project_a.py``, whose
values carry random marks; project B (eo/crop-classifier, 43) gets a run, a
registered model and a logged model of its own here. dev-b, a developer of
B, tries to reach A's data from B's tracking URI (where the guard lets dev-b
in) and from A's. Every test asserts on content: A's marks never appear in
what dev-b gets, and the refusal is the guard's own where MLflow alone would
not refuse.

Most tricks are decided by the guard before any store is touched, so they run
against the SQLite server only. The model version source tricks run against
both backends: the S3 artifact store is where MLflow alone let one through.

Covered elsewhere, not repeated here: the client-sent workspace header on
searches and creates (test_guard.py, ``test_client_workspace_header_is_ignored``),
GraphQL queries and every route with A's ids as every caller
(test_attack_matrix.py).
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import mlflow
import pytest
from itsdangerous import URLSafeSerializer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)

from project_a import ARTIFACT_FILE, ProjectA, bearer, leaks, project_a
from servers import CROPS, FLOOD, Server, Standin, as_user, unique

SQLITE_ONLY = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
GUARD_PATH_REFUSAL = "artifact paths are relative to the project"
B_SECRET = f"b-secret-{uuid.uuid4().hex[:10]}"


@dataclass(frozen=True)
class ProjectB:
    uri: str
    experiment_id: str
    run_id: str
    artifact_path: str  # workspaces/p-43/<experiment>/<run>/artifacts
    model_name: str
    logged_model_id: str


@pytest.fixture(scope="module")
def a(server: Server) -> ProjectA:
    return project_a(server.url)


@pytest.fixture(scope="module")
def b(server: Server, tmp_path_factory: pytest.TempPathFactory) -> ProjectB:
    folder = tmp_path_factory.mktemp("project-b")
    (folder / ARTIFACT_FILE).write_text(B_SECRET)
    uri = server.uri(CROPS)
    with as_user(uri, "dev-b") as client:
        experiment_id = client.create_experiment(unique("tricks-b"))
        run = client.create_run(experiment_id)
        client.log_artifact(run.info.run_id, str(folder / ARTIFACT_FILE))
        client.log_param(run.info.run_id, "b-param", B_SECRET)
        model_name = unique("tricks-b-model")
        client.create_registered_model(model_name)
        client.create_model_version(
            model_name, run.info.artifact_uri, run_id=run.info.run_id
        )
        logged = client.create_logged_model(experiment_id)
    return ProjectB(
        uri=uri,
        experiment_id=experiment_id,
        run_id=run.info.run_id,
        artifact_path=run.info.artifact_uri.split("mlflow-artifacts:/", 1)[1],
        model_name=model_name,
        logged_model_id=logged.model_id,
    )


def as_b(method: str, url: str, **kwargs: Any) -> httpx.Response:
    headers = bearer("dev-b") | kwargs.pop("headers", {})
    return httpx.request(method, url, headers=headers, timeout=60, **kwargs)


def assert_no_leak(a: ProjectA, response: httpx.Response) -> None:
    sent = response.request.content.decode(errors="replace")
    found = leaks(a, response.text, f"{response.request.url} {sent}")
    assert not found, (
        f"A's data leaked ({found}): {response.status_code} {response.text}"
    )


def assert_guard_refused_path(response: httpx.Response) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error_code"] == "INVALID_PARAMETER_VALUE"
    assert GUARD_PATH_REFUSAL in body["message"]


# ---------------------------------------------------------------- artifact paths


def climbs(a: ProjectA, depth: int) -> dict[str, str]:
    """Paths that try to reach A's notes.txt from a folder ``depth`` levels deep."""
    inside = a.artifact_path.removeprefix("workspaces/p-42/") + "/" + ARTIFACT_FILE
    target = f"{a.artifact_path}/{ARTIFACT_FILE}"
    up = "../" * depth
    return {
        "dot-dot": f"{up}p-42/{inside}",
        "dot-dot-to-root": f"{up}../{target}",
        "dot-slash": f"./{target}",
        "other-workspace": target,
        "absolute": f"/{target}",
        "double-slash": f"//{target}",
        "encoded-dot-dot": f"{up.replace('..', '%2E%2E')}p-42/{inside}",
        "encoded-slashes": target.replace("/", "%2F"),
        "double-encoded-dot-dot": f"{up.replace('..', '%252E%252E')}p-42/{inside}",
        "double-encoded-slashes": target.replace("/", "%252F"),
        "backslashes": f"{up.replace('/', chr(92))}p-42{chr(92)}{inside}",
    }


TRICKS = [
    "dot-dot",
    "dot-dot-to-root",
    "dot-slash",
    "other-workspace",
    "absolute",
    "double-slash",
    "encoded-dot-dot",
    "encoded-slashes",
    "double-encoded-dot-dot",
    "double-encoded-slashes",
    "backslashes",
]
PROXY_ROUTES = [
    ("GET", "api/2.0/mlflow-artifacts/artifacts/"),
    ("GET", "ajax-api/2.0/mlflow-artifacts/artifacts/"),
    ("PUT", "api/2.0/mlflow-artifacts/artifacts/"),
    ("DELETE", "api/2.0/mlflow-artifacts/artifacts/"),
    ("POST", "api/2.0/mlflow-artifacts/mpu/create/"),
    ("POST", "api/2.0/mlflow-artifacts/mpu/complete/"),
    ("POST", "api/2.0/mlflow-artifacts/mpu/abort/"),
    ("GET", "ajax-api/2.0/mlflow-artifacts/presigned/"),
]


def proxy_path(trick: str, path: str) -> str:
    # Relative climbs start inside B's own workspace, where the proxy roots them.
    if trick.startswith(("dot-dot", "encoded-dot", "double-encoded-dot", "back")):
        return f"workspaces/p-43/{path}"
    return path


@SQLITE_ONLY
@pytest.mark.parametrize("trick", TRICKS)
@pytest.mark.parametrize(("method", "route"), PROXY_ROUTES, ids=lambda v: str(v))
def test_artifact_proxy_path_tricks_are_refused(
    a: ProjectA, b: ProjectB, method: str, route: str, trick: str
) -> None:
    path = proxy_path(trick, climbs(a, 1)[trick])
    body = b"planted" if method == "PUT" else json.dumps({"path": path}).encode()

    response = as_b(method, b.uri + route + path, content=body)

    assert_guard_refused_path(response)
    assert_no_leak(a, response)


QUERY_ROUTES = {
    # route, its own parameters, the path parameter, depth below the workspace
    "artifacts/list": ("api/2.0/mlflow/artifacts/list", "run_id", "path", 3),
    "get-artifact": ("get-artifact", "run_uuid", "path", 3),
    "proxy listing": ("api/2.0/mlflow-artifacts/artifacts", None, "path", 1),
    "model-versions/get-artifact": ("model-versions/get-artifact", "model", "path", 3),
    "logged-models files": (
        "ajax-api/2.0/mlflow/logged-models/{model}/artifacts/files",
        None,
        "artifact_file_path",
        4,
    ),
    "logged-models directories": (
        "ajax-api/2.0/mlflow/logged-models/{model}/artifacts/directories",
        None,
        "artifact_directory_path",
        4,
    ),
}


def query_call(name: str, b: ProjectB, value: str) -> tuple[str, dict[str, str]]:
    route, owner, parameter, _ = QUERY_ROUTES[name]
    params = {parameter: value}
    if owner in ("run_id", "run_uuid"):
        params[owner] = b.run_id
    elif owner == "model":
        params |= {"name": b.model_name, "version": "1"}
    return b.uri + route.format(model=b.logged_model_id), params


@SQLITE_ONLY
@pytest.mark.parametrize("trick", TRICKS)
@pytest.mark.parametrize("name", list(QUERY_ROUTES))
def test_artifact_path_parameter_tricks_are_refused(
    a: ProjectA, b: ProjectB, name: str, trick: str
) -> None:
    depth = QUERY_ROUTES[name][3]
    url, params = query_call(name, b, climbs(a, depth)[trick])

    response = as_b("GET", url, params=params)

    assert_guard_refused_path(response)
    assert_no_leak(a, response)


@SQLITE_ONLY
@pytest.mark.parametrize(
    "name", ["artifacts/list", "get-artifact", "model-versions/get-artifact"]
)
def test_the_same_routes_serve_own_files(b: ProjectB, name: str) -> None:
    # The control: these calls do reach files, so the refusals above mean something.
    value = "" if name == "artifacts/list" else ARTIFACT_FILE
    url, params = query_call(name, b, value)

    response = as_b("GET", url, params=params)

    assert response.status_code == 200, response.text
    assert (ARTIFACT_FILE if name == "artifacts/list" else B_SECRET) in response.text


@SQLITE_ONLY
def test_proxy_serves_own_files_and_roots_others_in_own_workspace(
    a: ProjectA, b: ProjectB
) -> None:
    own = as_b(
        "GET",
        f"{b.uri}api/2.0/mlflow-artifacts/artifacts/{b.artifact_path}/{ARTIFACT_FILE}",
    )
    relative = a.artifact_path.removeprefix("workspaces/p-42/")
    # A's folder named without a workspace prefix is looked up in B's workspace,
    # whatever workspace header the client adds.
    other = as_b(
        "GET",
        f"{b.uri}api/2.0/mlflow-artifacts/artifacts/{relative}/{ARTIFACT_FILE}",
        headers={"X-MLflow-Workspace": "p-42", "x-mlflow-workspace": "p-42"},
    )

    assert own.text == B_SECRET  # the control: the route serves files
    assert other.status_code == 404, other.text
    assert_no_leak(a, other)


# ------------------------------------------------------ run_id and run_uuid both


READS_WITH_RUN = {
    "runs/get": ("api/2.0/mlflow/runs/get", {}),
    "metrics/get-history": (
        "api/2.0/mlflow/metrics/get-history",
        {"metric_key": "rmse"},
    ),
    "artifacts/list": ("api/2.0/mlflow/artifacts/list", {}),
    "get-artifact": ("get-artifact", {"path": ARTIFACT_FILE}),
}


@SQLITE_ONLY
@pytest.mark.parametrize("order", ["run_id of A", "run_uuid of A"])
@pytest.mark.parametrize("name", list(READS_WITH_RUN))
def test_run_id_and_run_uuid_of_two_projects_read_nothing_of_a(
    a: ProjectA, b: ProjectB, name: str, order: str
) -> None:
    route, params = READS_WITH_RUN[name]
    ids = (a.run_id, b.run_id) if order == "run_id of A" else (b.run_id, a.run_id)
    params = params | {"run_id": ids[0], "run_uuid": ids[1]}

    at_b = as_b("GET", b.uri + route, params=params)
    at_a = as_b("GET", a.uri + route, params=params)

    assert_no_leak(a, at_b)
    assert at_a.status_code == 404
    assert_no_leak(a, at_a)


@SQLITE_ONLY
@pytest.mark.parametrize("order", ["run_id of A", "run_uuid of A"])
def test_run_id_and_run_uuid_of_two_projects_write_nothing_to_a(
    a: ProjectA, b: ProjectB, order: str
) -> None:
    ids = (a.run_id, b.run_id) if order == "run_id of A" else (b.run_id, a.run_id)
    key = unique("planted")
    body = {
        "run_id": ids[0],
        "run_uuid": ids[1],
        "params": [{"key": key, "value": "x"}],
        "tags": [{"key": key, "value": "x"}],
    }

    as_b("POST", b.uri + "api/2.0/mlflow/runs/log-batch", json=body)

    run = httpx.get(
        a.uri + "api/2.0/mlflow/runs/get",
        params={"run_id": a.run_id},
        headers=bearer("dev-a"),
    )
    assert run.status_code == 200
    assert key not in run.text


@SQLITE_ONLY
def test_a_reader_with_run_ids_of_two_projects_reads_nothing_of_b(
    a: ProjectA, b: ProjectB
) -> None:
    params = {"run_id": b.run_id, "run_uuid": a.run_id, "path": ARTIFACT_FILE}

    artifact = httpx.get(a.uri + "get-artifact", params=params, headers=bearer("dev-a"))
    run = httpx.get(
        a.uri + "api/2.0/mlflow/runs/get", params=params, headers=bearer("dev-a")
    )

    assert B_SECRET not in artifact.text
    assert B_SECRET not in run.text


# ------------------------------------------------------ model version sources


def foreign_sources(a: ProjectA, server: Server) -> dict[str, str]:
    destination = server.settings.get("MLFLOW_ARTIFACTS_DESTINATION")
    data = Path(server.settings["MLFLOW_DATA_DIR"]) / "mlartifacts"
    store = destination or data.resolve().as_uri()
    return {
        "runs URI of A": f"runs:/{a.run_id}/",
        "runs URI of A, a file": f"runs:/{a.run_id}/{ARTIFACT_FILE}",
        "mlflow-artifacts URI of A": a.artifact_uri,
        "encoded mlflow-artifacts URI of A": a.artifact_uri.replace("p-42", "p%2D42"),
        "climbing mlflow-artifacts URI": a.artifact_uri.replace(
            "workspaces/p-42", "workspaces/p-43/../p-42"
        ),
        "the store's own URI of A": f"{store}/{a.artifact_path}",
        "plain path of A": f"{data.resolve()}/{a.artifact_path}",
        "host-addressed proxy URL": f"{server.url}/api/2.0/mlflow-artifacts/artifacts/"
        + a.artifact_path,
    }


SOURCE_NAMES = [
    "runs URI of A",
    "runs URI of A, a file",
    "mlflow-artifacts URI of A",
    "encoded mlflow-artifacts URI of A",
    "climbing mlflow-artifacts URI",
    "the store's own URI of A",
    "plain path of A",
    "host-addressed proxy URL",
]


@pytest.mark.parametrize(
    "run", ["no run_id", "run_id of A", "runId of A", "own run_id"]
)
@pytest.mark.parametrize("source", SOURCE_NAMES)
def test_model_version_from_another_projects_source_is_refused(
    a: ProjectA, b: ProjectB, server: Server, source: str, run: str
) -> None:
    body: dict[str, Any] = {
        "name": b.model_name,
        "source": foreign_sources(a, server)[source],
    }
    if run == "run_id of A":
        body["run_id"] = a.run_id
    elif run == "runId of A":
        body["runId"] = a.run_id
    elif run == "own run_id":
        body["run_id"] = b.run_id

    created = as_b("POST", b.uri + "api/2.0/mlflow/model-versions/create", json=body)

    assert created.status_code == 400, created.text
    assert created.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "model_version" not in created.text
    assert_no_leak(a, created)


@pytest.mark.parametrize(
    "field", ["run_id", "runId", "double-encoded body"], ids=lambda v: v
)
def test_model_version_naming_a_run_of_a_is_refused(
    a: ProjectA, b: ProjectB, field: str
) -> None:
    # An own, valid source, with a run of A as its lineage.
    source = f"runs:/{b.run_id}/"
    request: dict[str, Any] = {"name": b.model_name, "source": source}
    if field == "double-encoded body":
        request["run_id"] = a.run_id
        content = json.dumps(json.dumps(request)).encode()
    else:
        request[field] = a.run_id
        content = json.dumps(request).encode()

    created = as_b(
        "POST",
        b.uri + "api/2.0/mlflow/model-versions/create",
        content=content,
        headers={"Content-Type": "application/json"},
    )

    assert created.status_code == 400, created.text
    assert "is not a run of this project" in created.json()["message"]


@pytest.mark.parametrize("source", ["runs URI", "mlflow-artifacts URI", "models URI"])
def test_model_versions_from_own_sources_are_made(b: ProjectB, source: str) -> None:
    sources = {
        "runs URI": (f"runs:/{b.run_id}/", b.run_id),
        "mlflow-artifacts URI": (f"mlflow-artifacts:/{b.artifact_path}", b.run_id),
        "models URI": (f"models:/{b.model_name}/1", None),
    }
    uri, run_id = sources[source]
    body = {"name": b.model_name, "source": uri} | (
        {"run_id": run_id} if run_id else {}
    )

    created = as_b("POST", b.uri + "api/2.0/mlflow/model-versions/create", json=body)

    assert created.status_code == 200, created.text
    version = created.json()["model_version"]["version"]
    # MLflow itself cannot serve the files of a runs:/ source from the registry.
    if source == "mlflow-artifacts URI":
        files = as_b(
            "GET",
            b.uri + "model-versions/get-artifact",
            params={"name": b.model_name, "version": version, "path": ARTIFACT_FILE},
        )
        assert files.text == B_SECRET


def test_no_model_version_of_b_ever_points_into_a(
    a: ProjectA, b: ProjectB, server: Server
) -> None:
    name = unique("tricks-fresh-model")
    as_b("POST", b.uri + "api/2.0/mlflow/registered-models/create", json={"name": name})
    for source in foreign_sources(a, server).values():
        for run in ({}, {"run_id": a.run_id}, {"run_id": b.run_id}):
            body = {"name": name, "source": source} | run
            as_b("POST", b.uri + "api/2.0/mlflow/model-versions/create", json=body)

    versions = as_b(
        "GET",
        b.uri + "api/2.0/mlflow/model-versions/search",
        params={"filter": f"name='{name}'"},
    )
    files = as_b(
        "GET",
        b.uri + "model-versions/get-artifact",
        params={"name": name, "version": "1", "path": ARTIFACT_FILE},
    )

    assert versions.status_code == 200, versions.text
    assert versions.json().get("model_versions", []) == []
    assert_no_leak(a, files)


# ------------------------------------------------------------- traces (OTLP)


def otlp_spans(name: str) -> tuple[bytes, str]:
    """An OTLP export of one span, and the MLflow id of its trace."""
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id = os.urandom(16)
    span.span_id = os.urandom(8)
    span.name = name
    span.start_time_unix_nano = 1_700_000_000_000_000_000
    span.end_time_unix_nano = 1_700_000_001_000_000_000
    return request.SerializeToString(), f"tr-{span.trace_id.hex()}"


def traces_of(a: ProjectA) -> str:
    location = {
        "type": "MLFLOW_EXPERIMENT",
        "mlflow_experiment": {"experiment_id": a.experiment_id},
    }
    response = httpx.post(
        a.uri + "api/3.0/mlflow/traces/search",
        json={"locations": [location], "max_results": 500},
        headers=bearer("dev-a"),
        timeout=60,
    )
    assert response.status_code == 200, response.text
    return response.text


@SQLITE_ONLY
@pytest.mark.parametrize("at", ["B's URI", "A's URI"])
def test_otlp_spans_for_an_experiment_of_a_are_refused(
    a: ProjectA, b: ProjectB, at: str
) -> None:
    spans, trace_id = otlp_spans(unique("planted-span"))
    uri = b.uri if at == "B's URI" else a.uri
    headers = {
        "Content-Type": "application/x-protobuf",
        "x-mlflow-experiment-id": a.experiment_id,
    }

    response = as_b("POST", uri + "v1/traces", content=spans, headers=headers)

    assert response.status_code == 404, response.text
    assert trace_id not in traces_of(a)


@SQLITE_ONLY
def test_otlp_spans_for_an_own_experiment_are_kept(a: ProjectA) -> None:
    # The control: the same request from A's developer lands in A.
    spans, trace_id = otlp_spans(unique("own-span"))
    headers = bearer("dev-a") | {
        "Content-Type": "application/x-protobuf",
        "x-mlflow-experiment-id": a.experiment_id,
    }

    response = httpx.post(a.uri + "v1/traces", content=spans, headers=headers)

    assert response.status_code == 200, response.text
    assert trace_id in traces_of(a)


# ---------------------------------------------------- GraphQL and search filters


GRAPHQL_TRICKS = {
    "mutation form of a search": (
        "mutation($e: String) { mlflowSearchRuns(input: {experimentIds: [$e]}) "
        "{ runs { info { runId } data { params { key value } } } } }"
    ),
    "aliased and batched": (
        "query($e: String, $r: String) { one: mlflowGetExperiment(input: "
        "{experimentId: $e}) { experiment { name } } two: mlflowGetRun(input: "
        "{runId: $r}) { run { data { params { key value } } } } three: "
        "mlflowListArtifacts(input: {runId: $r}) { files { path } } }"
    ),
}


@SQLITE_ONLY
@pytest.mark.parametrize("trick", list(GRAPHQL_TRICKS))
def test_graphql_with_ids_of_a_finds_nothing(
    a: ProjectA, b: ProjectB, trick: str
) -> None:
    variables = {"e": a.experiment_id, "r": a.run_id}
    body = {"query": GRAPHQL_TRICKS[trick], "variables": variables}

    at_b = as_b("POST", b.uri + "graphql", json=body)
    own = httpx.post(a.uri + "graphql", json=body, headers=bearer("dev-a"))

    assert at_b.status_code == 200, at_b.text
    assert_no_leak(a, at_b)
    assert [s for s in a.secrets if s in own.text], own.text  # the control


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("runs/search", {"experiment_ids": ["{a_exp}"]}),
        (
            "runs/search",
            {"experiment_ids": ["{b_exp}"], "filter": "attributes.run_id = '{a_run}'"},
        ),
        (
            "runs/search",
            {"experiment_ids": ["{b_exp}", "{a_exp}"], "filter": "params.alpha != ''"},
        ),
        (
            "experiments/search",
            {"filter": "attribute.name = '{a_name}'", "max_results": 100},
        ),
        ("logged-models/search", {"experiment_ids": ["{a_exp}"]}),
        ("experiments/search-datasets", {"experiment_ids": ["{a_exp}"]}),
    ],
    ids=["runs of A", "run id of A", "both projects", "names of A", "models", "sets"],
)
def test_searches_naming_a_find_nothing_of_a(
    a: ProjectA, b: ProjectB, route: str, body: dict[str, Any]
) -> None:
    filled = json.loads(
        json.dumps(body)
        .replace("{a_exp}", a.experiment_id)
        .replace("{b_exp}", b.experiment_id)
        .replace("{a_run}", a.run_id)
        .replace("{a_name}", a.experiment_name)
    )

    # MLflow serves the dataset search under ajax-api only.
    api = "ajax-api" if route.endswith("search-datasets") else "api"
    response = as_b("POST", f"{b.uri}{api}/2.0/mlflow/{route}", json=filled)

    assert response.status_code in (200, 404), response.text
    assert_no_leak(a, response)
    found = response.json()
    assert not any(found.get(key) for key in ("experiments", "runs", "models")), found


# ------------------------------------------------------------- HEAD and OPTIONS


@SQLITE_ONLY
@pytest.mark.parametrize("caller", ["dev-b", "no one"])
def test_head_of_a_file_of_a_tells_strangers_nothing(a: ProjectA, caller: str) -> None:
    params = {"run_uuid": a.run_id, "path": ARTIFACT_FILE}
    headers = bearer("dev-b") if caller == "dev-b" else {}

    response = httpx.head(a.uri + "get-artifact", params=params, headers=headers)
    owner = httpx.head(a.uri + "get-artifact", params=params, headers=bearer("rep-a"))

    assert response.status_code == (404 if caller == "dev-b" else 401)
    assert ARTIFACT_FILE not in str(response.headers)
    assert owner.status_code == 200  # the control: HEAD is a read
    assert ARTIFACT_FILE in owner.headers.get("content-disposition", "")


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("token", "status"), [("rep-a", 403), ("dev-b", 404), (None, 401)]
)
def test_options_never_opens_more_than_the_route(
    a: ProjectA, token: str | None, status: int
) -> None:
    headers = bearer(token) | {
        "Origin": a.uri.rsplit("/", 4)[0],
        "Access-Control-Request-Method": "POST",
    }

    response = httpx.options(
        a.uri + "api/2.0/mlflow/experiments/create", headers=headers
    )

    assert response.status_code == status, response.text
    assert response.json()["error_code"]


# --------------------------------------------------------------- project paths


def experiments_at(server: Server, path: str, token: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/{path}api/2.0/mlflow/experiments/search",
        json={"max_results": 1000},
        headers=bearer(token),
        timeout=60,
    )


@SQLITE_ONLY
@pytest.mark.parametrize(
    "path",
    [
        "eo/flood-model/tracking/x/tracking/",
        "eo/flood-model/tracking/tracking/",
        "eo/flood-model/tracking//",
        "eo/flood-model//tracking/",
        "eo//flood-model/tracking/",
        "/eo/flood-model/tracking/",
        "eo/flood-model/tracking/./",
        "eo/flood-model/tracking/../eo/flood-model/tracking/",
        "eo/crop-classifier/../flood-model/tracking/",
        "eo%2Fcrop-classifier%2F..%2Fflood-model/tracking/",
        "eo/crop-classifier%2F..%2Fflood-model/tracking/",
        "eo/flood-model%2Ftracking/",
        "42%2Ftracking/",
        "EO/FLOOD-MODEL/tracking/",
        "eo%2FFlood-Model/tracking/",
        "0042/tracking/",
        "42/tracking/",
    ],
)
def test_project_path_variants_never_reach_a_for_b(
    server: Server, a: ProjectA, path: str
) -> None:
    response = experiments_at(server, path, "dev-b")

    assert response.status_code in (400, 404), response.text
    assert response.json()["error_code"] in (
        "RESOURCE_DOES_NOT_EXIST",
        "ENDPOINT_NOT_FOUND",
        "INVALID_PARAMETER_VALUE",
    )
    assert_no_leak(a, response)


@SQLITE_ONLY
@pytest.mark.parametrize(
    "path", ["EO/Flood-Model/tracking/", "eo%2Fflood-model/tracking/", "42/tracking/"]
)
def test_project_path_spellings_reach_the_same_project(
    server: Server, a: ProjectA, path: str
) -> None:
    response = experiments_at(server, path, "dev-a")

    assert response.status_code == 200, response.text
    assert a.experiment_name in response.text


@SQLITE_ONLY
def test_a_project_whose_path_holds_tracking(
    server: Server, standin: Standin, a: ProjectA
) -> None:
    standin.put_project(
        47, "tracking/tracking", name="Tracking", topics=["sharinghub:aimodel"]
    )
    token = f"tracker-{uuid.uuid4().hex[:8]}"
    standin.put_user(token, {47: 3})
    uri = f"{server.url}/tracking/tracking/tracking/"

    created = httpx.post(
        uri + "api/2.0/mlflow/experiments/create",
        json={"name": unique("tracked")},
        headers=bearer(token),
    )
    seen = experiments_at(server, "tracking/tracking/tracking/", token)

    assert created.status_code == 200, created.text
    assert created.json()["experiment_id"] in seen.text
    assert_no_leak(a, seen)


# ----------------------------------------------------------- pages and the UI


def session(token: str) -> dict[str, str]:
    signer = URLSafeSerializer("test-session-secret", salt="sharinghub-session")
    return {"sharinghub-session": signer.dumps(token)}


BROWSER = {"Accept": "text/html,application/xhtml+xml"}


@SQLITE_ONLY
@pytest.mark.parametrize("path", ["", "static-files/index.html", "sharinghub/context"])
def test_the_ui_of_a_project_the_caller_cannot_see(
    server: Server, a: ProjectA, path: str
) -> None:
    response = httpx.get(
        server.uri(FLOOD) + path, headers=BROWSER, cookies=session("dev-b")
    )

    assert "Flood Model" not in response.text
    assert_no_leak(a, response)
    if path != "static-files/index.html":  # MLflow's static files are public
        assert response.status_code == 404, response.text


@SQLITE_ONLY
def test_the_landing_page_lists_only_the_callers_projects(
    server: Server, a: ProjectA
) -> None:
    response = httpx.get(server.url + "/", headers=BROWSER, cookies=session("dev-b"))

    assert response.status_code == 200
    assert CROPS in response.text
    assert FLOOD not in response.text
    assert_no_leak(a, response)


HTML_INJECTIONS = [
    "eo/<script>alert(1)</script>/tracking/",
    "eo/%3Cscript%3Ealert(1)%3C%2Fscript%3E/tracking/",
    'eo/x"onmouseover="alert(1)/tracking/',
    "eo/flood-model/tracking/<img src=x onerror=alert(1)>",
    "eo/flood-model/tracking/?q=<script>alert(1)</script>",
    "eo/flood-model/tracking/get-artifact?path=<script>alert(1)</script>&run_uuid=x",
    "<script>alert(1)</script>/tracking/",
]


def raw_get(server: Server, target: str, headers: dict[str, str]) -> httpx.Response:
    # httpx would percent-encode the tricks; send them as written.
    with httpx.Client(base_url=server.url) as client:
        request = client.build_request("GET", "/", headers=headers)
        request.url = request.url.copy_with(raw_path=("/" + target).encode())
        return client.send(request)


@SQLITE_ONLY
@pytest.mark.parametrize("who", ["browser", "browser of dev-b", "client of dev-a"])
@pytest.mark.parametrize("target", HTML_INJECTIONS)
def test_html_in_a_project_path_is_never_reflected(
    server: Server, target: str, who: str
) -> None:
    headers = dict(BROWSER)
    if who == "browser of dev-b":
        headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in session("dev-b").items())
    elif who == "client of dev-a":
        headers = bearer("dev-a")

    response = raw_get(server, target, headers)

    assert response.status_code < 500, response.text
    header_text = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
    for needle in ("<script>alert", "<img src=x", '"onmouseover="alert'):
        assert needle not in header_text.lower()
        if "text/html" in response.headers.get("content-type", ""):
            assert needle not in response.text.lower()


@SQLITE_ONLY
def test_html_in_a_project_title_is_escaped_on_the_landing_page(
    server: Server, standin: Standin
) -> None:
    title = "<script>alert('title')</script>"
    standin.put_project(48, "xss/model", name=title, topics=["sharinghub:aimodel"])
    token = f"xss-{uuid.uuid4().hex[:8]}"
    standin.put_user(token, {48: 2})

    response = httpx.get(server.url + "/", headers=BROWSER, cookies=session(token))

    assert response.status_code == 200
    assert "xss/model" in response.text
    assert title not in response.text
    assert "&lt;script&gt;alert(&#x27;title&#x27;)&lt;/script&gt;" in response.text


def test_model_registration_of_the_mlflow_client_still_works(
    b: ProjectB, tmp_path: Path
) -> None:
    # What users do: log files under a run, register them; log_model with a name.
    with as_user(b.uri, "dev-b"):
        mlflow.set_experiment(experiment_id=b.experiment_id)
        with mlflow.start_run() as run:
            mlflow.log_text("weights", "model/weights.txt")
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=mlflow.pyfunc.PythonModel(),
                pip_requirements=[],
            )
        from_run = mlflow.register_model(f"runs:/{run.info.run_id}/model", b.model_name)
        logged = mlflow.register_model(info.model_uri, b.model_name)

    assert from_run.version
    assert logged.version
