"""The route policy classifies every route of the installed MLflow, and fails closed."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from mlflow_sharinghub.policy import Action, classify

PUBLIC, READ, WRITE, REFUSED = Action.PUBLIC, Action.READ, Action.WRITE, Action.REFUSED
_IGNORED_METHODS = {"HEAD", "OPTIONS"}


def _sample(path: str) -> str:
    """A concrete path for a Flask or FastAPI route template."""
    path = re.sub(r"<path:[^>]+>", "dir/file.txt", path)
    path = re.sub(r"<[^>]+>", "x1", path)
    path = re.sub(r"\{[^}]+\}", "x1", path)
    return path


def _installed_routes() -> Iterator[tuple[str, str]]:
    from fastapi.routing import APIRoute
    from mlflow.server import app as flask_app
    from mlflow.server.fastapi_app import app as fastapi_app

    for rule in flask_app.url_map.iter_rules():
        for method in sorted((rule.methods or set()) - _IGNORED_METHODS):
            yield method, rule.rule
    for route in fastapi_app.routes:
        contexts = getattr(route, "effective_route_contexts", None)
        for context in contexts() if contexts else [route]:
            if isinstance(context, APIRoute) or hasattr(context, "methods"):
                path = getattr(context, "path_format", None) or context.path
                for method in sorted(set(context.methods or ()) - _IGNORED_METHODS):
                    yield method, path


INSTALLED_ROUTES = sorted(set(_installed_routes()))


def test_the_installed_mlflow_has_routes() -> None:
    # Guards the enumeration itself: an empty list would make the next test vacuous.
    assert len(INSTALLED_ROUTES) > 300
    assert ("POST", "/v1/traces") in INSTALLED_ROUTES
    assert ("GET", "/get-artifact") in INSTALLED_ROUTES


@pytest.mark.parametrize(
    ("method", "route"), INSTALLED_ROUTES, ids=[f"{m} {r}" for m, r in INSTALLED_ROUTES]
)
def test_every_installed_route_is_classified(method: str, route: str) -> None:
    classification = classify(method, _sample(route))

    assert classification.known, f"{method} {route} is not in the route policy"
    if classification.action is REFUSED:
        assert classification.reason, "a refused route must say why"


@pytest.mark.parametrize(
    ("method", "path", "action"),
    [
        ("GET", "/health", PUBLIC),
        ("GET", "/static-files/static/js/main.js", PUBLIC),
        ("GET", "/", READ),
        ("GET", "/api/2.0/mlflow/experiments/get", READ),
        ("HEAD", "/api/2.0/mlflow/experiments/get", READ),
        ("POST", "/api/2.0/mlflow/runs/search", READ),
        ("POST", "/ajax-api/2.0/mlflow/runs/search", READ),
        ("POST", "/api/2.0/mlflow/experiments/search", READ),
        ("POST", "/api/2.0/mlflow/logged-models/search", READ),
        ("POST", "/api/3.0/mlflow/traces/search", READ),
        ("POST", "/api/3.0/mlflow/traces/metrics", READ),
        ("POST", "/api/3.0/mlflow/traces/calculate-filter-correlation", READ),
        ("POST", "/api/2.0/mlflow/artifacts/presigned-download-url", READ),
        ("POST", "/api/2.0/mlflow/registered-models/get-latest-versions", READ),
        ("POST", "/graphql", READ),
        ("GET", "/get-artifact", READ),
        ("GET", "/model-versions/get-artifact", READ),
        ("GET", "/api/2.0/mlflow-artifacts/artifacts/workspaces/p-1/a.txt", READ),
        ("PUT", "/api/2.0/mlflow-artifacts/artifacts/workspaces/p-1/a.txt", WRITE),
        ("DELETE", "/api/2.0/mlflow-artifacts/artifacts/workspaces/p-1/a.txt", WRITE),
        ("POST", "/api/2.0/mlflow/runs/log-metric", WRITE),
        ("POST", "/api/2.0/mlflow/runs/log-batch", WRITE),
        ("POST", "/api/2.0/mlflow/experiments/create", WRITE),
        ("POST", "/api/2.0/mlflow/registered-models/create", WRITE),
        ("DELETE", "/api/2.0/mlflow/registered-models/delete", WRITE),
        ("POST", "/api/2.0/mlflow/registered-models/alias", WRITE),
        ("POST", "/api/2.0/mlflow/model-versions/create", WRITE),
        ("POST", "/v1/traces", WRITE),
        ("POST", "/api/3.0/mlflow/traces", WRITE),
        ("POST", "/ajax-api/2.0/mlflow/runs/create-promptlab-run", REFUSED),
        ("GET", "/api/3.0/mlflow/workspaces", REFUSED),
        ("POST", "/api/3.0/mlflow/workspaces", REFUSED),
        ("DELETE", "/api/3.0/mlflow/workspaces/p-1", REFUSED),
        ("POST", "/ajax-api/3.0/mlflow/assistant/message", REFUSED),
        ("POST", "/gateway/openai/v1/chat/completions", REFUSED),
        ("GET", "/api/3.0/mlflow/gateway/secrets/list", REFUSED),
        ("POST", "/ajax-api/3.0/jobs/", REFUSED),
        ("GET", "/api/3.0/mlflow/mcp-servers", REFUSED),
        ("POST", "/api/2.0/mlflow/webhooks", REFUSED),
        ("POST", "/ajax-api/3.0/mlflow/ui-telemetry", REFUSED),
    ],
    ids=lambda value: value if isinstance(value, str) else value.value,
)
def test_route_actions(method: str, path: str, action: Action) -> None:
    assert classify(method, path).action is action


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/2.0/mlflow/not-a-route"),
        ("GET", "/api/9.9/mlflow/experiments/get"),
        ("GET", "/admin"),
        ("GET", "/api/2.0/mlflow/experiments/get/extra"),
        ("TRACE", "/api/2.0/mlflow/experiments/get"),
    ],
    ids=lambda value: value,
)
def test_unknown_routes_are_refused(method: str, path: str) -> None:
    classification = classify(method, path)

    assert classification.action is REFUSED


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/2.0/mlflow/runs/log-metric"),
        ("DELETE", "/api/2.0/mlflow/runs/search"),
        ("PUT", "/api/2.0/mlflow/experiments/get"),
    ],
    ids=lambda value: value,
)
def test_a_known_route_with_another_method_is_refused(method: str, path: str) -> None:
    classification = classify(method, path)

    assert classification.known
    assert classification.action is REFUSED


def test_options_never_needs_more_than_the_route() -> None:
    assert classify("OPTIONS", "/api/2.0/mlflow/runs/log-metric").action is WRITE
    assert classify("OPTIONS", "/api/2.0/mlflow/experiments/search").action is READ
