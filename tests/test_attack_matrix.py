"""Every route of the installed MLflow, as every kind of caller, against project A.

The matrix is generated from the route list of the installed MLflow (the same
enumeration as test_policy.py) and the route policy, so a route that a new
MLflow adds is attacked without anyone writing a test for it. Each route is
called once per caller, its path, query and body filled with A's ids; then:

- A's own readers and writers get what their access level allows;
- everyone else gets the refusal the design prescribes (401 without valid
  credentials, 404 for a project they cannot see), or, at their own
  project's URI, whatever MLflow answers in their workspace;
- no one outside A ever receives A's values (metric values, params, tags,
  artifact bytes, descriptions, trace outputs...) nor an id or name of A's
  that their request did not already carry;
- nothing anyone outside A does changes what dev-a sees of A.

The calls are made once per server by a module fixture, in a thread pool;
the tests read the outcomes like a table.
"""

from __future__ import annotations

import dataclasses
import json
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from mlflow_sharinghub.policy import Action, classify
from project_a import (
    ARTIFACT_FILE,
    METRIC,
    PARAM,
    TAG,
    ProjectA,
    bearer,
    leaks,
    project_a,
    snapshot,
)
from servers import CROPS, DEMO, FLOOD, Server
from test_policy import INSTALLED_ROUTES

A, B = FLOOD, CROPS
FAR_FUTURE_MS = 4102444800000  # 2100-01-01
WRITTEN = "written-by-a-stranger"


@dataclass(frozen=True)
class Caller:
    """Who calls, with which token, at which project's URI, and what is due."""

    name: str
    token: str | None
    project: str
    reads: str  # "allowed", "any" (allowed, A's data must not show) or "<status>"
    writes: str

    @property
    def is_of_a(self) -> bool:
        return self.project == A and self.reads == "allowed"


DEVELOPER_A = Caller("developer of A", "dev-a", A, "allowed", "allowed")
DEFAULT_SERVER_CALLERS = [
    DEVELOPER_A,
    Caller("reporter of A", "rep-a", A, "allowed", "403"),
    Caller("guest of A", "guest-a", A, "allowed", "403"),
    Caller("developer of B at B", "dev-b", B, "any", "any"),
    Caller("developer of B at A", "dev-b", A, "404", "404"),
    Caller("anonymous", None, A, "401", "401"),
    Caller("rejected token", "not-a-gitlab-token", A, "401", "401"),
]
OPEN_SERVER_CALLERS = [
    DEVELOPER_A,
    Caller("anonymous with default token", None, A, "404", "404"),
    Caller("anonymous at the public project", None, DEMO, "any", "403"),
]
ERROR_CODES = {
    "401": "UNAUTHENTICATED",
    "403": "PERMISSION_DENIED",
    "404": "RESOURCE_DOES_NOT_EXIST",
}


@dataclass(frozen=True)
class Outcome:
    status: int
    text: str
    request: str  # URL and body as sent, to tell an echo from a leak


Key = tuple[str, str, str]  # caller name, method, route template


@dataclass
class Matrix:
    a: ProjectA
    outcomes: dict[Key, Outcome]
    before: dict[str, Any]
    after: dict[str, Any]


def _decoy(a: ProjectA) -> ProjectA:
    """A's shape with ids that name nothing: what dev-a writes with."""
    mark = uuid.uuid4().hex
    run_id = mark
    return dataclasses.replace(
        a,
        experiment_id="987654321",
        experiment_name=f"decoy-{mark}",
        run_id=run_id,
        artifact_uri=f"mlflow-artifacts:/workspaces/p-42/987654321/{run_id}/artifacts",
        logged_model_id=f"m-{mark}",
        model_name=f"decoy-{mark}",
        alias=f"decoy-{mark[:8]}",
        trace_id=f"tr-{mark}",
        assessment_id=f"a-{mark}",
        dataset_id=f"d-{mark}",
        dataset_name=f"decoy-{mark}",
        prompt_name=f"decoy-{mark}",
    )


def _path_values(a: ProjectA) -> dict[str, str]:
    return {
        "artifact_path": f"{a.artifact_path}/{ARTIFACT_FILE}",
        "model_id": a.logged_model_id,
        "tag_key": TAG,
        "key": TAG,
        "request_id": a.trace_id,
        "trace_id": a.trace_id,
        "assessment_id": a.assessment_id,
        "dataset_id": a.dataset_id,
        "workspace_name": "p-42",
        "name": a.model_name,
        "alias": a.alias,
        "version": "2",
    }


