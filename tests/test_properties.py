"""Bad input never breaks the guard: properties, checked with hypothesis.

In-process, for hundreds of examples: the guard (SharingHubMiddleware) with
a SharingHub answered by httpx.MockTransport and, in place of MLflow, a small
app that tells which workspace a request reached and, in A's workspace,
answers A's secret. Whatever the project path, headers, cookies or body:

- the guard never fails (httpx's ASGI transport raises any exception it lets
  out);
- it never answers 5xx;
- a refusal is an MLflow-format JSON error (``error_code`` and ``message``);
- only A's developer ever reaches A's workspace;
- a redirect only ever leads to SharingHub or within the project.

Against the real server, fewer examples: JSON bodies on the representative
routes, where MLflow's own handlers answer too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import httpx
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from mlflow_sharinghub.middleware import SharingHubMiddleware
from mlflow_sharinghub.settings import Settings
from mlflow_sharinghub.sharinghub import SharingHubClient
from project_a import ProjectA, bearer, leaks, project_a
from servers import CROPS, Server

HUB = "http://sharinghub.test"
SECRET = "A-SECRET-7f3a"
PROJECTS = {"42": "eo/flood-model", "43": "eo/crop-classifier"}
LEVELS = {"dev-a": {"42": 3}, "dev-b": {"43": 3}, "rep-a": {"42": 2}}
RUNS = {"p-42": "a1", "p-43": "b1"}
ROUTES = [
    ("POST", "api/2.0/mlflow/experiments/create"),
    ("POST", "api/2.0/mlflow/runs/search"),
    ("POST", "api/2.0/mlflow/runs/log-batch"),
    ("POST", "api/2.0/mlflow/model-versions/create"),
    ("GET", "api/2.0/mlflow/artifacts/list"),
    ("GET", "get-artifact"),
    ("GET", "api/2.0/mlflow-artifacts/artifacts/x"),
    ("GET", ""),
]
FAST = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def sharinghub(request: httpx.Request) -> httpx.Response:
    """SharingHub's /api/check and listing, for the tokens of LEVELS."""
    token = request.headers.get("x-gitlab-token")
    cookie = request.headers.get("cookie", "")
    if token is None and cookie.startswith("sharinghub-session="):
        token = cookie.split("=", 1)[1]
    if token is None:
        return httpx.Response(401, json={"detail": "Missing token"})
    if token not in LEVELS:
        return httpx.Response(401, json={"detail": "HTTP 401"})
    if request.url.path.startswith("/api/stac/"):
        return httpx.Response(200, json={"features": [], "links": []})
    asked = unquote(request.url.path.removeprefix("/api/check/")).lower()
    for project_id, path in PROJECTS.items():
        level = LEVELS[token].get(project_id)
        if level and asked in (project_id, path):
            body = {
                "id": int(project_id),
                "name": path,
                "path": path,
                "categories": ["ai-model"],
                "access_level": level,
            }
            return httpx.Response(200, json=body)
    return httpx.Response(404, json={"detail": "Not Found"})


async def mlflow_stand_in(scope: Scope, receive: Receive, send: Send) -> None:
    """Where MLflow would be: which workspace was reached, and A's secret in A's."""
    while (await receive()).get("more_body"):
        pass
    workspace = dict(scope["headers"]).get(b"x-mlflow-workspace", b"").decode()
    if scope["path"].endswith("/runs/get"):
        query = scope["query_string"].decode()
        status = 200 if query == f"run_id={RUNS.get(workspace)}" else 404
        await JSONResponse({}, status_code=status)(scope, receive, send)
        return
    body = {"workspace": workspace, "data": SECRET if workspace == "p-42" else "-"}
    await JSONResponse(body)(scope, receive, send)


class Workspaces:
    def is_known(self, name: str) -> bool:
        return True

    def ensure(self, name: str, description: str) -> None:
        raise AssertionError("every workspace is known here")


async def ready() -> JSONResponse:
    return JSONResponse({"status": "ready"})


class Guard:
    """The guard in-process, called from synchronous tests through one event loop."""

    def __init__(self, portal: BlockingPortal, client: httpx.AsyncClient) -> None:
        self.portal = portal
        self.client = client

    def send(self, request: httpx.Request) -> httpx.Response:
        return self.portal.call(self.client.send, request)


