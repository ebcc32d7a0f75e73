"""The SharingHub stand-in answers as the contract says.

Most tests call the app in-process through httpx's ASGI transport; the last
ones start it as a real server on a loopback port.
"""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from itsdangerous import URLSafeSerializer

from mlflow_sharinghub.errors import ConfigurationError
from mlflow_sharinghub.standin import (
    DEMO_CONFIG,
    StandinConfig,
    create_app,
    load_config,
)

MISSING = "Missing token, either use login, or pass it as header or query"
REJECTED = "HTTP 401 | POST https://gitlab.example.com/api/graphql: 401 Unauthorized"
DEFAULT_ONLY = (
    "Not authenticated, but server default token is enabled. "
    "Missing user token, either use login, or pass it as header or query"
)
SECRET = "test-session-secret"
PUBLIC_MODE = {"default_token": None, "public_mode": True}


class Standin:
    """One fresh stand-in app, called in-process."""

    def __init__(self, config: StandinConfig) -> None:
        self.app = create_app(config)

    def request(
        self, method: str, url: str, *, timeout: float | None = None, **kwargs: Any
    ) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://standin.test"
            ) as client:
                return await asyncio.wait_for(
                    client.request(method, url, **kwargs), timeout
                )

        return asyncio.run(send())

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)


def recorded_calls(standin: Standin) -> list[dict[str, Any]]:
    """The recorded ``/api/check`` calls, without their times."""
    return [
        {"credential": call["credential"], "project": call["project"]}
        for call in standin.get("/_standin/calls").json()
    ]


def demo_config(**changes: Any) -> StandinConfig:
    """The demo configuration with a known session secret and ``changes``."""
    raw = load_config(DEMO_CONFIG).model_dump()
    raw["session_secret"] = SECRET
    return StandinConfig.model_validate(raw | changes)


def session_cookie(token: str, secret: str = SECRET) -> dict[str, str]:
    value = URLSafeSerializer(secret, salt="sharinghub-session").dumps(token)
    return {"Cookie": f"sharinghub-session={value}"}


@pytest.fixture
def standin() -> Standin:
    return Standin(demo_config())


# --- /api/check --------------------------------------------------------------

ACCESS_MATRIX = [
    pytest.param("alice-token", "eo/flood-model", 3, id="alice-developer-flood"),
    pytest.param("alice-token", "eo/crop-classifier", 4, id="alice-maintainer-crop"),
    pytest.param("alice-token", "43", 4, id="alice-crop-by-id"),
    pytest.param("alice-token", "public/demo-model", 2, id="alice-public"),
    pytest.param("bob-token", "eo/flood-model", 2, id="bob-reporter-flood"),
    pytest.param("bob-token", "eo/crop-classifier", None, id="bob-crop-hidden"),
    pytest.param("carol-token", "eo/crop-classifier", 3, id="carol-developer-crop"),
    pytest.param("carol-token", "eo/flood-model", None, id="carol-flood-hidden"),
    pytest.param("guest-token", "42", 1, id="guest-flood-by-id"),
    pytest.param("guest-token", "45", 2, id="guest-public-by-id"),
    pytest.param("alice-token", "eo/sentinel-tiles", 3, id="dataset-developer"),
    pytest.param("bob-token", "eo/sentinel-tiles", None, id="dataset-not-shared"),
    pytest.param("alice-token", "eo/unknown", None, id="unknown-path"),
    pytest.param("alice-token", "999", None, id="unknown-id"),
]


@pytest.mark.parametrize(("token", "project", "level"), ACCESS_MATRIX)
def test_check_answers_the_access_level(
    standin: Standin, token: str, project: str, level: int | None
) -> None:
    response = standin.get(f"/api/check/{project}?info=true&gitlab_token={token}")

    if level is None:
        assert (response.status_code, response.json()) == (404, {"detail": "Not Found"})
    else:
        assert response.status_code == 200
        assert response.json()["access_level"] == level


