"""Which project a URL names, and which MLflow path follows it."""

from __future__ import annotations

import pytest

from mlflow_sharinghub.projects import split_project_path, workspace_name


@pytest.mark.parametrize(
    ("path", "project", "mlflow_path"),
    [
        (
            "/eo/flood/tracking/api/2.0/mlflow/runs/get",
            "eo/flood",
            "/api/2.0/mlflow/runs/get",
        ),
        ("/a/b/c/tracking/", "a/b/c", "/"),
        (
            "/42/tracking/ajax-api/3.0/mlflow/server-info",
            "42",
            "/ajax-api/3.0/mlflow/server-info",
        ),
        ("/42/tracking", "42", ""),
        ("/tracking/tracking/tracking/api/x", "tracking/tracking", "/api/x"),
        ("/g/p/tracking/get-artifact", "g/p", "/get-artifact"),
        ("/g/p/tracking/static-files/main.js", "g/p", "/static-files/main.js"),
        (
            "/g/p/tracking/api/2.0/mlflow-artifacts/artifacts/tracking/x",
            "g/p",
            "/api/2.0/mlflow-artifacts/artifacts/tracking/x",
        ),
        ("/G.roup/my_Project-1/tracking/", "G.roup/my_Project-1", "/"),
    ],
    ids=lambda value: value,
)
def test_project_urls(path: str, project: str, mlflow_path: str) -> None:
    route = split_project_path(path)

    assert route is not None
    assert (route.project, route.mlflow_path) == (project, mlflow_path)
    assert route.prefix + route.mlflow_path == path


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/api/2.0/mlflow/experiments/search",
        "/single/tracking/",
        "/eo/../other/tracking/",
        "/eo/./p/tracking/",
        "/eo//p/tracking/",
        "/eo/p<script>/tracking/",
        "/eo/p.git/tracking/",
        "/eo/p/trackingx/",
        "/eo/p/tracking/not-mlflow",
        "/0/tracking/",
        "/-x/p/tracking/",
        "/" + "/".join(["g"] * 22) + "/tracking/",
    ],
    ids=lambda value: value[:40],
)
def test_malformed_project_urls_name_no_project(path: str) -> None:
    assert split_project_path(path) is None


def test_path_case_shares_one_cache_key() -> None:
    upper = split_project_path("/EO/Flood/tracking/")
    lower = split_project_path("/eo/flood/tracking/")

    assert upper is not None
    assert lower is not None
    assert upper.cache_key == lower.cache_key


def test_workspace_of_a_project_is_named_after_its_id() -> None:
    assert workspace_name(42) == "p-42"
