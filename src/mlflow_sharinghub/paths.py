"""Artifact paths that try to leave their project are refused before MLflow.

MLflow keeps each workspace's proxied artifacts under ``workspaces/<name>/``
and checks paths itself; this is a second, stricter gate: no absolute paths,
no ``.`` or ``..`` segments, no backslashes or NUL bytes, and no
``workspaces/<other>`` prefix, in any of the places a route takes a path,
also after a second round of percent-decoding.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote

from starlette.types import Scope

from mlflow_sharinghub.errors import RequestRefused

_PROXY_PREFIXES = (
    "/api/2.0/mlflow-artifacts/",
    "/ajax-api/2.0/mlflow-artifacts/",
)
_PROXY_ROUTES = (
    "artifacts/",
    "presigned/",
    "mpu/create/",
    "mpu/complete/",
    "mpu/abort/",
)
_PATH_PARAMETERS = frozenset({"path", "artifact_file_path", "artifact_directory_path"})


class InvalidArtifactPath(RequestRefused):
    status = 400
    error_code = "INVALID_PARAMETER_VALUE"


def check_artifact_paths(scope: Scope, mlflow_path: str, workspace: str) -> None:
    """Raise InvalidArtifactPath if the request names an unsafe artifact path."""
    if proxied := _proxied_path(mlflow_path):
        _check(proxied, workspace)
    query = scope.get("query_string", b"")
    if query:
        for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if name in _PATH_PARAMETERS:
                _check(value, workspace)


def _proxied_path(mlflow_path: str) -> str:
    for prefix in _PROXY_PREFIXES:
        if mlflow_path.startswith(prefix):
            rest = mlflow_path[len(prefix) :]
            for route in _PROXY_ROUTES:
                if rest.startswith(route):
                    return rest[len(route) :]
    return ""


def _check(path: str, workspace: str) -> None:
    for candidate in (path, unquote(path), unquote(unquote(path))):
        if is_unsafe(candidate, workspace):
            raise InvalidArtifactPath(
                f"Artifact path {path!r} is not allowed: artifact paths are relative "
                "to the project and may not contain '.', '..' or another workspace."
            )


def is_unsafe(path: str, workspace: str) -> bool:
    """Whether relative ``path`` may leave the project or enter another one."""
    if path.startswith("/") or "\\" in path or "\x00" in path:
        return True
    segments = path.split("/")
    if any(segment in (".", "..") for segment in segments):
        return True
    return segments[0] == "workspaces" and segments[1:2] != [workspace]