@pytest.mark.parametrize(
    "asked",
    [
        pytest.param("eo/flood-model", id="raw-slash"),
        pytest.param("eo%2Fflood-model", id="percent-encoded"),
        pytest.param("EO/Flood-Model", id="other-case"),
        pytest.param("42", id="numeric-id"),
    ],
)
def test_check_info_body_names_the_canonical_project(
    standin: Standin, asked: str
) -> None:
    response = standin.get(
        f"/api/check/{asked}?info=true", headers={"X-Gitlab-Token": "alice-token"}
    )

    assert response.json() == {
        "id": 42,
        "name": "Flood Model",
        "path": "eo/flood-model",
        "categories": ["ai-model"],
        "access_level": 3,
    }


def test_check_without_info_answers_an_empty_body(standin: Standin) -> None:
    response = standin.get("/api/check/eo/flood-model?gitlab_token=alice-token")

    assert (response.status_code, response.content) == (200, b"")


CREDENTIALS = [
    pytest.param({"params": {"gitlab_token": "bob-token"}}, 2, id="query"),
    pytest.param({"headers": {"X-Gitlab-Token": "bob-token"}}, 2, id="header"),
    pytest.param({"headers": session_cookie("bob-token")}, 2, id="session-cookie"),
    pytest.param({}, None, id="default-token"),
    pytest.param(
        {"headers": {"Authorization": "Bearer alice-token"}}, None, id="bearer-ignored"
    ),
    pytest.param(
        {"headers": session_cookie("alice-token", "forged")}, None, id="forged-cookie"
    ),
    pytest.param(
        {"params": {"gitlab_token": "bob-token"}, "headers": {"X-Gitlab-Token": "x"}},
        2,
        id="query-before-header",
    ),
    pytest.param(
        {"headers": {"X-Gitlab-Token": "bob-token", **session_cookie("alice-token")}},
        2,
        id="header-before-cookie",
    ),
]


@pytest.mark.parametrize(("request_parts", "level"), CREDENTIALS)
def test_check_takes_credentials_in_the_contract_order(
    standin: Standin, request_parts: dict[str, Any], level: int | None
) -> None:
    """Bob reads eo/flood-model; the default token does not see it (None)."""
    params = {"info": "true", **request_parts.get("params", {})}
    headers = request_parts.get("headers", {})

    response = standin.get("/api/check/eo/flood-model", params=params, headers=headers)

    if level is None:
        assert response.status_code == 404
    else:
        assert response.json()["access_level"] == level


UNCATEGORISED = [{"id": 7, "path": "eo/misc", "name": "Misc", "public": True}]

ERRORS = [
    pytest.param({}, "?gitlab_token=nobody", 401, REJECTED, id="unknown-token"),
    pytest.param({}, "?gitlab_token=alice-token", 400, "Bad Request", id="empty"),
    pytest.param(
        {"default_token": None}, "eo/flood-model", 401, MISSING, id="no-credentials"
    ),
    pytest.param(
        {"default_token": None}, "42?gitlab_token=", 401, MISSING, id="empty-query"
    ),
    pytest.param(
        {"projects": UNCATEGORISED, "users": []},
        "eo/misc",
        500,
        "Category not found in []",
        id="no-category",
    ),
]


@pytest.mark.parametrize(("changes", "asked", "status", "detail"), ERRORS)
def test_check_refusals(
    changes: dict[str, Any], asked: str, status: int, detail: str
) -> None:
    standin = Standin(demo_config(**changes))

    response = standin.get(f"/api/check/{asked}")

    assert (response.status_code, response.json()) == (status, {"detail": detail})


ANONYMOUS = [
    pytest.param({}, "45", 200, "default", id="default-token-public"),
    pytest.param({}, "42", 404, "default", id="default-token-private"),
    pytest.param(PUBLIC_MODE, "45", 200, "none", id="public-mode-public"),
    pytest.param(PUBLIC_MODE, "42", 404, "none", id="public-mode-private"),
    pytest.param({"default_token": None}, "45", 401, "none", id="neither"),
]