@pytest.fixture(scope="module")
def guard() -> Iterator[Guard]:
    configured = Settings(SHARINGHUB_URL=HUB)
    client = SharingHubClient(
        HUB,
        timeout=2,
        cache_ttl=30,
        session_cookie="sharinghub-session",
        transport=httpx.MockTransport(sharinghub),
    )
    app = SharingHubMiddleware(
        mlflow_stand_in,
        settings=configured,
        sharinghub=client,
        workspaces=Workspaces,  # type: ignore[arg-type]
        readiness=ready,
    )
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=("127.0.0.1", 40000)),
        base_url="http://127.0.0.1:5000",
    )
    with start_blocking_portal() as portal:
        yield Guard(portal, client)
        portal.call(client.aclose)


def check(response: httpx.Response, *, may_see_a: bool = False) -> None:
    """The properties every answer of the guard has."""
    assert response.status_code < 500, response.text
    if not may_see_a:
        assert SECRET not in response.text, response.request.url
    if response.status_code in (301, 302, 307, 308):
        location = response.headers["location"]
        assert location.startswith(f"{HUB}/api/auth/login?") or "://" not in location
        return
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/json")
        body = response.json()
        assert isinstance(body["error_code"], str), body
        assert isinstance(body["message"], str), body
        assert body["error_code"].isupper()


def header_value(max_size: int = 40) -> st.SearchStrategy[bytes]:
    """Header values as a client can send them: no line breaks, no NUL."""
    printable = st.characters(min_codepoint=0x20, max_codepoint=0xFF)
    text = st.text(printable, max_size=max_size)
    return text.map(lambda s: s.replace("\x7f", "").encode("latin-1"))


def raw_request(
    guard: Guard,
    method: str,
    raw_path: bytes,
    headers: dict[str, bytes],
    body: bytes = b"",
) -> httpx.Response:
    request = guard.client.build_request(method, "/", headers=headers, content=body)
    request.url = request.url.copy_with(raw_path=raw_path)
    return guard.send(request)


SEGMENT = st.lists(
    st.sampled_from([*"abcAZ09-_.%/~:@!<>\"' \\", "%2F", "%2E", "..", "é", "\t"]),
    max_size=12,
).map("".join)
PROJECT_PATHS = st.lists(
    st.one_of(SEGMENT, st.sampled_from(["eo", "flood-model", "42", "43", "tracking"])),
    max_size=6,
).map("/".join)


@FAST
@given(
    project=PROJECT_PATHS,
    route=st.sampled_from(ROUTES),
    token=st.sampled_from(["dev-b", "rep-a", "stranger", None]),
)
def test_project_paths(
    guard: Guard, project: str, route: tuple[str, str], token: str | None
) -> None:
    method, mlflow_path = route
    path = f"/{project}/tracking/{mlflow_path}"
    # As a client sends it: bytes outside printable ASCII percent-encoded.
    raw = quote(path, safe="".join(map(chr, range(0x21, 0x7F)))).encode()
    headers = {k: v.encode() for k, v in bearer(token).items()}

    response = raw_request(guard, method, raw, headers, b"{}")

    check(response, may_see_a=token == "rep-a")