def fill_path(template: str, a: ProjectA) -> str:
    """A concrete MLflow path for a Flask or FastAPI template, with A's ids."""
    values = _path_values(a)

    def value(match: re.Match[str]) -> str:
        return values.get(match.group(1), "1")

    path = re.sub(r"<(?:\w+:)?(\w+)>", value, template)
    return re.sub(r"\{(\w+)(?::\w+)?\}", value, path)


def _query(a: ProjectA) -> dict[str, str]:
    return {
        "experiment_id": a.experiment_id,
        "experiment_ids": a.experiment_id,
        "experiment_name": a.experiment_name,
        "run_id": a.run_id,
        "run_uuid": a.run_id,
        "run_ids": a.run_id,
        "name": a.model_name,
        "version": "2",
        "alias": a.alias,
        "path": ARTIFACT_FILE,
        "artifact_file_path": "MLmodel",
        "request_id": a.trace_id,
        "trace_id": a.trace_id,
        "trace_ids": a.trace_id,
        "model_id": a.logged_model_id,
        "dataset_id": a.dataset_id,
        "metric_key": METRIC,
        "key": TAG,
        "max_results": "100",
    }


def _body(a: ProjectA) -> dict[str, Any]:
    location = {
        "type": "MLFLOW_EXPERIMENT",
        "mlflow_experiment": {"experiment_id": a.experiment_id},
    }
    return {
        "experiment_id": a.experiment_id,
        "experiment_ids": [a.experiment_id],
        "experiment_name": a.experiment_name,
        "run_id": a.run_id,
        "run_uuid": a.run_id,
        "run_ids": [a.run_id],
        "name": a.model_name,
        "new_name": WRITTEN,
        "version": "2",
        "alias": a.alias,
        "key": TAG,
        "value": WRITTEN,
        "description": WRITTEN,
        "stage": "Archived",
        "source": a.artifact_uri,
        "path": ARTIFACT_FILE,
        "trace_id": a.trace_id,
        "request_id": a.trace_id,
        "trace_ids": [a.trace_id],
        "request_ids": [a.trace_id],
        "model_id": a.logged_model_id,
        "dataset_id": a.dataset_id,
        "dataset_ids": [a.dataset_id],
        "locations": [location],
        "max_timestamp_millis": FAR_FUTURE_MS,
        "max_traces": 1000,
        "max_results": 100,
        "timestamp": 0,
        "step": 0,
        "tags": [{"key": TAG, "value": WRITTEN}],
        "params": [{"key": PARAM, "value": WRITTEN}],
        "metrics": [{"key": METRIC, "value": 1.0, "timestamp": 0, "step": 0}],
        "trace": {
            "trace_info": {
                "trace_id": a.trace_id,
                "trace_location": location,
                "request_time": "2026-01-01T00:00:00Z",
                "state": "OK",
            }
        },
    }


GRAPHQL = """
query Attack($run: String, $experiment: String, $filter: String) {
  mlflowGetRun(input: {runId: $run}) {
    run { info { runName artifactUri } data { params { key value }
      metrics { key value } tags { key value } } }
  }
  mlflowGetExperiment(input: {experimentId: $experiment}) {
    experiment { name tags { key value } }
  }
  mlflowSearchRuns(input: {experimentIds: [$experiment]}) {
    runs { data { params { key value } } }
  }
  mlflowSearchModelVersions(input: {filter: $filter}) {
    modelVersions { name description source }
  }
  mlflowListArtifacts(input: {runId: $run}) { files { path } }
}
"""


def graphql_body(a: ProjectA) -> dict[str, Any]:
    variables = {
        "run": a.run_id,
        "experiment": a.experiment_id,
        "filter": f"name='{a.model_name}'",
    }
    return {"query": GRAPHQL, "variables": variables}


@dataclass(frozen=True)
class Call:
    method: str
    url: str
    params: dict[str, str]
    body: bytes
    headers: dict[str, str]

    def send(self, client: httpx.Client) -> Outcome:
        response = client.request(
            self.method,
            self.url,
            params=self.params,
            content=self.body or None,
            headers=self.headers,
        )
        request = f"{response.request.url} {self.body.decode(errors='replace')}"
        return Outcome(response.status_code, response.text, request)