@pytest.mark.parametrize(("changes", "project", "status", "credential"), ANONYMOUS)
def test_anonymous_callers(
    changes: dict[str, Any], project: str, status: int, credential: str
) -> None:
    standin = Standin(demo_config(**changes))

    response = standin.get(f"/api/check/{project}?info=true")

    assert response.status_code == status
    if status == 200:
        assert response.json()["access_level"] == 2
    assert recorded_calls(standin) == [{"credential": credential, "project": project}]


# --- /api/auth/info ----------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "request_parts", "status", "body"),
    [
        pytest.param(
            {},
            {"headers": {"X-Gitlab-Token": "any-token"}},
            200,
            {"access_token": "any-token"},
            id="header-echoed-unchecked",
        ),
        pytest.param(
            {},
            {"headers": session_cookie("carol-token")},
            200,
            {"access_token": "carol-token"},
            id="session-echoed",
        ),
        pytest.param(
            {},
            {},
            401,
            {"detail": DEFAULT_ONLY},
            id="default-token",
        ),
        pytest.param(
            {"default_token": None}, {}, 401, {"detail": MISSING}, id="no-token"
        ),
        pytest.param(
            {},
            {"headers": {"X-Gitlab-Token": "default-token"}},
            401,
            {"detail": DEFAULT_ONLY},
            id="default-token-in-header",
        ),
    ],
)
def test_auth_info(
    changes: dict[str, Any], request_parts: dict[str, Any], status: int, body: Any
) -> None:
    response = Standin(demo_config(**changes)).get("/api/auth/info", **request_parts)

    assert (response.status_code, response.json()) == (status, body)


# --- login and logout --------------------------------------------------------


def test_login_page_escapes_the_redirect(standin: Standin) -> None:
    response = standin.get(
        "/api/auth/login", params={"redirect_uri": '/x?a="><script>'}
    )

    assert response.status_code == 200
    assert "<script>" not in response.text
    assert 'value="/x?a=&quot;&gt;&lt;script&gt;"' in response.text
    assert 'name="token"' in response.text
    assert "Sign in as alice" in response.text


def test_login_sets_a_session_that_check_accepts(standin: Standin) -> None:
    form = {"token": "carol-token", "redirect_uri": "http://127.0.0.1:5000/mlflow/"}

    login = standin.request("POST", "/api/auth/login", data=form)
    cookie = login.headers["set-cookie"]
    check = standin.get(
        "/api/check/43?info=true", headers={"Cookie": cookie.split(";")[0]}
    )

    assert (login.status_code, login.headers["location"]) == (303, form["redirect_uri"])
    assert {"httponly", "samesite=lax", "path=/"} <= set(cookie.lower().split("; "))
    assert check.json()["access_level"] == 3
    assert recorded_calls(standin) == [
        {"credential": "cookie:carol-token", "project": "43"}
    ]


def test_login_with_an_unknown_token_shows_the_form_again(standin: Standin) -> None:
    form = {"token": "<nobody>", "redirect_uri": "/"}

    response = standin.request("POST", "/api/auth/login", data=form)

    assert response.status_code == 401
    assert "set-cookie" not in response.headers
    assert "<nobody>" not in response.text
    assert 'role="alert"' in response.text


@pytest.mark.parametrize(
    "redirect",
    [
        pytest.param("javascript:alert(1)", id="javascript"),
        pytest.param("data:text/html,x", id="data"),
        pytest.param("//evil.example/", id="scheme-relative"),
        pytest.param("/\\evil.example/", id="backslash"),
        pytest.param("ftp://host/", id="ftp"),
        pytest.param("relative/path", id="relative"),
        pytest.param("/x\nSet-Cookie: a=b", id="newline"),
    ],
)
@pytest.mark.parametrize("route", ["/api/auth/login", "/api/auth/logout"])
def test_login_and_logout_refuse_unsafe_redirects(
    standin: Standin, route: str, redirect: str
) -> None:
    response = standin.get(route, params={"redirect_uri": redirect})

    assert response.status_code == 400