@FAST
@given(
    route=st.sampled_from(ROUTES),
    project=st.sampled_from(["eo/flood-model", "42", "eo/crop-classifier"]),
    headers=st.fixed_dictionaries(
        {},
        optional={
            "authorization": st.one_of(
                header_value(),
                st.sampled_from([b"Bearer dev-b", b"Bearer ", b"bearer dev-a x"]),
            ),
            "cookie": st.one_of(
                header_value(),
                st.sampled_from(
                    [b"sharinghub-session=dev-b", b"sharinghub-session=; a=b"]
                ),
            ),
            "x-script-name": header_value(),
            "x-forwarded-proto": header_value(),
            "x-forwarded-host": header_value(),
            "x-forwarded-for": header_value(),
            "host": st.one_of(header_value(), st.just(b"127.0.0.1:5000")),
            "origin": header_value(),
            "accept": st.one_of(header_value(), st.just(b"text/html")),
            "x-mlflow-workspace": st.sampled_from([b"p-42", b"default", b""]),
        },
    ),
)
def test_headers(
    guard: Guard,
    route: tuple[str, str],
    project: str,
    headers: dict[str, bytes],
) -> None:
    method, mlflow_path = route
    raw = f"/{project}/tracking/{mlflow_path}".encode()
    # The only credential that may reach A: dev-a's, which no example carries.
    response = raw_request(guard, method, raw, headers, b"{}")

    check(response)
    if response.status_code in (301, 302, 307, 308):
        login = urlsplit(response.headers["location"])
        assert "<" not in login.geturl()


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.sampled_from(["a1", "b1", "runs:/a1/", "runs:/b1/m", "../x", "%2E%2E/x"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
KEYS = st.sampled_from(
    ["name", "source", "run_id", "runId", "run_uuid", "experiment_ids", "path"]
)
SOURCES = st.sampled_from(
    [
        "runs:/a1/model",
        "runs:/b1/model",
        "runs:/%61%31/model",
        "mlflow-artifacts:/workspaces/p-42/1/a1/artifacts",
        "mlflow-artifacts:/workspaces/p-43/1/b1/artifacts",
        "mlflow-artifacts:/workspaces/p-43/../p-42/x",
        "mlflow-artifacts://host/workspaces/p-43/x",
        "s3://bucket/workspaces/p-42/x",
        "models:/m/1",
        "dummy-source",
        "",
    ]
)
BODIES = st.one_of(
    st.dictionaries(KEYS, st.one_of(JSON, SOURCES), max_size=5).map(
        lambda d: json.dumps(d).encode()
    ),
    JSON.map(lambda v: json.dumps(v).encode()),
    JSON.map(lambda v: json.dumps(json.dumps(v)).encode()),
    st.binary(max_size=64),
)


@FAST
@given(
    route=st.sampled_from([r for r in ROUTES if r[0] == "POST"]),
    body=BODIES,
    token=st.sampled_from(["dev-b", "rep-a"]),
)
def test_json_bodies(
    guard: Guard, route: tuple[str, str], body: bytes, token: str
) -> None:
    method, mlflow_path = route
    project = "eo/crop-classifier" if token == "dev-b" else "eo/flood-model"
    headers = {"authorization": f"Bearer {token}".encode()}

    response = raw_request(
        guard, method, f"/{project}/tracking/{mlflow_path}".encode(), headers, body
    )

    check(response, may_see_a=token == "rep-a" and method == "POST")
    if token == "dev-b" and response.status_code == 200:
        assert response.json()["workspace"] == "p-43"


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(source=SOURCES, run=st.sampled_from([None, "a1", "b1", "%62%31"]))
def test_model_versions_of_b_never_point_into_a(
    guard: Guard, source: str, run: str | None
) -> None:
    body: dict[str, Any] = {"name": "m", "source": source}
    if run is not None:
        body["run_id"] = run
    raw = b"/eo/crop-classifier/tracking/api/2.0/mlflow/model-versions/create"

    response = raw_request(
        guard,
        "POST",
        raw,
        {"authorization": b"Bearer dev-b"},
        json.dumps(body).encode(),
    )

    check(response)
    if response.status_code == 200:
        assert "p-42" not in source
        assert "a1" not in source
        assert run in (None, "b1")


# ----------------------------------------------------------- the real server


REAL_ROUTES = [
    "api/2.0/mlflow/experiments/create",
    "api/2.0/mlflow/runs/search",
    "api/2.0/mlflow/runs/log-batch",
    "api/2.0/mlflow/model-versions/create",
    "api/2.0/mlflow/artifacts/list",
]


@pytest.fixture(scope="module")
def real_a(server: Server) -> ProjectA:
    return project_a(server.url)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(route=st.sampled_from(REAL_ROUTES), body=BODIES)
def test_json_bodies_on_the_real_server(
    server: Server, real_a: ProjectA, route: str, body: bytes
) -> None:
    response = httpx.post(
        server.uri(CROPS) + route,
        content=body,
        headers=bearer("dev-b") | {"Content-Type": "application/json"},
        timeout=60,
    )

    assert response.status_code < 500, response.text
    assert not leaks(real_a, response.text, body.decode(errors="replace"))
    if response.status_code >= 400:
        error = response.json()
        assert isinstance(error["error_code"], str)
        assert isinstance(error["message"], str)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize("body", [b"", b"null", b"5", b"[]", b'"x"', b"\xff"])
@pytest.mark.parametrize("route", ["runs/log-batch", "experiments/create"])
def test_a_body_that_is_not_an_object_is_a_400(
    server: Server, route: str, body: bytes
) -> None:
    # Found by the property above: MLflow used these bodies before validating them.
    response = httpx.post(
        server.uri(CROPS) + "api/2.0/mlflow/" + route,
        content=body,
        headers=bearer("dev-b") | {"Content-Type": "application/json"},
    )

    assert response.status_code == 400, response.text
    assert response.json()["error_code"] == "INVALID_PARAMETER_VALUE"