def build_call(
    server: Server, caller: Caller, method: str, template: str, a: ProjectA
) -> Call:
    """One request of the matrix: ``method template`` as ``caller``, with A's ids."""
    path = fill_path(template, a)
    params = _query(a)
    body: dict[str, Any] = _body(a)
    headers = bearer(caller.token) | {
        "Content-Type": "application/json",
        "x-mlflow-experiment-id": a.experiment_id,
    }
    if path.endswith("/get-trace-artifact"):
        del params["path"]  # a trace attachment: A's trace data comes without it
    elif path.endswith("/artifacts/list"):
        params["path"] = ""
    elif path.endswith("/mlflow-artifacts/artifacts"):
        params["path"] = a.artifact_path
    elif path == "/graphql":
        body = graphql_body(a)
        params = {"query": GRAPHQL, "variables": json.dumps(body["variables"])}
    raw = b"" if method == "GET" else json.dumps(body).encode()
    if path == "/v1/traces":
        headers["Content-Type"] = "application/x-protobuf"
        raw = b""
    url = server.uri(caller.project).rstrip("/") + path
    return Call(method, url, params, raw, headers)


def _calls(
    server: Server, callers: list[Caller], a: ProjectA, decoy: ProjectA
) -> dict[Key, Call]:
    calls = {}
    for caller in callers:
        for method, template in INSTALLED_ROUTES:
            writes = classify(method, fill_path(template, a)).action is Action.WRITE
            ids = decoy if caller.writes == "allowed" and writes else a
            key = (caller.name, method, template)
            calls[key] = build_call(server, caller, method, template, ids)
    return calls


def _run(calls: dict[Key, Call]) -> dict[Key, Outcome]:
    with (
        httpx.Client(timeout=60) as client,
        ThreadPoolExecutor(max_workers=8) as pool,
    ):
        futures = {key: pool.submit(call.send, client) for key, call in calls.items()}
        return {key: future.result() for key, future in futures.items()}


def run_matrix(server: Server, callers: list[Caller]) -> Matrix:
    a = project_a(server.url)
    strangers = [c for c in callers if c.writes != "allowed"]
    before = snapshot(a)
    outcomes = _run(_calls(server, strangers, a, a))
    after = snapshot(a)
    # A's writer comes last, writing only to ids that name nothing of A's.
    owners = [c for c in callers if c.writes == "allowed"]
    outcomes |= _run(_calls(server, owners, a, _decoy(a)))
    return Matrix(a, outcomes, before, after)


@pytest.fixture(scope="module")
def default_matrix(server: Server) -> Matrix:
    return run_matrix(server, DEFAULT_SERVER_CALLERS)


@pytest.fixture(scope="module")
def open_matrix(open_server: Server) -> Matrix:
    return run_matrix(open_server, OPEN_SERVER_CALLERS)


def _is_guard_refusal(outcome: Outcome) -> bool:
    """A refusal this server makes for the caller's rights (not MLflow's answer)."""
    if outcome.status in (401, 403):
        return True
    return outcome.status == 404 and "or you cannot see it" in outcome.text


def _not_implemented(outcome: Outcome) -> bool:
    """MLflow's own 501 for a feature this storage lacks (multipart downloads)."""
    return outcome.status == 501 and '"NOT_IMPLEMENTED"' in outcome.text


def _mlflow_error(outcome: Outcome) -> dict[str, Any]:
    try:
        body = json.loads(outcome.text)
    except ValueError:
        pytest.fail(f"not an MLflow JSON error: {outcome.status} {outcome.text!r}")
    assert isinstance(body, dict), outcome.text
    assert isinstance(body.get("message"), str), outcome.text
    return body