@pytest.mark.parametrize(
    ("query", "location"),
    [
        pytest.param("?redirect_uri=/mlflow/", "/mlflow/", id="path"),
        pytest.param(
            "?redirect_uri=https://hub.example/x", "https://hub.example/x", id="url"
        ),
        pytest.param("", "/", id="no-redirect"),
    ],
)
def test_logout_clears_the_session(standin: Standin, query: str, location: str) -> None:
    response = standin.get(
        f"/api/auth/logout{query}", headers=session_cookie("bob-token")
    )

    assert (response.status_code, response.headers["location"]) == (303, location)
    assert 'sharinghub-session=""' in response.headers["set-cookie"]
    assert "max-age=0" in response.headers["set-cookie"].lower()


# --- STAC items --------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "collection", "expected"),
    [
        pytest.param(
            "alice-token",
            "ai-model",
            ["eo/crop-classifier", "eo/flood-model", "public/demo-model"],
            id="alice-models",
        ),
        pytest.param(
            "carol-token",
            "ai-model",
            ["eo/crop-classifier", "public/demo-model"],
            id="carol-models",
        ),
        pytest.param(
            "default-token", "ai-model", ["public/demo-model"], id="default-models"
        ),
        pytest.param(
            "alice-token", "dataset", ["eo/sentinel-tiles"], id="alice-datasets"
        ),
    ],
)
def test_items_list_the_visible_projects_of_the_collection(
    standin: Standin, token: str, collection: str, expected: list[str]
) -> None:
    response = standin.get(
        f"/api/stac/collections/{collection}/items", headers={"X-Gitlab-Token": token}
    )
    body = response.json()

    assert [feature["id"] for feature in body["features"]] == expected
    assert (body["numberMatched"], body["numberReturned"]) == (len(expected),) * 2


def test_full_item_carries_sharinghub_properties_and_tracking_uri(
    standin: Standin,
) -> None:
    response = standin.get(
        "/api/stac/collections/ai-model/items/EO/Flood-Model",
        params={"gitlab_token": "bob-token"},
    )
    item = response.json()

    assert item["id"] == "eo/flood-model"
    assert {
        key: item["properties"][key]
        for key in ("sharinghub:id", "sharinghub:name", "sharinghub:access-level")
    } == {
        "sharinghub:id": 42,
        "sharinghub:name": "Flood Model",
        "sharinghub:access-level": 2,
    }
    tracking = [
        link["href"] for link in item["links"] if link["rel"] == "mlflow:tracking-uri"
    ]
    assert tracking == ["http://127.0.0.1:5000/eo/flood-model/tracking/"]


@pytest.mark.parametrize(
    ("mode", "properties"),
    [
        pytest.param(
            "preview", {"title", "description", "datetime", "keywords"}, id="preview"
        ),
        pytest.param("reference", {"title"}, id="reference"),
    ],
)
def test_lighter_modes_keep_fewer_properties(
    standin: Standin, mode: str, properties: set[str]
) -> None:
    response = standin.get(
        "/api/stac/collections/ai-model/items",
        params={"gitlab_token": "alice-token", "mode": mode},
    )
    features = response.json()["features"]

    assert all(set(feature["properties"]) == properties for feature in features)
    assert all(len(feature["links"]) == 1 for feature in features)


def test_items_page_forward_and_back_with_cursors(standin: Standin) -> None:
    first = standin.get(
        "/api/stac/collections/ai-model/items?limit=2&gitlab_token=alice-token"
    ).json()
    links = {link["rel"]: link["href"] for link in first["links"]}
    second = standin.get(links["next"]).json()
    back_links = {link["rel"]: link["href"] for link in second["links"]}
    back = standin.get(back_links["prev"]).json()

    assert [f["id"] for f in first["features"]] == [
        "eo/crop-classifier",
        "eo/flood-model",
    ]
    assert "prev" not in links
    assert [f["id"] for f in second["features"]] == ["public/demo-model"]
    assert (second["numberMatched"], second["numberReturned"]) == (3, 1)
    assert "next" not in {link["rel"] for link in second["links"]}
    assert back["features"] == first["features"]


