"""Projects in URLs: which project a request addresses, and its workspace.

A project URL is ``/<group>/<sub>/<project>/tracking/<MLflow path>`` or
``/<project id>/tracking/<MLflow path>``. A project path may itself contain a
``tracking`` segment, so the split is made at the first ``/tracking`` whose
remainder starts like an MLflow path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The first segment of every MLflow path the server may forward.
MLFLOW_ROOTS = frozenset(
    {
        "",
        "api",
        "ajax-api",
        "static-files",
        "build",
        "get-artifact",
        "model-versions",
        "graphql",
        "v1",
        "gateway",
        "version",
        "health",
        "ready",
        "sharinghub",  # this package's own files and context beside the UI
    }
)

_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}")
_MAX_DEPTH = 21  # GitLab allows 20 levels of subgroups, then the project
_MARKER = "/tracking"


@dataclass(frozen=True)
class ProjectRoute:
    """A request path split into the project it names and the MLflow path."""

    project: str  # "42" or "group/sub/project", as the URL spells it
    prefix: str  # the URL part before the MLflow path, e.g. "/eo/flood/tracking"
    mlflow_path: str  # always starts with "/"; "" when ".../tracking" lacks its slash

    @property
    def is_id(self) -> bool:
        return self.project.isdigit()

    @property
    def cache_key(self) -> str:
        # GitLab paths are case-insensitive; ids are plain digits.
        return self.project.lower()


def split_project_path(path: str) -> ProjectRoute | None:
    """The project route of ``path``, or None when it names no valid project."""
    start = 0
    while (index := path.find(_MARKER, start)) != -1:
        start = index + 1
        rest = path[index + len(_MARKER) :]
        if index == 0 or (rest and not rest.startswith("/")):
            continue
        root = rest[1:].split("/", 1)[0]
        if root not in MLFLOW_ROOTS:
            continue
        project = path[1:index]
        if not is_valid_project(project):
            return None
        return ProjectRoute(project, path[: index + len(_MARKER)], rest)
    return None


def is_valid_project(project: str) -> bool:
    """A numeric id, or a GitLab-shaped full path of at least group/project."""
    if project.isdigit():
        return len(project) <= 18 and int(project) > 0
    segments = project.split("/")
    return 2 <= len(segments) <= _MAX_DEPTH and all(
        _SEGMENT.fullmatch(s) and not s.endswith((".git", ".atom")) for s in segments
    )


def workspace_name(project_id: int) -> str:
    """The MLflow workspace of a SharingHub project id: ``p-<id>``."""
    return f"p-{project_id}"