def check(matrix: Matrix, caller: Caller, method: str, template: str) -> None:
    outcome = matrix.outcomes[(caller.name, method, template)]
    rule = classify(method, fill_path(template, matrix.a))
    described = f"{method} {template} as {caller.name}: {outcome.status} {outcome.text}"

    assert outcome.status < 500 or _not_implemented(outcome), described
    if not caller.is_of_a:
        found = leaks(matrix.a, outcome.text, outcome.request)
        assert not found, f"A's data leaked ({found}) to {described}"

    if rule.action is Action.PUBLIC:
        return
    if rule.action is Action.REFUSED:
        body = _mlflow_error(outcome)
        assert (outcome.status, body["error_code"]) == (403, "PERMISSION_DENIED"), (
            described
        )
        return
    due = caller.reads if rule.action is Action.READ else caller.writes
    if due == "allowed":
        assert not _is_guard_refusal(outcome), described
    elif due == "any":
        if _is_guard_refusal(outcome):
            pytest.fail(f"refused by the guard: {described}")
    else:
        body = _mlflow_error(outcome)
        assert outcome.status == int(due), described
        assert body["error_code"] == ERROR_CODES[due], described


def _cases(callers: list[Caller]) -> list[Any]:
    return [
        pytest.param(caller, method, template, id=f"{caller.name}: {method} {template}")
        for caller in callers
        for method, template in INSTALLED_ROUTES
    ]


@pytest.mark.parametrize(
    ("caller", "method", "template"), _cases(DEFAULT_SERVER_CALLERS)
)
def test_default_server(
    default_matrix: Matrix, caller: Caller, method: str, template: str
) -> None:
    check(default_matrix, caller, method, template)


@pytest.mark.parametrize(("caller", "method", "template"), _cases(OPEN_SERVER_CALLERS))
def test_open_server(
    open_matrix: Matrix, caller: Caller, method: str, template: str
) -> None:
    check(open_matrix, caller, method, template)


def unchanged(matrix: Matrix) -> None:
    changed = [
        name for name in matrix.before if matrix.before[name] != matrix.after[name]
    ]
    diff = {name: (matrix.before[name], matrix.after[name]) for name in changed}
    assert not changed, f"A changed (before, after): {diff}"


def test_no_one_outside_a_changes_a(default_matrix: Matrix) -> None:
    unchanged(default_matrix)


def test_no_anonymous_caller_changes_a(open_matrix: Matrix) -> None:
    unchanged(open_matrix)


# Routes where A's developer must see A's data: proof that the fills name A's
# objects, so that the absence of A's data elsewhere means something.
FILLS_REACH_A = [
    ("GET", "/api/2.0/mlflow/runs/get"),
    ("GET", "/api/2.0/mlflow/experiments/get"),
    ("GET", "/api/2.0/mlflow/metrics/get-history"),
    ("GET", "/get-artifact"),
    ("GET", "/model-versions/get-artifact"),
    ("GET", "/api/2.0/mlflow-artifacts/artifacts/<path:artifact_path>"),
    ("GET", "/api/2.0/mlflow/registered-models/get"),
    ("GET", "/api/2.0/mlflow/registered-models/alias"),
    ("GET", "/api/2.0/mlflow/model-versions/get"),
    ("GET", "/api/2.0/mlflow/logged-models/<model_id>"),
    ("GET", "/ajax-api/2.0/mlflow/logged-models/<model_id>/artifacts/files"),
    ("POST", "/api/2.0/mlflow/runs/search"),
    ("POST", "/api/2.0/mlflow/logged-models/search"),
    ("GET", "/api/3.0/mlflow/traces/<trace_id>"),
    ("POST", "/api/3.0/mlflow/traces/search"),
    ("GET", "/ajax-api/3.0/mlflow/get-trace-artifact"),
    ("GET", "/api/3.0/mlflow/datasets/<dataset_id>/records"),
    ("POST", "/graphql"),
]


@pytest.mark.parametrize(
    ("method", "template"), FILLS_REACH_A, ids=[f"{m} {t}" for m, t in FILLS_REACH_A]
)
def test_the_fills_reach_a_data(
    default_matrix: Matrix, method: str, template: str
) -> None:
    outcome = default_matrix.outcomes[(DEVELOPER_A.name, method, template)]

    assert outcome.status == 200, outcome.text
    assert [s for s in default_matrix.a.secrets if s in outcome.text], outcome.text


def test_every_installed_route_is_in_the_matrix() -> None:
    routes = {(p.values[1], p.values[2]) for p in _cases(DEFAULT_SERVER_CALLERS)}

    assert routes == set(INSTALLED_ROUTES)
    assert len(routes) > 300