@pytest.mark.parametrize(
    ("url", "status", "detail"),
    [
        pytest.param(
            "/api/stac/collections/nope/items",
            404,
            "Collection not found",
            id="collection",
        ),
        pytest.param(
            "/api/stac/collections/ai-model/items/42", 404, "Not Found", id="id-as-item"
        ),
        pytest.param(
            "/api/stac/collections/dataset/items/eo/flood-model",
            404,
            "Not Found",
            id="other-collection",
        ),
        pytest.param(
            "/api/stac/collections/ai-model/items?gitlab_token=x",
            401,
            REJECTED,
            id="bad-token",
        ),
        pytest.param(
            "/api/stac/collections/ai-model/items?after=%%%",
            400,
            "Bad Request",
            id="bad-cursor",
        ),
    ],
)
def test_items_refusals(standin: Standin, url: str, status: int, detail: str) -> None:
    # The query token, where there is one, wins over this header.
    response = standin.get(url, headers={"X-Gitlab-Token": "alice-token"})

    assert (response.status_code, response.json()) == (status, {"detail": detail})


def test_items_search_matches_free_text(standin: Standin) -> None:
    response = standin.get(
        "/api/stac/collections/ai-model/items",
        params={"gitlab_token": "alice-token", "q": "sentinel-2"},
    )

    assert [f["id"] for f in response.json()["features"]] == ["eo/crop-classifier"]


# --- control API -------------------------------------------------------------


def test_calls_are_recorded_per_credential_and_reset(standin: Standin) -> None:
    standin.get("/api/check/42", params={"gitlab_token": "bob-token"})
    standin.get(
        "/api/check/eo%2Fflood-model", headers={"X-Gitlab-Token": "alice-token"}
    )
    standin.get("/api/check/45")
    times = [call["at"] for call in standin.get("/_standin/calls").json()]
    recorded = recorded_calls(standin)
    reset = standin.request("POST", "/_standin/reset")

    assert recorded == [
        {"credential": "token:bob-token", "project": "42"},
        {"credential": "token:alice-token", "project": "eo/flood-model"},
        {"credential": "default", "project": "45"},
    ]
    assert times == sorted(times)
    assert reset.status_code == 204
    assert standin.get("/_standin/calls").json() == []


def test_users_can_be_added_and_revoked(standin: Standin) -> None:
    put = standin.request(
        "PUT", "/_standin/users/dave-token", json={"name": "dave", "access": {"44": 3}}
    )
    granted = standin.get("/api/check/44?info=true&gitlab_token=dave-token")
    standin.request("DELETE", "/_standin/users/dave-token")
    revoked = standin.get("/api/check/44?info=true&gitlab_token=dave-token")

    assert put.status_code == 200
    assert granted.json()["categories"] == ["dataset"]
    assert (revoked.status_code, revoked.json()) == (401, {"detail": REJECTED})


def test_projects_can_be_added_or_replaced(standin: Standin) -> None:
    moved = {
        "id": 42,
        "path": "water/flood-model",
        "name": "Flood",
        "topics": ["sharinghub:aimodel", "sharinghub:dataset"],
    }

    put = standin.request("PUT", "/_standin/projects/42", json=moved)
    response = standin.get("/api/check/42?info=true&gitlab_token=alice-token")
    mismatch = standin.request("PUT", "/_standin/projects/43", json=moved)

    assert put.status_code == 200
    assert response.json()["path"] == "water/flood-model"
    assert response.json()["categories"] == ["ai-model", "dataset"]
    assert mismatch.status_code == 422


