"""The route policy: what each MLflow route needs from the caller.

The table below is data. It classifies every route of the pinned MLflow as
*public* (no project check), *read*, *write*, or *refused* (with the reason
the caller is told). A route that no rule matches is refused: the middleware
knows nothing of individual routes and fails closed.

Paths are MLflow paths, after the project prefix is stripped. API rules are
written once and match both ``/api/`` and ``/ajax-api/``.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from functools import lru_cache


class Action(enum.Enum):
    PUBLIC = "public"
    READ = "read"
    WRITE = "write"
    REFUSED = "refused"


@dataclass(frozen=True)
class Rule:
    """One line of the table: methods and a path template, and what they need."""

    methods: frozenset[str]
    pattern: re.Pattern[str]
    action: Action
    reason: str = ""


@dataclass(frozen=True)
class Classification:
    action: Action
    reason: str
    known: bool


GET, POST, PUT, PATCH, DELETE = "GET", "POST", "PUT", "PATCH", "DELETE"
PUBLIC, READ, WRITE, REFUSED = Action.PUBLIC, Action.READ, Action.WRITE, Action.REFUSED

_GATEWAY = "the AI gateway is not part of this server"
_JOBS = "the job runner is off on this server"
_ASSISTANT = "the assistant is not part of this server"
_MCP = "the MCP server registry is not part of this server"
_WORKSPACES = "each project is its own workspace; use the project's tracking URI"
_WEBHOOKS = "webhooks would make the server call arbitrary addresses"
_TELEMETRY = "telemetry is off on this server"
_DEMO = "demo data generation is not part of this server"
# MLflow's GraphQL handler reads only a JSON body: a GET would be a 500.
_GRAPHQL_GET = "send GraphQL queries with POST"

# (methods, template, action[, reason]). "api:" templates match /api/ and
# /ajax-api/; "{name}" is one path segment and "{name:path}" any rest of path.
# The first rule whose path and method match decides, so specific lines stand
# before the "{verb}" lines that would otherwise cover them.
_TABLE: list[tuple[str, str, Action] | tuple[str, str, Action, str]] = [
    # Server and UI
    ("GET", "/health", PUBLIC),
    ("GET", "/ready", PUBLIC),
    ("GET", "/version", PUBLIC),
    ("GET", "/static-files/{path:path}", PUBLIC),
    ("GET", "/build/{path:path}", PUBLIC),
    ("GET", "/", READ),
    ("GET", "api:3.0/mlflow/server-info", READ),
    ("POST", "/graphql", READ),
    ("GET", "/graphql", REFUSED, _GRAPHQL_GET),
    ("GET", "api:3.0/mlflow/ui-telemetry", READ),
    ("POST", "api:3.0/mlflow/ui-telemetry", REFUSED, _TELEMETRY),
    # Experiments
    ("POST", "api:2.0/mlflow/experiments/create", WRITE),
    ("POST", "api:2.0/mlflow/experiments/delete", WRITE),
    ("POST", "api:2.0/mlflow/experiments/restore", WRITE),
    ("POST", "api:2.0/mlflow/experiments/update", WRITE),
    ("POST", "api:2.0/mlflow/experiments/set-experiment-tag", WRITE),
    ("POST", "api:2.0/mlflow/experiments/delete-experiment-tag", WRITE),
    ("GET", "api:2.0/mlflow/experiments/get", READ),
    ("GET", "api:2.0/mlflow/experiments/get-by-name", READ),
    ("GET POST", "api:2.0/mlflow/experiments/search", READ),
    ("POST", "api:2.0/mlflow/experiments/search-datasets", READ),
    # MLflow registers this one without the slash after the version.
    ("POST", "api:2.0mlflow/experiments/search-datasets", READ),
    # Runs and metrics
    ("GET", "api:2.0/mlflow/runs/get", READ),
    ("POST", "api:2.0/mlflow/runs/search", READ),
    ("POST", "api:2.0/mlflow/runs/create-promptlab-run", REFUSED, _GATEWAY),
    ("POST", "api:2.0/mlflow/runs/{verb}", WRITE),
    ("GET", "api:2.0/mlflow/metrics/{verb}", READ),
    # Artifacts through the tracking API
    ("GET", "api:2.0/mlflow/artifacts/list", READ),
    ("POST", "api:2.0/mlflow/artifacts/presigned-download-url", READ),
    ("POST", "api:2.0/mlflow/artifacts/presigned-upload-url", WRITE),
    ("POST", "api:2.0/mlflow/upload-artifact", WRITE),
    ("GET", "api:2.0/mlflow/get-trace-artifact", READ),
    ("GET", "api:3.0/mlflow/get-trace-artifact", READ),
    ("GET", "/get-artifact", READ),
    ("GET", "/model-versions/get-artifact", READ),
    # The artifact proxy
    ("GET", "api:2.0/mlflow-artifacts/artifacts", READ),
    ("GET", "api:2.0/mlflow-artifacts/artifacts/{path:path}", READ),
    ("PUT DELETE", "api:2.0/mlflow-artifacts/artifacts/{path:path}", WRITE),
    ("POST", "api:2.0/mlflow-artifacts/mpu/{verb}/{path:path}", WRITE),
    ("GET", "api:2.0/mlflow-artifacts/presigned/{path:path}", READ),
    # Logged models
    ("POST", "api:2.0/mlflow/logged-models", WRITE),
    ("POST", "api:2.0/mlflow/logged-models/search", READ),
    ("GET", "api:2.0/mlflow/logged-models/{id}", READ),
    ("PATCH DELETE", "api:2.0/mlflow/logged-models/{id}", WRITE),
    ("GET", "api:2.0/mlflow/logged-models/{id}/artifacts/{kind}", READ),
    ("POST", "api:2.0/mlflow/logged-models/{id}/params", WRITE),
    ("PATCH", "api:2.0/mlflow/logged-models/{id}/tags", WRITE),
    ("DELETE", "api:2.0/mlflow/logged-models/{id}/tags/{key}", WRITE),
    # Model registry
    ("GET", "api:2.0/mlflow/registered-models/get", READ),
    ("GET", "api:2.0/mlflow/registered-models/search", READ),
    ("GET", "api:2.0/mlflow/registered-models/alias", READ),
    ("GET POST", "api:2.0/mlflow/registered-models/get-latest-versions", READ),
    ("POST PATCH DELETE", "api:2.0/mlflow/registered-models/{verb}", WRITE),
    ("GET", "api:2.0/mlflow/model-versions/get", READ),
    ("GET", "api:2.0/mlflow/model-versions/get-download-uri", READ),
    ("GET", "api:2.0/mlflow/model-versions/search", READ),
    ("POST PATCH DELETE", "api:2.0/mlflow/model-versions/{verb}", WRITE),
    # Traces
    ("GET", "api:2.0/mlflow/traces", READ),
    ("GET", "api:2.0/mlflow/unified-traces", READ),
    ("GET", "api:2.0/mlflow/get-online-trace-details", READ),
    ("POST", "api:2.0/mlflow/traces", WRITE),
    ("PATCH", "api:2.0/mlflow/traces/{id}", WRITE),
    ("GET", "api:2.0/mlflow/traces/{id}/info", READ),
    ("PATCH DELETE", "api:2.0/mlflow/traces/{id}/tags", WRITE),
    ("POST", "api:2.0/mlflow/traces/{verb}", WRITE),
    ("POST", "api:3.0/mlflow/traces/search", READ),
    ("POST", "api:3.0/mlflow/traces/metrics", READ),
    ("POST", "api:3.0/mlflow/traces/batchGetInfos", READ),
    ("POST", "api:3.0/mlflow/traces/calculate-filter-correlation", READ),
    ("GET", "api:3.0/mlflow/traces/batchGet", READ),
    ("GET", "api:3.0/mlflow/traces/get", READ),
    ("POST", "api:3.0/mlflow/traces", WRITE),
    ("POST", "api:3.0/mlflow/traces/delete-traces", WRITE),
    ("GET", "api:3.0/mlflow/traces/{id}", READ),
    ("PATCH DELETE", "api:3.0/mlflow/traces/{id}/tags", WRITE),
    ("POST", "api:3.0/mlflow/traces/{id}/assessments", WRITE),
    ("GET", "api:3.0/mlflow/traces/{id}/assessments/{aid}", READ),
    ("PATCH DELETE", "api:3.0/mlflow/traces/{id}/assessments/{aid}", WRITE),
    ("POST", "/v1/traces", WRITE),
    # Evaluation datasets
    ("GET POST", "api:3.0/mlflow/datasets/search", READ),
    ("POST", "api:3.0/mlflow/datasets/create", WRITE),
    ("GET", "api:3.0/mlflow/datasets/{id}", READ),
    ("DELETE", "api:3.0/mlflow/datasets/{id}", WRITE),
    ("GET", "api:3.0/mlflow/datasets/{id}/experiment-ids", READ),
    ("GET", "api:3.0/mlflow/datasets/{id}/records", READ),
    ("POST DELETE", "api:3.0/mlflow/datasets/{id}/records", WRITE),
    ("POST", "api:3.0/mlflow/datasets/{id}/{verb}", WRITE),
    ("PATCH", "api:3.0/mlflow/datasets/{id}/tags", WRITE),
    ("DELETE", "api:3.0/mlflow/datasets/{id}/tags/{key}", WRITE),
    # Scorers (stored only: nothing runs them without the job runner)
    ("GET", "api:3.0/mlflow/scorers/{verb}", READ),
    ("POST", "api:3.0/mlflow/scorers/register", WRITE),
    ("DELETE", "api:3.0/mlflow/scorers/delete", WRITE),
    ("PUT", "api:3.0/mlflow/scorers/online-config", REFUSED, _JOBS),
    ("POST", "api:3.0/mlflow/scorer/invoke", REFUSED, _GATEWAY),
    ("POST", "api:3.0/mlflow/genai/evaluate/invoke", REFUSED, _GATEWAY),
    # Issues, label schemas and review queues (scoped by their experiment)
    ("POST", "api:3.0/mlflow/issues", WRITE),
    ("POST", "api:3.0/mlflow/issues/search", READ),
    ("POST", "api:3.0/mlflow/issues/invoke", REFUSED, _GATEWAY),
    ("GET", "api:3.0/mlflow/issues/{id}", READ),
    ("PATCH", "api:3.0/mlflow/issues/{id}", WRITE),
    ("GET", "api:3.0/mlflow/label-schemas/{verb}", READ),
    ("POST PATCH DELETE", "api:3.0/mlflow/label-schemas/{verb}", WRITE),
    ("GET", "api:3.0/mlflow/review-queues/{verb}", READ),
    ("GET", "api:3.0/mlflow/review-queues/items/list", READ),
    ("POST", "api:3.0/mlflow/review-queues/{verb}", WRITE),
    ("POST", "api:3.0/mlflow/review-queues/items/{verb}", WRITE),
    # What this product does not offer
    ("GET POST PUT PATCH DELETE", "api:2.0/mlflow/webhooks", REFUSED, _WEBHOOKS),
    (
        "GET POST PUT PATCH DELETE",
        "api:2.0/mlflow/webhooks/{p:path}",
        REFUSED,
        _WEBHOOKS,
    ),
    ("GET POST", "api:2.0/mlflow/gateway-proxy", REFUSED, _GATEWAY),
    ("GET POST PUT PATCH DELETE", "api:3.0/mlflow/gateway/{p:path}", REFUSED, _GATEWAY),
    ("GET POST PUT PATCH DELETE", "/gateway/{p:path}", REFUSED, _GATEWAY),
    ("GET POST PUT PATCH DELETE", "api:3.0/jobs", REFUSED, _JOBS),
    ("GET POST PUT PATCH DELETE", "api:3.0/jobs/{p:path}", REFUSED, _JOBS),
    ("GET POST PUT PATCH DELETE", "api:3.0/mlflow/jobs/{p:path}", REFUSED, _JOBS),
    (
        "GET POST PUT PATCH DELETE",
        "api:3.0/mlflow/prompt-optimization/{p:path}",
        REFUSED,
        _JOBS,
    ),
    (
        "GET POST PUT PATCH DELETE",
        "api:3.0/mlflow/assistant/{p:path}",
        REFUSED,
        _ASSISTANT,
    ),
    ("GET POST PUT PATCH DELETE", "api:3.0/mlflow/mcp-servers", REFUSED, _MCP),
    ("GET POST PUT PATCH DELETE", "api:3.0/mlflow/mcp-servers/{p:path}", REFUSED, _MCP),
    ("GET POST PUT PATCH DELETE", "api:3.0/mlflow/workspaces", REFUSED, _WORKSPACES),
    (
        "GET POST PUT PATCH DELETE",
        "api:3.0/mlflow/workspaces/{p:path}",
        REFUSED,
        _WORKSPACES,
    ),
    ("POST", "api:3.0/mlflow/demo/{verb}", REFUSED, _DEMO),
]


def _compile(template: str) -> re.Pattern[str]:
    if template.startswith("api:"):
        prefix, template = "/(?:api|ajax-api)/", template.removeprefix("api:")
    else:
        prefix, template = "", template
    parts = re.split(r"(\{\w+(?::path)?\})", template)
    regex = "".join(
        ("(.+)" if part.endswith(":path}") else "([^/]+)")
        if part.startswith("{")
        else re.escape(part)
        for part in parts
    )
    return re.compile(f"^{prefix}{regex}/?$")


def _build(
    table: list[tuple[str, str, Action] | tuple[str, str, Action, str]],
) -> list[Rule]:
    rules = []
    for methods, template, action, *reason in table:
        rules.append(
            Rule(
                frozenset(methods.split()), _compile(template), action, "".join(reason)
            )
        )
    return rules


RULES = _build(_TABLE)


@lru_cache(maxsize=4096)
def classify(method: str, path: str) -> Classification:
    """What the MLflow route ``method path`` needs; unknown routes are refused.

    ``HEAD`` is treated as ``GET``. ``OPTIONS`` needs what the route's
    least demanding method needs, so a preflight never opens more than the
    route itself does.
    """
    if method == "HEAD":
        method = "GET"
    candidates = [rule for rule in RULES if rule.pattern.match(path)]
    if method == "OPTIONS" and candidates:
        order = [PUBLIC, READ, WRITE, REFUSED]
        rule = min(candidates, key=lambda r: order.index(r.action))
        return Classification(rule.action, rule.reason, known=True)
    for rule in candidates:
        if method in rule.methods:
            return Classification(rule.action, rule.reason, known=True)
    if candidates:
        return Classification(REFUSED, f"{method} is not allowed here", known=True)
    return Classification(REFUSED, "this MLflow route is not offered", known=False)