@pytest.mark.parametrize(
    ("route", "body"),
    [
        pytest.param(
            "/_standin/users/x", {"access": {"42": 3}}, id="user-without-name"
        ),
        pytest.param(
            "/_standin/users/x", {"name": "x", "access": {"42": 9}}, id="level-9"
        ),
        pytest.param(
            "/_standin/projects/9", {"id": 9, "path": "flat"}, id="bad-project"
        ),
    ],
)
def test_control_api_validates_bodies(standin: Standin, route: str, body: Any) -> None:
    response = standin.request("PUT", route, json=body)

    assert response.status_code == 422
    assert response.json()["detail"]


def test_delay_makes_check_hang_until_set_back_to_zero(standin: Standin) -> None:
    standin.request("POST", "/_standin/delay", json={"seconds": 30})
    with pytest.raises(TimeoutError):
        standin.get("/api/check/45", timeout=0.2)

    standin.request("POST", "/_standin/delay", json={"seconds": 0})
    assert standin.get("/api/check/45", timeout=5).status_code == 200


# --- configuration -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        pytest.param("projects: [", "not valid YAML", id="yaml-syntax"),
        pytest.param("- a\n- b\n", "valid dictionary", id="not-a-mapping"),
        pytest.param("colections: {}\n", "colections: Extra inputs", id="typo"),
        pytest.param(
            "projects: [{id: x, path: a/b, name: B}]\n", "projects.0.id", id="bad-id"
        ),
        pytest.param(
            "projects: [{id: 1, path: flat, name: B}]\n",
            "projects.0.path",
            id="flat-path",
        ),
        pytest.param(
            "projects: [{id: 1, path: a/b, name: B}, {id: 1, path: a/c, name: C}]\n",
            "duplicate project id",
            id="duplicate-id",
        ),
        pytest.param(
            "users: [{token: t, name: n, access: {1: 3}}]\n",
            "access to unknown ['1']",
            id="unknown-project",
        ),
        pytest.param(
            "projects: [{id: 1, path: a/b, name: B}]\n"
            "users: [{token: t, name: n, access: {1: 5}}]\n",
            "users.0.access.1",
            id="level-5",
        ),
    ],
)
def test_malformed_config_names_the_problem(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = tmp_path / "standin.yaml"
    path.write_text(text)

    with pytest.raises(ConfigurationError, match=re.escape(problem)):
        load_config(path)


def test_missing_config_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")


def test_empty_config_uses_the_default_collections(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")

    assert load_config(path).collections == {
        "ai-model": "sharinghub:aimodel",
        "dataset": "sharinghub:dataset",
    }


# --- real servers ------------------------------------------------------------


@pytest.fixture
def live_url() -> Iterator[str]:
    """A stand-in served by uvicorn in a thread, on a socket bound beforehand."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    config = uvicorn.Config(create_app(demo_config()), log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]})
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        listener.close()


def test_live_server_answers_over_http(live_url: str) -> None:
    with httpx.Client(base_url=live_url, timeout=10) as client:
        encoded = client.get(
            "/api/check/eo%2Fcrop-classifier?info=true",
            headers={"X-Gitlab-Token": "carol-token"},
        )
        anonymous = client.get("/api/check/eo/crop-classifier")
        calls = [
            {"credential": c["credential"], "project": c["project"]}
            for c in client.get("/_standin/calls").json()
        ]

    assert encoded.json()["access_level"] == 3
    assert anonymous.status_code == 404
    assert calls == [
        {"credential": "token:carol-token", "project": "eo/crop-classifier"},
        {"credential": "default", "project": "eo/crop-classifier"},
    ]


def test_run_serves_a_config_file() -> None:
    script = (
        f"from mlflow_sharinghub.standin import run; run({str(DEMO_CONFIG)!r}, port=0)"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script], stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stderr is not None
        url = None
        for line in process.stderr:
            if found := re.search(r"Uvicorn running on (http://\S+)", line):
                url = found.group(1)
                break
        assert url is not None, "the stand-in did not start"
        response = httpx.get(f"{url}/api/check/42?info=true&gitlab_token=guest-token")
    finally:
        process.terminate()
        process.wait(timeout=30)
        if process.stderr is not None:
            process.stderr.close()

    assert response.json()["access_level"] == 1
